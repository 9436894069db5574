"""The training entry point (``python -m basicsr.train``, ``compat.train_main``) on bad inputs: a typo'd option
key, or a damaged image read in the main process or a DataLoader worker, ends in one line, with no traceback and
before any work.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import pytest
import torch
from helpers import png_bytes, rename_option

from s2former_plugin import imageio


def test_train_cli_typo_is_one_line_before_any_work(tmp_path):
    from helpers import REPO, run, tiny_s2former_options, write_paired_folder, write_yaml

    write_paired_folder(tmp_path / 'data', n=2, size=(16, 16))
    opt = rename_option(tiny_s2former_options(tmp_path / 'data', None, name='typo'), 'train.ema_decay', 'ema_decy')
    write_yaml(tmp_path / 't.yml', opt)
    proc = run(['-m', 'basicsr.train', '-opt', 't.yml'], cwd=tmp_path, PYTHONPATH=str(REPO))  # this checkout's code
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "train: error: train:ema_decy: unknown key; did you mean 'ema_decay'?"
    )
    assert 'Traceback' not in proc.stderr
    assert not list((tmp_path / 'experiments' / 'typo').glob('models/*.pth'))


@pytest.mark.parametrize('where', ['main-process', 'dataloader-worker'])
def test_training_on_a_damaged_image_ends_in_one_line(tmp_path, capsys, monkeypatch, where):
    import basicsr.train
    from torch.utils.data import DataLoader

    from s2former_plugin import compat

    (tmp_path / 'bad.png').write_bytes(png_bytes()[:100])

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return imageio.read(str(tmp_path / 'bad.png'))

    def pipeline(root):
        next(iter(DataLoader(Images(), num_workers=1 if where == 'dataloader-worker' else 0)))

    monkeypatch.setattr(basicsr.train, 'train_pipeline', pipeline)
    with pytest.raises(SystemExit) as info:
        compat.train_main(str(tmp_path))
    assert info.value.code == 2
    assert capsys.readouterr().err == f'train: error: {tmp_path / "bad.png"}: truncated PNG (IDAT chunk cut short)\n'
