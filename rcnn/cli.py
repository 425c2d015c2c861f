"""Console scripts ``detect`` and ``rcnn-train``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cvcore.cli import (
    CLIError,
    add_common_args,
    add_config_args,
    add_folder_run_args,
    config_from_args,
    run_cli,
    setup_logging,
)

log = logging.getLogger("rcnn")

DETECT_EXAMPLES = """examples:
  detect photos/ --model raccoon --out out/ --vis
  detect smears/ --model bccd-fast --out out/ --score-thr 0 --max-per-image 50 --json
  detect imgs/ --model runs/rcnn/bccd/detector.pt --out out/ --recursive --device cuda
models: a detector file written by rcnn-train, or a shipped name: bccd, raccoon (warp mode, R-CNN),
bccd-fast, raccoon-fast (shared mode, SPPnet-style)."""

TRAIN_EXAMPLES = """examples:
  rcnn-train --config configs/rcnn/bccd.yaml
  rcnn-train --config configs/rcnn/raccoon.yaml data.root=/data/raccoon train.out_dir=runs/raccoon
  rcnn-train --config configs/rcnn/bccd-fast.yaml svm.backend=torch --device cuda
  rcnn-train --config configs/rcnn/voc07_alexnet.yaml --shard 2/8   # machine 2 of 8: its images' proposals+features
Stages (each resumable; re-run the same command after an interruption): proposals, fine-tuning (optional),
features, SVMs with hard-negative mining, box regression, evaluation on the validation split. With --shard i/n
(machines sharing train.cache_dir) or --stop-after, only the per-image stages run (see rcnn/shard.py)."""


def _detect(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="detect", description="Detect objects in a folder of images with a "
                                     "trained R-CNN detector; writes one detections JSON file (and --vis images).",
                                     epilog=DETECT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", help="folder of images (or one image file)")
    parser.add_argument("--model", default="bccd", help="detector file or shipped name (default: bccd)")
    parser.add_argument("--out", required=True, help="output folder (detections.json, vis/)")
    parser.add_argument("--vis", action="store_true", help="also write the images with boxes, labels and scores")
    parser.add_argument("--vis-thr", type=float, default=None, help="score threshold for drawn boxes (default: the "
                        "detector's vis_thr, the F1-optimal score on its validation split; 0 if it has none)")
    parser.add_argument("--score-thr", type=float, default=None, help="keep detections scoring at least this "
                        "(SVM margin; default: the model's)")
    parser.add_argument("--max-per-image", type=int, default=None, help="keep at most this many per image")
    parser.add_argument("--batch-size", type=int, default=0, help="warp mode: crops per forward pass (default 0: "
                        "auto, ~200k input pixels on the CPU, e.g. 16 crops of 112 px; 128 on CUDA)")
    parser.add_argument("--proposals", type=int, default=0, help="selective-search boxes per image (default 0: the "
                        "detector's own, e.g. 2000 for bccd, the paper's; warp-mode time grows with it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default 0: on the CPU one fewer than "
                        "torch's default, leaving a core to the threads that decode, propose and warp ahead)")
    parser.add_argument("--coco", nargs="?", const="", default=None, metavar="GT_JSON",
                        help="also write OUT/detections_coco.json in the COCO results format (image and category "
                        "ids from GT_JSON when given, else numbered in file / class order)")
    add_folder_run_args(parser)
    add_common_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.quiet, args.debug)

    import numpy as np

    from cvcore.datasets import ImageDetections, detection_entry, read_detections, write_coco_results, write_detections
    from cvcore.device import pipeline_threads, resolve_device
    from cvcore.inference import FolderRun, list_inputs
    from cvcore.io import DecodedImage, ImageReadError, file_sha256, load_image_bounded, prefetch
    from rcnn.detector import Detector, resolve_model_path

    for name in ("batch_size", "threads", "proposals", "workers"):
        if getattr(args, name) < 0:
            raise CLIError(f"--{name.replace('_', '-')} must be >= 0 (0: automatic), got {getattr(args, name)}")
    inputs = list_inputs(args.images, args.recursive)  # a bad path fails before the models load
    device = resolve_device(args.device)
    pipeline_threads(args.threads, device)
    detector = Detector.load(args.model, device=device, batch_size=args.batch_size, proposals=args.proposals)
    if args.score_thr is not None:
        detector.score_thr = args.score_thr
    if args.max_per_image is not None:
        detector.max_per_image = args.max_per_image
    vis_thr = args.vis_thr if args.vis_thr is not None else float(detector.meta.get("vis_thr", 0.0))
    settings = {"model_sha256": file_sha256(resolve_model_path(args.model)), "score_thr": detector.score_thr,
                "max_per_image": detector.max_per_image,
                "proposals": int(detector.meta["proposals"]["test_per_image"]), "max_pixels": args.max_pixels}
    run = FolderRun(inputs, args.out, "detections", settings, shard=args.shard,
                    overwrite=args.overwrite)
    out = run.out_dir

    from tqdm import tqdm

    max_pixels = None if args.max_pixels is None else int(args.max_pixels)

    def prepare(path: Path) -> tuple[Path, DecodedImage | None, np.ndarray | None, str]:
        """Decode (reduced above the pixel budget) and propose in a worker thread, overlapping the CNN of the
        previous image."""
        try:
            decoded = load_image_bounded(path, max_pixels)
        except (ImageReadError, OSError) as e:
            return path, None, None, str(e)
        return path, decoded, detector.propose(decoded.image), ""

    t0 = time.time()
    for path, decoded, proposals, error in tqdm(prefetch(prepare, run.todo, workers=args.workers),
                                                total=len(run.todo), desc="detect", disable=args.quiet,
                                                dynamic_ncols=True):
        if decoded is None:
            run.skip(path, error)
            continue
        rel, image = run.relative(path), decoded.image
        det = detector.detect_proposals(image, proposals)
        full = det.rescaled(decoded.scale)  # in the original image's pixels
        run.add(detection_entry(ImageDetections(rel, decoded.width, decoded.height, full.boxes, full.scores,
                                                full.labels)))
        if args.vis:
            from cvcore.visualize import draw_boxes, save_image

            keep = det.scores >= vis_thr
            drawn = draw_boxes(image, det.boxes[keep], [det.labels[i] for i in np.nonzero(keep)[0]],
                               det.scores[keep])
            save_image(out / "vis" / Path(rel).with_suffix(".jpg"), drawn)
    seconds = time.time() - t0
    json_path = run.finish(lambda path, entries: write_detections(path, detector.class_names, entries))
    if args.coco is not None:  # from the file just written (validated, every image of this run)
        write_coco_results(out / f"{run.name}_coco.json", list(read_detections(json_path)[1].values()),
                           detector.class_names, args.coco or None)
    summary = {**run.summary(), "detections": str(json_path),
               "boxes": sum(len(e["detections"]) for e in run.entries()),
               "seconds_per_image": round(seconds / max(run.processed, 1), 3), "model": str(args.model),
               "proposals_per_image": settings["proposals"]}
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        done = f", {run.resumed} done before" if run.resumed else ""
        print(f"{summary['images']} images ({len(run.skipped)} skipped{done}), {summary['boxes']} detections, "
              f"{summary['seconds_per_image']} s/image -> {json_path}"
              + (f"; all shards merged -> {run.merged}" if run.merged else ""))
    return run.exit_code()


def _train(argv: Sequence[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="rcnn-train", description="Train an R-CNN detector on a VOC-style "
                                     "folder; writes detector.pt, config.yaml, train.log, report.json and "
                                     "pr_curves.png into train.out_dir.",
                                     epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, example="features.mode=shared svm.C=0.01")
    parser.add_argument("--shard", default=None, metavar="I/N", help="only the per-image stages (proposals, "
                        "features) for share I of N of the images, 0-based")
    parser.add_argument("--stop-after", choices=("proposals", "finetune", "features"), default=None,
                        help="stop after this stage")
    add_common_args(parser)
    args = parser.parse_intermixed_args(argv)  # overrides may follow options
    setup_logging(args.quiet, args.debug)

    from rcnn.config import RCNNConfig
    from rcnn.train import train

    cfg = config_from_args(RCNNConfig, args)
    if args.shard or args.stop_after:
        from rcnn.shard import run_stages

        result = run_stages(cfg, args.shard, args.stop_after, progress=not args.quiet)
        if args.json:
            print(json.dumps(result))
        elif not args.quiet:
            print(f"shard {result['shard']}: {result['train_images']} training + {result['val_images']} validation "
                  f"images; stages run: {', '.join(result['stages'])}"
                  + (f"; waiting for {result['waiting_for']}" if "waiting_for" in result else ""))
        return 0
    detector, report = train(cfg, progress=not args.quiet)
    if detector is None:  # a torchrun rank other than 0: rank 0 trains the SVMs and reports
        return 0
    summary = {"out_dir": cfg.train.out_dir, **{k: report[k] for k in ("val", "val_no_bbox_reg", "val_softmax",
                                                                        "seconds") if k in report}}
    if args.json:
        print(json.dumps(summary))
    elif not args.quiet:
        for key in ("val", "val_no_bbox_reg", "val_softmax"):
            if key in report:
                r = report[key]
                aps = ", ".join(f"{c} {v:.3f}" if v is not None else f"{c} n/a" for c, v in r["AP"].items())
                print(f"{key}: {r['metric']} mAP {r['mAP']:.4f} ({aps})")
        print(f"detector: {Path(cfg.train.out_dir) / 'detector.pt'}")
    return 0


def detect_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``detect``."""
    return run_cli(_detect, argv, prog="detect")


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rcnn-train``."""
    return run_cli(_train, argv, prog="rcnn-train")


if __name__ == "__main__":
    sys.exit(train_main())
