"""Console entry points: ``pose`` (inference on a folder of images) and ``pose-train`` (staged training)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cvcore.cli import CLIError, add_common_args, run_cli, setup_logging

__all__ = ["pose_main", "train_main", "draw_skeleton"]

log = logging.getLogger("pose")

POSE_EXAMPLES = """examples:
  pose images/ --model lspet --out out/                 # whole images, shipped LSPET model
  pose images/ --model lspet --out out/ --vis           # also write images with the skeleton drawn
  pose images/ --boxes out/detections.json --out out/   # one pose per detected box (top-down)
  pose images/ --model runs/pose/lspet/model.pt --out out/ --json
"""

TRAIN_EXAMPLES = """examples:
  pose-train --config configs/pose/lspet.yaml
  pose-train --config configs/pose/lspet.yaml train.out_dir=runs/pose/try train.part_detector.epochs=2
  pose-train --config configs/pose/lspet.yaml model.part_detector.banks=1 model.spatial_model.enabled=false
"""


def draw_skeleton(image, joints, skeleton: Sequence[tuple[int, int]], box=None, min_score: float = 0.0):
    """Draw joints Array[K, 3] (x, y, score) and limbs on a copy of an RGB uint8 image (OpenCV)."""
    import cv2
    import numpy as np

    out = np.ascontiguousarray(image.copy())
    scale = max(1, round(max(out.shape[:2]) / 300))
    colors = [(255, 64, 64), (64, 200, 64), (64, 128, 255), (255, 200, 0), (200, 64, 255), (0, 220, 220)]
    if box is not None:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), scale)
    for n, (i, j) in enumerate(skeleton):
        if joints[i, 2] >= min_score and joints[j, 2] >= min_score:
            p, q = tuple(int(round(v)) for v in joints[i, :2]), tuple(int(round(v)) for v in joints[j, :2])
            cv2.line(out, p, q, colors[n % len(colors)], 2 * scale, cv2.LINE_AA)
    for x, y, s in joints:
        if s >= min_score:
            cv2.circle(out, (int(round(x)), int(round(y))), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def _pose_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose", description="Single-person pose estimation (Tompson et al. 2014) on a "
                                "folder of images; writes one poses JSON file.", epilog=POSE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="folder of images")
    p.add_argument("--model", default="lspet", help="model file or shipped model name (default: lspet)")
    p.add_argument("--out", required=True, help="output folder (poses.json, vis/)")
    p.add_argument("--boxes", help="detections JSON written by `detect`: one pose per box")
    p.add_argument("--min-box-score", type=float, default=0.0, help="ignore boxes scoring below this")
    p.add_argument("--label", default=None, help="only boxes with this label (default: all)")
    p.add_argument("--vis", action="store_true", help="write images with the skeleton drawn to OUT/vis/")
    p.add_argument("--recursive", action="store_true", help="walk sub-folders")
    p.add_argument("--flip-test", action="store_true", help="average with the mirrored image, left/right "
                   "joints swapped back (2x the time; lspet: PCK@0.2 55.8 -> 57.4 on LSPET val)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default; 1 was fastest on a "
                   "busy 2-core CPU, see BENCHMARKS.md)")
    add_common_args(p)
    return p.parse_args(argv)


def _load_boxes(path: str, min_score: float, label: str | None) -> dict[str, list]:
    from cvcore.datasets import read_detections

    _, images = read_detections(path)  # validates; errors name the file and entry
    out: dict[str, list] = {}
    for file, dets in images.items():
        out[file] = [[float(v) for v in box] for box, score, lab in zip(dets.boxes, dets.scores, dets.labels)
                     if score >= min_score and (label is None or lab == label)]
    return out


def pose_run(argv: Sequence[str] | None = None) -> int:
    args = _pose_args(argv)
    setup_logging(args.quiet, args.debug)
    import numpy as np
    from tqdm.auto import tqdm

    from cvcore.datasets import write_poses
    from cvcore.device import set_num_threads
    from cvcore.io import ImageReadError, atomic_write_bytes, list_images, load_image
    from pose.estimator import PoseEstimator

    if args.threads > 0:
        set_num_threads(args.threads)
    folder = Path(args.images)
    if not folder.is_dir():
        raise CLIError(f"{folder}: not a folder of images")
    files = list_images(folder, recursive=args.recursive)
    if not files:
        raise CLIError(f"{folder}: no images found")
    est = PoseEstimator.load(args.model, device=args.device, flip_test=args.flip_test or None)
    boxes = _load_boxes(args.boxes, args.min_box_score, args.label) if args.boxes else None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.vis:
        (out_dir / "vis").mkdir(exist_ok=True)

    images_out, skipped, people = [], [], 0
    pending: list[tuple[str, np.ndarray, list]] = []

    def flush() -> None:
        nonlocal people
        pairs = [(name, img, b) for name, img, bs in pending for b in (bs or [None])]
        results = []
        for k in range(0, len(pairs), args.batch_size):
            chunk = pairs[k:k + args.batch_size]
            results.extend(est.predict_batch([c[1] for c in chunk], [c[2] for c in chunk]))
        r = 0
        for name, img, bs in pending:
            persons = []
            for b in (bs or [None]):
                persons.append({"box": b, "joints": results[r].tolist()})
                r += 1
            people += len(persons)
            images_out.append({"file": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                               "people": persons})
            if args.vis:
                import cv2

                vis = img
                for p in persons:
                    vis = draw_skeleton(vis, np.asarray(p["joints"]), est.skeleton, p["box"])
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                if ok:
                    atomic_write_bytes(out_dir / "vis" / (Path(name).stem + ".jpg"), buf.tobytes())
        pending.clear()

    import time

    start = time.perf_counter()
    for path in tqdm(files, desc="pose", unit="img", disable=args.quiet, dynamic_ncols=True):
        name = path.relative_to(folder).as_posix()
        try:
            image = load_image(path)
        except ImageReadError as e:
            log.warning("skipped %s", e)
            skipped.append({"file": name, "error": str(e)})
            continue
        bs = None
        if boxes is not None:
            bs = boxes.get(name, [])
            if not bs:
                images_out.append({"file": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                                   "people": []})
                continue
        pending.append((name, image, bs))
        if len(pending) >= args.batch_size:
            flush()
    flush()
    seconds = time.perf_counter() - start
    out_file = out_dir / "poses.json"
    write_poses(out_file, est.joint_names, images_out)
    summary = {"poses": str(out_file), "images": len(images_out), "people": people, "skipped": skipped,
               "seconds": round(seconds, 3), "images_per_s": round(len(images_out) / max(seconds, 1e-9), 2)}
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        print(f"{len(images_out)} images, {people} people -> {out_file} "
              f"({summary['images_per_s']} images/s; {len(skipped)} unreadable skipped)", file=sys.stderr)
    return 0


def train_run(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pose-train", description="Staged training of the pose model: part detector, "
                                "spatial model on the frozen part detector, then joint; each stage resumes.",
                                epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/pose/lspet.yaml", help="YAML config (default: %(default)s)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.part_detector.epochs=2")
    p.add_argument("--stages", default="part_detector,spatial_model,joint", help="comma-separated stages to run")
    add_common_args(p)
    args = p.parse_intermixed_args(argv)  # overrides may follow options
    setup_logging(args.quiet, args.debug)
    from cvcore.config import load_config
    from pose.config import PoseConfig
    from pose.train import format_pck_table, train

    overrides = list(args.overrides)
    if args.device != "auto":
        overrides.append(f"train.device={args.device}")
    cfg = load_config(PoseConfig, args.config, overrides)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    results = train(cfg, progress=not args.quiet, stages=stages)
    if args.json:
        print(json.dumps({k: {a: v for a, v in r.items() if a.startswith("PCK@")} for k, r in results.items()}))
    elif not args.quiet and results:
        print(format_pck_table(results, tuple(cfg.eval.alphas)))
        print(f"model: {Path(cfg.train.out_dir) / 'model.pt'}")
    return 0


def pose_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``pose``."""
    return run_cli(pose_run, argv, prog="pose")


def train_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``pose-train``."""
    return run_cli(train_run, argv, prog="pose-train")


if __name__ == "__main__":
    sys.exit(pose_main())
