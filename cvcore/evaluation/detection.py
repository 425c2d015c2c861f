"""PASCAL VOC detection metrics: greedy matching, 11-point and all-point AP, mAP.

Definitions follow the VOC devkit (see ../shared/REFERENCE.md), with this project's box convention: float ``xyxy``
in pixels, width = x2 - x1, no "+1".

* Detections of one class are sorted by score, highest first (a stable sort, so ties keep their input order).
* Each detection is matched to the ground-truth box of the same class and image with the highest IoU (all boxes of
  that class in the image compete, difficult and already-matched ones included, as in the devkit).
  IoU >= ``iou_thr``: a difficult box -> the detection is ignored (neither TP nor FP); a box not matched before -> TP;
  a box matched before -> FP (duplicate). IoU < ``iou_thr`` or no box of the class in the image -> FP.
* Difficult boxes are not counted as positives.
* A class with no (non-difficult) ground truth has no defined recall: its AP is ``nan`` and it is left out of the
  mean, as in the VOC devkit, which only averages over classes that have positives.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

METRICS = ("voc07", "voc12")

# The eleven recall thresholds 0, 0.1, ..., 1.0, computed as i / 10 so that 0.3 is exactly 0.3:
# np.arange(0, 1.1, 0.1) yields 0.30000000000000004 and would skip a recall of exactly 0.3.
_VOC07_RECALL_THRESHOLDS = np.arange(11) / 10.0


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision from a precision-recall curve.

    Args:
        rec: Array[D] of recall after each detection (non-decreasing), detections sorted by score.
        prec: Array[D] of precision after each detection.
        use_07_metric: True -> VOC 2007 11-point AP: mean over t in {0, 0.1, ..., 1} of the maximum precision at
            recall >= t (0 when recall t is never reached). False -> VOC 2010+ all-point AP: precision made
            monotonically non-increasing from the right, then sum of (delta recall x precision).

    Returns:
        AP in [0, 1]; 0.0 for an empty curve.
    """
    rec = np.asarray(rec, dtype=np.float64).reshape(-1)
    prec = np.asarray(prec, dtype=np.float64).reshape(-1)
    if rec.shape != prec.shape:
        raise ValueError(f"voc_ap: recall and precision differ in length ({rec.size} vs {prec.size})")
    if rec.size == 0:
        return 0.0
    if use_07_metric:
        total = 0.0
        for t in _VOC07_RECALL_THRESHOLDS:
            reached = rec >= t
            total += float(prec[reached].max()) if reached.any() else 0.0
        return total / len(_VOC07_RECALL_THRESHOLDS)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing to the right
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def match_detections(
    boxes: np.ndarray | torch.Tensor,
    scores: np.ndarray | torch.Tensor,
    image_ids: Sequence[Hashable],
    gt_boxes: Mapping[Hashable, np.ndarray | torch.Tensor],
    gt_difficult: Mapping[Hashable, np.ndarray] | None = None,
    iou_thr: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Greedy VOC matching of the detections of ONE class (rules in the module docstring).

    Args:
        boxes: Tensor/array[D, 4] detections, xyxy pixels.
        scores: Tensor/array[D] confidences.
        image_ids: D image keys, one per detection.
        gt_boxes: image key -> Tensor/array[M, 4] ground-truth boxes of this class, xyxy pixels. Images without
            ground truth of this class may be absent.
        gt_difficult: image key -> bool array[M]; missing -> no difficult boxes.
        iou_thr: a detection matches when IoU >= iou_thr.

    Returns:
        ``(order, tp, fp, num_positives)``: ``order`` Array[D] int, the indices of the detections sorted by score
        (descending, stable); ``tp``, ``fp`` bool Array[D] in that sorted order (both False for ignored
        detections); ``num_positives`` the number of non-difficult ground-truth boxes.
    """
    boxes_t = torch.as_tensor(np.asarray(_to_numpy(boxes), dtype=np.float64)).reshape(-1, 4)
    scores_np = np.asarray(_to_numpy(scores), dtype=np.float64).reshape(-1)
    num_dets = boxes_t.shape[0]
    if scores_np.size != num_dets or len(image_ids) != num_dets:
        raise ValueError(
            f"match_detections: {num_dets} boxes, {scores_np.size} scores and {len(image_ids)} image ids differ"
        )
    gt_difficult = gt_difficult or {}

    # Flatten the ground truth so that every box has one global index (its "matched" state is per box).
    offsets: dict[Hashable, int] = {}
    gt_list, difficult_list = [], []
    total = 0
    for key, gtb in gt_boxes.items():
        gtb_t = torch.as_tensor(np.asarray(_to_numpy(gtb), dtype=np.float64)).reshape(-1, 4)
        diff = np.asarray(gt_difficult.get(key, np.zeros(len(gtb_t), bool)), dtype=bool).reshape(-1)
        if diff.size != len(gtb_t):
            raise ValueError(f"match_detections: image {key!r} has {len(gtb_t)} boxes but {diff.size} difficult flags")
        offsets[key] = total
        total += len(gtb_t)
        gt_list.append(gtb_t)
        difficult_list.append(diff)
    difficult = np.concatenate(difficult_list) if difficult_list else np.zeros(0, bool)
    num_positives = int((~difficult).sum())

    # Best ground-truth box and its IoU for every detection. The best box does not depend on what was matched
    # before (the devkit takes the arg-max over all boxes), so this part needs no score order.
    best_gt = np.full(num_dets, -1, dtype=np.int64)
    best_iou = np.zeros(num_dets, dtype=np.float64)
    det_groups: dict[Hashable, list[int]] = {}
    for i, key in enumerate(image_ids):
        det_groups.setdefault(key, []).append(i)
    gt_by_key = dict(zip(gt_boxes.keys(), gt_list))
    for key, det_idx in det_groups.items():
        gtb_t = gt_by_key.get(key)
        if gtb_t is None or len(gtb_t) == 0:
            continue
        ious = np.nan_to_num(box_iou(boxes_t[det_idx], gtb_t).numpy())  # [d, m]; two empty boxes: 0/0 -> 0, no match
        arg = ious.argmax(axis=1)  # first maximum on ties, as in the devkit
        best_iou[det_idx] = ious[np.arange(len(det_idx)), arg]
        best_gt[det_idx] = arg + offsets[key]

    order = np.argsort(-scores_np, kind="stable")
    best_gt, best_iou = best_gt[order], best_iou[order]
    hit = (best_gt >= 0) & (best_iou >= iou_thr)
    ignored = hit & difficult[np.where(hit, best_gt, 0)] if total else np.zeros(num_dets, bool)
    candidate = hit & ~ignored
    # Among the detections that hit the same box, the first in score order is the TP, the later ones duplicates.
    tp = np.zeros(num_dets, dtype=bool)
    cand_idx = np.flatnonzero(candidate)
    _, first = np.unique(best_gt[cand_idx], return_index=True)
    tp[cand_idx[first]] = True
    fp = ~tp & ~ignored
    return order, tp, fp, num_positives


def precision_recall(tp: np.ndarray, fp: np.ndarray, num_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative recall and precision after each (score-sorted) detection; ignored ones (tp = fp = False) dropped.

    Args:
        tp, fp: bool Array[D] in score order.
        num_positives: number of non-difficult ground-truth boxes (> 0 for a defined recall).

    Returns:
        ``(rec, prec)`` float64 Arrays[D'] with D' = number of non-ignored detections; recall is nan when
        ``num_positives`` is 0.
    """
    keep = np.asarray(tp, bool) | np.asarray(fp, bool)
    tp_c = np.cumsum(np.asarray(tp, bool)[keep], dtype=np.float64)
    fp_c = np.cumsum(np.asarray(fp, bool)[keep], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec = tp_c / num_positives if num_positives > 0 else np.full_like(tp_c, np.nan)
    prec = tp_c / np.maximum(tp_c + fp_c, np.finfo(np.float64).eps)
    return rec, prec


def _field(obj: Any, name: str, default: Any = None) -> Any:
    """Read ``name`` from a mapping or an attribute-style record (e.g. ``cvcore.datasets.DetectionRecord``)."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _label_names(labels: Any, classes: Sequence[str], where: str) -> list[str]:
    """Class names from labels given as names or as integer indices into ``classes``."""
    if torch.is_tensor(labels):
        labels = labels.tolist()
    names = []
    for label in np.asarray(labels, dtype=object).reshape(-1).tolist():
        if isinstance(label, str):
            names.append(label)
        elif isinstance(label, (int, np.integer)) and 0 <= int(label) < len(classes):
            names.append(classes[int(label)])
        else:
            raise ValueError(f"{where}: label {label!r} is neither a class name nor an index into "
                             f"{len(classes)} classes")
    return names


def eval_detections(
    preds: Sequence[Any],
    gts: Sequence[Any],
    classes: Sequence[str],
    iou_thr: float = 0.5,
    metric: str = "voc07",
) -> dict[str, Any]:
    """PASCAL VOC AP per class and mAP.

    Args:
        preds: one entry per image (aligned with ``gts``), a mapping or record with ``boxes`` [D, 4] xyxy,
            ``scores`` [D] and ``labels`` (D class names or indices into ``classes``).
        gts: one entry per image, a mapping or record (e.g. ``DetectionRecord``) with ``boxes`` [M, 4] xyxy,
            ``labels`` (M names or indices) and optionally ``difficult`` bool [M].
        classes: the class names to evaluate; a label outside them raises ``ValueError``.
        iou_thr: IoU needed for a match.
        metric: ``"voc07"`` (11-point AP) or ``"voc12"`` (all-point AP, VOC 2010+).

    Returns:
        ``{"metric", "iou_thr", "mAP", "AP": {cls: ap}, "pr": {cls: (rec[D'], prec[D'])},
        "scores": {cls: scores[D']}, "num_positives": {cls: n}, "num_detections": {cls: n}}``; ``scores`` are those
        of the points of ``pr`` (descending). Classes with no positives get AP nan and are
        excluded from mAP (nan when no class has positives).
    """
    if metric not in METRICS:
        raise ValueError(f"unknown detection metric {metric!r}; expected one of {METRICS}")
    if len(preds) != len(gts):
        raise ValueError(f"eval_detections: {len(preds)} predictions for {len(gts)} ground-truth images")
    classes = list(classes)
    class_set = set(classes)

    det_boxes: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    det_scores: dict[str, list[np.ndarray]] = {c: [] for c in classes}
    det_images: dict[str, list[int]] = {c: [] for c in classes}
    gt_boxes: dict[str, dict[int, np.ndarray]] = {c: {} for c in classes}
    gt_difficult: dict[str, dict[int, np.ndarray]] = {c: {} for c in classes}

    for i, (pred, gt) in enumerate(zip(preds, gts)):
        g_boxes = _as_boxes(_field(gt, "boxes"), f"ground truth of image {i}")
        g_labels = _label_names(_field(gt, "labels", []), classes, f"ground truth of image {i}")
        g_diff = _field(gt, "difficult")
        g_diff = np.zeros(len(g_boxes), bool) if g_diff is None else np.asarray(g_diff, bool).reshape(-1)
        if not (len(g_labels) == len(g_boxes) == len(g_diff)):
            raise ValueError(
                f"ground truth of image {i}: {len(g_boxes)} boxes, {len(g_labels)} labels, "
                f"{len(g_diff)} difficult flags"
            )
        p_boxes = _as_boxes(_field(pred, "boxes"), f"predictions of image {i}")
        p_scores = np.asarray(_to_numpy(_field(pred, "scores", [])), np.float64).reshape(-1)
        p_labels = _label_names(_field(pred, "labels", []), classes, f"predictions of image {i}")
        if not (len(p_labels) == len(p_boxes) == len(p_scores)):
            raise ValueError(
                f"predictions of image {i}: {len(p_boxes)} boxes, {len(p_scores)} scores, {len(p_labels)} labels"
            )
        unknown = (set(g_labels) | set(p_labels)) - class_set
        if unknown:
            raise ValueError(f"image {i}: labels {sorted(unknown)} are not among the classes {classes}")
        g_labels_np = np.asarray(g_labels, dtype=object)
        p_labels_np = np.asarray(p_labels, dtype=object)
        for c in set(g_labels):
            sel = g_labels_np == c
            gt_boxes[c][i] = g_boxes[sel]
            gt_difficult[c][i] = g_diff[sel]
        for c in set(p_labels):
            sel = p_labels_np == c
            det_boxes[c].append(p_boxes[sel])
            det_scores[c].append(p_scores[sel])
            det_images[c].extend([i] * int(sel.sum()))

    use_07 = metric == "voc07"
    ap: dict[str, float] = {}
    pr: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    pr_scores: dict[str, np.ndarray] = {}
    num_pos: dict[str, int] = {}
    num_det: dict[str, int] = {}
    for c in classes:
        boxes = np.concatenate(det_boxes[c]) if det_boxes[c] else np.zeros((0, 4))
        scores = np.concatenate(det_scores[c]) if det_scores[c] else np.zeros(0)
        order, tp, fp, npos = match_detections(boxes, scores, det_images[c], gt_boxes[c], gt_difficult[c], iou_thr)
        rec, prec = precision_recall(tp, fp, npos)
        pr[c] = (rec, prec)
        pr_scores[c] = scores[order][tp | fp]
        num_pos[c], num_det[c] = npos, len(scores)
        ap[c] = voc_ap(rec, prec, use_07) if npos > 0 else float("nan")
    defined = [v for v in ap.values() if not np.isnan(v)]
    mean_ap = float(np.mean(defined)) if defined else float("nan")
    return {
        "metric": metric,
        "iou_thr": float(iou_thr),
        "mAP": mean_ap,
        "AP": ap,
        "pr": pr,
        "scores": pr_scores,
        "num_positives": num_pos,
        "num_detections": num_det,
    }


def f1_threshold(result: dict[str, Any]) -> tuple[float, float]:
    """The score threshold that maximises F1 over all classes' detections pooled (micro F1), from an
    :func:`eval_detections` result: a sensible default for drawing detections (``detect --vis``).

    Returns:
        ``(threshold, f1)``: keeping detections with score >= threshold gives that F1 at the result's IoU (when
        every detection is wrong: the top score and 0.0); ``(0.0, 0.0)`` when there are no ground-truth boxes or
        no detections.
    """
    scores, tps, npos = [], [], 0
    for c, (rec, _prec) in result["pr"].items():
        n = int(result["num_positives"][c])
        npos += n
        if len(rec) == 0:
            continue
        # a class without ground truth has recall nan: all its detections are false positives
        tps.append(np.diff(np.rint(np.asarray(rec) * n), prepend=0.0) if n else np.zeros(len(rec)))
        scores.append(np.asarray(result["scores"][c], np.float64))
    if npos == 0 or not scores:
        return 0.0, 0.0
    s, t = np.concatenate(scores), np.concatenate(tps)
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    last = np.r_[s[1:] != s[:-1], True]  # a threshold keeps every detection of its score: evaluate ties together
    f1 = (2 * np.cumsum(t) / (np.arange(1, len(s) + 1) + npos))[last]
    best = int(np.argmax(f1))
    return float(s[last][best]), float(f1[best])


def _to_numpy(x: Any) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x if x is not None else [])


def _as_boxes(x: Any, where: str) -> np.ndarray:
    arr = np.asarray(_to_numpy(x), dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape [N, 4], got {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{where}: boxes contain non-finite values")
    return arr


class DetectionEvaluator:
    """Accumulates per-image detections and ground truth; ``evaluate()`` returns :func:`eval_detections`' result.

    Args:
        classes: class names.
        metric: ``"voc07"`` (11-point) or ``"voc12"`` (all-point).
        iou_thr: IoU needed for a match.
    """

    def __init__(self, classes: Sequence[str], metric: str = "voc07", iou_thr: float = 0.5) -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown detection metric {metric!r}; expected one of {METRICS}")
        self.classes = list(classes)
        self.metric = metric
        self.iou_thr = float(iou_thr)
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._preds: list[Any] = []
        self._gts: list[Any] = []

    def process(self, predictions: Sequence[Any], ground_truths: Sequence[Any]) -> None:
        """Add a batch: ``predictions[i]`` (boxes, scores, labels) belongs to ``ground_truths[i]`` (boxes, labels,
        difficult); see :func:`eval_detections` for the fields."""
        if len(predictions) != len(ground_truths):
            raise ValueError(f"process: {len(predictions)} predictions for {len(ground_truths)} ground truths")
        self._preds.extend(predictions)
        self._gts.extend(ground_truths)

    def evaluate(self) -> dict[str, Any]:
        """AP per class and mAP over everything processed since the last ``reset()``."""
        return eval_detections(self._preds, self._gts, self.classes, self.iou_thr, self.metric)
