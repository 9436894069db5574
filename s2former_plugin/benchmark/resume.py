"""What a benchmark leaves in its output folder to resume from, and whether it may be reused.

The files written whole (JSON, then renamed), their names, and the fingerprints that tie each stored piece to the
options it was made with: a run folder (``fingerprint.txt``, ``data_fingerprint.json``; ``result.json`` marks it
done), the step count (``budget.json``) and the speed measurement (``speed.json``). A piece made with other options
or on other data is refused (a run folder, the budget) or measured again (the speed), never mixed into the table.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from .options import BenchmarkError

__all__ = [
    'BUDGET_FILE',
    'RESULT_FILE',
    'SPEED_FILE',
    'budget_key',
    'check_run_folder',
    'digest',
    'read_json',
    'run_fingerprint',
    'speed_key',
    'write_json',
]

#: A run's result (means and per-image scores), also its "done" marker.
RESULT_FILE = 'result.json'
#: The step count every arch trains for.
BUDGET_FILE = 'budget.json'
#: Parameters, multiply-adds, latency and memory of all archs.
SPEED_FILE = 'speed.json'


def read_json(path: str) -> Any:
    """The contents of a JSON file."""
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON into ``path``: written whole, then renamed (an interruption leaves the old file)."""
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def digest(obj: Any) -> str:
    """A short digest of a JSON-able object (key order ignored)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def budget_key(opt: dict) -> dict:
    """What the step count depends on (a changed key makes ``OUT/budget.json`` stale)."""
    tr = opt['train']
    keys = ('total_iter', 'max_minutes', 'calibration_iters', 'batch_size', 'crop', 'threads')
    return {'train': {k: tr[k] for k in keys}, 'device': opt.get('pick_device_name')}


def run_fingerprint(opt: dict, entry: dict, seed: int | None, total_iter: int) -> str:
    """The digest of what one run's training and evaluation depend on (not the seed count or the budget's options,
    only the resulting step count)."""
    train = {k: v for k, v in opt['train'].items() if k not in ('seeds', 'total_iter', 'max_minutes')}
    keys = {k: opt[k] for k in ('imports', 'data', 'loss', 'eval', 'device')}
    return digest({'entry': entry, 'seed': seed, 'steps': total_iter, 'train': train, **keys})


def check_run_folder(rdir: str, fp: str, data_fp: dict | None, what: str) -> None:
    """Refuse a run folder made with other options or on other data; else create it and record both.

    Args:
        rdir: The run folder (``OUT/<arch>/<run>``).
        fp: Its :func:`run_fingerprint`.
        data_fp: The data fingerprint (:func:`.data.data_fingerprint`), or ``None``: not checked.
        what: The run, for the messages (``archs:<arch>:<run>``).

    Raises:
        BenchmarkError: the folder was made with other options, on other train/test images, or has no record of
            its data.
    """
    fp_path = os.path.join(rdir, 'fingerprint.txt')
    if os.path.isfile(fp_path):
        with open(fp_path, encoding='utf-8') as f:
            if f.read().strip() != fp:
                raise BenchmarkError(
                    f'{what}: options changed since {rdir} was made; delete that folder or use another --out'
                )
    data_path = os.path.join(rdir, 'data_fingerprint.json')
    if data_fp is not None and os.path.isdir(rdir) and os.listdir(rdir):
        old = read_json(data_path) if os.path.isfile(data_path) else None
        if old != data_fp:
            why = 'has no record of its data' if old is None else 'was made on other train/test images'
            changed = [k for k in ('train', 'test') if old and old.get(k) != data_fp[k]]
            raise BenchmarkError(
                f'{what}: {rdir} {why}{" (" + " and ".join(changed) + " set changed)" if changed else ""}; '
                'its results would mix test sets: delete that folder or use another --out'
            )
    os.makedirs(rdir, exist_ok=True)
    with open(fp_path, 'w', encoding='utf-8') as f:
        f.write(fp + '\n')
    if data_fp is not None:
        write_json(data_path, data_fp)


def speed_key(opt: dict, archs: list[dict], device: str) -> str:
    """The digest of what the speed measurement depends on: the nets, their weights' modification times, the
    ``speed:`` options, the imports and the device."""
    stamps = {a['name']: os.stat(a['weights']).st_mtime_ns if os.path.isfile(a['weights']) else None for a in archs}
    return digest({'archs': archs, 'stamps': stamps, 'speed': opt['speed'], 'imports': opt['imports'], 'd': device})
