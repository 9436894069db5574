"""``synthetic_rain`` on bad inputs and faults: it never writes into or deletes its inputs, removes an earlier run's
pairs only when told to, skips an empty photo by name, refuses an output that is a file, stops on a full disk.

Each test (or parametrised case) is one row of the table in docs/reliability.md.
"""

from __future__ import annotations

import os

import pytest
from helpers import folder_digest, raise_disk_full, write_photos

from s2former_plugin import imageio
from s2former_plugin.data import synthetic_rain


@pytest.mark.parametrize(
    'output',
    ['X', 'X/gt', 'X/gt/out', 'X/gt/out/deeper'],
    ids=['parent-of-input', 'input-itself', 'inside-input', 'deep-inside-input'],
)
@pytest.mark.parametrize('overwrite', [False, True], ids=['plain', 'overwrite'])
def test_synthetic_rain_never_writes_into_its_input(tmp_path, capsys, output, overwrite):
    write_photos(tmp_path / 'X' / 'gt')
    before = folder_digest(tmp_path / 'X')
    argv = ['--input', str(tmp_path / 'X' / 'gt'), '--output', str(tmp_path / output)]
    rc = synthetic_rain.main(argv + (['--overwrite'] if overwrite else []))
    err = capsys.readouterr().err
    assert rc == 2 and 'overlap the input folder' in err and len(err.strip().splitlines()) == 1
    assert folder_digest(tmp_path / 'X') == before


def test_synthetic_rain_overwrite_removes_stale_pairs(tmp_path, capsys):
    write_photos(tmp_path / 'in', n=3)
    out = tmp_path / 'out'
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out)]) == 0
    os.remove(tmp_path / 'in' / 'p2.png')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out)]) == 2  # not empty
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(out), '--overwrite']) == 0
    assert sorted(os.listdir(out / 'lq')) == sorted(os.listdir(out / 'gt')) == ['p0.png', 'p1.png']
    assert 'removed 6 images of an earlier run' in capsys.readouterr().out


def test_synthetic_rain_skips_and_names_empty_photo(tmp_path, capsys):
    write_photos(tmp_path / 'in', n=2)
    (tmp_path / 'in' / 'zero.jpg').write_bytes(b'')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]) == 0
    assert 'zero.jpg: empty file' in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path / 'out' / 'gt')) == ['p0.png', 'p1.png']


def test_synthetic_rain_output_that_is_a_file(tmp_path, capsys):
    write_photos(tmp_path / 'in', n=1)
    (tmp_path / 'f').write_text('x')
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'f')]) == 2
    assert 'is not a folder' in capsys.readouterr().err


def test_synthetic_rain_stops_on_a_full_disk(tmp_path, capsys, monkeypatch):
    write_photos(tmp_path / 'in', n=2)
    monkeypatch.setattr(imageio, 'write', raise_disk_full)
    assert synthetic_rain.main(['--input', str(tmp_path / 'in'), '--output', str(tmp_path / 'out')]) == 1
    assert 'cannot write (disk full) (after 0 pairs)' in capsys.readouterr().err
