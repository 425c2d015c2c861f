"""Synthetic detection data for the R-CNN tests: coloured rectangles on a noisy background, as a VOC folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cvcore.datasets import voc_xml

COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}


def rect_image(rng: np.random.Generator, size_hw=(96, 128), n_objects=2):
    """uint8 RGB image with ``n_objects`` non-overlapping filled rectangles. Returns (image, boxes xyxy, labels)."""
    h, w = size_hw
    img = rng.normal(128, 10, (h, w, 3)).clip(0, 255).astype(np.uint8)
    boxes, labels = [], []
    while len(boxes) < n_objects:
        bw, bh = int(rng.integers(w // 5, w // 3)), int(rng.integers(h // 5, h // 3))
        x1, y1 = int(rng.integers(2, w - bw - 2)), int(rng.integers(2, h - bh - 2))
        box = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
        if any(min(box[2], b[2]) > max(box[0], b[0]) - 4 and min(box[3], b[3]) > max(box[1], b[1]) - 4
               for b in boxes):
            continue
        label = ["red", "blue"][len(boxes) % 2]
        img[y1:y1 + bh, x1:x1 + bw] = COLOURS[label]
        boxes.append(box)
        labels.append(label)
    return img, np.stack(boxes), labels


def write_rect_voc(root: Path, n_train=10, n_val=5, seed=0, size_hw=(96, 128)) -> Path:
    """VOC folder (Annotations/, JPEGImages/, ImageSets/Main/{train,val}.txt) of :func:`rect_image` pictures."""
    import cv2

    rng = np.random.default_rng(seed)
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n_train + n_val):
        name = f"rect_{i:03d}"
        img, boxes, labels = rect_image(rng, size_hw)
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        (root / "Annotations" / f"{name}.xml").write_text(
            voc_xml(f"{name}.jpg", size_hw[1], size_hw[0], np.floor(np.asarray(boxes, np.float64)), labels))
        names.append(name)
    (root / "ImageSets/Main/train.txt").write_text("\n".join(names[:n_train]) + "\n")
    (root / "ImageSets/Main/val.txt").write_text("\n".join(names[n_train:]) + "\n")
    return root


@pytest.fixture(scope="session")
def rect_voc(tmp_path_factory) -> Path:
    return write_rect_voc(tmp_path_factory.mktemp("rect_voc"))
