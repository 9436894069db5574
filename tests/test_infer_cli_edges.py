"""``python -m s2former_plugin.infer``'s choices a user sees in the results: the defaults, the autocast precision
per option and device, which files are written, and the exit status (a tiny network, tiny images)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from s2former_plugin import infer
from s2former_plugin.archs.s2former_arch import S2Former


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    torch.manual_seed(4)
    path = tmp_path_factory.mktemp('weights') / 'w.pth'
    torch.save(S2Former(preset='small').state_dict(), path)
    return path


@pytest.fixture
def photo_dir(tmp_path):
    folder = tmp_path / 'in'
    folder.mkdir()
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8), (0, 0), 1)
    cv2.imwrite(str(folder / 'a.png'), img)
    return folder


def test_defaults():
    args = infer.build_parser().parse_args(['--weights', 'w', '--input', 'i', '--output', 'o'])
    assert (args.tile, args.tile_overlap, args.tile_batch, args.blend) == (320, 64, 1, 'cosine')
    assert (args.device, args.fp16, args.bf16, args.config) == ('auto', False, False, None)
    assert (args.save_uncertainty, args.no_progress) == (False, False)
    full = ['--weights', 'w', '--input', 'i', '--output', 'o']
    for i in (0, 2, 4):  # each of the three is required
        with pytest.raises(SystemExit):
            infer.build_parser().parse_args(full[:i] + full[i + 2 :])


@pytest.mark.parametrize(
    ('extra', 'autocast', 'summary', 'warning'),
    [
        ([], None, 'cpu, tile off,', None),
        (['--bf16'], torch.bfloat16, 'cpu, bf16, tile off,', None),
        (['--fp16'], None, 'cpu, tile off,', 'infer: warning: --fp16 needs CUDA; running in float32'),
    ],
)
def test_precision_chosen_on_the_cpu(
    weights, photo_dir, tmp_path, capsys, monkeypatch, extra, autocast, summary, warning
):
    seen = []
    forward = S2Former.forward

    def recording_forward(self, *args, **kwargs):
        on = torch.is_autocast_enabled('cpu')
        seen.append(torch.get_autocast_dtype('cpu') if on else None)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(S2Former, 'forward', recording_forward)
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--output', str(tmp_path / 'out'), '--tile', '0']
    assert infer.main([*argv, '--device', 'cpu', '--no-progress', *extra]) == 0
    assert seen == [autocast]
    captured = capsys.readouterr()
    assert f'infer: 1/1 images -> {tmp_path / "out"} (state dict, {summary} ' in captured.out
    assert (warning in captured.err.splitlines()) if warning else 'warning' not in captured.err


def test_uncertainty_written_only_when_asked(weights, photo_dir, tmp_path):
    argv = ['--weights', str(weights), '--input', str(photo_dir), '--tile', '0', '--no-progress']
    assert infer.main([*argv, '--output', str(tmp_path / 'plain')]) == 0
    assert sorted(p.name for p in (tmp_path / 'plain').iterdir()) == ['a.png']
    assert infer.main([*argv, '--output', str(tmp_path / 'unc'), '--save-uncertainty']) == 0
    assert sorted(p.name for p in (tmp_path / 'unc').iterdir()) == ['a.png', 'uncertainty']
    assert [p.name for p in (tmp_path / 'unc' / 'uncertainty').iterdir()] == ['a.png']
    # The image itself does not depend on the option.
    np.testing.assert_array_equal(
        cv2.imread(str(tmp_path / 'plain' / 'a.png')), cv2.imread(str(tmp_path / 'unc' / 'a.png'))
    )
