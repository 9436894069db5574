"""The LMDB converter's output folder: refusing or resuming it, and writing pairs into both LMDBs resumably.

* Pairs are decoded and PNG-encoded in worker processes (:mod:`.lmdb_workers`); this process writes.
* Every ``batch`` pairs both LMDBs are committed and the pairs' keys appended to ``OUT/.create_lmdb.ledger``.
  An interrupted run leaves the ledger and no ``meta_info.txt``; running the same command again skips the keys in
  the ledger and finishes, writing ``meta_info.txt`` from the ledger, so it lists exactly the stored entries.
* The LMDB map grows on demand (checked before each commit, and on ``MapFullError``), so nothing is guessed from
  the first image.
* ``OUT/create_lmdb.json`` records the options; a rerun with other options, or over a finished or foreign output,
  is refused unless ``--overwrite``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable

import cv2
import lmdb

from .layouts import Pair
from .lmdb_report import ConvertError
from .lmdb_workers import ordered_map, read_image, with_progress

__all__ = [
    'LEDGER',
    'STATE',
    'error_reason',
    'is_disk_full',
    'prepare_output',
    'read_ledger',
    'write_meta',
    'write_pairs',
]

LEDGER = '.create_lmdb.ledger'
STATE = 'create_lmdb.json'
_MIN_MAP = 64 << 20


def _encode_pair(args: tuple[Pair, int]) -> tuple[str, bytes | None, bytes | None, tuple, tuple, str | None]:
    """Worker: ``(key, lq_png, gt_png, lq_shape, gt_shape, error)``; error names the file and the reason."""
    pair, level = args
    imgs = []
    for path in (pair.lq_path, pair.gt_path):
        try:
            imgs.append(read_image(path))
        except ValueError as e:
            return pair.key, None, None, (), (), str(e)
    lq, gt = imgs
    if lq.shape != gt.shape:
        return (
            pair.key,
            None,
            None,
            lq.shape,
            gt.shape,
            (
                f'{pair.lq_path}: size {lq.shape[1]}x{lq.shape[0]} differs from clean image {pair.gt_path} '
                f'({gt.shape[1]}x{gt.shape[0]})'
            ),
        )
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]
    lq_png = cv2.imencode('.png', lq, params)[1].tobytes()
    gt_png = cv2.imencode('.png', gt, params)[1].tobytes()
    return pair.key, lq_png, gt_png, lq.shape, gt.shape, None


class _PairWriter:
    """Both LMDBs, committed together; the map grows before it can fill."""

    def __init__(self, out: str, map_size: int):
        self.envs = [lmdb.open(os.path.join(out, f'{side}.lmdb'), map_size=map_size) for side in ('lq', 'gt')]

    def _ensure_room(self, env: lmdb.Environment, incoming: int) -> None:
        info, stat = env.info(), env.stat()
        used = (info['last_pgno'] + 1) * stat['psize']
        # B-tree pages, copy-on-write and overflow-page rounding cost extra: reserve twice the payload.
        need = used + 2 * incoming + (8 << 20)
        if need > info['map_size']:
            env.set_mapsize(max(need, 2 * info['map_size']))

    def commit(self, batch: list[tuple[str, bytes, bytes]]) -> None:
        for side, env in enumerate(self.envs):
            self._ensure_room(env, sum(len(item[1 + side]) for item in batch))
            for _ in range(6):
                try:
                    with env.begin(write=True) as txn:
                        for item in batch:
                            txn.put(item[0].encode('ascii'), item[1 + side])
                    break
                except lmdb.MapFullError:  # estimate too low after all: double and redo the batch
                    env.set_mapsize(2 * env.info()['map_size'])
            else:
                raise ConvertError('LMDB map kept filling up; is the output disk full?')

    def close(self) -> None:
        for env in self.envs:
            env.sync()
            env.close()


def read_ledger(path: str) -> dict[str, tuple]:
    """The pairs an interrupted run committed.

    Args:
        path: The ledger file (absent: nothing committed yet).

    Returns:
        ``{key: (lq_shape, gt_shape, lq_bytes, gt_bytes)}``; a line cut short by a crash is ignored.
    """
    done = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding='ascii') as f:
        for line in f:
            try:
                rec = json.loads(line)
                done[rec['k']] = (tuple(rec['lq']), tuple(rec['gt']), rec['lb'], rec['gb'])
            except (ValueError, KeyError, TypeError):
                continue
    return done


def write_meta(out: str, done: dict[str, tuple], level: int) -> None:
    """Write both ``meta_info.txt`` files (``<key>.png (h,w,c) <level>``, sorted by key), each replaced atomically.

    Args:
        out: Folder holding ``lq.lmdb`` and ``gt.lmdb``.
        done: The stored pairs, as :func:`read_ledger` returns them.
        level: PNG compression level of the stored values.
    """
    for side, idx in (('lq', 0), ('gt', 1)):
        tmp = os.path.join(out, f'{side}.lmdb', 'meta_info.txt.tmp')
        with open(tmp, 'w', encoding='ascii') as f:
            for key in sorted(done):
                h, w, c = done[key][idx]
                f.write(f'{key}.png ({h},{w},{c}) {level}\n')
        os.replace(tmp, tmp[: -len('.tmp')])


def is_disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk is full (``ENOSPC``, or LMDB's message for it)."""
    return getattr(e, 'errno', None) == errno.ENOSPC or 'No space left on device' in str(e)


def error_reason(e: BaseException) -> str:
    """A one-line reason for an I/O error: ``disk full``, the OS's text, or the first line of the message."""
    return 'disk full' if is_disk_full(e) else (getattr(e, 'strerror', None) or str(e).strip().splitlines()[0])


def prepare_output(out: str, options: dict, overwrite: bool) -> dict[str, tuple]:
    """Create, resume or refuse the output folder.

    Args:
        out: Output folder.
        options: What identifies the conversion (layout, input, ...); recorded in ``OUT/create_lmdb.json``, and
            an interrupted run resumes only with the same.
        overwrite: First remove the LMDBs, ledger and state an earlier run left.

    Returns:
        The ledger of an interrupted run with the same options (empty for a new output).

    Raises:
        ConvertError: ``out`` is not a folder or cannot be written, or holds a finished, failed, foreign or
            differently-optioned conversion (without ``overwrite``).
    """
    state_path, ledger_path = os.path.join(out, STATE), os.path.join(out, LEDGER)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConvertError(f'output: {out} exists and is not a folder')
    if overwrite and os.path.isdir(out):
        for name in ('lq.lmdb', 'gt.lmdb', LEDGER, STATE):
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    existing = os.path.isdir(out) and any(
        os.path.exists(os.path.join(out, n)) for n in ('lq.lmdb', 'gt.lmdb', STATE, LEDGER)
    )
    if not existing:
        try:
            os.makedirs(out, exist_ok=True)
            with open(state_path, 'w') as f:
                json.dump({'status': 'running', 'options': options}, f, indent=1)
        except OSError as e:
            raise ConvertError(f'output: cannot write to {out} ({error_reason(e)})') from None
        return {}
    try:
        with open(state_path) as f:
            state = json.load(f)
    except (OSError, ValueError):
        raise ConvertError(f'output: {out} already holds LMDB files; pass --overwrite to replace them') from None
    if state.get('status') == 'verify_failed':
        raise ConvertError(f'output: {out} holds a conversion that failed --verify; pass --overwrite to redo it')
    if state.get('status') != 'running':
        raise ConvertError(f'output: {out} already holds a finished conversion; pass --overwrite to replace it')
    changed = [k for k, v in options.items() if state.get('options', {}).get(k) != v]
    if changed:
        raise ConvertError(
            f'output: {out} holds an interrupted conversion with different --{changed[0].replace("_", "-")} '
            f'({state["options"].get(changed[0])!r}); rerun with the same options to resume or pass --overwrite'
        )
    return read_ledger(ledger_path)


def write_pairs(
    output: str,
    todo: list[Pair],
    done: dict[str, tuple],
    *,
    compress_level: int,
    workers: int,
    batch: int,
    strict: bool,
    progress: bool,
    log: Callable[[str], None],
    after_commit: Callable[[int], None] | None = None,
) -> list[str]:
    """Decode, PNG-encode and store ``todo`` in ``output/{lq,gt}.lmdb``, committing every ``batch`` pairs.

    Args:
        output: A folder :func:`prepare_output` accepted.
        todo: The pairs still to write.
        done: The pairs already stored (:func:`read_ledger`'s form); every commit adds its pairs to it and to the
            ledger, so after an error it holds exactly what is safely stored.
        compress_level: PNG compression 0-9.
        workers: Decoding processes (0 or 1: in this process).
        batch: Pairs per commit (and ledger entry).
        strict: Stop at the first unreadable or mismatched pair instead of skipping it.
        progress: Show a tqdm bar.
        log: Where ``skipped:`` and ``interrupted:`` lines go.
        after_commit: Test hook, called with the number of commits done.

    Returns:
        One line per pair skipped (naming the file and the reason).

    Raises:
        ConvertError: A full disk or a write error (saying how many pairs are stored), or (``strict``) a bad pair.
    """
    # Source size is a floor for the PNG payload; _PairWriter grows the map as real sizes arrive.
    src_bytes = sum(os.path.getsize(p.lq_path) + os.path.getsize(p.gt_path) for p in todo)
    writer = _PairWriter(output, max(_MIN_MAP, 2 * src_bytes))
    skipped: list[str] = []
    commits = 0
    pending: list[tuple[str, bytes, bytes]] = []
    pending_meta: list[dict] = []

    def flush() -> None:
        nonlocal commits
        if not pending:
            return
        writer.commit(pending)
        with open(os.path.join(output, LEDGER), 'a', encoding='ascii') as f:
            f.write(''.join(json.dumps(m) + '\n' for m in pending_meta))
            f.flush()
            os.fsync(f.fileno())
        for m in pending_meta:
            done[m['k']] = (tuple(m['lq']), tuple(m['gt']), m['lb'], m['gb'])
        pending.clear()
        pending_meta.clear()
        commits += 1
        if after_commit is not None:
            after_commit(commits)

    try:
        results = ordered_map(_encode_pair, [(p, compress_level) for p in todo], workers)
        for key, lq_png, gt_png, lq_shape, gt_shape, error in with_progress(results, len(todo), 'lmdb', progress):
            if error is not None:
                if strict:
                    raise ConvertError(f'--strict: {error}')
                skipped.append(error)
                log(f'skipped: {error}')
                continue
            pending.append((key, lq_png, gt_png))
            pending_meta.append({'k': key, 'lq': lq_shape, 'gt': gt_shape, 'lb': len(lq_png), 'gb': len(gt_png)})
            if len(pending) >= batch:
                flush()
        flush()
    except BaseException as e:
        writer.close()
        if is_disk_full(e):
            raise ConvertError(
                f'disk full while writing {output}: {len(done)} pairs are safely stored; free some space, then rerun '
                'the same command to resume'
            ) from None
        if isinstance(e, OSError | lmdb.Error):
            raise ConvertError(
                f'cannot write {output} ({error_reason(e)}); {len(done)} pairs are safely stored'
            ) from None
        if not isinstance(e, ConvertError):  # a --strict stop is not resumable by rerunning as is
            log(f'interrupted: {len(done)} pairs are safely stored; rerun the same command to resume')
        raise
    writer.close()
    return skipped
