"""One-to-one matching of annotated people to predicted people in one image (what ``eval-pck`` scores).

Two rules:

* by box (:func:`match_people_by_box`, the default when every predicted person has a box, as top-down ``pose``
  writes): the annotated person's box is its joints' box (:func:`cvcore.datasets.joints_box`, or the dataset's own
  person box) and the pairing maximises the total IoU over pairs with IoU >= ``min_iou`` (Hungarian assignment).
  The predicted joints play no part in choosing, so extra predicted people cannot flatter the score;
* by joints (:func:`match_people_by_joints`, for predictions without boxes, e.g. one whole-image person): the pairing
  minimises the total mean joint distance (Hungarian), a missing predicted joint costing ``missing_cost``.

Each prediction is matched at most once; an annotated person left without a partner is scored with every joint
wrong; extra predictions are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["match_people_by_box", "match_people_by_joints", "box_iou_matrix", "MISSING_JOINT_COST"]

MISSING_JOINT_COST = 1e6


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes a[N, 4] and b[M, 4] -> float64[N, M] (0 where a box has no area or is not finite)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0, posinf=0.0, neginf=0.0)


def match_people_by_box(gt_boxes: np.ndarray, pred_boxes: np.ndarray, min_iou: float = 0.5) -> list[int | None]:
    """For each annotated box (gt_boxes[P, 4]) the index of its predicted box (pred_boxes[Q, 4]) or None:
    the one-to-one pairing with the largest total IoU among pairs whose IoU is at least ``min_iou``."""
    from scipy.optimize import linear_sum_assignment

    gt_boxes = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pred_boxes = np.asarray(pred_boxes, np.float64).reshape(-1, 4)
    pairing: list[int | None] = [None] * len(gt_boxes)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return pairing
    iou = box_iou_matrix(gt_boxes, pred_boxes)
    allowed = iou >= min_iou
    # pairs below min_iou weigh nothing, so the assignment never prefers them; they are dropped afterwards
    rows, cols = linear_sum_assignment(np.where(allowed, iou, 0.0), maximize=True)
    for a, b in zip(rows, cols):
        if allowed[a, b]:
            pairing[a] = int(b)
    return pairing


def match_people_by_joints(gt: np.ndarray, visible: np.ndarray, people: Sequence[np.ndarray],
                           missing_cost: float = MISSING_JOINT_COST) -> list[int | None]:
    """For each annotated person (gt[P, K, 2], visible[P, K]) the index of its predicted person (people: Q arrays
    [K, 2]) or None: the one-to-one pairing with the smallest total mean distance over annotated joints."""
    from scipy.optimize import linear_sum_assignment

    if not len(people):
        return [None] * len(gt)
    cost = np.zeros((len(gt), len(people)))
    for a in range(len(gt)):
        for b, pred in enumerate(people):
            d = np.linalg.norm(np.asarray(pred, np.float64) - gt[a], axis=-1)
            d = np.where(np.isfinite(d), d, missing_cost)
            cost[a, b] = d[visible[a]].mean() if visible[a].any() else 0.0
    rows, cols = linear_sum_assignment(cost)
    pairing: list[int | None] = [None] * len(gt)
    for a, b in zip(rows, cols):
        pairing[a] = int(b)
    return pairing
