"""Activations selectable by name, and a hand-written Maxout (Goodfellow et al. 2013).

torch provides every activation here except Maxout, so only Maxout is written by hand.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["ACTIVATIONS", "Maxout", "build_activation", "out_channels"]


class Maxout(nn.Module):
    """Maxout over groups of ``pieces`` consecutive channels (dim 1).

    Channels ``[g*pieces, ..., g*pieces + pieces - 1]`` form group ``g``; the output keeps the maximum of each
    group, so ``C`` input channels become ``C // pieces``. Works for linear features ``[N, C]`` and feature maps
    ``[N, C, H, W]`` (any trailing dims). The preceding linear/conv layer therefore needs ``pieces`` times as many
    outputs as the width wanted after Maxout (see :func:`out_channels`).

    Args:
        pieces: number of linear pieces k per output unit (k >= 1).
        in_features: optional expected channel count C, checked at run time (must be divisible by ``pieces``).
    """

    def __init__(self, pieces: int = 2, in_features: int | None = None) -> None:
        super().__init__()
        if pieces < 1:
            raise ValueError(f"Maxout: pieces must be >= 1, got {pieces}")
        if in_features is not None and in_features % pieces:
            raise ValueError(f"Maxout: in_features={in_features} is not divisible by pieces={pieces}")
        self.pieces = int(pieces)
        self.in_features = in_features

    def forward(self, x: Tensor) -> Tensor:
        """x: Tensor[N, C, ...] -> Tensor[N, C // pieces, ...]."""
        if x.dim() < 2:
            raise ValueError(f"Maxout expects at least 2 dims [N, C, ...], got shape {tuple(x.shape)}")
        n, c = x.shape[:2]
        if self.in_features is not None and c != self.in_features:
            raise ValueError(f"Maxout: expected {self.in_features} channels, got {c}")
        if c % self.pieces:
            raise ValueError(f"Maxout: {c} channels are not divisible by pieces={self.pieces}")
        return x.reshape(n, c // self.pieces, self.pieces, *x.shape[2:]).amax(dim=2)

    def extra_repr(self) -> str:
        return f"pieces={self.pieces}" + (f", in_features={self.in_features}" if self.in_features else "")


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "maxout": Maxout,
    "identity": nn.Identity,
}


def build_activation(name: str, **kwargs: Any) -> nn.Module:
    """Activation module by config name.

    Args:
        name: one of ``relu, leaky_relu, elu, tanh, sigmoid, maxout, identity``.
        **kwargs: passed to the module, e.g. ``negative_slope`` (leaky_relu), ``alpha`` (elu), ``pieces`` (maxout),
            ``inplace`` (relu, leaky_relu, elu).
    """
    key = name.lower()
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}' (choose from {', '.join(ACTIVATIONS)})")
    try:
        return ACTIVATIONS[key](**kwargs)
    except TypeError as e:
        raise ValueError(f"activation '{name}': bad arguments {kwargs} ({e})") from None


def out_channels(activation: nn.Module, channels: int) -> int:
    """Channel count after ``activation`` applied to ``channels`` channels (only Maxout changes it)."""
    if isinstance(activation, Maxout):
        if channels % activation.pieces:
            raise ValueError(f"Maxout: {channels} channels are not divisible by pieces={activation.pieces}")
        return channels // activation.pieces
    return channels

