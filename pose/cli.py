"""Console entry points: ``pose`` (inference on a folder of images) and ``pose-train`` (staged training)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cvcore.cli import CLIError, add_common_args, run_cli, setup_logging
from pose.config import DEFAULT_DETECTOR

__all__ = ["pose_main", "train_main"]

log = logging.getLogger("pose")

POSE_EXAMPLES = """examples:
  pose photos/ --out out/ --vis                         # every person: shipped person detector, then lspet per person
  pose photos/ --out out/ --detector none               # the whole image is one person (single-person behaviour)
  pose photos/ --boxes out/detections.json --out out/   # one pose per box of a detections file (from `detect`)
  pose photos/ --detector runs/rcnn/person/detector.pt --min-box-score 0.5 --out out/
  pose images/ --model runs/pose/lspet/model.pt --out out/ --json
"""

TRAIN_EXAMPLES = """examples:
  pose-train --config configs/pose/lspet.yaml
  pose-train --config configs/pose/lspet.yaml train.out_dir=runs/pose/try train.part_detector.epochs=2
  pose-train --config configs/pose/lspet.yaml model.part_detector.banks=1 model.spatial_model.enabled=false
"""


def _pose_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose", description="Pose estimation (Tompson et al. 2014) on a folder of images: "
                                "an R-CNN person detector finds the people, the pose model estimates each one's "
                                "joints; writes one poses JSON file.", epilog=POSE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="folder of images")
    p.add_argument("--model", default="lspet", help="pose model file or shipped model name (default: lspet)")
    p.add_argument("--out", required=True, help="output folder (poses.json, vis/)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR,
                   help="person detector: shipped name or detector file (default: %(default)s); 'none': the whole "
                        "image is one person")
    p.add_argument("--boxes", help="detections JSON written by `detect`: one pose per box (instead of --detector)")
    p.add_argument("--min-box-score", type=float, default=None,
                   help="keep boxes scoring at least this (default: the detector's stored threshold; 0 with --boxes)")
    p.add_argument("--label", default=None,
                   help="only boxes with this label (default: person with --detector, every label with --boxes)")
    p.add_argument("--max-people", type=int, default=20, help="at most this many people per image (default: 20)")
    p.add_argument("--vis", action="store_true", help="write images with every person's box and skeleton to OUT/vis/")
    p.add_argument("--recursive", action="store_true", help="walk sub-folders")
    p.add_argument("--flip-test", action="store_true", help="average with the mirrored image, left/right "
                   "joints swapped back (2x the pose time)")
    p.add_argument("--batch-size", type=int, default=16, help="people per pose forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_common_args(p)
    return p.parse_args(argv)


def _load_boxes(path: str, min_score: float, label: str | None) -> dict[str, tuple[list, list]]:
    from cvcore.datasets import read_detections

    _, images = read_detections(path)  # validates; errors name the file and entry
    out: dict[str, tuple[list, list]] = {}
    for file, dets in images.items():
        keep = [i for i, (score, lab) in enumerate(zip(dets.scores, dets.labels))
                if score >= min_score and (label is None or lab == label)]
        out[file] = ([[float(v) for v in dets.boxes[i]] for i in keep], [float(dets.scores[i]) for i in keep])
    return out


def pose_run(argv: Sequence[str] | None = None) -> int:
    args = _pose_args(argv)
    setup_logging(args.quiet, args.debug)
    import time

    import numpy as np
    from tqdm.auto import tqdm

    from cvcore.datasets import write_poses
    from cvcore.device import set_num_threads
    from cvcore.io import ImageReadError, atomic_write_bytes, list_images, load_image
    from pose.topdown import TopDown

    if args.threads > 0:
        set_num_threads(args.threads)
    folder = Path(args.images)
    if not folder.is_dir():
        raise CLIError(f"{folder}: not a folder of images")
    files = list_images(folder, recursive=args.recursive)
    if not files:
        raise CLIError(f"{folder}: no images found")
    if args.boxes:
        detector = None
        boxes = _load_boxes(args.boxes, args.min_box_score or 0.0, args.label)
    else:
        detector, boxes = args.detector, None
    try:
        td = TopDown.load(detector, args.model, device=args.device, flip_test=args.flip_test or None,
                          min_score=args.min_box_score, label=args.label or "person", max_people=args.max_people)
    except (FileNotFoundError, ValueError) as e:
        raise CLIError(str(e)) from None
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.vis:
        (out_dir / "vis").mkdir(exist_ok=True)

    images_out, skipped, people = [], [], 0
    clock = {"decode": 0.0, "detector": 0.0, "pose": 0.0, "write": 0.0}
    pending: list[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]] = []

    def flush() -> None:
        nonlocal people
        t = time.perf_counter()
        found = td.estimate([p[1] for p in pending], [p[2] for p in pending], [p[3] for p in pending],
                            batch_size=args.batch_size)
        clock["pose"] += time.perf_counter() - t
        t = time.perf_counter()
        for (name, img, _, _), persons in zip(pending, found):
            people += len(persons)
            images_out.append({"file": name, "width": int(img.shape[1]), "height": int(img.shape[0]),
                               "people": [{"box": None if p.box is None else p.box.tolist(),
                                           **({} if p.box_score is None else {"box_score": p.box_score}),
                                           "joints": p.joints.tolist()} for p in persons]})
            if args.vis:
                import cv2

                from cvcore.visualize import draw_people

                vis = draw_people(img, persons, td.skeleton)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                if ok:
                    atomic_write_bytes(out_dir / "vis" / (Path(name).stem + ".jpg"), buf.tobytes())
        clock["write"] += time.perf_counter() - t
        pending.clear()

    start = time.perf_counter()
    for path in tqdm(files, desc="pose", unit="img", disable=args.quiet, dynamic_ncols=True):
        name = path.relative_to(folder).as_posix()
        t = time.perf_counter()
        try:
            image = load_image(path)
        except ImageReadError as e:
            log.warning("skipped %s", e)
            skipped.append({"file": name, "error": str(e)})
            continue
        clock["decode"] += time.perf_counter() - t
        t = time.perf_counter()
        if boxes is not None:
            bs, ss = boxes.get(name, ([], []))
            bs, ss = np.asarray(bs, np.float32).reshape(-1, 4), np.asarray(ss, np.float32)
        else:
            bs, ss = td.find_people(image)
        clock["detector"] += time.perf_counter() - t
        pending.append((name, image, bs, ss))
        if sum(1 if b is None else len(b) for _, _, b, _ in pending) >= args.batch_size:
            flush()
    if pending:
        flush()
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    out_file = out_dir / "poses.json"
    write_poses(out_file, td.joint_names, images_out)
    clock["write"] += time.perf_counter() - t
    summary = {"poses": str(out_file), "images": len(images_out), "people": people, "skipped": skipped,
               "detector": None if args.boxes else str(args.detector), "min_box_score": td.min_score,
               "seconds": round(seconds, 3), "images_per_s": round(len(images_out) / max(seconds, 1e-9), 2),
               "seconds_by_stage": {k: round(v, 3) for k, v in clock.items()}}
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
