"""Console entry points: ``pose`` (inference on a folder of images) and ``pose-train`` (staged training)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cvcore.cli import CLIError, add_common_args, add_folder_run_args, run_cli, setup_logging
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

def _pose_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pose", description="Pose estimation (Tompson et al. 2014) on a folder of images: "
                                "an R-CNN person detector finds the people, the pose model estimates each one's "
                                "joints; writes one poses JSON file.", epilog=POSE_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", help="folder of images (or one image file)")
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
    p.add_argument("--flip-test", action="store_true", help="average with the mirrored image, left/right "
                   "joints swapped back (2x the pose time)")
    p.add_argument("--batch-size", type=int, default=16, help="people per pose forward pass")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_folder_run_args(p)
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

    from cvcore.datasets import ImagePoses, PersonPose, poses_entry, write_poses
    from cvcore.device import set_num_threads
    from cvcore.inference import FolderRun, list_inputs
    from cvcore.io import DecodedImage, ImageReadError, atomic_write_bytes, file_sha256, load_image_bounded, prefetch
    from pose.topdown import TopDown

    if args.threads > 0:
        set_num_threads(args.threads)
    if args.workers < 0:
        raise CLIError(f"--workers must be >= 0, got {args.workers}")
    inputs = list_inputs(args.images, args.recursive)  # a bad path fails before the models load
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
    from pose.estimator import resolve_model_path
    from rcnn.detector import resolve_model_path as resolve_detector_path

    settings = {"model_sha256": file_sha256(resolve_model_path(args.model)), "flip_test": td.estimator.flip_test,
                "detector_sha256": None if td.detector is None else file_sha256(resolve_detector_path(args.detector)),
                "boxes_sha256": file_sha256(args.boxes) if args.boxes else None, "min_box_score": td.min_score,
                "label": args.label or ("person" if td.detector is not None else None),
                "max_people": td.max_people, "max_pixels": args.max_pixels}
    run = FolderRun(inputs, args.out, "poses", settings, shard=args.shard,
                    overwrite=args.overwrite)
    out_dir = run.out_dir
    if args.vis:
        (out_dir / "vis").mkdir(exist_ok=True)

    clock = {"decode": 0.0, "detector": 0.0, "pose": 0.0, "write": 0.0}
    pending: list[tuple[str, DecodedImage, np.ndarray | None, np.ndarray | None]] = []

    def flush() -> None:
        t = time.perf_counter()
        found = td.estimate([p[1].image for p in pending], [p[2] for p in pending], [p[3] for p in pending],
                            batch_size=args.batch_size)
        clock["pose"] += time.perf_counter() - t
        t = time.perf_counter()
        for (name, decoded, _, _), persons in zip(pending, found):
            img = decoded.image
            full = [p.rescaled(decoded.scale) for p in persons]  # in the original image's pixels
            run.add(poses_entry(ImagePoses(name, [PersonPose(p.joints[:, :2], p.joints[:, 2], p.box, p.box_score)
                                                  for p in full], decoded.width, decoded.height)))
            if args.vis:
                import cv2

                from cvcore.visualize import draw_people

                vis = draw_people(img, persons, td.skeleton)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(vis, cv2.COLOR_RGB2BGR))
                if ok:
                    atomic_write_bytes(out_dir / "vis" / Path(name).with_suffix(".jpg"), buf.tobytes())
        clock["write"] += time.perf_counter() - t
        pending.clear()

    max_pixels = None if args.max_pixels is None else int(args.max_pixels)

    def prepare(path: Path) -> tuple[Path, DecodedImage | None, np.ndarray | None, str, float]:
        """Decode (reduced above the pixel budget) and propose person boxes in a worker thread, overlapping the
        models of the previous image."""
        t = time.perf_counter()
        try:
            decoded = load_image_bounded(path, max_pixels)
        except (ImageReadError, OSError) as e:
            return path, None, None, str(e), time.perf_counter() - t
        proposals = None if boxes is not None else td.propose(decoded.image)
        return path, decoded, proposals, "", time.perf_counter() - t

    start = time.perf_counter()
    for path, decoded, proposals, error, seconds in tqdm(prefetch(prepare, run.todo, workers=args.workers),
                                                         total=len(run.todo), desc="pose", unit="img",
                                                         disable=args.quiet, dynamic_ncols=True):
        clock["decode"] += seconds
        if decoded is None:
            run.skip(path, error)
            continue
        name = run.relative(path)
        t = time.perf_counter()
        if boxes is not None:  # given in the original image's pixels
            bs, ss = boxes.get(name, ([], []))
            sx, sy = decoded.scale
            bs = np.asarray(bs, np.float32).reshape(-1, 4) / np.array([sx, sy, sx, sy], np.float32)
            ss = np.asarray(ss, np.float32)
        else:
            bs, ss = td.find_people(decoded.image, proposals)
        clock["detector"] += time.perf_counter() - t
        pending.append((name, decoded, bs, ss))
        if sum(1 if b is None else len(b) for _, _, b, _ in pending) >= args.batch_size:
            flush()
    if pending:
        flush()
    seconds = time.perf_counter() - start
    t = time.perf_counter()
    out_file = run.finish(lambda path, entries: write_poses(path, td.joint_names, entries))
    clock["write"] += time.perf_counter() - t
    people = sum(len(e["people"]) for e in run.entries())
    summary = {**run.summary(), "poses": str(out_file), "people": people,
               "detector": None if args.boxes else str(args.detector), "min_box_score": td.min_score,
               "seconds": round(seconds, 3), "images_per_s": round(run.processed / max(seconds, 1e-9), 2),
               "seconds_by_stage": {k: round(v, 3) for k, v in clock.items()}}
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        done = f", {run.resumed} done before" if run.resumed else ""
        print(f"{summary['images']} images, {people} people -> {out_file} "
              f"({summary['images_per_s']} images/s; {len(run.skipped)} unreadable skipped{done})"
              + (f"; all shards merged -> {run.merged}" if run.merged else ""), file=sys.stderr)
    return run.exit_code()


def pose_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``pose``."""
    return run_cli(pose_run, argv, prog="pose")


def train_main(argv: Sequence[str] | None = None) -> int:
    """Console script ``pose-train`` (:func:`pose.train.train_cli`)."""
    from pose.train import train_cli

    return run_cli(train_cli, argv, prog="pose-train")


if __name__ == "__main__":
    sys.exit(pose_main())
