"""The perceptual loss (``S2FormerPerceptualLoss``) on a garbage VGG19 file: refused, naming the path.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest


@pytest.mark.parametrize('content', [b'', b'garbage' * 100, b'PK\x03\x04truncated zip'], ids=['empty', 'text', 'zip'])
def test_garbage_vgg_file_names_the_path(tmp_path, content):
    from s2former_plugin.losses.s2former_loss import S2FormerPerceptualLoss

    path = tmp_path / 'vgg19.pth'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf'{path} is not a torchvision VGG19 state dict \(unreadable'):
        S2FormerPerceptualLoss(vgg_weights=str(path))
