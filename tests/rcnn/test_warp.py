"""Warp: batched roi_align crops against a per-crop reference (explicit bilinear sampling, cv2.resize)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from rcnn.warp import context_padded_boxes, normalize_image, warp_regions


def bilinear_zero_fill(img: np.ndarray, x: float, y: float) -> np.ndarray:
    """Bilinear value of ``img[C, H, W]`` at continuous pixel coordinates (pixel (i, j) centred at (j + .5, i + .5)),
    the image extended by zeros."""
    c, h, w = img.shape
    u, v = x - 0.5, y - 0.5
    x0, y0 = int(np.floor(u)), int(np.floor(v))
    out = np.zeros(c)
    for yy, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
        for xx, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[:, yy, xx]
    return out


def reference_warp(img: np.ndarray, box, size: int, padding: int, samples: int) -> np.ndarray:
    """Straightforward per-crop R-CNN warp: dilate by ``padding`` at the warped scale, then average ``samples^2``
    bilinear samples per output pixel."""
    x1, y1, x2, y2 = box
    s = size / (size - 2 * padding)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1) * s / 2, max(y2 - y1, 1) * s / 2
    x1, y1, bw, bh = cx - hw, cy - hh, 2 * hw / size, 2 * hh / size
    out = np.zeros((img.shape[0], size, size))
    for i in range(size):
        for j in range(size):
            acc = 0
            for a in range(samples):
                for b in range(samples):
                    acc = acc + bilinear_zero_fill(img, x1 + (j + (b + 0.5) / samples) * bw,
                                                   y1 + (i + (a + 0.5) / samples) * bh)
            out[:, i, j] = acc / samples ** 2
    return out


@pytest.mark.parametrize("samples", [1, 2])
def test_warp_matches_per_crop_reference(samples):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((3, 40, 50)).astype(np.float32)
    boxes = np.array([[5.0, 4.0, 30.0, 35.0],      # inside; the context reaches outside
                      [-6.3, 10.2, 20.7, 18.9],     # crosses the left border
                      [35.5, 30.25, 58.0, 47.0],    # crosses right and bottom
                      [12.0, 12.0, 14.5, 13.0]], np.float32)  # tiny, strongly upsampled
    size, padding = 12, 2
    out = warp_regions(torch.from_numpy(img), torch.from_numpy(boxes), size, padding, samples).numpy()
    for k, box in enumerate(boxes):
        ref = reference_warp(img, box, size, padding, samples)
        np.testing.assert_allclose(out[k], ref, atol=1e-4)


def test_warp_equals_cv2_resize_inside_image():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((3, 60, 80)).astype(np.float32)
    out = warp_regions(torch.from_numpy(img), torch.tensor([[10.0, 5.0, 50.0, 45.0]]), 32, 0, 1)[0].numpy()
    ref = cv2.resize(img[:, 5:45, 10:50].transpose(1, 2, 0), (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), atol=1e-5)


def test_context_padding_geometry_and_mean_fill():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 70.0]])
    dilated = context_padded_boxes(boxes, 227, 16)
    # the original box spans pixels [16, 211) of the 227-pixel crop
    scale = (dilated[:, 2:] - dilated[:, :2]) / 227
    np.testing.assert_allclose(((boxes[:, :2] - dilated[:, :2]) / scale).numpy(), [[16.0, 16.0]], atol=1e-4)
    np.testing.assert_allclose(((dilated[:, 2:] - boxes[:, 2:]) / scale).numpy(), [[16.0, 16.0]], atol=1e-4)
    image = normalize_image(np.full((20, 20, 3), 200, np.uint8))
    outside = warp_regions(image, torch.tensor([[100.0, 100.0, 140.0, 130.0]]), 16, 2)
    assert torch.count_nonzero(outside) == 0  # far outside: the mean pixel, zero after normalisation
    mean_pixel = np.round(np.array([0.485, 0.456, 0.406]) * 255).astype(np.uint8)
    assert normalize_image(np.tile(mean_pixel, (4, 4, 1))).abs().max() < 0.01


def test_context_padding_rejects_impossible_values():
    with pytest.raises(ValueError, match="context_padding"):
        context_padded_boxes(torch.zeros(1, 4), 32, 16)
