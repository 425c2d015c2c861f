"""Heatmap codec: the one object that renders Gaussian targets and decodes predicted heatmaps, so they cannot disagree.

Pixel-centre convention (docs/ARCHITECTURE.md): integer coordinates are pixel centres; heatmap cell ``u`` at stride
``s`` covers input pixels ``u*s ... u*s+s-1`` and is centred at input coordinate ``x = u*s + (s-1)/2``. The
conversion lives in :mod:`cvcore.ops` (``input_to_heatmap`` / ``heatmap_to_input``) and is used in both directions.

Horizontal flip: mirroring an input of width ``W = w*s`` maps ``x -> W-1-x`` and heatmap cell ``u -> w-1-u`` exactly,
so flipped heatmaps can be mirrored back cell by cell (:meth:`HeatmapCodec.flip_back`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cvcore.datasets.records import flip_permutation  # re-exported: the pose code's import path
from cvcore.ops import decode_heatmaps, render_gaussian_heatmaps

__all__ = ["HeatmapCodec", "flip_permutation"]


class HeatmapCodec:
    """Encode joints as Gaussian heatmaps at a fixed stride and decode heatmaps back to input-pixel coordinates.

    Args:
        input_size: network input (width, height) in pixels; both must be multiples of ``stride``.
        stride: input pixels per heatmap cell.
        sigma: standard deviation of the target Gaussians, in heatmap cells.
        refine: sub-pixel refinement of the arg-max: ``"dark"`` (Taylor expansion of the log-heatmap), ``"quarter"``
            (quarter-cell shift toward the higher neighbour) or ``None`` / ``"none"`` (cell centre).
    """

    def __init__(self, input_size: tuple[int, int], stride: int, sigma: float, refine: str | None = "dark"):
        w, h = int(input_size[0]), int(input_size[1])
        if w % stride or h % stride:
            raise ValueError(f"input size {w}x{h} must be a multiple of the stride {stride}")
        self.input_size = (w, h)
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.refine = None if refine in (None, "none") else refine
        self.heatmap_size = (w // stride, h // stride)  # (width, height)

    def encode(self, joints: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
        """Render targets.

        Args:
            joints: Tensor[K, 2] or Tensor[N, K, 2], (x, y) in input pixels.
            visible: Tensor[K] or Tensor[N, K] (bool or 0/1): annotated joints.
        Returns:
            heatmaps Tensor[(N,) K, h, w] float32 (Gaussian of peak 1, zero for missing joints);
            weights Tensor[(N,) K] float32: 1 for annotated joints inside the input, 0 otherwise (no loss).
        """
        joints = torch.as_tensor(joints, dtype=torch.float32)
        visible = torch.as_tensor(visible).bool()
        w, h = self.input_size
        inside = ((joints[..., 0] >= -0.5) & (joints[..., 0] < w - 0.5)
                  & (joints[..., 1] >= -0.5) & (joints[..., 1] < h - 0.5))
        keep = visible & inside
        hw = (self.heatmap_size[1], self.heatmap_size[0])
        heatmaps = render_gaussian_heatmaps(joints, keep, hw, self.stride, self.sigma)
        return heatmaps, keep.float()

    def decode(self, heatmaps: Tensor) -> tuple[Tensor, Tensor]:
        """Arg-max + sub-pixel refinement.

        Args:
            heatmaps: Tensor[N, K, h, w] (or Tensor[K, h, w]).
        Returns:
            coords Tensor[N, K, 2] (x, y) in input pixels; scores Tensor[N, K] (heatmap maxima).
        """
        single = heatmaps.ndim == 3
        if single:
            heatmaps = heatmaps[None]
        coords, scores = decode_heatmaps(heatmaps, self.stride, refine=self.refine)
        return (coords[0], scores[0]) if single else (coords, scores)

    @staticmethod
    def flip_back(heatmaps: Tensor, flip_pairs: Sequence[tuple[int, int]]) -> Tensor:
        """Heatmaps Tensor[N, K, h, w] predicted on a mirrored input -> heatmaps in the original frame and labels."""
        perm = torch.from_numpy(flip_permutation(heatmaps.shape[1], flip_pairs)).to(heatmaps.device)
        return heatmaps.flip(-1)[:, perm]

