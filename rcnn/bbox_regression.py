"""Bounding-box regression (R-CNN appendix C): class-specific ridge regression from features to box offsets.

For a proposal P and its ground-truth box G (IoU > 0.6), the targets are
``t_x = (G_x - P_x) / P_w, t_y = (G_y - P_y) / P_h, t_w = log(G_w / P_w), t_h = log(G_h / P_h)`` (centres, widths and
heights of xyxy boxes, no "+1"). One ridge regression (lambda = 1000) per class maps a proposal's feature to t; at
test time it is applied once. :class:`BoxCoder` does both directions, so targets and decoding cannot drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["BoxCoder", "BoxRegressor", "fit_box_regressor"]


class BoxCoder:
    """Encode boxes as offsets ``(t_x, t_y, t_w, t_h)`` relative to reference boxes, and decode them back.

    Args:
        weights: the offsets are multiplied by these (1, 1, 1, 1 in R-CNN).
        clamp_log: upper bound on decoded ``t_w, t_h`` (avoids overflow in ``exp``).
    """

    def __init__(self, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
                 clamp_log: float = math.log(1000.0 / 16)) -> None:
        self.weights, self.clamp_log = weights, clamp_log

    @staticmethod
    def _centre_size(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        w = boxes[..., 2] - boxes[..., 0]
        h = boxes[..., 3] - boxes[..., 1]
        return boxes[..., 0] + 0.5 * w, boxes[..., 1] + 0.5 * h, w, h

    def encode(self, reference: Tensor, target: Tensor) -> Tensor:
        """Offsets of ``target`` w.r.t. ``reference`` (both ``Tensor[..., 4]`` xyxy, positive sizes) -> ``[..., 4]``."""
        px, py, pw, ph = self._centre_size(reference.float())
        gx, gy, gw, gh = self._centre_size(target.float())
        wx, wy, ww, wh = self.weights
        return torch.stack([wx * (gx - px) / pw, wy * (gy - py) / ph,
                            ww * torch.log(gw / pw), wh * torch.log(gh / ph)], dim=-1)

    def decode(self, deltas: Tensor, reference: Tensor) -> Tensor:
        """Boxes from offsets ``deltas[..., 4]`` applied to ``reference[..., 4]`` (broadcast) -> xyxy ``[..., 4]``."""
        px, py, pw, ph = self._centre_size(reference.float())
        wx, wy, ww, wh = self.weights
        dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
        dw = (deltas[..., 2] / ww).clamp(max=self.clamp_log)
        dh = (deltas[..., 3] / wh).clamp(max=self.clamp_log)
        cx, cy = px + dx * pw, py + dy * ph
        w, h = pw * torch.exp(dw), ph * torch.exp(dh)
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


@dataclass
class BoxRegressor:
    """Per-class linear maps from features to offsets: ``t = features @ weight[c] + bias[c]``.

    Attributes:
        weight: ``Tensor[C, D, 4]``; bias: ``Tensor[C, 4]``; trained: ``bool[C]`` (untrained classes predict 0).
    """

    weight: Tensor
    bias: Tensor
    coder: BoxCoder = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.coder = self.coder or BoxCoder()

    def predict(self, features: Tensor) -> Tensor:
        """Offsets ``Tensor[N, C, 4]`` for (scaled) ``features[N, D]``."""
        return torch.einsum("nd,cdk->nck", features.float(), self.weight.float()) + self.bias.float()

    def refine(self, features: Tensor, boxes: Tensor) -> Tensor:
        """Class-specific refined boxes ``Tensor[N, C, 4]`` for proposals ``boxes[N, 4]`` xyxy."""
        return self.coder.decode(self.predict(features), boxes.float()[:, None, :])

    def state_dict(self) -> dict[str, Tensor]:
        return {"weight": self.weight.float().contiguous(), "bias": self.bias.float().contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> BoxRegressor:
        return cls(state["weight"].float(), state["bias"].float())


def fit_box_regressor(features: Tensor, proposals: Tensor, targets: Tensor, labels: Tensor, num_classes: int,
                      lam: float = 1000.0, coder: BoxCoder | None = None) -> BoxRegressor:
    """Ridge regression per class (closed form, unpenalised intercept) from features to :class:`BoxCoder` offsets.

    Args:
        features: ``Tensor[M, D]`` (scaled) features of training proposals with IoU > 0.6 to a ground-truth box.
        proposals: ``Tensor[M, 4]`` xyxy; targets: ``Tensor[M, 4]`` their ground-truth boxes; labels: ``Tensor[M]``
            class index of each ground truth.
        lam: the ridge penalty (R-CNN: 1000).
    Returns:
        :class:`BoxRegressor`; classes without examples predict zero offsets.
    """
    coder = coder or BoxCoder()
    dim = features.shape[1]
    weight = torch.zeros((num_classes, dim, 4), dtype=torch.float64)
    bias = torch.zeros((num_classes, 4), dtype=torch.float64)
    t = coder.encode(proposals, targets).double()
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() == 0:
            continue
        x, y = features[idx].double(), t[idx]
        x_mean, y_mean = x.mean(0), y.mean(0)
        xc, yc = x - x_mean, y - y_mean
        gram = xc.T @ xc + lam * torch.eye(dim, dtype=torch.float64)
        w = torch.linalg.solve(gram, xc.T @ yc)
        weight[c], bias[c] = w, y_mean - x_mean @ w
    return BoxRegressor(weight.float(), bias.float(), coder)
