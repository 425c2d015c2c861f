"""Stateless tensor maths shared by both pipelines: boxes (through ``torchvision.ops``) and Gaussian heatmaps.

Conventions (see docs/ARCHITECTURE.md):

* Boxes are float ``xyxy`` in pixels, width = x2 - x1 (no "+1").
* Keypoint coordinates are continuous with integer values at pixel centres. A heatmap at stride ``s`` has cell ``u``
  covering input pixels ``u*s ... u*s + s - 1``, so cell ``u`` is centred on input coordinate ``u*s + (s - 1)/2``.
  :func:`input_to_heatmap` and :func:`heatmap_to_input` are the only places that convert between the two.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.ops as tvops
from torch import Tensor

__all__ = [
    "box_convert", "box_area", "box_iou", "clip_boxes", "remove_small_boxes", "nms", "batched_nms",
    "input_to_heatmap", "heatmap_to_input", "render_gaussian_heatmaps", "decode_heatmaps",
]


# ---------------------------------------------------------------------------------------------------------- boxes
def _as_tensor(boxes: Tensor | np.ndarray) -> Tensor:
    return boxes if isinstance(boxes, Tensor) else torch.as_tensor(np.asarray(boxes), dtype=torch.float32)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert Tensor[N, 4] between ``xyxy``, ``xywh`` (COCO: x, y, w, h) and ``cxcywh``."""
    return tvops.box_convert(_as_tensor(boxes), in_fmt, out_fmt)


def box_area(boxes: Tensor) -> Tensor:
    """Areas of Tensor[N, 4] xyxy boxes -> Tensor[N]."""
    return tvops.box_area(_as_tensor(boxes))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair: boxes1 Tensor[N, 4], boxes2 Tensor[M, 4], both xyxy -> Tensor[N, M]; two empty boxes
    (union 0, where torchvision gives NaN) have IoU 0."""
    return torch.nan_to_num(tvops.box_iou(_as_tensor(boxes1), _as_tensor(boxes2)), nan=0.0)


def clip_boxes(boxes: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Clip Tensor[N, 4] xyxy boxes to an image of ``(height, width)``: x in [0, W], y in [0, H]."""
    return tvops.clip_boxes_to_image(_as_tensor(boxes), tuple(int(s) for s in size_hw))


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (Tensor[K] int64) of xyxy boxes whose width and height are both >= ``min_size``."""
    return tvops.remove_small_boxes(_as_tensor(boxes), float(min_size))


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy NMS: indices of kept boxes (Tensor[K] int64) sorted by decreasing score. Boxes xyxy."""
    return tvops.nms(_as_tensor(boxes).float(), _as_tensor(scores).float(), float(iou_threshold))


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS independently per category ``idxs`` (Tensor[N] int64); indices kept, sorted by decreasing score."""
    return tvops.batched_nms(_as_tensor(boxes).float(), _as_tensor(scores).float(), torch.as_tensor(idxs),
                             float(iou_threshold))


# ------------------------------------------------------------------------------------------------------- heatmaps
def input_to_heatmap(coords: Tensor, stride: int) -> Tensor:
    """Input-pixel coordinates -> heatmap-cell coordinates: ``u = (x - (s - 1)/2) / s``."""
    return (coords - (stride - 1) / 2.0) / stride


def heatmap_to_input(coords: Tensor, stride: int) -> Tensor:
    """Heatmap-cell coordinates -> input-pixel coordinates: ``x = u*s + (s - 1)/2``."""
    return coords * stride + (stride - 1) / 2.0


def render_gaussian_heatmaps(joints: Tensor, visible: Tensor, heatmap_hw: tuple[int, int], stride: int,
                             sigma: float) -> Tensor:
    """Unnormalised Gaussians (peak 1) centred on each joint, at sub-pixel precision.

    Args:
        joints: Tensor[K, 2] or Tensor[N, K, 2], (x, y) in input pixels.
        visible: Tensor[K] or Tensor[N, K] bool; invisible joints get an all-zero map.
        heatmap_hw: (h, w) of the output maps.
        stride: input pixels per heatmap cell.
        sigma: standard deviation in heatmap cells.
    Returns:
        Tensor[K, h, w] (or Tensor[N, K, h, w]) float32: ``exp(-((u - u0)^2 + (v - v0)^2) / (2 sigma^2))``.
    """
    joints = torch.as_tensor(joints, dtype=torch.float32)
    visible = torch.as_tensor(visible, dtype=torch.bool)
    h, w = heatmap_hw
    centres = input_to_heatmap(joints, stride)  # [..., K, 2]
    us = torch.arange(w, dtype=torch.float32, device=joints.device)
    vs = torch.arange(h, dtype=torch.float32, device=joints.device)
    gx = torch.exp(-((us - centres[..., 0:1]) ** 2) / (2 * sigma**2))  # [..., K, w]
    gy = torch.exp(-((vs - centres[..., 1:2]) ** 2) / (2 * sigma**2))  # [..., K, h]
    maps = gy[..., :, None] * gx[..., None, :]
    return maps * visible[..., None, None].to(maps.dtype)


def decode_heatmaps(heatmaps: Tensor, stride: int, refine: str | None = "dark",
                    blur_sigma: float | None = None) -> tuple[Tensor, Tensor]:
    """Arg-max of each map with sub-pixel refinement, mapped back to input pixels.

    Args:
        heatmaps: Tensor[N, K, h, w].
        stride: input pixels per heatmap cell.
        refine: ``None`` (cell centre), ``"quarter"`` (shift 0.25 cell toward the higher neighbour, as in Newell et al.)
            or ``"dark"`` (second-order Taylor expansion of the log-heatmap at the maximum, Zhang et al. 2020; exact for
            a Gaussian peak).
        blur_sigma: for ``"dark"``, optionally smooth the maps first (in cells) as DARK's distribution modulation does.
    Returns:
        coords Tensor[N, K, 2] (x, y) in input pixels, scores Tensor[N, K] (the maximum value of each map).
    """
    if heatmaps.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, h, w], got shape {tuple(heatmaps.shape)}")
    n, k, h, w = heatmaps.shape
    hm = heatmaps.detach().float()
    flat = hm.reshape(n, k, -1)
    scores, idx = flat.max(dim=-1)
    ys = torch.div(idx, w, rounding_mode="floor")
    xs = idx - ys * w
    coords = torch.stack([xs, ys], dim=-1).float()
    if refine == "quarter":
        def at(dy: int, dx: int) -> Tensor:
            yy = (ys + dy).clamp(0, h - 1)
            xx = (xs + dx).clamp(0, w - 1)
            return torch.gather(flat, 2, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

        dx = torch.sign(at(0, 1) - at(0, -1)) * ((xs > 0) & (xs < w - 1))
        dy = torch.sign(at(1, 0) - at(-1, 0)) * ((ys > 0) & (ys < h - 1))
        coords = coords + 0.25 * torch.stack([dx, dy], dim=-1)
    elif refine == "dark":
        if blur_sigma:
            radius = max(1, int(math.ceil(3 * blur_sigma)))
            t = torch.arange(-radius, radius + 1, dtype=torch.float32)
            g = torch.exp(-(t**2) / (2 * blur_sigma**2))
            g = g / g.sum()
            x = hm.reshape(n * k, 1, h, w)
            peak = x.amax(dim=(2, 3), keepdim=True)
            x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
            x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1))
            x = x * peak / x.amax(dim=(2, 3), keepdim=True).clamp_min(1e-12)  # keep the original peak height
            flat = x.reshape(n, k, -1)
        logm = torch.log(flat.clamp_min(1e-10))

        def at(dy: int, dx: int) -> Tensor:
            yy = (ys + dy).clamp(0, h - 1)
            xx = (xs + dx).clamp(0, w - 1)
            return torch.gather(logm, 2, (yy * w + xx).unsqueeze(-1)).squeeze(-1)

        c = at(0, 0)
        dx_ = 0.5 * (at(0, 1) - at(0, -1))
        dy_ = 0.5 * (at(1, 0) - at(-1, 0))
        dxx = at(0, 1) - 2 * c + at(0, -1)
        dyy = at(1, 0) - 2 * c + at(-1, 0)
        dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = dxx * dyy - dxy**2
        interior = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1)
        ok = interior & (det > 1e-12) & (dxx < 0) & (dyy < 0)  # a proper maximum of the log-surface
        safe_det = torch.where(ok, det, torch.ones_like(det))
        off_x = -(dyy * dx_ - dxy * dy_) / safe_det
        off_y = -(dxx * dy_ - dxy * dx_) / safe_det
        off = torch.stack([off_x, off_y], dim=-1).clamp(-1.0, 1.0) * ok[..., None]
        coords = coords + off
    elif refine is not None:
        raise ValueError(f"unknown refine '{refine}' (use None, 'quarter' or 'dark')")
    return heatmap_to_input(coords, stride), scores
