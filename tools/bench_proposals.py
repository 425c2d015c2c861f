"""Selective search benchmark: seconds per image, boxes per image and recall at IoU 0.5 / 0.7 per backend and mode.

    python tools/bench_proposals.py --data ../shared/data --images 20 --few 3

BCCD: the first N images of ``val``; Raccoon: every 4th image in sorted order (the suggested validation split).
Runs are interleaved per image so that each sees the same machine load. The last row cuts the native fast run to
OpenCV's number of boxes on each image (recall at the same budget).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from cvcore.io import load_image
from rcnn.data import validation_records
from rcnn.proposals import proposal_best_iou, selective_search

RUNS = [  # (row name, mode, backend, extra keyword arguments, use only the first `--few` images)
    ("native fast", "fast", "native", {}, False),
    ("native fast, OpenCV's segmenter", "fast", "native", {"segmenter": "opencv"}, False),
    ("native fast, heap loop (no numba)", "fast", "native", {"loop": "heap"}, False),
    ("native fast, 2 threads", "fast", "native", {"n_workers": 2}, False),
    ("opencv fast", "fast", "opencv", {}, False),
    ("native single", "single", "native", {}, False),
    ("native quality", "quality", "native", {}, True),
    ("selectivesearch pkg (k=50,100)", "fast", "selectivesearch", {}, True),
]


def datasets(root: Path, n: int) -> dict:
    """The validation splits the shipped BCCD and Raccoon models were trained with (rcnn.data, as rcnn-train)."""
    configs = Path(__file__).resolve().parents[1] / "configs" / "rcnn"
    return {"BCCD val": validation_records(configs / "bccd.yaml", root / "bccd", n),
            "Raccoon val": validation_records(configs / "raccoon.yaml", root / "raccoon", n)}


def summarise(name: str, boxes: list, gts: list, seconds: list) -> str:
    ious = np.concatenate([proposal_best_iou(b, g) for b, g in zip(boxes, gts[: len(boxes)])])
    timing = f"{np.mean(seconds):.2f}" if seconds else "-"
    return (f"| {name} | {len(boxes)} | {timing} | {np.mean([len(b) for b in boxes]):.0f} | "
            f"{(ious >= 0.5).mean():.3f} | {(ious >= 0.7).mean():.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--images", type=int, default=20, help="images per data set")
    parser.add_argument("--few", type=int, default=3, help="images per data set for the slow runs")
    parser.add_argument("--max-side", type=int, default=500)
    args = parser.parse_args()
    if not (args.data / "bccd").is_dir():
        raise SystemExit(f"bench_proposals: no data at {args.data} (expected bccd/ and raccoon/)")

    for set_name, records in datasets(args.data, args.images).items():
        gts = [r.boxes[(r.boxes[:, 2] > r.boxes[:, 0]) & (r.boxes[:, 3] > r.boxes[:, 1])] for r in records]
        boxes = {name: [] for name, *_ in RUNS}
        seconds = {name: [] for name, *_ in RUNS}
        for i, record in enumerate(records):  # runs interleaved per image: each sees the same machine load
            image = load_image(record.image_path)
            for name, mode, backend, kwargs, few in RUNS:
                if few and i >= args.few:
                    continue
                start = time.perf_counter()
                boxes[name].append(selective_search(image, mode, backend, max_side=args.max_side, **kwargs))
                seconds[name].append(time.perf_counter() - start)
        print(f"\n{set_name}: {len(records)} images, {sum(len(g) for g in gts)} boxes, max side {args.max_side}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print("| run | images | s/image | boxes/image | recall@0.5 | recall@0.7 |\n|---|---|---|---|---|---|")
        for name, *_ in RUNS:
            print(summarise(name, boxes[name], gts, seconds[name]))
        same_budget = [b[: len(cv)] for b, cv in zip(boxes["native fast"], boxes["opencv fast"])]
        print(summarise("native fast, top boxes cut to OpenCV's count", same_budget, gts, []))
        for name in ("native fast", "opencv fast"):
            for top in (100, 300, 500, 1000):
                print(summarise(f"{name}, top {top}", [b[:top] for b in boxes[name]], gts, []))
        ratio = sum(seconds["native fast"]) / sum(seconds["opencv fast"])
        print(f"time ratio native fast / opencv fast: {ratio:.2f}")

if __name__ == "__main__":
    main()
