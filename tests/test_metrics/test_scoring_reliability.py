"""The image reader of ``report`` and ``benchmark`` (``metrics.scoring.read_image``) refuses damaged images with the
reader's reason.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import re

import pytest
from helpers import DAMAGED_IMAGES


@pytest.mark.parametrize('case', ['jpeg-cut-at-90pc', 'jpeg-zeroed-middle', 'png-cut-before-iend'])
def test_report_and_benchmark_reader_refuses_damaged_images(tmp_path, case):
    from s2former_plugin.metrics import scoring

    make, reason = DAMAGED_IMAGES[case]
    path = tmp_path / ('x.jpg' if case.startswith('jpeg') else 'x.png')
    path.write_bytes(make())
    with pytest.raises(ValueError, match=re.escape(reason)):
        scoring.read_image(str(path))
