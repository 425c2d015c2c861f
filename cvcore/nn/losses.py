"""Losses selectable by name.

Softmax cross-entropy and binary cross-entropy come from torch; the hinge losses and the masked heatmap MSE are
written here because torch has no exact equivalent:

* ``multiclass_hinge``: Weston-Watkins (default, sum over wrong classes) or Crammer-Singer (only the most violating
  wrong class). torch's ``nn.MultiMarginLoss`` is Weston-Watkins divided by the number of classes.
* ``squared_hinge``: ``max(0, 1 - y s)^2`` with labels +-1, the L2-loss SVM of liblinear (scikit-learn's
  ``LinearSVC(loss="squared_hinge")``), per output column (one-vs-rest, as R-CNN's per-class SVMs).
* ``binary_hinge``: ``max(0, margin - y s)`` with labels +-1 (L1-loss SVM).
* ``heatmap_mse``: MSE between predicted and target heatmaps with per-joint weights; missing joints (weight 0)
  carry no loss and no gradient (Tompson et al. 2014).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "LOSSES", "BinaryHingeLoss", "HeatmapMSELoss", "MultiClassHingeLoss", "SquaredHingeLoss", "build_loss",
]


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction '{reduction}' (mean, sum, none)")


def _check_pm1(labels: Tensor, scores: Tensor, name: str) -> Tensor:
    if labels.shape != scores.shape:
        raise ValueError(f"{name}: labels shape {tuple(labels.shape)} != scores shape {tuple(scores.shape)}")
    if not bool(((labels == 1) | (labels == -1)).all()):
        raise ValueError(f"{name}: labels must be -1 or +1 (got values {labels.unique().tolist()[:5]})")
    return labels.to(scores.dtype)


class MultiClassHingeLoss(nn.Module):
    """Multi-class SVM loss on class scores.

    For sample i with true class y and scores s (Tensor[C]):

    * ``weston_watkins``: ``sum_{j != y} max(0, margin - s_y + s_j)``
    * ``crammer_singer``: ``max(0, margin + max_{j != y} s_j - s_y)``

    ``squared=True`` squares each hinge term. Reduction over samples.

    Shapes: scores Tensor[N, C] float, target Tensor[N] int64 in [0, C). Returns Tensor[] (or Tensor[N]).
    """

    def __init__(self, variant: str = "weston_watkins", margin: float = 1.0, squared: bool = False,
                 reduction: str = "mean") -> None:
        super().__init__()
        if variant not in ("weston_watkins", "crammer_singer"):
            raise ValueError(f"multiclass_hinge: unknown variant '{variant}' (weston_watkins, crammer_singer)")
        self.variant, self.margin, self.squared, self.reduction = variant, float(margin), squared, reduction

    def forward(self, scores: Tensor, target: Tensor) -> Tensor:
        if scores.dim() != 2 or target.shape != scores.shape[:1]:
            raise ValueError(f"multiclass_hinge: expected scores [N, C] and target [N], got {tuple(scores.shape)} "
                             f"and {tuple(target.shape)}")
        true_score = scores.gather(1, target[:, None])                       # [N, 1]
        wrong = torch.ones_like(scores, dtype=torch.bool).scatter_(1, target[:, None], False)
        margins = (self.margin + scores - true_score).clamp(min=0)           # [N, C]
        if self.squared:
            margins = margins.pow(2)
        if self.variant == "weston_watkins":
            loss = (margins * wrong).sum(dim=1)
        else:
            # The most violating wrong class; its hinge is the largest since the hinge is monotonic in s_j.
            loss = margins.masked_fill(~wrong, 0.0).amax(dim=1)
        return _reduce(loss, self.reduction)


class SquaredHingeLoss(nn.Module):
    """``max(0, 1 - y s)^2`` with y in {-1, +1} (liblinear's L2-loss SVM), per element.

    Shapes: scores Tensor[N] or Tensor[N, C] (one-vs-rest columns), labels of the same shape with values +-1.
    ``pos_weight`` multiplies the loss of positive examples (liblinear's ``-w1``; R-CNN uses 2 for positives
    in some setups). ``margin`` replaces the 1.
    """

    def __init__(self, margin: float = 1.0, pos_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin, self.pos_weight, self.reduction = float(margin), float(pos_weight), reduction

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        y = _check_pm1(labels, scores, "squared_hinge")
        loss = (self.margin - y * scores).clamp(min=0).pow(2)
        if self.pos_weight != 1.0:
            loss = loss * torch.where(y > 0, self.pos_weight, 1.0)
        return _reduce(loss, self.reduction)


class BinaryHingeLoss(nn.Module):
    """``max(0, margin - y s)`` with y in {-1, +1} (L1-loss SVM), per element. Shapes as :class:`SquaredHingeLoss`."""

    def __init__(self, margin: float = 1.0, pos_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.margin, self.pos_weight, self.reduction = float(margin), float(pos_weight), reduction

    def forward(self, scores: Tensor, labels: Tensor) -> Tensor:
        y = _check_pm1(labels, scores, "binary_hinge")
        loss = (self.margin - y * scores).clamp(min=0)
        if self.pos_weight != 1.0:
            loss = loss * torch.where(y > 0, self.pos_weight, 1.0)
        return _reduce(loss, self.reduction)


class HeatmapMSELoss(nn.Module):
    """Weighted mean squared error between heatmaps.

    ``loss = sum_{n,k,y,x} w_nk (pred - target)^2 / D``

    Args:
        normalize: ``"visible"`` (default): D = (sum of weights) * h * w, so the loss is the mean squared error per
            pixel of the joints that count, independent of how many joints are missing (0 when none count);
            ``"all"``: D = N * K * h * w (mmpose's ``KeypointMSELoss(use_target_weight=True)`` convention).

    Shapes: pred, target Tensor[N, K, h, w]; weight None, Tensor[N, K] (per joint, e.g. visibility 0/1) or
    anything broadcastable to Tensor[N, K, h, w] (e.g. a per-pixel mask). Returns Tensor[].
    """

    def __init__(self, normalize: str = "visible") -> None:
        super().__init__()
        if normalize not in ("visible", "all"):
            raise ValueError(f"heatmap_mse: unknown normalize '{normalize}' (visible, all)")
        self.normalize = normalize

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        if pred.shape != target.shape or pred.dim() != 4:
            raise ValueError(f"heatmap_mse: expected pred and target [N, K, h, w] of equal shape, got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        diff = pred - target
        if weight is None:
            return diff.pow(2).mean()
        if weight.dim() == 2:
            weight = weight[:, :, None, None]
        try:
            weight = weight.to(diff.dtype).expand_as(diff)
        except RuntimeError:
            raise ValueError(f"heatmap_mse: weight must be [N, K] or broadcastable to [N, K, h, w], got "
                             f"{tuple(weight.shape)} for heatmaps {tuple(pred.shape)}") from None
        # mask the difference itself, so a NaN target of a missing joint gives neither NaN loss nor NaN gradient
        diff = torch.where(weight > 0, diff, torch.zeros_like(diff))
        total = (weight * diff.pow(2)).sum()
        if self.normalize == "all":
            return total / diff.numel()
        denom = weight.sum()
        return total / denom.clamp(min=torch.finfo(diff.dtype).tiny)


LOSSES: dict[str, type[nn.Module]] = {
    "cross_entropy": nn.CrossEntropyLoss,
    "multiclass_hinge": MultiClassHingeLoss,
    "squared_hinge": SquaredHingeLoss,
    "binary_hinge": BinaryHingeLoss,
    "bce": nn.BCEWithLogitsLoss,
    "heatmap_mse": HeatmapMSELoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    """Loss module by config name: ``cross_entropy`` (softmax, ``nn.CrossEntropyLoss``), ``multiclass_hinge``
    (``variant="weston_watkins"|"crammer_singer"``), ``squared_hinge``, ``binary_hinge``, ``bce``
    (``nn.BCEWithLogitsLoss``, takes logits), ``heatmap_mse``. ``kwargs`` go to the loss constructor."""
    key = name.lower()
    if key not in LOSSES:
        raise ValueError(f"unknown loss '{name}' (choose from {', '.join(LOSSES)})")
    try:
        return LOSSES[key](**kwargs)
    except TypeError as e:
        raise ValueError(f"loss '{name}': bad arguments {kwargs} ({e})") from None
