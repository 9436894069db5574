"""Folder layouts and pair-naming rules of the public deraining datasets, in one place.

Every reader in the plugin (the LMDB converter, :class:`DerainFolderDataset`, the benchmark) goes through
:func:`find_pairs`, so a naming rule is written exactly once.

Layouts (``root`` is the folder you unpacked; ``split`` selects ``root/<split>`` when that folder exists):

``rainds``
    RainDS_syn / RainDS_real (Quan et al., CVPR 2021)::

        <root>/{train,test}[_set]/gt/                      pie-norain-1.png   norain-1.png   (real: 2.png)
        <root>/{train,test}[_set]/raindrop/                pie-rd-1.png       rd-1.png       (real: 2.png)
        <root>/{train,test}[_set]/rainstreak/              pie-rain-1.png     rain-1.png     (real: 2.png)
        <root>/{train,test}[_set]/rainstreak_raindrop/     pie-rd-rain-1.png  rd-rain-1.png  (real: 2.png)

    Each input folder has its own token (``rd``, ``rain``, ``rd-rain``) that becomes ``norain`` in the clean
    name; the token is matched as a whole ``-``/``_``-separated word, so ``rd-rain`` is never half-replaced and
    ``train`` never matches ``rain``. When the renamed file does not exist, a clean file of the same name is used
    (RainDS_real). ``subset``: ``rs`` (streaks), ``rd`` (drops), ``rsrd`` (both), ``all`` (the three together).
``rain200``
    Rain200H/L, Rain100H/L (Yang et al.): ``rain/X2/norain-Nx2.png`` (or ``rain/norain-Nx2.png``) with
    ``norain/norain-N.png``.
``agan``
    Raindrop (Qian et al., CVPR 2018, "AttentiveGAN"): ``data/N_rain.png`` with ``gt/N_clean.png``; ``.png`` and
    ``.jpg`` may be mixed. Splits are ``train``, ``test_a``, ``test_b`` (``test`` means ``test_a``).
``paired``
    Any two folders (``lq_dir`` and ``gt_dir``, default ``lq`` and ``gt``, relative to ``root`` or absolute) with
    the same file stems, or with ``template`` mapping a clean stem to its input stem (``'{}_rain'`` pairs
    ``gt/7.png`` with ``lq/7_rain.png``; basicsr's ``filename_tmpl``).

Files are matched by stem, so the two sides may use different image extensions. Every pair gets a ``key``: an
ASCII name made of ``[A-Za-z0-9_-]`` (what BasicSR's LMDB meta files and ``paired_paths_from_lmdb`` can hold: no
dots, no spaces), identical for input and clean image, unique within the scan.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field

from ..errors import S2FormerError
from ..imageio import IMAGE_EXTENSIONS, natural_key  # re-exported: the layouts' file rules

__all__ = [
    'IMAGE_EXTENSIONS',
    'LAYOUTS',
    'RAINDS_SUBSETS',
    'LayoutError',
    'Pair',
    'PairScan',
    'find_pairs',
    'natural_key',
    'safe_key',
]

LAYOUTS = ('rainds', 'rain200', 'agan', 'paired')
# subset -> input folders; 'all' keeps basicsr/UDR-S2Former's order rd, rs, rsrd.
RAINDS_FOLDERS = {'rd': 'raindrop', 'rs': 'rainstreak', 'rsrd': 'rainstreak_raindrop'}
RAINDS_TOKENS = {'raindrop': 'rd', 'rainstreak': 'rain', 'rainstreak_raindrop': 'rd-rain'}
RAINDS_SUBSETS = ('rs', 'rd', 'rsrd', 'all')


class LayoutError(S2FormerError, ValueError):
    """A layout cannot be scanned with the given options; the message names the option or folder."""


@dataclass(frozen=True)
class Pair:
    """One matched input/clean pair."""

    lq_path: str
    gt_path: str
    key: str


@dataclass
class PairScan:
    """Result of :func:`find_pairs`.

    Attributes:
        layout: Layout name.
        root: Folder that was scanned (after applying ``split``).
        pairs: Matched pairs, in natural order of the input names.
        unmatched_lq: Input images with no clean counterpart (paths).
        unmatched_gt: Clean images no selected input refers to (paths).
        ignored: Files that are not images (paths), e.g. ``Thumbs.db``.
        ambiguous: Stems present with several extensions in one folder (paths); none of them is paired.
    """

    layout: str
    root: str
    pairs: list[Pair] = field(default_factory=list)
    unmatched_lq: list[str] = field(default_factory=list)
    unmatched_gt: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    ambiguous: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per file that is not part of a pair (unmatched or ambiguous)."""
        lines = [f'unmatched input (no clean image): {p}' for p in self.unmatched_lq]
        lines += [f'unmatched clean image (no input): {p}' for p in self.unmatched_gt]
        lines += [f'ambiguous (same name, several extensions): {p}' for p in self.ambiguous]
        return lines

    def __len__(self) -> int:
        return len(self.pairs)


# ----------------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------------
_UNSAFE = re.compile(r'[^A-Za-z0-9_-]+')


def safe_key(name: str) -> str:
    """Map a relative name to an LMDB-safe ASCII key (``[A-Za-z0-9_-]``), injectively.

    Names that are already safe are kept. Others are transliterated (``é`` -> ``e``), unsafe runs become ``_``
    and an 8-digit hash of the original name is appended, so ``a b`` and ``a_b`` stay distinct.

    Args:
        name: Name without extension; may contain ``/`` (sub-folders), dots, spaces, any Unicode.

    Returns:
        The key.
    """
    if name and not _UNSAFE.search(name):
        return name
    ascii_name = unicodedata.normalize('NFKD', name).encode('ascii', 'ignore').decode('ascii')
    base = _UNSAFE.sub('_', ascii_name).strip('_')[:80] or 'img'
    digest = hashlib.sha1(name.encode('utf-8', 'surrogatepass')).hexdigest()[:8]
    return f'{base}_{digest}'


def _split_ext(filename: str) -> tuple[str, str]:
    stem, ext = os.path.splitext(filename)
    return stem, ext.lower()


def _list_images(folder: str, ignored: list[str], ambiguous: list[str]) -> dict[str, str]:
    """``{stem: path}`` of the images directly in ``folder``; hidden files are skipped silently."""
    by_stem: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: natural_key(e.name)):
        if entry.name.startswith('.') or not entry.is_file():
            continue
        stem, ext = _split_ext(entry.name)
        if ext not in IMAGE_EXTENSIONS:
            ignored.append(entry.path)
            continue
        by_stem.setdefault(stem, []).append(entry.path)
    images = {}
    for stem, paths in by_stem.items():
        if len(paths) > 1:
            ambiguous.extend(paths)
        else:
            images[stem] = paths[0]
    return images


def _require_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise LayoutError(f'{what}: folder not found: {path}')
    return path


def _split_root(root: str, split: str | None, candidates: tuple[str, ...], markers: tuple[str, ...]) -> str:
    """``root/<first existing candidate>``; ``root`` itself when it holds the ``markers`` (already a split)."""
    if split is None:
        return root
    for name in candidates:
        if os.path.isdir(os.path.join(root, name)):
            return os.path.join(root, name)
    if all(os.path.isdir(os.path.join(root, m)) for m in markers):
        return root
    raise LayoutError(f'split: no folder {" or ".join(candidates)} under {root}')


# ----------------------------------------------------------------------------------------------------------------
# Layouts
# ----------------------------------------------------------------------------------------------------------------
def _replace_last_word(stem: str, token: str, new: str) -> str | None:
    """``stem`` with its last whole-word ``token`` replaced by ``new``, or None: 'pie-rd-rain-1' -> 'pie-norain-1'."""
    matches = list(re.finditer(rf'(?<![A-Za-z0-9]){re.escape(token)}(?![A-Za-z0-9])', stem))
    if not matches:
        return None
    m = matches[-1]
    return stem[: m.start()] + new + stem[m.end() :]


def rainds_clean_stems(stem: str, folder: str) -> list[str]:
    """RainDS: clean stems for an input of ``folder`` (``raindrop``, ``rainstreak``, ``rainstreak_raindrop``).

    The folder's token becomes ``norain`` (RainDS_syn); RainDS_real uses the same name in ``gt/``.
    """
    replaced = _replace_last_word(stem, RAINDS_TOKENS[folder], 'norain')
    return [replaced, stem] if replaced else [stem]


def rain200_clean_stem(stem: str) -> str:
    """Rain200H/L, Rain100H/L: ``norain-1x2`` -> ``norain-1``."""
    return stem[:-2] if stem.lower().endswith('x2') else stem


def agan_clean_stem(stem: str) -> str:
    """Raindrop (AttentiveGAN): ``7_rain`` -> ``7_clean``."""
    return re.sub(r'_rain$', '_clean', stem)


def clean_stem_candidates(stem: str) -> list[str]:
    """Every layout's guess at the clean stem for an input (or prediction) named ``stem``, most specific first."""
    out = [stem, rain200_clean_stem(stem), agan_clean_stem(stem)]
    for folder in sorted(RAINDS_TOKENS, key=lambda f: -len(RAINDS_TOKENS[f])):  # 'rd-rain' before 'rd', 'rain'
        out += rainds_clean_stems(stem, folder)
    return list(dict.fromkeys(out))


def _scan_rainds(root: str, split: str | None, subset: str | None, scan: PairScan) -> None:
    subset = subset or 'all'
    if subset not in RAINDS_SUBSETS:
        raise LayoutError(f'subset: {subset!r} is not one of {", ".join(RAINDS_SUBSETS)} (layout rainds)')
    base = _split_root(root, split, (split, f'{split}_set') if split else (), ('gt', 'raindrop'))
    scan.root = base
    gts = _list_images(_require_dir(os.path.join(base, 'gt'), 'rainds gt'), scan.ignored, scan.ambiguous)
    used: set[str] = set()
    codes = ['rd', 'rs', 'rsrd'] if subset == 'all' else [subset]
    for code in codes:
        folder = RAINDS_FOLDERS[code]
        lqs = _list_images(_require_dir(os.path.join(base, folder), f'rainds {folder}'), scan.ignored, scan.ambiguous)
        for stem, lq_path in lqs.items():
            gt_stem = next((c for c in rainds_clean_stems(stem, folder) if c in gts), None)
            if gt_stem is None:
                scan.unmatched_lq.append(lq_path)
                continue
            used.add(gt_stem)
            # The three folders share clean images (and RainDS_real shares names): the folder code keeps keys unique.
            scan.pairs.append(Pair(lq_path, gts[gt_stem], safe_key(f'{code}-{stem}')))
    scan.unmatched_gt.extend(p for s, p in gts.items() if s not in used)


def _match(lqs: dict[str, str], gts: dict[str, str], clean_stem, key_of, scan: PairScan) -> None:
    """Pair inputs with clean images by a one-to-one naming rule; record what stays unmatched."""
    used = set()
    for stem, lq_path in lqs.items():
        gt_stem = clean_stem(stem)
        if gt_stem not in gts:
            scan.unmatched_lq.append(lq_path)
            continue
        used.add(gt_stem)
        scan.pairs.append(Pair(lq_path, gts[gt_stem], safe_key(key_of(stem))))
    scan.unmatched_gt.extend(p for s, p in gts.items() if s not in used)


def _scan_rain200(root: str, split: str | None, scan: PairScan) -> None:
    base = _split_root(root, split, (split,) if split else (), ('rain', 'norain'))
    scan.root = base
    rain_dir = _require_dir(os.path.join(base, 'rain'), 'rain200 rain')
    if os.path.isdir(os.path.join(rain_dir, 'X2')):
        rain_dir = os.path.join(rain_dir, 'X2')
    gts = _list_images(_require_dir(os.path.join(base, 'norain'), 'rain200 norain'), scan.ignored, scan.ambiguous)
    _match(_list_images(rain_dir, scan.ignored, scan.ambiguous), gts, rain200_clean_stem, lambda stem: stem, scan)


def _scan_agan(root: str, split: str | None, scan: PairScan) -> None:
    names = {'test': ('test_a', 'test')}.get(split, (split,)) if split else ()
    base = _split_root(root, split, names, ('data', 'gt'))
    scan.root = base
    gts = _list_images(_require_dir(os.path.join(base, 'gt'), 'agan gt'), scan.ignored, scan.ambiguous)
    lqs = _list_images(_require_dir(os.path.join(base, 'data'), 'agan data'), scan.ignored, scan.ambiguous)
    _match(lqs, gts, agan_clean_stem, lambda stem: re.sub(r'_rain$', '', stem), scan)


def _scan_paired(root: str, lq_dir: str | None, gt_dir: str | None, template: str | None, scan: PairScan) -> None:
    template = template or '{}'
    if template.count('{}') != 1 or re.search(r'\{[^}]', template):
        raise LayoutError(f"template: {template!r} must contain exactly one '{{}}' (e.g. '{{}}_rain')")
    lq_root = _require_dir(os.path.join(root, lq_dir or 'lq'), 'lq_dir')
    gt_root = _require_dir(os.path.join(root, gt_dir or 'gt'), 'gt_dir')
    gts = _list_images(gt_root, scan.ignored, scan.ambiguous)
    lqs = _list_images(lq_root, scan.ignored, scan.ambiguous)
    used = set()
    for gt_stem, gt_path in gts.items():
        lq_stem = template.format(gt_stem)
        if lq_stem not in lqs:
            scan.unmatched_gt.append(gt_path)
            continue
        used.add(lq_stem)
        scan.pairs.append(Pair(lqs[lq_stem], gt_path, safe_key(gt_stem)))
    scan.unmatched_lq.extend(p for s, p in lqs.items() if s not in used)
    scan.pairs.sort(key=lambda p: natural_key(os.path.basename(p.lq_path)))


def find_pairs(
    layout: str,
    root: str,
    split: str | None = None,
    subset: str | None = None,
    lq_dir: str | None = None,
    gt_dir: str | None = None,
    template: str | None = None,
) -> PairScan:
    """Scan a dataset folder and match every input image with its clean image.

    Args:
        layout: One of :data:`LAYOUTS`.
        root: Dataset folder.
        split: ``train`` / ``test`` (``agan``: also ``test_a``, ``test_b``); ``None`` scans ``root`` itself.
        subset: ``rainds`` only: ``rs``, ``rd``, ``rsrd`` or ``all`` (default).
        lq_dir: ``paired`` only: input folder, relative to ``root`` or absolute (default ``lq``).
        gt_dir: ``paired`` only: clean folder (default ``gt``).
        template: ``paired`` only: input stem from clean stem, e.g. ``'{}_rain'`` (default ``'{}'``).

    Returns:
        The matched pairs and every file left out, by name.

    Raises:
        LayoutError: Unknown layout, an option that does not apply to it, or a missing folder.
    """
    if layout not in LAYOUTS:
        raise LayoutError(f'layout: {layout!r} is not one of {", ".join(LAYOUTS)}')
    if not os.path.isdir(root):
        raise LayoutError(f'input: folder not found: {root}')
    if subset is not None and layout != 'rainds':
        raise LayoutError(f'subset: only the rainds layout has subsets (got layout {layout})')
    if (lq_dir or gt_dir or template) and layout != 'paired':
        raise LayoutError(f'lq_dir/gt_dir/template: only for the paired layout (got layout {layout})')
    scan = PairScan(layout=layout, root=root)
    if layout == 'rainds':
        _scan_rainds(root, split, subset, scan)
    elif layout == 'rain200':
        _scan_rain200(root, split, scan)
    elif layout == 'agan':
        _scan_agan(root, split, scan)
    else:
        _scan_paired(os.path.join(root, split) if split else root, lq_dir, gt_dir, template, scan)
    keys = [p.key for p in scan.pairs]
    if len(set(keys)) != len(keys):  # only possible with the paired template mapping two stems to one key
        dup = next(k for k in keys if keys.count(k) > 1)
        raise LayoutError(f'duplicate key {dup!r} in {scan.root}')
    return scan
