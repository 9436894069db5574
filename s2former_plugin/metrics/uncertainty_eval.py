"""Scoring a folder of raw uncertainty maps: pairing them with predictions, ground truth and rain masks by file stem,
reading them, per-image rows, set means and mean sparsification curves, and the files a report writes from them.

Raw maps are what ``python -m s2former_plugin.infer --save-uncertainty`` writes beside the colour PNGs:
``<name>.npz`` with float32 arrays ``final``, ``full``, ``half``, ``quarter``, ``eighth`` (:data:`.uncertainty.SCALES`),
each ``C x h x w`` (``C = 3``: one map per RGB channel; scale ``1/s`` is ``ceil(H/s) x ceil(W/s)``). A ``.npy`` file
holding one ``H x W`` or ``C x H x W`` map is accepted too. Colour-mapped PNGs are refused: their 8-bit,
per-image-stretched values are not the network's.

Pairing: predictions with ground truth by :func:`.pairing.collect_pairs` (the dataset naming rules), then maps and
masks by the prediction's own stem (``<stem>``, ``<stem>_uncertainty``, ``<stem>_unc``; masks ``<stem>`` or
``<stem>_mask``). An image whose map or mask is missing, of another size, non-finite or constant is an error named
in :attr:`UncertaintyEvaluation.errors`; the set's means are then labelled as the means of the scored images only
(``mean_of_scored``), never as the set's.

Integration: ``report`` and validation call :func:`evaluate_uncertainty` (folders) or feed
:class:`UncertaintyAccumulator` (arrays in memory), then write :meth:`UncertaintyEvaluation.summary` into
metrics.json, :func:`write_csv` and :func:`plot_curves`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .uncertainty import (
    DEFAULT_SCALE,
    DEFAULT_STEPS,
    SCALES,
    UncertaintyError,
    error_map,
    fractions,
    score_uncertainty,
)

__all__ = [
    'MAP_EXTENSIONS',
    'MEASURES',
    'SCALE_FACTORS',
    'MapPair',
    'UncertaintyAccumulator',
    'UncertaintyEvaluation',
    'evaluate_uncertainty',
    'load_raw_maps',
    'map_at_image_size',
    'pair_maps',
    'plot_curves',
    'raw_map_name',
    'read_map',
    'read_mask',
    'save_raw_maps',
    'write_csv',
]

#: Raw map files (``.npz``: the five named scales; ``.npy``: one map).
MAP_EXTENSIONS = ('.npz', '.npy')
#: Downscale factor of each scale.
SCALE_FACTORS = {'final': 1, 'full': 1, 'half': 2, 'quarter': 4, 'eighth': 8}
#: The per-image measures, in column order (detection measures only where masks are given).
MEASURES = ('spearman', 'ause', 'aurg', 'mean_error', 'auroc', 'average_precision')


# ----------------------------------------------------------------------------------------------------------------
# The raw map files
# ----------------------------------------------------------------------------------------------------------------
def raw_map_name(image_name: str) -> str:
    """The raw map file of an output image: ``a.png`` -> ``a.npz`` (``a.png.png`` -> ``a.png.npz``)."""
    return os.path.splitext(image_name)[0] + '.npz'


def save_raw_maps(path: str, maps: dict[str, np.ndarray]) -> None:
    """Write ``{scale: C x h x w}`` maps as float32 arrays into ``path`` (``.npz``; written whole, then renamed).

    Raises:
        ValueError: a scale name that is not one of :data:`SCALES`.
    """
    unknown = sorted(set(maps) - set(SCALES))
    if unknown:
        raise ValueError(f'unknown uncertainty scale {unknown[0]!r}; expected {", ".join(SCALES)}')
    tmp = f'{path}.part'
    with open(tmp, 'wb') as f:
        np.savez(f, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in maps.items()})
    os.replace(tmp, path)


def load_raw_maps(path: str) -> dict[str, np.ndarray]:
    """``{scale: float32 array}`` of a ``.npz`` raw map file (``allow_pickle=False``).

    Raises:
        UncertaintyError: missing, unreadable or not a file of named float arrays (the message names it).
    """
    if not os.path.isfile(path):
        raise UncertaintyError(f'{path}: uncertainty map not found')
    try:
        with np.load(path, allow_pickle=False) as z:
            maps = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - zip, pickle and format errors come in many types
        first = (str(exc).strip().splitlines() or [''])[0][:160]
        raise UncertaintyError(f'{path}: cannot read uncertainty maps ({type(exc).__name__}: {first})') from None
    for k, v in maps.items():
        if v.dtype.kind != 'f':
            raise UncertaintyError(f'{path}: map {k!r} is {v.dtype}, not float (raw maps are float32)')
    return maps


def read_map(path: str, scale: str = DEFAULT_SCALE) -> np.ndarray:
    """One raw map: the ``scale`` array of a ``.npz`` file, or the array of a ``.npy`` file (one map, any scale).

    Raises:
        UncertaintyError: an image file (a colour map is not a measurement), an unknown or absent scale, or an
            unreadable file.
    """
    if scale not in SCALES:
        raise UncertaintyError(f'scale: {scale!r} is not one of {", ".join(SCALES)}')
    ext = os.path.splitext(path)[1].lower()
    if ext == '.npz':
        maps = load_raw_maps(path)
        if scale not in maps:
            raise UncertaintyError(f'{path}: no {scale!r} map (holds {", ".join(sorted(maps)) or "nothing"})')
        return maps[scale]
    if ext == '.npy':
        if not os.path.isfile(path):
            raise UncertaintyError(f'{path}: uncertainty map not found')
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise UncertaintyError(f'{path}: cannot read uncertainty map ({type(exc).__name__})') from None
        if arr.dtype.kind != 'f':
            raise UncertaintyError(f'{path}: map is {arr.dtype}, not float')
        return arr
    raise UncertaintyError(
        f'{path}: not a raw uncertainty map (.npz/.npy); colour-mapped pictures are not measured: '
        'infer --save-uncertainty writes <name>.npz beside them'
    )


def map_at_image_size(u: np.ndarray, scale: str, size: tuple[int, int], name: str = '') -> np.ndarray:
    """``u`` (``C x h x w`` or ``h x w``) at the image's ``size = (H, W)``: a ``1/s`` scale map must be
    ``ceil(H/s) x ceil(W/s)`` and is repeated ``s x s`` (nearest), each of its pixels standing for its block.

    Raises:
        UncertaintyError: the map's size does not fit the image at that scale (naming ``name``).
    """
    s = SCALE_FACTORS[scale]
    h, w = size
    want = (-(-h // s), -(-w // s))
    if u.ndim not in (2, 3) or u.shape[-2:] != want:
        got = f'{u.shape[-1]}x{u.shape[-2]}' if u.ndim in (2, 3) else f'of shape {u.shape}'
        raise UncertaintyError(
            f'{name}: {scale} uncertainty map is {got}, expected {want[1]}x{want[0]} for a {w}x{h} image'
        )
    if s > 1:
        u = np.repeat(np.repeat(u, s, axis=-2), s, axis=-1)[..., :h, :w]
    return u


def read_mask(path: str) -> np.ndarray:
    """A rain mask image as ``H x W`` bool (any non-zero pixel, in any channel, is rain).

    Raises:
        UncertaintyError: unreadable (the message names the file).
    """
    from .. import imageio

    try:
        m = imageio.read(path)
    except ValueError as exc:
        raise UncertaintyError(f'rain mask: {exc}') from None
    return (m.max(axis=2) if m.ndim == 3 else m) > 0


# ----------------------------------------------------------------------------------------------------------------
# Pairing
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MapPair:
    """A prediction with its ground truth and, when found, its raw uncertainty map and rain mask."""

    name: str
    pred: str
    gt: str
    uncertainty: str | None
    mask: str | None = None


def _by_stem(folder: str, extensions: tuple[str, ...], option: str) -> dict[str, str]:
    if not os.path.isdir(folder):
        raise UncertaintyError(f'{option}: folder not found: {folder}')
    out: dict[str, str] = {}
    for entry in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(entry)
        if ext.lower() in extensions and os.path.isfile(os.path.join(folder, entry)):
            if stem in out:
                raise UncertaintyError(
                    f'{option}: {os.path.basename(out[stem])} and {entry} in {folder} differ only by extension'
                )
            out[stem] = os.path.join(folder, entry)
    return out


def _own_stems(name: str, pred_suffix: str | None) -> list[str]:
    base = name[: -len(pred_suffix)] if pred_suffix and name.endswith(pred_suffix) else name
    root, ext = os.path.splitext(base)
    return [name, base] + ([root] if root and ext else [])


def pair_maps(
    unc_dir: str,
    pred_dir: str,
    gt_dir: str,
    mask_dir: str | None = None,
    pred_suffix: str | None = None,
) -> tuple[list[MapPair], dict[str, list[str]]]:
    """Pair every prediction with ground truth, a raw map and (with ``mask_dir``) a rain mask.

    Returns:
        The pairs (``uncertainty``/``mask`` ``None`` where none was found) and ``{kind: paths}``:
        ``no_ground_truth`` (predictions left out: nothing to measure errors against) and ``unused_maps`` (maps
        no prediction claimed).

    Raises:
        UncertaintyError: a folder is missing, or two files differ only by extension.
        PairingError: from :func:`.pairing.collect_pairs`.
    """
    from ..imageio import IMAGE_EXTENSIONS
    from .pairing import collect_pairs

    maps = _by_stem(unc_dir, MAP_EXTENSIONS, '--uncertainty')
    masks = _by_stem(mask_dir, tuple(IMAGE_EXTENSIONS), '--masks') if mask_dir else {}
    pairs, missing = collect_pairs(pred_dir, gt_dir, pred_suffix=pred_suffix)
    out, used = [], set()
    for p in pairs:
        stems = _own_stems(p.name, pred_suffix)
        unc = next((maps[c] for s in stems for c in (s, f'{s}_uncertainty', f'{s}_unc') if c in maps), None)
        mask = next((masks[c] for s in stems for c in (s, f'{s}_mask') if c in masks), None)
        used.add(unc)
        out.append(MapPair(p.name, p.pred, p.gt, unc, mask))
    return out, {
        'no_ground_truth': missing.get('no_ground_truth', []),
        'unused_maps': [m for m in maps.values() if m not in used],
    }


# ----------------------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class UncertaintyEvaluation:
    """Uncertainty measures of one set: per-image rows and curves, errors, and honest set means.

    ``per_image``: ``{name: {measure: value}}`` of the scored images; ``curves``: ``{name: {ours, oracle,
    random}}`` on :attr:`fractions`; ``errors``: ``{name: reason}`` of the images that could not be scored.
    """

    scale: str = DEFAULT_SCALE
    protocol: str = 'standard'
    crop_border: int = 0
    steps: int = DEFAULT_STEPS
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)

    @property
    def fractions(self) -> list[float]:
        return fractions(self.steps).tolist()

    @property
    def n_images(self) -> int:
        """Images of the set: scored plus refused."""
        return len(self.per_image) + len(self.errors)

    @property
    def complete(self) -> bool:
        """Every image of the set was scored (so the means are the set's)."""
        return bool(self.per_image) and not self.errors

    @property
    def columns(self) -> list[str]:
        return [m for m in MEASURES if any(m in row for row in self.per_image.values())]

    def mean(self) -> dict[str, float]:
        """Mean of each measure over the scored images (a measure only where every scored image has it).

        Raises:
            UncertaintyError: some scored images have detection scores and others not (masks for part of the set).
        """
        out = {}
        for m in self.columns:
            vals = [row[m] for row in self.per_image.values() if m in row]
            if len(vals) != len(self.per_image):
                raise UncertaintyError(
                    f'{m}: {len(vals)} of {len(self.per_image)} scored images have it; give every image a rain mask'
                )
            out[m] = float(np.mean(vals))
        return out

    def mean_curves(self) -> dict[str, list[float]]:
        """The scored images' curves averaged point by point (the mean AUSE is the area of these, the area being
        linear)."""
        if not self.curves:
            return {}
        keys = ('ours', 'oracle', 'random')
        return {
            'fractions': self.fractions,
            **{k: np.mean([c[k] for c in self.curves.values()], 0).tolist() for k in keys},
        }

    def summary(self) -> dict[str, Any]:
        """The ``uncertainty`` entry of metrics.json.

        ``mean`` and ``curves`` when every image was scored; otherwise ``mean_of_scored`` and
        ``curves_of_scored`` with ``scored`` < ``images`` and the ``errors`` (a subset's mean is never the set's).
        """
        tag = '' if self.complete else '_of_scored'
        out: dict[str, Any] = {
            'scale': self.scale,
            'protocol': self.protocol,
            'crop_border': self.crop_border,
            'error': 'abs(Y(output) - Y(gt)), 0-1 scale',
            'images': self.n_images,
            'scored': len(self.per_image),
            'complete': self.complete,
        }
        if self.per_image:
            out[f'mean{tag}'] = self.mean()
            out[f'curves{tag}'] = self.mean_curves()
        out['per_image'] = self.per_image
        if self.errors:
            out['errors'] = self.errors
        if any(self.missing.values()):
            out['missing'] = {k: v for k, v in self.missing.items() if v}
        return out

    def line(self) -> str:
        """One printable line: the means (labelled as the scored images' when some were refused)."""
        if not self.per_image:
            return f'uncertainty ({self.scale}): no image scored ({len(self.errors)} refused)'
        means = ', '.join(f'{k} {v:.4f}' for k, v in self.mean().items())
        who = (
            f'mean of {len(self.per_image)} images'
            if self.complete
            else f'mean of the {len(self.per_image)} scored of {self.n_images} images ({len(self.errors)} refused)'
        )
        return f'uncertainty ({self.scale}, {who}): {means}'


class UncertaintyAccumulator:
    """Collects images one by one (validation, or anything holding arrays) into an :class:`UncertaintyEvaluation`.

    Args:
        scale: Which scale the maps given to :meth:`add` are (recorded; see :func:`map_at_image_size`).
        protocol: Y channel of ``standard`` or ``official`` (:func:`.uncertainty.error_map`).
        crop_border: Border cut before measuring.
        steps: Sparsification steps.
        strict: Raise on the first bad image instead of recording it in ``errors``.
    """

    def __init__(
        self,
        scale: str = DEFAULT_SCALE,
        protocol: str = 'standard',
        crop_border: int = 0,
        steps: int = DEFAULT_STEPS,
        strict: bool = False,
    ) -> None:
        if scale not in SCALES:
            raise UncertaintyError(f'scale: {scale!r} is not one of {", ".join(SCALES)}')
        self.strict = strict
        self.result = UncertaintyEvaluation(scale, protocol, crop_border, steps)

    def refuse(self, name: str, reason: str) -> None:
        """Record an image that cannot be scored (raises instead when ``strict``)."""
        if self.strict:
            raise UncertaintyError(reason)
        self.result.errors[name] = reason

    def add(
        self,
        name: str,
        uncertainty: Any,
        pred: Any,
        gt: Any,
        mask: Any = None,
        channel_order: str = 'bgr',
        files: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        """Score one image; a bad one is recorded in ``errors`` (or raises when ``strict``).

        Args:
            name: The image's name (unique in the set).
            uncertainty: Its map at the image's size, ``H x W`` or ``C x H x W`` (tensor or array).
            pred: The restored image (numpy ``H x W x C`` in ``channel_order``, or an RGB tensor ``[1 x] C x H x W``).
            gt: Its ground truth.
            mask: Rain mask at the image's size (non-zero: rain), or ``None``.
            channel_order: Channel order of numpy images.
            files: ``(prediction, map, mask)`` file names for the messages (default: ``name`` for each).
        """
        r = self.result
        if name in r.per_image or name in r.errors:
            raise UncertaintyError(f'{name}: given twice')
        pred_file, map_file, mask_file = (f or name for f in (files or (None, None, None)))
        try:
            err = error_map(pred, gt, r.protocol, r.crop_border, channel_order, pred_file)
            scores = score_uncertainty(uncertainty, err, mask, r.steps, r.crop_border, map_file, mask_file)
        except UncertaintyError as exc:
            self.refuse(name, str(exc))
            return
        r.per_image[name] = scores.row()
        r.curves[name] = {k: scores.curves[k] for k in ('ours', 'oracle', 'random')}


def evaluate_uncertainty(
    unc_dir: str,
    pred_dir: str,
    gt_dir: str,
    mask_dir: str | None = None,
    scale: str = DEFAULT_SCALE,
    protocol: str = 'standard',
    crop_border: int = 0,
    steps: int = DEFAULT_STEPS,
    pred_suffix: str | None = None,
    strict: bool = False,
) -> UncertaintyEvaluation:
    """Score the raw maps of a folder against the errors of the predictions (and against rain masks).

    Args:
        unc_dir: Folder of raw maps (``infer --save-uncertainty``'s ``OUTPUT/uncertainty``).
        pred_dir: Folder of predictions (``infer``'s ``OUTPUT``).
        gt_dir: Folder of ground truth.
        mask_dir: Folder of rain masks (``synthetic_rain --masks``'s ``OUT/mask``), or ``None``: no detection scores.
        scale: The scale scored (default ``final``, the map at the output's size).
        protocol: Y channel of the ``standard`` or ``official`` protocol.
        crop_border: Border cut before measuring.
        steps: Sparsification steps.
        pred_suffix: Suffix stripped from prediction stems (basicsr's ``<name>_<suffix>.png``).
        strict: Raise :class:`UncertaintyError` on the first bad image instead of recording it.

    Returns:
        The evaluation; a prediction without a map (or, with ``mask_dir``, without a mask) is an error.
    """
    from .scoring import read_image

    acc = UncertaintyAccumulator(scale, protocol, crop_border, steps, strict)
    pairs, missing = pair_maps(unc_dir, pred_dir, gt_dir, mask_dir, pred_suffix)
    acc.result.missing = missing
    for p in pairs:
        if p.uncertainty is None:
            acc.refuse(p.name, f'{p.pred}: no uncertainty map ({p.name}.npz) in {unc_dir}')
            continue
        if mask_dir and p.mask is None:
            acc.refuse(p.name, f'{p.pred}: no rain mask ({p.name}.png) in {mask_dir}')
            continue
        try:
            pred, gt = read_image(p.pred), read_image(p.gt)
            u = map_at_image_size(read_map(p.uncertainty, scale), scale, pred.shape[:2], p.uncertainty)
            mask = read_mask(p.mask) if p.mask else None
        except ValueError as exc:  # UncertaintyError, imageio.ImageError
            acc.refuse(p.name, str(exc))
            continue
        acc.add(p.name, u, pred, gt, mask, files=(p.pred, p.uncertainty, p.mask))
    return acc.result


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------
def write_csv(ev: UncertaintyEvaluation, path: str) -> None:
    """One row per scored image, then the mean row (``mean`` when complete, else ``mean of N scored of M``), then
    one ``refused`` row per error with its reason."""
    import csv

    cols = ev.columns
    with open(path, 'w', newline='', encoding='utf-8') as f:
        w = csv.writer(f)
        w.writerow(['image', *cols, 'note'])
        for name, row in ev.per_image.items():
            w.writerow([name, *(_fmt(row.get(c)) for c in cols), ''])
        if ev.per_image:
            means = ev.mean()
            label = 'mean' if ev.complete else f'mean of {len(ev.per_image)} scored of {ev.n_images}'
            w.writerow([label, *(_fmt(means.get(c)) for c in cols), ''])
        for name, reason in ev.errors.items():
            w.writerow([name, *([''] * len(cols)), f'refused: {reason}'])


def _fmt(v: float | None) -> str:
    return '' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.6f}'


def plot_curves(evaluations: UncertaintyEvaluation | dict[str, UncertaintyEvaluation], path: str) -> None:
    """Draw the mean sparsification curves into a PNG: per evaluation its own curve (solid), its oracle (dashed)
    and the random order (dotted), mean error of the kept pixels against the fraction removed.

    Args:
        evaluations: One evaluation, or ``{label: evaluation}`` to compare (e.g. a net, an untrained net, a
            baseline map); a label gets ``(N of M scored)`` when its set is incomplete.
        path: The PNG to write.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if isinstance(evaluations, UncertaintyEvaluation):
        evaluations = {'uncertainty': evaluations}
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for i, (label, ev) in enumerate(evaluations.items()):
        curves = ev.mean_curves()
        if not curves:
            continue
        colour = f'C{i}'
        if not ev.complete:
            label = f'{label} ({len(ev.per_image)} of {ev.n_images} scored)'
        means = ev.mean()
        ax.plot(curves['fractions'], curves['ours'], '-', color=colour, label=f'{label} (AUSE {means["ause"]:.4f})')
        ax.plot(curves['fractions'], curves['oracle'], '--', color=colour, alpha=0.7, label=f'{label}: oracle')
        ax.plot(curves['fractions'], curves['random'], ':', color=colour, alpha=0.7, label=f'{label}: random')
    ax.set_xlabel('fraction of pixels removed (most uncertain first)')
    ax.set_ylabel('mean |Y error| of the kept pixels (0-1)')
    ax.set_title('Sparsification')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
