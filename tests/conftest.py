"""Shared fixtures: the optional real data folder and small synthetic datasets written on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from cvcore.datasets import voc_xml

# Tests share 2 cores with whatever else runs; keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(os.environ.get("SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $SHARED_DATA); tests using it are skipped when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real benchmark data not found at {SHARED_DATA} (set SHARED_DATA to run these tests)")
    return SHARED_DATA


def make_rect_image(rng: np.random.Generator, size_hw=(96, 128), n_objects=2, classes=("red", "blue")):
    """A noisy grey image with axis-aligned coloured rectangles. Returns (image uint8 RGB, boxes xyxy, labels)."""
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30)}
    h, w = size_hw
    img = rng.normal(120, 12, (h, w, 3)).clip(0, 255).astype(np.uint8)
    boxes, labels = [], []
    for _ in range(n_objects):
        for _attempt in range(50):
            bw, bh = rng.integers(w // 6, w // 3), rng.integers(h // 6, h // 3)
            x1, y1 = rng.integers(0, w - bw), rng.integers(0, h - bh)
            box = np.array([x1, y1, x1 + bw, y1 + bh], np.float32)
            if all(min(box[2], b[2]) <= max(box[0], b[0]) or min(box[3], b[3]) <= max(box[1], b[1]) for b in boxes):
                break
        label = classes[int(rng.integers(len(classes)))]
        img[int(box[1]):int(box[3]), int(box[0]):int(box[2])] = colours[label]
        boxes.append(box)
        labels.append(label)
    return img, np.stack(boxes), labels


def write_voc_folder(root: Path, n_images=6, seed=0, classes=("red", "blue"), size_hw=(96, 128),
                     with_imagesets=True) -> Path:
    """A tiny PASCAL VOC folder (Annotations/, JPEGImages/ as PNG-free JPEG, ImageSets/Main/{train,val}.txt)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(exist_ok=True)
    names = []
    for i in range(n_images):
        name = f"img_{i:03d}"
        img, boxes, labels = make_rect_image(rng, size_hw, classes=classes)
        Image.fromarray(img).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        (root / "Annotations" / f"{name}.xml").write_text(
            voc_xml(f"{name}.jpg", size_hw[1], size_hw[0], np.floor(np.asarray(boxes, np.float64)), labels))
        names.append(name)
    if with_imagesets:
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        split = max(1, n_images * 2 // 3)
        (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(names[:split]) + "\n")
        (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(names[split:]) + "\n")
    return root


@pytest.fixture
def voc_folder(tmp_path) -> Path:
    return write_voc_folder(tmp_path / "voc")
