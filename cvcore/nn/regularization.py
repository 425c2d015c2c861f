"""Weight penalties (L1, L2, elastic net) added to the loss. Plain weight decay belongs in the optimizer
(``build_optimizer(..., weight_decay=...)``); use :func:`penalty` when the penalty must be part of the objective
(L1 / elastic net, L-BFGS, or reporting the regularised loss)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["PENALTIES", "penalty", "weight_parameters"]

PENALTIES = ("none", "l1", "l2", "elastic_net")


def weight_parameters(module: nn.Module) -> list[Tensor]:
    """Trainable parameters with >= 2 dims (conv / linear weights); biases and norm scales are not penalised."""
    return [p for p in module.parameters() if p.requires_grad and p.dim() >= 2]


def penalty(params: Iterable[Tensor] | nn.Module, kind: str, l1: float = 0.0, l2: float = 0.0) -> Tensor:
    """Regularisation term to add to the loss.

    * ``l1``: ``l1 * sum |w|``
    * ``l2``: ``l2 / 2 * sum w^2`` (gradient ``l2 * w``: the same as ``weight_decay=l2`` in SGD)
    * ``elastic_net``: the sum of both terms.
    * ``none``: zero.

    Args:
        params: tensors to penalise, or a module (then only :func:`weight_parameters` are penalised).
        kind: one of :data:`PENALTIES`.
        l1, l2: coefficients (>= 0).

    Returns:
        Tensor[] scalar on the parameters' device (0 when there are no parameters).
    """
    if kind not in PENALTIES:
        raise ValueError(f"unknown penalty '{kind}' (choose from {', '.join(PENALTIES)})")
    if l1 < 0 or l2 < 0:
        raise ValueError(f"penalty coefficients must be >= 0, got l1={l1}, l2={l2}")
    tensors = weight_parameters(params) if isinstance(params, nn.Module) else list(params)
    if not tensors:
        return torch.zeros(())
    total = tensors[0].new_zeros(())
    if kind in ("l1", "elastic_net") and l1:
        total = total + l1 * sum(p.abs().sum() for p in tensors)
    if kind in ("l2", "elastic_net") and l2:
        total = total + 0.5 * l2 * sum(p.pow(2).sum() for p in tensors)
    return total
