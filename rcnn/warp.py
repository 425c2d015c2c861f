"""Region warping (R-CNN section 2.1): context padding, anisotropic warp to the CNN input, mean fill.

Every proposal is dilated so that, after warping to ``out_size x out_size``, it is surrounded by ``context_padding``
pixels of image context (p = 16 at 227 px in the paper), and the dilated box is warped anisotropically (no aspect
ratio kept). Pixels outside the image take the mean pixel, i.e. zero after mean subtraction. All crops of one image
are produced in one batched :func:`torchvision.ops.roi_align` call.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_image", "context_padded_boxes", "warp_regions"]


def normalize_image(image: np.ndarray | Tensor, mean: tuple[float, float, float] = IMAGENET_MEAN,
                    std: tuple[float, float, float] = IMAGENET_STD, device: torch.device | str = "cpu") -> Tensor:
    """RGB uint8 image ``[H, W, 3]`` -> float tensor ``[3, H, W]``, mean-subtracted and divided by std.

    After this, the mean pixel is exactly zero, which is the fill value of :func:`warp_regions`.
    """
    device = torch.device(device)
    t = image if isinstance(image, Tensor) else torch.from_numpy(np.require(image, requirements=["C", "W"]))
    if device.type == "cuda" and t.device.type == "cpu":  # pinned memory + asynchronous copy
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    if t.ndim != 3 or t.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape [H, W, 3], got {tuple(t.shape)}")
    t = t.permute(2, 0, 1).float().div_(255.0)
    m = torch.tensor(mean, device=t.device).view(3, 1, 1)
    s = torch.tensor(std, device=t.device).view(3, 1, 1)
    return t.sub_(m).div_(s)


def context_padded_boxes(boxes: Tensor, out_size: int, context_padding: int) -> Tensor:
    """Dilate boxes so that a warp to ``out_size`` leaves ``context_padding`` pixels of context on every side.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy in image pixels.
        out_size: side of the warped crop (pixels).
        context_padding: context at the warped scale (pixels); 0 gives tight crops.
    Returns:
        ``Tensor[N, 4]`` xyxy, same centres, width and height scaled by ``out_size / (out_size - 2 * context_padding)``.
    """
    if not 0 <= 2 * context_padding < out_size:
        raise ValueError(f"context_padding={context_padding} must be in [0, out_size / 2) for out_size={out_size}")
    scale = out_size / (out_size - 2 * context_padding)
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1.0) * (scale / 2)
    return torch.cat([centre - half, centre + half], dim=1)


def warp_regions(image: Tensor, boxes: Tensor, out_size: int, context_padding: int = 16,
                 sampling_ratio: int = 2) -> Tensor:
    """Warp every box of one image to a square CNN input, with context padding and mean (zero) fill.

    Output pixel ``(i, j)`` of crop ``n`` is the average of ``sampling_ratio**2`` bilinear samples of the image, taken
    on a regular grid inside the output pixel's footprint in the dilated box (pixel centres at integer + 0.5 in xyxy
    coordinates; the image is extended by zeros outside, so the fill is the mean pixel). With ``sampling_ratio=1`` and
    an integer box inside the image this equals ``cv2.resize(crop, (S, S), interpolation=cv2.INTER_LINEAR)``.

    Args:
        image: ``Tensor[3, H, W]`` float, mean-subtracted (see :func:`normalize_image`).
        boxes: ``Tensor[N, 4]`` xyxy in pixels of ``image``.
        out_size: side S of the warped crops.
        context_padding: context p at the warped scale (R-CNN: 16).
        sampling_ratio: samples per output pixel and axis (2 reduces aliasing when shrinking large regions).
    Returns:
        ``Tensor[N, 3, S, S]`` on the image's device.
    """
    if image.ndim != 3:
        raise ValueError(f"expected image [3, H, W], got {tuple(image.shape)}")
    boxes = boxes.to(device=image.device, dtype=image.dtype).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return image.new_zeros((0, image.shape[0], out_size, out_size))
    dilated = context_padded_boxes(boxes, out_size, context_padding)
    # One zero pixel around the image makes roi_align's border rule (clamp within 1 px, zero beyond) equal to
    # bilinear interpolation of the image extended by zeros (mean fill).
    padded = F.pad(image, (1, 1, 1, 1))
    rois = torch.cat([dilated.new_zeros((dilated.shape[0], 1)), dilated + 1.0], dim=1)
    return roi_align(padded[None], rois, output_size=out_size, spatial_scale=1.0,
                     sampling_ratio=sampling_ratio, aligned=True)
