"""LMDB conversion: every reported problem, resume, verify, and basicsr reading the result unchanged."""

import json
import os
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

from s2former_plugin.data.lmdb_convert import ConvertError, convert, main
from s2former_plugin.data.lmdb_writer import LEDGER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def img(path, h=12, w=10, seed=0, ext=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), data)
    return data


def paired_tree(root, n=5):
    """``root/lq`` and ``root/gt`` with ``n`` random pairs named 0..n-1."""
    for i in range(n):
        img(root / 'lq' / f'{i}.png', seed=2 * i)
        img(root / 'gt' / f'{i}.png', seed=2 * i + 1)
    return root


def quiet(**kw):
    return {'progress': False, 'log': lambda line: None, **kw}


def read_lmdb(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = {k.decode(): cv2.imdecode(np.frombuffer(v, np.uint8), cv2.IMREAD_COLOR) for k, v in txn.cursor()}
    env.close()
    return out


def meta_lines(path):
    return (path / 'meta_info.txt').read_text().splitlines()


def test_roundtrip_meta_and_basicsr_reads_it(tmp_path):
    src = paired_tree(tmp_path / 'src')
    (src / 'gt' / '4.png').unlink()
    img(src / 'gt' / '4.png', h=20, w=16, seed=9)  # bigger than the rest: shape per entry in meta_info
    img(src / 'lq' / '4.png', h=20, w=16, seed=8)
    out = tmp_path / 'out'
    report = convert('paired', str(src), str(out), workers=2, verify_output=True, **quiet())
    assert report.written == 5 and not report.skipped and report.verify_errors == []
    assert report.lq_bytes > 0 and report.gt_bytes > 0
    assert meta_lines(out / 'lq.lmdb')[0] == '0.png (12,10,3) 1'
    assert meta_lines(out / 'gt.lmdb')[4] == '4.png (20,16,3) 1'
    stored = read_lmdb(out / 'gt.lmdb')
    assert np.array_equal(stored['3'], cv2.imread(str(src / 'gt' / '3.png')))
    assert not (out / LEDGER).exists() and json.loads((out / 'create_lmdb.json').read_text())['status'] == 'done'

    import basicsr.data.paired_image_dataset as pid
    from basicsr.utils import img2tensor

    opt = {
        'phase': 'val',
        'scale': 1,
        'dataroot_lq': str(out / 'lq.lmdb'),
        'dataroot_gt': str(out / 'gt.lmdb'),
        'io_backend': {'type': 'lmdb'},
    }
    ds = pid.PairedImageDataset(opt)
    assert len(ds) == 5
    item = ds[3]
    assert item['lq_path'] == item['gt_path'] == '3'
    expected = img2tensor(cv2.imread(str(src / 'lq' / '3.png')).astype(np.float32) / 255.0, bgr2rgb=True)
    assert item['lq'].shape == (3, 12, 10) and np.allclose(item['lq'].numpy(), expected.numpy())
    for env in ds.file_client.client._client.values():
        env.close()  # lmdb allows one handle per environment and process
    train = pid.PairedImageDataset({**opt, 'phase': 'train', 'gt_size': 8, 'use_hflip': True, 'use_rot': True,
                                    'io_backend': {'type': 'lmdb'}})  # fmt: skip
    assert train[0]['gt'].shape == (3, 8, 8)


def test_unmatched_mismatch_and_corrupt_are_reported_and_skipped(tmp_path):
    src = paired_tree(tmp_path / 'src', n=6)
    img(src / 'lq' / 'extra.png')  # no clean image
    img(src / 'gt' / '1.png', h=14, w=10)  # size mismatch with lq/1.png
    data = (src / 'lq' / '2.png').read_bytes()
    (src / 'lq' / '2.png').write_bytes(data[: len(data) // 2])  # truncated PNG
    (src / 'gt' / '3.png').write_bytes(b'not an image at all')
    jpg = src / 'lq' / '5.png'
    jpg.unlink()
    img(src / 'lq' / '5.jpg', seed=10)
    (src / 'lq' / '5.jpg').write_bytes((src / 'lq' / '5.jpg').read_bytes()[:-40])  # truncated JPEG
    lines = []
    report = convert('paired', str(src), str(tmp_path / 'out'), workers=0, progress=False, log=lines.append)
    assert report.written == 2 and sorted(read_lmdb(tmp_path / 'out' / 'lq.lmdb')) == ['0', '4']
    skipped = '\n'.join(report.skipped)
    assert 'gt/1.png (10x14)' in skipped and 'size 10x12' in skipped
    assert 'lq/2.png: truncated PNG' in skipped
    assert 'gt/3.png: cannot read (not a decodable image)' in skipped
    assert 'lq/5.jpg: truncated JPEG' in skipped
    assert any('extra.png' in u for u in report.unmatched)
    assert any(line.startswith('warning: unmatched input') and 'extra.png' in line for line in lines)
    assert len(meta_lines(tmp_path / 'out' / 'gt.lmdb')) == 2


def test_strict_aborts(tmp_path):
    src = paired_tree(tmp_path / 'src', n=3)
    (src / 'gt' / '1.png').write_bytes(b'\x89PNG\r\n\x1a\n broken')
    with pytest.raises(ConvertError, match=r'--strict: .*gt/1.png: truncated'):
        convert('paired', str(src), str(tmp_path / 'a'), strict=True, **quiet())
    img(src / 'gt' / '1.png')
    img(src / 'gt' / 'lonely.png')
    with pytest.raises(ConvertError, match=r'--strict: unmatched clean image .*lonely.png'):
        convert('paired', str(src), str(tmp_path / 'b'), strict=True, **quiet())
    assert not (tmp_path / 'b').exists()  # refused before writing anything


def test_weird_names_get_safe_identical_keys(tmp_path):
    src = tmp_path / 'src'
    for i, name in enumerate(['a b', 'a_b', 'x.y.z', 'été', '雨 1']):
        img(src / 'lq' / f'{name}.png', seed=i)
        img(src / 'gt' / f'{name}.png', seed=i + 10)
    out = tmp_path / 'out'
    report = convert('paired', str(src), str(out), verify_output=True, **quiet())
    assert report.written == 5 and not report.verify_errors
    keys = [line.split(' ')[0] for line in meta_lines(out / 'lq.lmdb')]
    assert keys == [line.split(' ')[0] for line in meta_lines(out / 'gt.lmdb')]
    assert len(keys) == 5 and all(k.count('.') == 1 and k.isascii() for k in keys)  # '<key>.png'
    from basicsr.data.data_util import paired_paths_from_lmdb

    paths = paired_paths_from_lmdb([str(out / 'lq.lmdb'), str(out / 'gt.lmdb')], ['lq', 'gt'])
    assert sorted(p['lq_path'] for p in paths) == sorted(read_lmdb(out / 'lq.lmdb'))


def test_existing_output_refused_without_overwrite(tmp_path):
    src = paired_tree(tmp_path / 'src', n=2)
    out = tmp_path / 'out'
    convert('paired', str(src), str(out), **quiet())
    with pytest.raises(ConvertError, match='output: .*finished conversion; pass --overwrite'):
        convert('paired', str(src), str(out), **quiet())
    img(src / 'lq' / '2.png')
    img(src / 'gt' / '2.png')
    assert convert('paired', str(src), str(out), overwrite=True, **quiet()).written == 3
    assert len(meta_lines(out / 'lq.lmdb')) == 3
    foreign = tmp_path / 'foreign'
    (foreign / 'lq.lmdb').mkdir(parents=True)
    with pytest.raises(ConvertError, match='already holds LMDB files'):
        convert('paired', str(src), str(foreign), **quiet())


def test_resume_after_interruption(tmp_path):
    src = paired_tree(tmp_path / 'src', n=7)
    out = tmp_path / 'out'

    def crash(commits):
        if commits == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert('paired', str(src), str(out), batch=2, _after_commit=crash, **quiet())
    assert not (out / 'lq.lmdb' / 'meta_info.txt').exists()  # basicsr cannot pick up a half-done LMDB
    assert len((out / LEDGER).read_text().splitlines()) == 4
    (out / LEDGER).write_text((out / LEDGER).read_text() + '{"k": "5", "lq"')  # a line cut short by the crash
    with pytest.raises(ConvertError, match='different --compress-level'):
        convert('paired', str(src), str(out), compress_level=3, **quiet())
    lines = []
    report = convert('paired', str(src), str(out), batch=2, verify_output=True, progress=False, log=lines.append)
    assert report.resumed == 4 and report.written == 7 and not report.verify_errors
    assert any(line.startswith('resuming: 4 of 7') for line in lines)
    assert [line.split('.')[0] for line in meta_lines(out / 'lq.lmdb')] == [str(i) for i in range(7)]
    assert sorted(read_lmdb(out / 'gt.lmdb')) == [str(i) for i in range(7)]


def test_verify_detects_a_changed_source(tmp_path):
    src = paired_tree(tmp_path / 'src', n=3)
    out = tmp_path / 'out'
    report = convert('paired', str(src), str(out), **quiet())
    from s2former_plugin.data.layouts import find_pairs
    from s2former_plugin.data.lmdb_verify import verify

    img(src / 'gt' / '1.png', seed=99)
    errors = verify(str(out), find_pairs('paired', str(src)).pairs, progress=False)
    assert report.written == 3 and len(errors) == 1 and 'gt.lmdb: key 1 differs' in errors[0]


def test_map_grows_beyond_initial_estimate(tmp_path, monkeypatch):
    import s2former_plugin.data.lmdb_writer as lc

    src = tmp_path / 'src'
    for i in range(3):
        img(src / 'lq' / f'{i}.png', h=300, w=300, seed=i)  # noise: ~270 kB of PNG each
        img(src / 'gt' / f'{i}.png', h=300, w=300, seed=i + 5)
    monkeypatch.setattr(lc, '_MIN_MAP', 1 << 16)
    monkeypatch.setattr(os.path, 'getsize', lambda p: 1)  # make the up-front estimate far too small
    report = convert('paired', str(src), str(tmp_path / 'out'), batch=3, verify_output=True, **quiet())
    assert report.written == 3 and not report.verify_errors


@pytest.mark.parametrize(
    'argv,match',
    [
        (['--layout', 'paired', '--input', 'MISSING'], 'input: folder not found'),
        (['--layout', 'rainds', '--input', '{src}', '--subset', 'zz'], 'subset'),
        (['--layout', 'paired', '--input', '{src}', '--compress-level', '12'], '--compress-level'),
        (['--layout', 'paired', '--input', '{src}', '--workers', '-1'], '--workers'),
        (['--layout', 'paired', '--input', '{src}', '--gt-dir', 'nothing'], 'gt_dir'),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, argv, match):
    src = paired_tree(tmp_path / 'src', n=1)
    argv = [a.replace('{src}', str(src)) for a in argv] + ['--output', str(tmp_path / 'o'), '--no-progress']
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and err.startswith('create_lmdb: error: ') and match in err


@pytest.mark.slow
def test_cli_subprocess_rain200(tmp_path):
    src = tmp_path / 'Rain100H'
    for n in (1, 2, 3):
        img(src / 'rain' / 'X2' / f'norain-{n}x2.png', seed=n)
        img(src / 'norain' / f'norain-{n}.png', seed=n + 10)
    out = tmp_path / 'out'
    cmd = [sys.executable, os.path.join(ROOT, 'datasets_prep', 'create_lmdb.py'), '--layout', 'rain200']
    cmd += ['--input', str(src), '--output', str(out), '--workers', '2', '--verify']
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'written: 3' in proc.stdout and 'verified: 3 pairs, 0 differ' in proc.stdout
    assert 'lmdb: 100%' in proc.stderr  # tqdm bar
    assert meta_lines(out / 'lq.lmdb') == [f'norain-{n}x2.png (12,10,3) 1' for n in (1, 2, 3)]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and 'pass --overwrite' in again.stderr


@pytest.mark.slow
def test_resume_after_sigkill(tmp_path):
    import signal
    import time

    src = paired_tree(tmp_path / 'src', n=6)
    out = tmp_path / 'out'
    # The child stalls after its second commit so that the kill lands between two commits, deterministically.
    code = (
        'import time\nfrom s2former_plugin.data.lmdb_convert import convert\n'
        f'convert("paired", {str(src)!r}, {str(out)!r}, batch=2, progress=False,\n'
        '        _after_commit=lambda n: time.sleep(60) if n == 2 else None)\n'
    )
    child = subprocess.Popen([sys.executable, '-c', code])
    ledger = out / LEDGER
    deadline = time.time() + 60
    while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 4) and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(ledger.read_text().splitlines()) == 4
    lines = []
    report = convert('paired', str(src), str(out), verify_output=True, progress=False, log=lines.append)
    assert report.resumed == 4 and report.written == 6 and not report.verify_errors
    assert len(meta_lines(out / 'gt.lmdb')) == 6
