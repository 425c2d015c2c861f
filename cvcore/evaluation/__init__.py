"""Metrics as pure functions plus thin ``reset / process / evaluate`` evaluators.

Detection: PASCAL VOC AP (11-point ``voc07`` and all-point ``voc12``) and mAP. Pose: PCK with torso, bounding-box
and head (PCKh) normalisers, AUC over alpha. Command-line front ends: ``eval-map`` and ``eval-pck``
(:mod:`cvcore.evaluation.cli`).
"""

from cvcore.evaluation.detection import (
    METRICS,
    DetectionEvaluator,
    eval_detections,
    f1_threshold,
    match_detections,
    precision_recall,
    voc_ap,
)
from cvcore.evaluation.plots import plot_pck_curve, plot_pr_curves
from cvcore.evaluation.pose import (
    NORMALISERS,
    PCKEvaluator,
    bbox_normaliser,
    default_alphas,
    head_normaliser,
    joint_index,
    left_right_confusion,
    pck,
    pck_auc,
    pck_curve,
    pooled_parts,
    torso_normaliser,
)

__all__ = [
    "METRICS",
    "NORMALISERS",
    "DetectionEvaluator",
    "PCKEvaluator",
    "bbox_normaliser",
    "default_alphas",
    "eval_detections",
    "f1_threshold",
    "head_normaliser",
    "joint_index",
    "left_right_confusion",
    "match_detections",
    "pck",
    "pck_auc",
    "pck_curve",
    "plot_pck_curve",
    "plot_pr_curves",
    "pooled_parts",
    "precision_recall",
    "torso_normaliser",
    "voc_ap",
]
