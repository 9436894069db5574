"""``create_lmdb`` (``data.lmdb_convert``) on faults: a full disk says so, an unusable output is one line, a failed
``--verify`` leaves the output unfinished and ``--verify-only`` rechecks it (and refuses what is not an output), a
damaged JPEG is never stored.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from helpers import folder_digest, jpeg_bytes, overwrite_bytes, smooth_image


def _lmdb_source(root, n: int = 3):
    from helpers import write_paired_folder

    return write_paired_folder(root, n=n, size=(12, 12))


def _create_lmdb(*argv: str) -> int:
    from s2former_plugin.data import lmdb_convert

    return lmdb_convert.main([*argv, '--no-progress', '--workers', '0'])


def test_create_lmdb_disk_full_says_so(tmp_path, capsys, monkeypatch):
    import errno

    from s2former_plugin.data import lmdb_writer

    src = _lmdb_source(tmp_path / 'src')

    def full(self, batch):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(lmdb_writer._PairWriter, 'commit', full)
    assert _create_lmdb('--layout', 'paired', '--input', str(src), '--output', str(tmp_path / 'o')) == 2
    captured = capsys.readouterr()
    assert 'error: disk full while writing' in captured.err and 'free some space' in captured.err
    assert 'interrupted' not in captured.out + captured.err and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize('kind', ['file', 'under-a-file'])
def test_create_lmdb_unusable_output_is_one_line(tmp_path, capsys, kind):
    src = _lmdb_source(tmp_path / 'src')
    (tmp_path / 'f').write_text('x')
    out = tmp_path / 'f' if kind == 'file' else tmp_path / 'f' / 'out'
    assert _create_lmdb('--layout', 'paired', '--input', str(src), '--output', str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('create_lmdb: error: output:') and '\n' not in err
    assert (tmp_path / 'f').read_text() == 'x'


def test_create_lmdb_failed_verify_is_not_finished_and_verify_only_rechecks(tmp_path, capsys, monkeypatch):
    import json

    from s2former_plugin.data import lmdb_writer

    src = _lmdb_source(tmp_path / 'src')
    out = tmp_path / 'o'
    real = lmdb_writer._encode_pair

    def off_by_one(args):  # what a bad disk or a bug would store: one value differs from its source
        key, lq, gt, *rest = real(args)
        if key == '001':
            lq = cv2.imencode('.png', cv2.imdecode(np.frombuffer(lq, np.uint8), 1) // 2)[1].tobytes()
        return key, lq, gt, *rest

    monkeypatch.setattr(lmdb_writer, '_encode_pair', off_by_one)
    argv = ['--layout', 'paired', '--input', str(src), '--output', str(out)]
    assert _create_lmdb(*argv, '--verify') == 1
    assert json.loads((out / 'create_lmdb.json').read_text())['status'] == 'verify_failed'
    capsys.readouterr()
    assert _create_lmdb(*argv) == 2
    assert 'failed --verify; pass --overwrite' in capsys.readouterr().err
    assert _create_lmdb('--verify-only', str(out)) == 1
    assert 'lq.lmdb: key 001 differs' in capsys.readouterr().err
    monkeypatch.setattr(lmdb_writer, '_encode_pair', real)
    assert _create_lmdb(*argv, '--overwrite', '--verify') == 0
    assert json.loads((out / 'create_lmdb.json').read_text())['status'] == 'done'
    before = folder_digest(out)
    assert _create_lmdb('--verify-only', str(out)) == 0
    assert 'verified: 3 pairs, 0 missing or differ' in capsys.readouterr().out
    assert folder_digest(out) == before  # --verify-only writes nothing
    cv2.imwrite(str(src / 'gt' / '002.png'), np.zeros((12, 12, 3), np.uint8))  # a source changed since
    os.remove(src / 'lq' / '000.png')  # and one disappeared
    assert _create_lmdb('--verify-only', str(out)) == 1
    err = capsys.readouterr().err
    assert 'key 000: its source pair is gone' in err and 'gt.lmdb: key 002 differs' in err


@pytest.mark.parametrize('what', ['empty-folder', 'missing', 'unfinished'])
def test_create_lmdb_verify_only_refuses_non_outputs(tmp_path, capsys, what):
    out = tmp_path / 'o'
    if what == 'empty-folder':
        out.mkdir()
    elif what == 'unfinished':
        out.mkdir()
        (out / 'create_lmdb.json').write_text('{"status": "running", "options": {}}')
        (out / 'lq.lmdb').mkdir()
        (out / 'lq.lmdb' / 'meta_info.txt').write_text('a.png (1,1,3) 1\n')
    assert _create_lmdb('--verify-only', str(out)) == 2
    assert capsys.readouterr().err.startswith('create_lmdb: error: --verify-only:')


@pytest.mark.parametrize('strict', [False, True], ids=['skip', 'strict'])
def test_create_lmdb_does_not_store_a_damaged_jpeg(tmp_path, strict):
    from s2former_plugin.data.lmdb_convert import ConvertError, convert

    src = _lmdb_source(tmp_path / 'src')
    os.remove(src / 'lq' / '001.png')
    (src / 'lq' / '001.jpg').write_bytes(overwrite_bytes(jpeg_bytes(), 0.3, b'\x00' * 2000))
    cv2.imwrite(str(src / 'gt' / '001.png'), smooth_image(96, 128))
    lines = []
    kw = {'workers': 0, 'progress': False, 'log': lines.append, 'strict': strict, 'verify_output': True}
    if strict:
        with pytest.raises(ConvertError, match=r'--strict: .*001\.jpg: damaged image \(decoder: Corrupt JPEG data'):
            convert('paired', str(src), str(tmp_path / 'o'), **kw)
        return
    report = convert('paired', str(src), str(tmp_path / 'o'), **kw)
    assert report.written == 2 and not report.verify_errors
    assert any('001.jpg: damaged image' in line for line in report.skipped)
