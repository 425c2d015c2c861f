"""Pose speed: `pose` CLI images/s on LSPET validation images, and FFT vs direct spatial-model convolution.

    python tools/bench_pose.py [--model lspet] [--images 200] [--data ../shared/data/lspet] [--json]

Without the data folder it times synthetic 200x150 images. Prints JSON with --json (used by tools/bench.py).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cvcore.config import load_config
from pose.cli import pose_main
from pose.config import PoseConfig
from pose.estimator import PoseEstimator
from pose.spatial_model import build_spatial_model


def images_per_second(model: str, data: Path, n: int, device: str) -> dict:
    """Run the `pose` CLI on n images (LSPET im08001... or synthetic) and read its own timing."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        src = data / "images"
        if src.is_dir():
            for i in range(8001, 8001 + n):
                (folder / f"im{i:05d}.jpg").symlink_to((src / f"im{i:05d}.jpg").resolve())
            source = f"LSPET val im08001-im{8000 + n:05d}"
        else:
            from PIL import Image

            rng = np.random.default_rng(0)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
            source = "synthetic 200x150"
        out = Path(tmp) / "out"
        # the pose model's own speed: whole images (the person detector, the default since top-down pose, is timed in
        # tools/bench_topdown.py)
        args = [str(folder), "--model", model, "--out", str(out), "--quiet", "--device", device, "--overwrite",
                "--detector", "none"]
        pose_main(args)  # warm-up
        start = time.perf_counter()
        pose_main(args)
        seconds = time.perf_counter() - start
    return {"source": source, "images": n, "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}


def time_it(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fft_vs_direct(cfg: PoseConfig, batch: int, repeats: int) -> dict:
    """Spatial model at the config's sizes: direct conv2d time / FFT time, forward and forward+backward."""
    w, h = (s // cfg.codec.stride for s in cfg.data.input_size)
    model = build_spatial_model(cfg.model.spatial_model, 14, (w, h))
    x = torch.rand(batch, 14, h, w)
    result = {"heatmap": f"{w}x{h}", "kernel": model.kernel_size, "pairs": len(model.edges), "batch": batch}
    for name, train in (("forward", False), ("forward_backward", True)):
        times = {}
        for use_fft in (True, False):
            model.use_fft = use_fft

            def step(train=train):
                if train:
                    model.zero_grad()
                    model(x).sum().backward()
                else:
                    with torch.no_grad():
                        model(x)

            times["fft" if use_fft else "direct"] = time_it(step, repeats)
        result[name] = {"fft_s": round(times["fft"], 4), "direct_s": round(times["direct"], 4),
                        "direct_over_fft": round(times["direct"] / times["fft"], 1)}
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lspet")
    p.add_argument("--config", default="configs/pose/lspet.yaml", help="sizes for the FFT/direct comparison")
    p.add_argument("--data", default="../shared/data/lspet")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch", type=int, default=16, help="heatmap batch for the FFT/direct comparison")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    cfg = load_config(PoseConfig, args.config)
    report = {"threads": torch.get_num_threads(),
              "pose_cli": images_per_second(args.model, Path(args.data), args.images, args.device),
              "spatial_model": fft_vs_direct(cfg, args.batch, args.repeats),
              "model_pck": PoseEstimator.load(args.model).metrics.get("PCK@0.2")}
    print(json.dumps(report, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
