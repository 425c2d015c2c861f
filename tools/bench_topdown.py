"""People in photos, measured: the person detector's AP on each validation split of configs/rcnn/person.yaml, then
`pose` on LSPET validation three ways (detector -> pose, the whole image, the annotated people's boxes), scored by
`eval-pck` over all 14 joints and the 12 limb joints, with the end-to-end speed split by stage.

    python tools/bench_topdown.py --data ../shared/data --out runs/bench_topdown
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from pathlib import Path

import numpy as np

from cvcore.cli import add_common_args, run_cli, setup_logging
from cvcore.config import load_config
from cvcore.datasets import person_detection_dataset, read_lspet, write_detections
from cvcore.device import set_num_threads
from cvcore.evaluation import eval_detections
from cvcore.evaluation.cli import evaluate_poses_file
from cvcore.io import load_image
from pose.cli import pose_main
from pose.config import PoseConfig
from pose.data import select_range
from pose.topdown import person_threshold
from rcnn import Detector
from rcnn.config import RCNNConfig
from rcnn.data import source_records

ALPHAS = (0.05, 0.1, 0.2)


def detector_ap(detector: str, config: str, limit: int) -> list[dict]:
    cfg = load_config(RCNNConfig, config)
    det = Detector.load(detector)
    rows = []
    for source in cfg.data.sources or [cfg.data]:
        source.val_stride = 1
        _, val, _ = source_records(source, cfg.data.classes)
        val = val[:limit] if limit else val
        start, preds = time.perf_counter(), []
        for r in val:
            d = det.detect(r.image_path)
            preds.append({"boxes": d.boxes, "scores": d.scores, "labels": d.labels})
        seconds = (time.perf_counter() - start) / max(len(val), 1)
        result = eval_detections(preds, val, cfg.data.classes, metric="voc07")
        rows.append({"data": source.root, "images": len(val), "AP": round(float(result["mAP"]), 4),
                     "s_per_image": round(seconds, 3)})
    return rows


def pose_three_ways(data: Path, out: Path, detector: str, model: str, limit: int, flip: bool,
                    detections: str | None = None) -> dict:
    val = select_range(read_lspet(data / "lspet"), *load_config(PoseConfig).data.val_range)
    val = val[:limit] if limit else val
    folder = out / "lspet_val"
    folder.mkdir(parents=True, exist_ok=True)
    for r in val:
        link = folder / r.file
        if not link.exists():
            link.symlink_to(r.image_path.resolve())
    subset = out / "lspet_val.txt"
    subset.write_text("".join(r.file + "\n" for r in val))
    given = out / "given_boxes.json"
    write_detections(given, ["person"], [{"file": d.file, "width": d.width, "height": d.height, "detections": [
        {"label": "person", "score": 1.0, "box": b.tolist()} for b in d.boxes]} for d in person_detection_dataset(val)])
    # with a `detect --model DETECTOR` file of these images, its person boxes above the detector's threshold: what
    # `pose` does by default, without running the detector again for each pose model
    found = (["--boxes", detections, "--label", "person", "--min-box-score",
              str(person_threshold(Detector.load(detector)))] if detections else ["--detector", detector])
    ways = {"detector -> pose": found, "whole image": ["--detector", "none"],
            "annotated boxes": ["--boxes", str(given)]}
    results = {}
    for name, extra in ways.items():
        # one folder per way and model, measured again on each run (--overwrite)
        slug = name.replace(" ", "_").replace(">", "").replace("-", "")
        tags = ("-flip" if flip else "") + ("-file" if extra is found and detections else "")
        run = out / f"{slug}-{Path(model).stem}{tags}"
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            pose_main([str(folder), "--model", model, "--out", str(run), "--json", "--quiet", "--overwrite", *extra,
                       *(["--flip-test"] if flip else [])])
        summary = json.loads(stdout.getvalue())
        row = {"images_per_s": summary["images_per_s"], "people": summary["people"],
               "seconds_by_stage": summary["seconds_by_stage"]}
        for joints in (None, "limbs"):
            for a in ALPHAS:
                r, _ = evaluate_poses_file(str(run / "poses.json"), str(data / "lspet"), subset=str(subset), alpha=a,
                                           joints=joints)
                row[f"PCK@{a}{'' if joints is None else ' limbs'}"] = round(100 * r["PCK"], 1)
                row["matched"] = f"{r['matched']} / {r['annotated']}"
        results[name] = row
    return results


def framing_stats(detector: str, data: Path, n: int) -> dict:
    """The person detector's framing errors (:func:`pose.topdown.framing_errors`) on ``n`` LSPET training images
    that its training skipped (every 16th image from im00009), against the annotated people's boxes: the values
    for ``augment.box_scale_mean`` / ``box_scale_sd`` / ``box_shift_sd``."""
    from cvcore.datasets import joints_box
    from cvcore.evaluation.matching import match_people_by_box
    from pose.topdown import TopDown, framing_errors

    td = TopDown.load(detector, "lspet", device="cpu")
    records = select_range(read_lspet(data / "lspet"), *load_config(PoseConfig).data.train_range)[8::16][:n]
    detected, annotated = [], []
    for r in records:
        boxes, _ = td.find_people(load_image(r.image_path))
        gt = joints_box(r.joints, r.visible)
        match = match_people_by_box(gt[None], boxes)[0] if gt is not None else None
        if match is not None:
            detected.append(boxes[match])
            annotated.append(gt)
    err = framing_errors(np.array(detected), np.array(annotated))
    return {"images": len(records), "matched": len(err), "box_scale_mean": round(float(err[:, 0].mean()), 4),
            "box_scale_sd": round(float(err[:, 0].std()), 4),
            "box_shift_sd": round(float(err[:, 1:].std(axis=0).mean()), 4),
            "box_shift_mean": [round(float(v), 4) for v in err[:, 1:].mean(axis=0)]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data", help="folder holding pennfudan/ and lspet/")
    p.add_argument("--out", default="runs/bench_topdown")
    p.add_argument("--detector", default="person")
    p.add_argument("--model", default="lspet")
    p.add_argument("--config", default="configs/rcnn/person.yaml", help="the detector's training config (splits)")
    p.add_argument("--limit", type=int, default=0, help="only the first N validation images of each set")
    p.add_argument("--skip-ap", action="store_true", help="only the pose measurements")
    p.add_argument("--framing", type=int, default=0, metavar="N",
                   help="only measure the detector's framing errors on N LSPET training images it did not train on")
    p.add_argument("--flip-test", action="store_true")
    p.add_argument("--detections", help="`detect --model DETECTOR` output for the LSPET validation images: the "
                   "default way reads its boxes instead of running the detector")
    p.add_argument("--threads", type=int, default=2)
    add_common_args(p, device=False)
    args = p.parse_args(argv)
    setup_logging(args.quiet, args.debug)
    set_num_threads(args.threads)
    out = Path(args.out)
    report = {}
    if args.framing:
        stats = framing_stats(args.detector, Path(args.data), args.framing)
        print(json.dumps(stats))
        return 0
    if not args.skip_ap:
        report["detector"] = detector_ap(args.detector, args.config, args.limit)
        for row in report["detector"]:
            print(f"{args.detector} on {row['data']} val ({row['images']} images): VOC07 AP {row['AP']:.4f}, "
                  f"{row['s_per_image']:.3f} s / image")
    report["pose"] = pose_three_ways(Path(args.data), out, args.detector, args.model, args.limit, args.flip_test,
                                     args.detections)
    cols = [f"PCK@{a}" for a in ALPHAS] + [f"PCK@{a} limbs" for a in ALPHAS]
    print("| pose on LSPET val | " + " | ".join(cols) + " | matched | images/s |")
    print("|---" * (len(cols) + 3) + "|")
    for name, row in report["pose"].items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" for c in cols) + f" | {row['matched']} | "
              f"{row['images_per_s']:.1f} |")
        print(f"|   seconds by stage: {row['seconds_by_stage']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
