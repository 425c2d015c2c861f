"""PCK (percentage of correct keypoints): per-joint accuracy, normalisers, AUC over alpha, evaluator.

Definitions (../shared/REFERENCE.md):

* A predicted joint is correct when ``||pred - gt|| <= alpha * normaliser`` (coordinates in image pixels).
* Joints not annotated (``mask`` False, or non-finite ground truth) are left out of numerator and denominator.
* A sample whose normaliser is zero, negative or non-finite (e.g. a missing shoulder or hip for the torso
  normaliser) is left out entirely.
* A prediction that is missing (non-finite coordinates) for an annotated joint counts as wrong.
* Per-joint accuracy is -1 for a joint with no valid sample (mmpose convention); the mean is taken over the joints
  that have at least one valid sample (0 when none has).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

NORMALISERS = ("torso", "bbox", "head")


def pck(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    thr: float,
    norm: np.ndarray,
) -> tuple[np.ndarray, float, np.ndarray]:
    """PCK per joint and mean over joints.

    Args:
        pred: Array[N, K, 2] predicted joints (x, y) in pixels; non-finite = missing prediction (counted wrong).
        gt: Array[N, K, 2] ground-truth joints in pixels.
        mask: bool Array[N, K], True where the ground-truth joint is annotated.
        thr: alpha; a joint is correct when its distance <= thr * norm.
        norm: Array[N] normaliser per sample (pixels); <= 0 or non-finite excludes the sample.

    Returns:
        ``(per_joint, mean, counts)``: ``per_joint`` float Array[K] accuracy in [0, 1], -1 where a joint has no valid
        sample; ``mean`` the average of the valid entries of ``per_joint`` (0.0 if none); ``counts`` int Array[K],
        the number of valid samples per joint.
    """
    correct, valid = _correct_and_valid(pred, gt, mask, norm, np.asarray([thr], dtype=np.float64))
    per_joint, mean, counts = _accuracy(correct[0], valid)
    return per_joint, float(mean), counts


def pck_curve(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    norm: np.ndarray,
    alphas: Sequence[float] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PCK at several alphas (shapes as in :func:`pck`).

    Returns:
        ``(alphas[A], mean[A], per_joint[A, K])``; ``alphas`` defaults to :func:`default_alphas`.
    """
    alphas = default_alphas() if alphas is None else np.asarray(alphas, dtype=np.float64).reshape(-1)
    correct, valid = _correct_and_valid(pred, gt, mask, norm, alphas)
    per_joint = np.empty((len(alphas), valid.shape[1]))
    means = np.empty(len(alphas))
    for a in range(len(alphas)):
        per_joint[a], means[a], _ = _accuracy(correct[a], valid)
    return alphas, means, per_joint


def default_alphas() -> np.ndarray:
    """0, 0.01, ..., 0.2 (21 values): the normalised-distance range of the LSP / FLIC PCK curves."""
    return np.arange(21) / 100.0


def pck_auc(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    norm: np.ndarray,
    alphas: Sequence[float] | np.ndarray | None = None,
) -> float:
    """Area under the mean-PCK-versus-alpha curve, divided by the alpha range, so that it lies in [0, 1].

    Trapezoidal rule over ``alphas`` (sorted ascending, at least two; default :func:`default_alphas`).
    Shapes as in :func:`pck`.
    """
    alphas, means, _ = pck_curve(pred, gt, mask, norm, alphas)
    if len(alphas) < 2 or not np.all(np.diff(alphas) > 0):
        raise ValueError("pck_auc needs at least two strictly increasing alphas")
    area = np.sum((alphas[1:] - alphas[:-1]) * (means[1:] + means[:-1]) / 2.0)
    return float(area / (alphas[-1] - alphas[0]))


def _correct_and_valid(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, norm: np.ndarray, alphas: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """correct bool[A, N, K] and valid bool[N, K] for every alpha."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    norm = np.asarray(norm, dtype=np.float64).reshape(-1)
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ValueError(f"pck: pred and gt must both be [N, K, 2], got {list(pred.shape)} and {list(gt.shape)}")
    if mask.shape != pred.shape[:2]:
        raise ValueError(f"pck: mask must be [N, K] = {list(pred.shape[:2])}, got {list(mask.shape)}")
    if norm.shape[0] != pred.shape[0]:
        raise ValueError(f"pck: norm must have N = {pred.shape[0]} entries, got {norm.shape[0]}")
    good_norm = np.isfinite(norm) & (norm > 0)
    valid = mask & np.isfinite(gt).all(axis=-1) & good_norm[:, None]
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(pred - gt, axis=-1) / np.where(good_norm, norm, 1.0)[:, None]  # [N, K]
        dist = np.where(np.isfinite(dist), dist, np.inf)  # missing prediction -> never correct
        correct = (dist[None] <= alphas[:, None, None]) & valid[None]
    return correct, valid


def _accuracy(correct: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    counts = valid.sum(axis=0)
    hits = correct.sum(axis=0)
    per_joint = np.where(counts > 0, hits / np.maximum(counts, 1), -1.0)
    has = counts > 0
    mean = float(per_joint[has].mean()) if has.any() else 0.0
    return per_joint, mean, counts.astype(np.int64)


def left_right_confusion(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    thr: float,
    norm: np.ndarray,
    flip_pairs: Sequence[tuple[int, int]],
) -> dict[str, float | int]:
    """How much of the PCK misses is left/right exchange (a diagnostic, not a metric).

    Args: as :func:`pck`, plus ``flip_pairs`` the (left, right) joint index pairs.

    Returns:
        ``{"mirrored_misses"}``: of the misses, the fraction within ``thr * norm`` of the mirrored joint's annotation
        (left <-> right; joints without a partner never count); ``"pooled_pck"``: the fraction of all valid joints
        that are correct (pooled over joints, unlike :func:`pck`'s mean of per-joint accuracies);
        ``"pooled_pck_best_orientation"``: the same when each person is scored with its labels as predicted or all
        exchanged, whichever gets more of its joints right (so it is >= ``pooled_pck``; exchanging only some limbs
        is not considered); ``"people_better_mirrored"``: how many people score higher exchanged.
    """
    from cvcore.datasets.records import flip_permutation

    k = np.asarray(gt).shape[1]
    mirror = flip_permutation(k, flip_pairs)
    pred, gt, mask = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(mask, bool)
    alphas = np.asarray([thr], np.float64)
    correct, valid = _correct_and_valid(pred, gt, mask, norm, alphas)
    near_mirror, _ = _correct_and_valid(pred, gt[:, mirror], mask[:, mirror] & mask, norm, alphas)
    misses = valid & ~correct[0]
    paired = mirror != np.arange(k)
    mirrored = misses & near_mirror[0] & paired[None]
    swapped, _ = _correct_and_valid(pred[:, mirror], gt, mask, norm, alphas)
    hits, hits_swapped = correct[0].sum(1), swapped[0].sum(1)
    total = max(int(valid.sum()), 1)
    return {"mirrored_misses": float(mirrored.sum() / misses.sum()) if misses.any() else 0.0,
            "pooled_pck": float(hits.sum() / total),
            "pooled_pck_best_orientation": float(np.maximum(hits, hits_swapped).sum() / total),
            "people_better_mirrored": int((hits_swapped > hits).sum())}


# --------------------------------------------------------------------------------------------------- normalisers


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


_JOINT_ALIASES = {
    "leftshoulder": ("leftshoulder", "lshoulder", "lsho", "shoulderl", "shoulderleft"),
    "righthip": ("righthip", "rhip", "hipr", "hipright"),
}


def joint_index(joint_names: Sequence[str], name: str) -> int:
    """Index of joint ``name`` in ``joint_names``, ignoring case, spaces, '-' and '_' (``"left_shoulder"`` matches
    ``"Left Shoulder"``, ``"l_shoulder"``, ``"lsho"``). Raises ``ValueError`` naming the joint when absent."""
    wanted = _canonical(name)
    accepted = _JOINT_ALIASES.get(wanted, (wanted,))
    for i, candidate in enumerate(joint_names):
        if _canonical(candidate) in accepted:
            return i
    raise ValueError(f"no joint named {name!r} among {list(joint_names)}")


def torso_normaliser(
    gt: np.ndarray,
    mask: np.ndarray,
    left_shoulder: int | str = "left_shoulder",
    right_hip: int | str = "right_hip",
    joint_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Torso size per sample: distance from the left shoulder to the right hip (LSP / FLIC PCK, Tompson et al.).

    Args:
        gt: Array[N, K, 2] ground-truth joints; mask: bool Array[N, K] annotated joints.
        left_shoulder, right_hip: joint indices, or names looked up in ``joint_names``.

    Returns:
        Array[N]; nan where either joint is not annotated.
    """
    gt = np.asarray(gt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    idx = []
    for joint in (left_shoulder, right_hip):
        if isinstance(joint, str):
            if joint_names is None:
                raise ValueError(f"torso_normaliser: joint {joint!r} given by name but no joint_names")
            joint = joint_index(joint_names, joint)
        idx.append(int(joint))
    ls, rh = idx
    dist = np.linalg.norm(gt[:, ls] - gt[:, rh], axis=-1)
    ok = mask[:, ls] & mask[:, rh] & np.isfinite(dist)
    return np.where(ok, dist, np.nan)


def bbox_normaliser(gt: np.ndarray, mask: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
    """Bounding-box size per sample, max(w, h) (mmpose ``norm_item="bbox"``).

    Args:
        gt: Array[N, K, 2]; mask: bool Array[N, K].
        boxes: optional Array[N, 4] xyxy person boxes; a row with non-finite values falls back to the tight box
            around the annotated joints.

    Returns:
        Array[N]; nan for a sample with neither a box nor an annotated joint (0 for a single joint: excluded later).
    """
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.asarray(mask, dtype=bool) & np.isfinite(gt).all(axis=-1)
    x = np.where(valid, gt[..., 0], np.nan)
    y = np.where(valid, gt[..., 1], np.nan)
    with warnings.catch_warnings():  # all-missing rows give "All-NaN slice" warnings; they become nan, handled later
        warnings.simplefilter("ignore", RuntimeWarning)
        size = np.fmax(np.nanmax(x, axis=1) - np.nanmin(x, axis=1), np.nanmax(y, axis=1) - np.nanmin(y, axis=1))
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        if boxes.shape[0] != gt.shape[0]:
            raise ValueError(f"bbox_normaliser: {boxes.shape[0]} boxes for {gt.shape[0]} samples")
        box_size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        size = np.where(np.isfinite(box_size), box_size, size)
    return size


def head_normaliser(head_boxes: np.ndarray, scale: float = 0.6) -> np.ndarray:
    """Head size for PCKh (MPII): ``scale`` (0.6) x the diagonal of the head box.

    Args:
        head_boxes: Array[N, 4] xyxy head boxes (non-finite rows -> nan).

    Returns:
        Array[N].
    """
    head_boxes = np.asarray(head_boxes, dtype=np.float64).reshape(-1, 4)
    return scale * np.hypot(head_boxes[:, 2] - head_boxes[:, 0], head_boxes[:, 3] - head_boxes[:, 1])


# ------------------------------------------------------------------------------------------------------ evaluator


def pooled_parts(joint_names: Sequence[str]) -> dict[str, list[int]]:
    """Group left/right joints into parts as in Tompson et al.'s table: ``{"shoulder": [i_left, i_right], ...}``.
    Joints without a side (head, neck) form their own part."""
    parts: dict[str, list[int]] = {}
    for i, name in enumerate(joint_names):
        part = re.sub(r"^(left|right|l|r)[\s_\-]+|[\s_\-]+(left|right|l|r)$", "", name.lower()).strip()
        parts.setdefault(part or name.lower(), []).append(i)
    return parts


class PCKEvaluator:
    """Accumulates predictions and ground truth; ``evaluate()`` returns PCK at ``alpha`` with the chosen normaliser.

    Args:
        joint_names: K joint names (used for the torso joints and for the per-joint report).
        alpha: threshold as a fraction of the normaliser (0.2 for LSP PCK, 0.5 for PCKh).
        norm: ``"torso"`` (left shoulder - right hip), ``"bbox"`` (max side of the person box, or of the annotated
            joints' box when no box is given) or ``"head"`` (0.6 x head-box diagonal; needs head boxes).
    """

    def __init__(self, joint_names: Sequence[str], alpha: float = 0.2, norm: str = "torso") -> None:
        if norm not in NORMALISERS:
            raise ValueError(f"unknown PCK normaliser {norm!r}; expected one of {NORMALISERS}")
        self.joint_names = list(joint_names)
        self.alpha = float(alpha)
        self.norm = norm
        if norm == "torso":  # fail now, not after a whole evaluation run
            joint_index(self.joint_names, "left_shoulder")
            joint_index(self.joint_names, "right_hip")
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._pred: list[np.ndarray] = []
        self._gt: list[np.ndarray] = []
        self._mask: list[np.ndarray] = []
        self._norm: list[np.ndarray] = []

    def process(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        mask: np.ndarray,
        boxes: np.ndarray | None = None,
        head_boxes: np.ndarray | None = None,
    ) -> None:
        """Add a batch.

        Args:
            pred: Array[N, K, 2] predicted joints (non-finite = missing, counted wrong).
            gt: Array[N, K, 2]; mask: bool Array[N, K] annotated joints.
            boxes: optional Array[N, 4] person boxes (``norm="bbox"``).
            head_boxes: Array[N, 4] head boxes, required for ``norm="head"``.
        """
        pred = np.asarray(pred, dtype=np.float64)
        gt = np.asarray(gt, dtype=np.float64)
        mask = np.asarray(mask, dtype=bool)
        if gt.ndim != 3 or gt.shape[1:] != (len(self.joint_names), 2):
            raise ValueError(f"PCKEvaluator: gt must be [N, {len(self.joint_names)}, 2], got {list(gt.shape)}")
        if self.norm == "torso":
            norm = torso_normaliser(gt, mask, joint_names=self.joint_names)
        elif self.norm == "bbox":
            norm = bbox_normaliser(gt, mask, boxes)
        else:
            if head_boxes is None:
                raise ValueError("PCKEvaluator: norm='head' needs head boxes (MPII-style annotations)")
            norm = head_normaliser(head_boxes)
        self._pred.append(pred)
        self._gt.append(gt)
        self._mask.append(mask)
        self._norm.append(norm)

    def _stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        k = len(self.joint_names)
        if not self._gt:
            return np.zeros((0, k, 2)), np.zeros((0, k, 2)), np.zeros((0, k), bool), np.zeros(0)
        return (
            np.concatenate(self._pred),
            np.concatenate(self._gt),
            np.concatenate(self._mask),
            np.concatenate(self._norm),
        )

    def evaluate(self, alphas: Sequence[float] | np.ndarray | None = None) -> dict[str, Any]:
        """PCK over everything processed since the last ``reset()``.

        Returns:
            ``{"alpha", "norm", "PCK" (mean over joints with samples), "per_joint": {name: acc or None},
            "counts": {name: n}, "per_part": {part: acc or None} (left/right pooled), "AUC" (over ``alphas``,
            default :func:`default_alphas`), "num_samples", "num_excluded" (samples without a usable normaliser)}``.
            Accuracies are fractions in [0, 1]; None marks a joint without valid samples.
        """
        pred, gt, mask, norm = self._stacked()
        per_joint, mean, counts = pck(pred, gt, mask, self.alpha, norm)
        correct, valid = _correct_and_valid(pred, gt, mask, norm, np.asarray([self.alpha]))
        per_part = {}
        for part, idx in pooled_parts(self.joint_names).items():
            n = int(valid[:, idx].sum())
            per_part[part] = float(correct[0][:, idx].sum() / n) if n else None
        excluded = int(np.sum(~(np.isfinite(norm) & (norm > 0))))
        return {
            "alpha": self.alpha,
            "norm": self.norm,
            "PCK": mean,
            "per_joint": {
                name: (float(a) if c > 0 else None) for name, a, c in zip(self.joint_names, per_joint, counts)
            },
            "counts": {name: int(c) for name, c in zip(self.joint_names, counts)},
            "per_part": per_part,
            "AUC": pck_auc(pred, gt, mask, norm, alphas) if len(gt) else 0.0,
            "num_samples": int(len(gt)),
            "num_excluded": excluded,
        }

    def left_right_confusion(self) -> dict[str, float | int] | None:
        """:func:`left_right_confusion` of everything processed, with the left/right pairs read from the joint names
        (``left_X`` / ``right_X``); None when the joints have no such pairs."""
        from cvcore.datasets.records import left_right_pairs

        pairs = left_right_pairs(self.joint_names)
        if not pairs:
            return None
        pred, gt, mask, norm = self._stacked()
        return left_right_confusion(pred, gt, mask, self.alpha, norm, pairs)

    def curve(self, alphas: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`pck_curve` over everything processed: ``(alphas[A], mean[A], per_joint[A, K])``."""
        pred, gt, mask, norm = self._stacked()
        return pck_curve(pred, gt, mask, norm, alphas)
