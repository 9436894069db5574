"""Pairing a folder of predictions with ground truth, rainy inputs, uncertainty maps and rain masks, by file name.

Predictions are paired with ground truth by file stem: the exact stem first, then the dataset naming rules of
:mod:`s2former_plugin.data.layouts` (``norain-1x2`` -> ``norain-1``, ``7_rain`` -> ``7_clean``, ``rd-rain-3`` ->
``norain-3``...). Every other file is found by the prediction's own stem (:func:`own_file`). Used by
``python -m s2former_plugin.report`` and the uncertainty evaluation (:mod:`.uncertainty_eval`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..data.layouts import clean_stem_candidates
from ..errors import CommandError
from ..imageio import IMAGE_EXTENSIONS, list_images

__all__ = [
    'MASK_SUFFIXES',
    'MISSING_KINDS',
    'UNCERTAINTY_SUFFIXES',
    'ImagePair',
    'PairingError',
    'files_by_stem',
    'own_file',
    'shared_ground_truth',
    'gt_stem_candidates',
    'pair_images',
    'collect_pairs',
]


# missing kind -> (what is listed, meaning)
MISSING_KINDS = {
    'no_ground_truth': 'prediction(s) without ground truth',
    'no_prediction_for_ground_truth': 'ground-truth image(s) without a prediction',
    'no_input': 'prediction(s) without a rainy input',
    'no_prediction_for_input': 'input image(s) without a prediction',
}
#: Name endings of a prediction's uncertainty map (``<stem>``, ``<stem>_uncertainty``, ``<stem>_unc``) and rain mask.
UNCERTAINTY_SUFFIXES = ('', '_uncertainty', '_unc')
MASK_SUFFIXES = ('', '_mask')


@dataclass(frozen=True)
class ImagePair:
    """A prediction with its ground truth, rainy input, uncertainty map and rain mask (each optional); ``name``: the
    prediction's stem."""

    name: str
    pred: str
    gt: str | None = None
    input: str | None = None
    uncertainty: str | None = None
    mask: str | None = None


class PairingError(CommandError):
    """The files cannot be paired unambiguously (the message names them)."""


def files_by_stem(folder: str, option: str, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, str]:
    """``{stem: path}`` of the files :func:`list_images` lists (images, or the given ``extensions``).

    Args:
        folder: The folder scanned.
        option: The command-line option that named it (for the messages).
        extensions: Lower-case extensions of the files listed.

    Raises:
        PairingError: The folder is missing, or two files share a stem (``1.png`` and ``1.jpg``): which one is
            meant cannot be told.
    """
    if not os.path.isdir(folder):
        raise PairingError(f'{option}: folder not found: {folder}')
    out: dict[str, str] = {}
    clashes: list[str] = []
    for path in list_images(folder, extensions):
        stem = os.path.splitext(os.path.basename(path))[0]
        if stem in out:
            clashes.append(f'{os.path.basename(out[stem])} and {os.path.basename(path)}')
        out.setdefault(stem, path)
    if clashes:
        raise PairingError(
            f'{option}: {len(clashes)} name(s) in {folder} differ only by extension ({"; ".join(clashes[:3])}): '
            'keep one file per image'
        )
    return out


def shared_ground_truth(pairs: list[ImagePair]) -> dict[str, list[str]]:
    """``{ground-truth path: [prediction names]}`` for ground-truth images paired with more than one prediction."""
    by_gt: dict[str, list[str]] = {}
    for p in pairs:
        if p.gt:
            by_gt.setdefault(p.gt, []).append(p.name)
    return {gt: names for gt, names in by_gt.items() if len(names) > 1}


def gt_stem_candidates(stem: str) -> list[str]:
    """Ground-truth stems a prediction named ``stem`` may correspond to, most specific first.

    The exact stem, then the dataset layouts' naming rules (``layouts.clean_stem_candidates``): Rain100/200
    (``norain-1x2`` -> ``norain-1``), Raindrop/AGAN (``7_rain`` -> ``7_clean``), RainDS (the last whole-word
    ``rd-rain``/``rd``/``rain`` -> ``norain``).
    """
    return clean_stem_candidates(stem)


def _without_image_ext(stem: str) -> list[str]:
    """``[stem]``, then ``stem`` without an image extension (``a.png`` -> ``a``).

    ``python -m s2former_plugin.infer`` names its outputs ``<name>.png`` (``a.png.png``, ``a.jpg.png``; TIFF for
    float images) when two inputs share a stem: their stems are ``a.png``/``a.jpg``, the originals' ``a``.
    """
    root, ext = os.path.splitext(stem)
    return [stem, root] if root and ext.lower() in IMAGE_EXTENSIONS else [stem]


def _candidates(stem: str) -> list[str]:
    """:func:`gt_stem_candidates` of ``stem``, then of ``stem`` without an image extension."""
    out: list[str] = []
    for s in _without_image_ext(stem):
        out += [c for c in gt_stem_candidates(s) if c not in out]
    return out


def _base(stem: str, pred_suffix: str | None) -> str:
    return stem[: -len(pred_suffix)] if pred_suffix and stem.endswith(pred_suffix) else stem


def pair_images(pred_dir: str, gt_dir: str, pred_suffix: str | None = None) -> tuple[list[ImagePair], list[str]]:
    """Pair every prediction in ``pred_dir`` with a ground-truth image in ``gt_dir``.

    Args:
        pred_dir: Folder of restored images.
        gt_dir: Folder of ground-truth images.
        pred_suffix: Suffix to strip from prediction stems first (basicsr saves ``<name>_<suffix>.png``).
            A second image extension (``a.png.png``, as infer writes for inputs sharing a stem) is stripped too.

    Returns:
        The pairs (natural order of names) and the prediction paths without ground truth.
    """
    pairs, missing = collect_pairs(pred_dir, gt_dir, pred_suffix=pred_suffix)
    return pairs, missing.get('no_ground_truth', [])


def own_file(files: dict[str, str], stem: str, pred_suffix: str | None, suffixes: tuple[str, ...]) -> str | None:
    """The file of ``files`` (``{stem: path}``) that belongs to the prediction named ``stem``, or ``None``.

    Tried in order: ``stem``, then ``stem`` without ``pred_suffix`` and without a second image extension, each
    with every ending of ``suffixes`` (e.g. :data:`UNCERTAINTY_SUFFIXES`).
    """
    for s in [stem, *_without_image_ext(_base(stem, pred_suffix))]:
        for suffix in suffixes:
            if s + suffix in files:
                return files[s + suffix]
    return None


def collect_pairs(
    pred_dir: str,
    gt_dir: str | None = None,
    input_dir: str | None = None,
    unc_dir: str | None = None,
    pred_suffix: str | None = None,
    allow_shared_gt: bool = False,
) -> tuple[list[ImagePair], dict[str, list[str]]]:
    """Pair every prediction with its ground truth, rainy input and uncertainty map, each folder optional.

    Ground truth is found by :func:`gt_stem_candidates`; inputs and uncertainty maps (:data:`UNCERTAINTY_SUFFIXES`)
    by the prediction's own stem (after ``pred_suffix`` and a second image extension are stripped; :func:`own_file`).
    Without ``gt_dir`` every prediction is kept. A ground-truth image that two predictions pair with (RainDS's
    raindrop, streak and both-rain images share one clean image) is refused unless ``allow_shared_gt``: one mean over
    several test sets is not the score of any of them.

    Raises:
        PairingError: A folder is missing, names in a folder differ only by extension, or predictions share a
            ground truth.

    Returns:
        The pairs (natural order of names) and ``{kind: paths}`` of the images left alone, for the kinds of
        :data:`MISSING_KINDS` that apply (empty lists included): predictions without ground truth or input, and
        ground-truth or input images no prediction was paired with.
    """
    preds = files_by_stem(pred_dir, '--pred')
    gts = files_by_stem(gt_dir, '--gt') if gt_dir else {}
    inputs = files_by_stem(input_dir, '--input') if input_dir else {}
    uncs = files_by_stem(unc_dir, '--uncertainty') if unc_dir else {}
    missing: dict[str, list[str]] = {}
    if gt_dir:
        missing['no_ground_truth'], missing['no_prediction_for_ground_truth'] = [], []
    if input_dir:
        missing['no_input'], missing['no_prediction_for_input'] = [], []
    pairs, used_gt, used_input = [], set(), set()
    for stem, path in preds.items():
        base = _base(stem, pred_suffix)
        gt = inp = None
        if gt_dir:
            gt_stem = next((c for c in _candidates(base) if c in gts), None)
            if gt_stem is None:
                missing['no_ground_truth'].append(path)
                continue
            gt = gts[gt_stem]
            used_gt.add(gt_stem)
        if input_dir:
            in_stem = next((c for c in _without_image_ext(base) if c in inputs), None)
            if in_stem is None:
                missing['no_input'].append(path)
            else:
                inp = inputs[in_stem]
                used_input.add(in_stem)
        pairs.append(ImagePair(stem, path, gt, inp, own_file(uncs, stem, pred_suffix, UNCERTAINTY_SUFFIXES)))
    shared = shared_ground_truth(pairs)
    if shared and not allow_shared_gt:
        gt, names = next(iter(shared.items()))
        raise PairingError(
            f'--gt: {len(shared)} ground-truth image(s) pair with several predictions (e.g. {os.path.basename(gt)}: '
            f'{", ".join(names)}); score one test set per run, or pass --allow-shared-gt'
        )
    if gt_dir:
        missing['no_prediction_for_ground_truth'] = [p for s, p in gts.items() if s not in used_gt]
    if input_dir:
        missing['no_prediction_for_input'] = [p for s, p in inputs.items() if s not in used_input]
    return pairs, missing
