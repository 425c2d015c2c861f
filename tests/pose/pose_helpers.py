"""Small synthetic LSPET-format data and a tiny pose config, so pose tests run in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvcore.config import load_config
from pose.config import PoseConfig


def synthetic_pose(rng: np.random.Generator, size_hw=(72, 88)) -> tuple[np.ndarray, np.ndarray]:
    """A stick figure: 14 LSP-ordered joints (x, y) around the image centre, drawn as coloured dots on noise."""
    h, w = size_hw
    cx, cy = w / 2 + rng.uniform(-4, 4), h / 2 + rng.uniform(-4, 4)
    # rough LSP layout (right ankle ... head top) in units of 10 px, mirrored by x for the left side
    layout = np.array([[-1, 3], [-1, 1.6], [-0.7, 0.3], [0.7, 0.3], [1, 1.6], [1, 3],
                       [-2, -0.3], [-1.6, -1.2], [-0.9, -1.8], [0.9, -1.8], [1.6, -1.2], [2, -0.3],
                       [0, -2.1], [0, -3.0]])
    joints = np.stack([cx + 10 * layout[:, 0], cy + 10 * layout[:, 1]], 1) + rng.normal(0, 0.8, (14, 2))
    image = rng.normal(100, 10, (h, w, 3)).clip(0, 255).astype(np.uint8)
    for k, (x, y) in enumerate(joints):
        colour = (40 + 15 * k, 255 - 15 * k, (90 * k) % 255)
        xi, yi = int(round(x)), int(round(y))
        image[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2] = colour
    return image, joints


def write_lspet(root: Path, n: int = 12, seed: int = 0, missing: bool = True) -> Path:
    """An LSPET-format folder: ``joints.mat`` (14 x 3 x n, 1-based, visibility flags) and ``images/im%05d.jpg``."""
    import scipy.io
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    arr = np.zeros((14, 3, n))
    for i in range(n):
        image, joints = synthetic_pose(rng)
        Image.fromarray(image).save(root / "images" / f"im{i + 1:05d}.jpg", quality=95)
        arr[:, :2, i] = joints + 1.0  # MATLAB 1-based
        arr[:, 2, i] = 1
        if missing and i % 3 == 0:
            arr[0, :, i] = (0, -5, 0)  # a missing right ankle with junk coordinates, as in LSPET
    scipy.io.savemat(root / "joints.mat", {"joints": arr})
    return root


def tiny_config(root: Path, out_dir: Path, **sections) -> PoseConfig:
    """A config small enough to train a few steps per stage in about a second."""
    data = {
        "data": {"root": str(root), "train_range": [1, 8], "val_range": [9, 12], "input_size": [32, 32],
                 "margin": 1.4, "min_crop": 16.0, "min_visible": 4, "context": 1.25,
                 "cache_dir": str(out_dir / "cache")},
        "codec": {"stride": 4, "sigma": 1.0},
        "model": {"part_detector": {"banks": 2, "channels": [4, 8, 8], "kernel_size": 3, "head_kernel": 3,
                                    "head_channels": [8, 8]},
                  "spatial_model": {"kernel_size": 9}},
        "train": {"out_dir": str(out_dir / "run"), "batch_size": 4, "log_every": 1, "checkpoint_every": 1,
                  "eval_every": 0, "eval_limit": 4, "device": "cpu",
                  "part_detector": {"epochs": 1, "warmup_steps": 0},
                  "spatial_model": {"epochs": 1, "warmup_steps": 0},
                  "joint": {"epochs": 1, "warmup_steps": 0}},
    }
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return load_config(PoseConfig, data=data)
