"""Convert a deraining dataset (any layout of :mod:`.layouts`) into a pair of BasicSR LMDBs.

Output (what ``basicsr.data.PairedImageDataset`` reads with ``io_backend: {type: lmdb}``)::

    OUT/lq.lmdb/{data.mdb, lock.mdb, meta_info.txt}     meta lines: ``<key>.png (h,w,c) <compress_level>``
    OUT/gt.lmdb/{data.mdb, lock.mdb, meta_info.txt}     values: PNG bytes, same keys on both sides
    OUT/create_lmdb.json                                 options and counts of the conversion

Robustness:

* Images are decoded in a process pool by :mod:`s2former_plugin.imageio`; the parent writes. Pairs whose images
  cannot be decoded, are truncated or damaged, or differ in size are reported by name and skipped (``strict``: the
  conversion stops instead). Unmatched files are listed by name (``strict``: refused before writing).
* Every ``batch`` pairs both LMDBs are committed and the pairs' keys appended to ``OUT/.create_lmdb.ledger``.
  An interrupted run leaves the ledger and no ``meta_info.txt``; running the same command again skips the keys in
  the ledger and finishes, writing ``meta_info.txt`` from the ledger, so it lists exactly the stored entries.
* The LMDB map grows on demand (checked before each commit, and on ``MapFullError``), so nothing is guessed from
  the first image.

Usage: ``python datasets_prep/create_lmdb.py --help`` (or ``python -m s2former_plugin.data.lmdb_convert``).
"""

from __future__ import annotations

import argparse
import errno
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field

import cv2
import lmdb
import numpy as np

from .. import imageio
from ..errors import S2FormerError
from .layouts import LAYOUTS, LayoutError, Pair, PairScan, find_pairs

__all__ = ['ConvertError', 'ConvertReport', 'convert', 'main', 'read_image', 'verify']

LEDGER = '.create_lmdb.ledger'
STATE = 'create_lmdb.json'
_MIN_MAP = 64 << 20


class ConvertError(S2FormerError, RuntimeError):
    """A bad input or option; the message is one line naming the file or option."""


@dataclass
class ConvertReport:
    """Counts of a conversion (also written to ``OUT/create_lmdb.json``)."""

    output: str
    pairs_found: int = 0
    written: int = 0
    resumed: int = 0
    skipped: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    lq_bytes: int = 0
    gt_bytes: int = 0
    verified: int | None = None
    verify_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        total = self.lq_bytes + self.gt_bytes
        lines = [
            f'pairs found: {self.pairs_found}, written: {self.written} '
            f'({self.resumed} from an earlier run), skipped: {len(self.skipped)}, unmatched files: '
            f'{len(self.unmatched)}',
            f'PNG bytes: lq {self.lq_bytes:,} + gt {self.gt_bytes:,} = {total:,} ({total / 2**20:.1f} MiB) '
            f'in {self.seconds:.1f} s',
            f'output: {os.path.join(self.output, "lq.lmdb")} and {os.path.join(self.output, "gt.lmdb")}',
        ]
        if self.verified is not None:
            lines.append(f'verified: {self.verified} pairs, {len(self.verify_errors)} differ from their source')
        return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Reading (runs in the worker processes)
# ----------------------------------------------------------------------------------------------------------------
def read_image(path: str) -> np.ndarray:
    """Decode an image as 8-bit BGR, exactly as basicsr's ``imfrombytes`` does for the disk backend.

    Args:
        path: Image file.

    Returns:
        ``uint8`` array ``(h, w, 3)``.

    Raises:
        ValueError: Unreadable, empty, truncated, damaged or undecodable file (``imageio.ImageError``: the message
            names the file and the reason).
    """
    return imageio.read(path, cv2.IMREAD_COLOR)


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


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one decode per process; cv2's own threads would oversubscribe the cores


def _imap(func: Callable, items: list, workers: int) -> Iterator:
    """Ordered map, in a process pool when ``workers > 1``."""
    if workers <= 1 or len(items) <= 1:
        yield from map(func, items)
        return
    # spawn, not fork: a forked child inherits cv2's/OpenMP's thread pools mid-state and can hang in its first call.
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(func, items, chunksize=max(1, min(16, len(items) // (workers * 8))))


def _progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit='pair', dynamic_ncols=True)


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------
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


def _read_ledger(path: str) -> dict[str, tuple]:
    """``{key: (lq_shape, gt_shape, lq_bytes, gt_bytes)}``; a line cut short by a crash is ignored."""
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


def _write_meta(out: str, done: dict[str, tuple], level: int) -> None:
    for side, idx in (('lq', 0), ('gt', 1)):
        tmp = os.path.join(out, f'{side}.lmdb', 'meta_info.txt.tmp')
        with open(tmp, 'w', encoding='ascii') as f:
            for key in sorted(done):
                h, w, c = done[key][idx]
                f.write(f'{key}.png ({h},{w},{c}) {level}\n')
        os.replace(tmp, tmp[: -len('.tmp')])


def _options_record(layout, input_root, split, subset, lq_dir, gt_dir, template, level) -> dict:
    return {
        'layout': layout,
        'input': os.path.abspath(input_root),
        'split': split,
        'subset': subset,
        'lq_dir': lq_dir,
        'gt_dir': gt_dir,
        'template': template,
        'compress_level': level,
    }


def _reason(e: BaseException) -> str:
    return 'disk full' if _is_disk_full(e) else (getattr(e, 'strerror', None) or str(e).strip().splitlines()[0])


def _is_disk_full(e: BaseException) -> bool:
    return getattr(e, 'errno', None) == errno.ENOSPC or 'No space left on device' in str(e)


def _prepare_output(out: str, options: dict, overwrite: bool) -> dict[str, tuple]:
    """Create, resume or refuse ``out``; returns the ledger of an interrupted run with the same options."""
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
            raise ConvertError(f'output: cannot write to {out} ({_reason(e)})') from None
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
    return _read_ledger(ledger_path)


def convert(
    layout: str,
    input_root: str,
    output: str,
    split: str | None = None,
    subset: str | None = None,
    lq_dir: str | None = None,
    gt_dir: str | None = None,
    template: str | None = None,
    workers: int = 0,
    compress_level: int = 1,
    strict: bool = False,
    overwrite: bool = False,
    verify_output: bool = False,
    batch: int = 256,
    progress: bool = True,
    log: Callable[[str], None] = print,
    _after_commit: Callable[[int], None] | None = None,
) -> ConvertReport:
    """Write ``output/lq.lmdb`` and ``output/gt.lmdb`` from a dataset folder.

    Args:
        layout: Layout name (see :mod:`.layouts`).
        input_root: Dataset folder.
        output: Output folder (created).
        split: Split folder, e.g. ``train``.
        subset: ``rainds`` subset.
        lq_dir: ``paired`` input folder.
        gt_dir: ``paired`` clean folder.
        template: ``paired`` name template.
        workers: Decoding processes (0 or 1: in this process; default of the CLI: all cores).
        compress_level: PNG compression 0-9 (BasicSR uses 1: fast to decode, ~2x raw PNG size).
        strict: Stop at the first unmatched, unreadable or mismatched file instead of skipping it.
        overwrite: Replace existing LMDBs in ``output``.
        verify_output: Decode every entry afterwards and compare it with its source image.
        batch: Pairs per LMDB commit (and ledger entry).
        progress: Show tqdm progress bars.
        log: Where report lines go.
        _after_commit: Test hook, called with the number of commits done.

    Returns:
        The counts; ``report.skipped`` and ``report.unmatched`` hold one line per file.

    Raises:
        ConvertError: A bad option or input, or (``strict``) a bad file.
    """
    start = time.time()
    if not 0 <= compress_level <= 9:
        raise ConvertError(f'--compress-level: {compress_level} is not in 0..9')
    if workers < 0:
        raise ConvertError(f'--workers: {workers} must be >= 0')
    if batch < 1:
        raise ConvertError(f'batch: {batch} must be >= 1')
    try:
        scan: PairScan = find_pairs(
            layout, input_root, split=split, subset=subset, lq_dir=lq_dir, gt_dir=gt_dir, template=template
        )
    except LayoutError as e:
        raise ConvertError(str(e)) from None
    if os.path.realpath(output).startswith(os.path.realpath(scan.root) + os.sep):
        raise ConvertError(f'output: {output} is inside the input folder {scan.root}')
    report = ConvertReport(output=output, pairs_found=len(scan.pairs), unmatched=scan.problems)
    for line in report.unmatched:
        log(f'warning: {line}')
    if strict and report.unmatched:
        raise ConvertError(f'--strict: {report.unmatched[0]} ({len(report.unmatched)} files unmatched)')
    if not scan.pairs:
        raise ConvertError(f'input: no image pairs found in {scan.root} for layout {layout}')

    options = _options_record(layout, input_root, split, subset, lq_dir, gt_dir, template, compress_level)
    done = _prepare_output(output, options, overwrite)
    todo = [p for p in scan.pairs if p.key not in done]
    report.resumed = sum(1 for p in scan.pairs if p.key in done)
    if report.resumed:
        log(f'resuming: {report.resumed} of {len(scan.pairs)} pairs already written, {len(todo)} to go')

    # Source size is a floor for the PNG payload; _PairWriter grows the map as real sizes arrive.
    src_bytes = sum(os.path.getsize(p.lq_path) + os.path.getsize(p.gt_path) for p in todo)
    writer = _PairWriter(output, max(_MIN_MAP, 2 * src_bytes))
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
        if _after_commit is not None:
            _after_commit(commits)

    try:
        results = _imap(_encode_pair, [(p, compress_level) for p in todo], workers)
        for key, lq_png, gt_png, lq_shape, gt_shape, error in _progress(results, len(todo), 'lmdb', progress):
            if error is not None:
                if strict:
                    raise ConvertError(f'--strict: {error}')
                report.skipped.append(error)
                log(f'skipped: {error}')
                continue
            pending.append((key, lq_png, gt_png))
            pending_meta.append({'k': key, 'lq': lq_shape, 'gt': gt_shape, 'lb': len(lq_png), 'gb': len(gt_png)})
            if len(pending) >= batch:
                flush()
        flush()
    except BaseException as e:
        writer.close()
        if _is_disk_full(e):
            raise ConvertError(
                f'disk full while writing {output}: {len(done)} pairs are safely stored; free some space, then rerun '
                'the same command to resume'
            ) from None
        if isinstance(e, OSError | lmdb.Error):
            raise ConvertError(f'cannot write {output} ({_reason(e)}); {len(done)} pairs are safely stored') from None
        if not isinstance(e, ConvertError):  # a --strict stop is not resumable by rerunning as is
            log(f'interrupted: {len(done)} pairs are safely stored; rerun the same command to resume')
        raise
    writer.close()

    keys = [p.key for p in scan.pairs if p.key in done]
    done = {k: done[k] for k in keys}  # drop ledger keys the input no longer has
    if not done:
        raise ConvertError(f'input: none of the {len(scan.pairs)} pairs in {scan.root} could be read')
    _write_meta(output, done, compress_level)
    report.written = len(done)
    report.lq_bytes = sum(v[2] for v in done.values())
    report.gt_bytes = sum(v[3] for v in done.values())
    if verify_output:
        by_key = {p.key: p for p in scan.pairs}
        report.verify_errors = verify(output, [by_key[k] for k in keys], workers=workers, progress=progress)
        report.verified = len(keys)
        for line in report.verify_errors:
            log(f'verify: {line}')
    report.seconds = time.time() - start
    with open(os.path.join(output, STATE), 'w') as f:
        record = asdict(report)
        # A failed --verify is not a finished conversion: a rerun says so and --verify-only can check again.
        record.update(status='verify_failed' if report.verify_errors else 'done', options=options)
        json.dump(record, f, indent=1)
    os.remove(os.path.join(output, LEDGER))
    return report


# ----------------------------------------------------------------------------------------------------------------
# Verification
# ----------------------------------------------------------------------------------------------------------------
_verify_envs: dict[str, lmdb.Environment] = {}


def _verify_pair(args: tuple[str, Pair]) -> str | None:
    out, pair = args
    for side, src in (('lq', pair.lq_path), ('gt', pair.gt_path)):
        path = os.path.join(out, f'{side}.lmdb')
        env = _verify_envs.get(path)
        if env is None:  # one read-only handle per process (lmdb handles must not cross a fork)
            env = _verify_envs[path] = lmdb.open(path, readonly=True, lock=False, readahead=False)
        with env.begin() as txn:
            value = txn.get(pair.key.encode('ascii'))
        if value is None:
            return f'{side}.lmdb: key {pair.key} missing ({src})'
        try:
            stored = imageio.decode(value, f'{side}.lmdb: key {pair.key}', cv2.IMREAD_COLOR)
            source = read_image(src)
        except ValueError as e:
            return str(e)
        if stored.shape != source.shape or not np.array_equal(stored, source):
            return f'{side}.lmdb: key {pair.key} differs from {src}'
    return None


def verify(output: str, pairs: list[Pair], workers: int = 0, progress: bool = True) -> list[str]:
    """Decode every stored pair and compare it pixel by pixel with its source images.

    Args:
        output: Folder holding ``lq.lmdb`` and ``gt.lmdb``.
        pairs: The pairs to check (keys and source paths).
        workers: Processes.
        progress: Show a tqdm bar.

    Returns:
        One line per pair that is missing or differs (empty when all match).
    """
    results = _imap(_verify_pair, [(output, p) for p in pairs], workers)
    errors = [r for r in _progress(results, len(pairs), 'verify', progress) if r is not None]
    _verify_envs.clear()
    return errors


def verify_existing(output: str, workers: int = 0, progress: bool = True) -> ConvertReport:
    """Check a finished conversion in ``output`` against its sources (options from ``output/create_lmdb.json``).

    Every key of ``meta_info.txt`` must have its source pair, and every stored image must equal its source.

    Returns:
        A report with ``verified`` and ``verify_errors`` (one line per missing or differing pair).

    Raises:
        ConvertError: ``output`` is not a finished conversion of this tool, or its sources cannot be listed.
    """
    try:
        with open(os.path.join(output, STATE)) as f:
            state = json.load(f)
        with open(os.path.join(output, 'lq.lmdb', 'meta_info.txt'), encoding='ascii') as f:
            keys = [line.split(' ')[0].rsplit('.', 1)[0] for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise ConvertError(f'--verify-only: {output} is not a finished create_lmdb output ({_reason(e)})') from None
    if state.get('status') not in ('done', 'verify_failed'):
        raise ConvertError(f'--verify-only: {output} holds an unfinished conversion; rerun it first')
    o = state.get('options', {})
    try:
        scan = find_pairs(
            o['layout'], o['input'], split=o['split'], subset=o['subset'], lq_dir=o['lq_dir'], gt_dir=o['gt_dir'],
            template=o['template'],
        )  # fmt: skip
    except (LayoutError, KeyError) as e:
        raise ConvertError(f'--verify-only: cannot list the sources of {output} ({e})') from None
    by_key = {p.key: p for p in scan.pairs}
    report = ConvertReport(output=output, pairs_found=len(scan.pairs), written=len(keys))
    report.verify_errors = [f'key {k}: its source pair is gone from {scan.root}' for k in keys if k not in by_key]
    report.verify_errors += verify(output, [by_key[k] for k in keys if k in by_key], workers, progress)
    report.verified = len(keys)
    return report


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options (shared by ``datasets_prep/create_lmdb.py``)."""
    p = argparse.ArgumentParser(
        prog=prog,
        description='Convert a deraining dataset into BasicSR LMDBs (OUT/lq.lmdb, OUT/gt.lmdb).',
        epilog='Layouts: rainds (RainDS_syn/real), rain200 (Rain200H/L, Rain100H/L), agan (Raindrop), paired.',
    )
    p.add_argument('--layout', choices=LAYOUTS, help='required unless --verify-only')
    p.add_argument('--input', help='dataset folder (required unless --verify-only)')
    p.add_argument('--output', help='output folder; lq.lmdb and gt.lmdb are written inside')
    p.add_argument('--split', help='split folder: train, test (agan: test_a, test_b)')
    p.add_argument('--subset', help='rainds: rs, rd, rsrd or all (default all)')
    p.add_argument('--lq-dir', help='paired: input folder (default lq)')
    p.add_argument('--gt-dir', help='paired: clean folder (default gt)')
    p.add_argument('--template', help="paired: input stem from clean stem, e.g. '{}_rain'")
    p.add_argument('--workers', type=int, default=os.cpu_count() or 1, help='decoding processes (default: all cores)')
    p.add_argument('--compress-level', type=int, default=1, help='PNG compression 0-9 (default 1, as BasicSR)')
    p.add_argument('--strict', action='store_true', help='stop at the first unmatched or bad file')
    p.add_argument('--overwrite', action='store_true', help='replace existing LMDBs in --output')
    p.add_argument('--verify', action='store_true', help='decode every entry afterwards and compare with source')
    p.add_argument('--no-progress', action='store_true', help='no progress bars')
    p.add_argument(
        '--verify-only', metavar='OUT', help='check an existing conversion in OUT against its sources; writes nothing'
    )
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 verification failed, 2 bad input, 130 interrupted)."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    name = prog or 'create_lmdb'
    if args.verify_only:
        try:
            report = verify_existing(args.verify_only, args.workers, not args.no_progress)
        except ConvertError as e:
            print(f'{name}: error: {e}', file=sys.stderr)
            return 2
        for line in report.verify_errors:
            print(f'verify: {line}', file=sys.stderr)
        print(f'verified: {report.verified} pairs, {len(report.verify_errors)} missing or differ from their source')
        return 1 if report.verify_errors else 0
    missing = [f'--{k}' for k in ('layout', 'input', 'output') if getattr(args, k) is None]
    if missing:
        parser.error(f'the following arguments are required: {", ".join(missing)}')
    try:
        report = convert(
            args.layout,
            args.input,
            args.output,
            split=args.split,
            subset=args.subset,
            lq_dir=args.lq_dir,
            gt_dir=args.gt_dir,
            template=args.template,
            workers=args.workers,
            compress_level=args.compress_level,
            strict=args.strict,
            overwrite=args.overwrite,
            verify_output=args.verify,
            progress=not args.no_progress,
        )
    except ConvertError as e:
        print(f'{name}: error: {e}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(report.summary())
    return 1 if report.verify_errors else 0


if __name__ == '__main__':
    sys.exit(main(prog='python -m s2former_plugin.data.lmdb_convert'))
