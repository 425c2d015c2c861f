"""``make demo``: both pipelines on built-in images, with pictures and one report, offline on a CPU.

    python tools/demo.py --out demo_out                  # shipped models; also evaluates on ../shared/data if present
    python tools/demo.py --out demo_out --data none      # built-in images only
    python tools/demo.py --out /tmp/demo --quick         # smoke test: one or two images per step
    python tools/demo.py --out demo_out --models-dir DIR # DIR/{bccd,bccd-fast,raccoon,raccoon-fast,person,lspet}.pt

Inputs come from the installed packages or are generated: blood smears drawn by ``cvcore.synthetic`` (with known boxes,
written as a VOC folder) for the BCCD detectors, scikit-image's bundled photos for the raccoon and person detectors
and for top-down pose (the person detector, then one pose per person), with a generated group photo of three
people put together from them. Every step runs a console script of the package in-process (``detect``, ``pose``,
``eval-map``, ``eval-pck``) with the arguments a user would type; the report lists those commands so each result can
be reproduced from a shell.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import logging
import math
import os
import shlex
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cvcore.cli import CLIError, add_common_args, run_cli, setup_logging
from cvcore.io import atomic_write_json
from cvcore.report import Report

REPO = Path(__file__).resolve().parents[1]
DETECTORS = {"bccd": "smears", "bccd-fast": "smears", "raccoon": "photos", "raccoon-fast": "photos",
             "person": "photos"}
POSE_MODEL = "lspet"
PERSON_DETECTOR = "person"
PERSON_PHOTO = "astronaut"
GROUP_PHOTO = "group"
# default images per real-data set (--eval-limit overrides)
EVAL_LIMITS = {"bccd": 12, "raccoon": 8, "pennfudan": 32, "lspet": 200}


# ---------------------------------------------------------------------------------------------- built-in inputs
def skimage_photos(quick: bool) -> dict[str, Callable[[], np.ndarray]]:
    """scikit-image's bundled photos (inside the wheel, no download): name -> loader of an RGB uint8 image."""
    from skimage import data

    photos = {"chelsea": data.chelsea, PERSON_PHOTO: data.astronaut, "coffee": data.coffee,
              "motorcycle": lambda: data.stereo_motorcycle()[0], "rocket": data.rocket}
    return {k: photos[k] for k in ("chelsea", PERSON_PHOTO)} if quick else photos


def group_photo() -> np.ndarray:
    """Three people side by side, generated from scikit-image's photos: the astronaut, the cameraman (grey) and
    the astronaut mirrored, each 320 px tall."""
    import cv2
    from skimage import data

    people = [data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2), data.astronaut()[:, ::-1]]
    tiles = [cv2.resize(np.ascontiguousarray(p[..., :3]), (round(p.shape[1] * 320 / p.shape[0]), 320),
                        interpolation=cv2.INTER_AREA) for p in people]
    return np.concatenate(tiles, axis=1)


def write_photos(folder: Path, quick: bool) -> Path:
    """Write the bundled photos and the generated group photo as PNG files into ``folder``."""
    from cvcore.visualize import save_image

    for name, load in {**skimage_photos(quick), GROUP_PHOTO: group_photo}.items():
        save_image(folder / f"{name}.png", np.ascontiguousarray(load()[..., :3]))
    return folder


def write_smears(root: Path, n: int, seed: int = 0, size_hw: tuple[int, int] = (480, 640),
                 rename: dict[str, str] | None = None) -> Path:
    """``n`` generated blood smears (``cvcore.synthetic.blood_smear``, BCCD's 640 x 480 by default) as a VOC folder
    (JPEGImages/, Annotations/). ``rename`` maps class names (a name mapped to "" is left out of the annotations)."""
    from cvcore.datasets import voc_xml
    from cvcore.io import atomic_write_text
    from cvcore.synthetic import blood_smear
    from cvcore.visualize import save_image

    rng = np.random.default_rng(seed)
    for i in range(n):
        image, boxes, labels = blood_smear(rng, size_hw)
        if rename:
            keep = [j for j, lab in enumerate(labels) if rename.get(lab, lab)]
            boxes, labels = boxes[keep], [rename.get(labels[j], labels[j]) for j in keep]
        name = f"smear_{i:03d}"
        save_image(root / "JPEGImages" / f"{name}.jpg", image)
        atomic_write_text(root / "Annotations" / f"{name}.xml",
                          voc_xml(f"{name}.jpg", image.shape[1], image.shape[0], boxes, labels, decimals=1))
    return root


# ------------------------------------------------------------------------------------------------- running tools
class Tools:
    """Runs the package's console scripts in-process and keeps the equivalent shell command lines."""

    def __init__(self, quiet: bool, device: str) -> None:
        self.quiet, self.device, self.commands = quiet, device, []

    def __call__(self, prog: str, *args: object) -> dict:
        """Run ``prog args... --json`` -> its JSON summary; a failure raises one line naming the command."""
        from cvcore.evaluation.cli import eval_map_main, eval_pck_main
        from pose.cli import pose_main
        from rcnn.cli import detect_main

        main = {"detect": detect_main, "pose": pose_main, "eval-map": eval_map_main, "eval-pck": eval_pck_main}[prog]
        device = ["--device", self.device] if prog in ("detect", "pose") and self.device != "auto" else []
        fresh = ["--overwrite"] if prog in ("detect", "pose") else []  # a re-run of the demo recomputes and re-times
        argv = [str(a) for a in args] + device + fresh
        self.commands.append(shlex.join([prog, *argv]))
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = main(argv + ["--json"] + (["--quiet"] if self.quiet else []))
        if code != 0:
            raise CLIError(f"`{self.commands[-1]}` failed with exit code {code} (its error is printed above)")
        text = stdout.getvalue()
        return json.loads(text[text.index("{"):]) if "{" in text else {}


def say(quiet: bool, message: str) -> None:
    if not quiet:
        print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ model files
def model_path(name: str, kind: str, models_dir: Path | None) -> Path | None:
    """The file of model ``name`` (``kind`` "rcnn" or "pose"): ``models_dir/<name>.pt`` or the shipped one."""
    from cvcore.models import resolve_model_path
    from pose.estimator import MODELS_DIR as POSE_DIR
    from rcnn.detector import MODELS_DIR as RCNN_DIR

    try:
        return resolve_model_path(name, models_dir or (RCNN_DIR if kind == "rcnn" else POSE_DIR))
    except FileNotFoundError:
        return None


@functools.cache
def _model_file(path: Path) -> dict:
    """A model file's top-level dict, read once per run (weights only)."""
    from cvcore.io import safe_torch_load

    return safe_torch_load(path)


def stored_metrics(path: Path) -> dict:
    """The validation metrics saved inside a model file ({} when there are none)."""
    return dict(_model_file(path).get("metrics") or {})


def stored_vis_thr(path: Path, default: float = 0.0) -> float:
    """The score threshold for drawing detections saved in a detector file (key ``vis_thr``), else ``default``."""
    return float(_model_file(path).get("vis_thr", default))


def training_logs(path: Path, out: Path) -> dict[str, Path]:
    """Training logs shipped next to a model file (``<name>.log.jsonl`` or ``<name>.<stage>.log.jsonl``, engine
    format), flattened for plotting:
    eval lines' metrics lifted to the top level and one log per ``stage`` field. Returns {label: flattened log}."""
    from cvcore.io import atomic_write_text

    logs: dict[str, Path] = {}
    found = sorted(path.parent.glob(f"{path.stem}.log.jsonl")) + sorted(path.parent.glob(f"{path.stem}.*.log.jsonl"))
    for log in found:
        by_stage: dict[str, list[str]] = {}
        for line in log.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            row.update({k: v for k, v in (row.pop("eval", None) or {}).items() if isinstance(v, (int, float))})
            by_stage.setdefault(str(row.get("stage", "")), []).append(json.dumps(row))
        for stage, rows in by_stage.items():
            label = log.name.removesuffix(".log.jsonl") + (f" {stage}" if stage else "")
            logs[label] = atomic_write_text(out / f"{label.replace(' ', '_')}.jsonl", "\n".join(rows) + "\n")
    return logs


def plot_logs(logs: dict[str, Path], path: Path) -> Path | None:
    """Training curves of ``logs``: the loss and up to two evaluation metrics against the step."""
    from cvcore.visualize import plot_training_curves

    keys = {k for p in logs.values() for line in p.read_text().splitlines() for k in json.loads(line)}
    metrics = sorted(k for k in keys if k.lower().startswith(("pck", "map", "ap")))[-2:]
    return plot_training_curves(logs, path, keys=("loss", *metrics)) if logs else None


# ---------------------------------------------------------------------------------------------------- pictures
def proposals_picture(image_path: Path, path: Path, top: int = 100) -> Path:
    """The ``top`` highest-ranked selective-search boxes (R-CNN's fast mode) drawn on an image."""
    from cvcore.io import load_image
    from cvcore.visualize import draw_boxes, save_image
    from rcnn.proposals import selective_search

    image = load_image(image_path)
    boxes = selective_search(image, mode="fast", max_boxes=top)
    return save_image(path, draw_boxes(image, boxes))


def heatmaps_picture(model: str, image_path: Path, path: Path, device: str) -> Path:
    """What the pose network sees (the letterboxed input) with the decoded skeleton, then its part-detector heatmaps
    and its final heatmaps (after the spatial model), each joint scaled to peak 1 and overlaid on the input."""
    import cv2
    import torch

    from cvcore.io import load_image
    from cvcore.visualize import draw_skeleton, overlay_heatmaps, save_image
    from pose import PoseEstimator
    from pose.data import warp_crop

    est = PoseEstimator.load(model, device=device)
    image = load_image(image_path)
    crop_image = warp_crop(image, est.crop_for(image))
    with torch.inference_mode():
        out = est.model.predict(torch.from_numpy(crop_image).permute(2, 0, 1)[None].to(est.device))
    joints = np.concatenate([out["joints"][0].cpu().numpy(), out["scores"][0].cpu().numpy()[:, None]], axis=1)

    def per_joint_peaks(heatmaps: torch.Tensor) -> np.ndarray:  # each joint scaled to peak 1, so none is drowned out
        h = heatmaps.float().clamp(min=0).cpu().numpy()
        return h / np.maximum(h.max(axis=(1, 2), keepdims=True), 1e-12)

    panels = [draw_skeleton(crop_image, joints, est.skeleton),
              overlay_heatmaps(crop_image, per_joint_peaks(out["part_heatmaps"][0])),
              overlay_heatmaps(crop_image, per_joint_peaks(out["heatmaps"][0]))]
    scale = max(1, 256 // crop_image.shape[0])
    panels = [cv2.resize(p, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for p in panels]
    return save_image(path, np.hstack(panels))


def stored_pck_curve(metrics: dict, joint_names: Sequence[str], path: Path) -> Path | None:
    """PCK versus threshold from the ``PCK@<alpha>`` values stored with a pose model (``per_joint@<alpha>``
    optional), starting at PCK = 0 for alpha = 0."""
    from cvcore.evaluation import plot_pck_curve

    alphas = sorted((float(k.split("@")[1]), k.split("@")[1]) for k in metrics if k.startswith("PCK@"))
    if not alphas:
        return None
    mean = [0.0] + [metrics[f"PCK@{a}"] / 100 for _, a in alphas]
    per_joint = np.full((len(alphas) + 1, len(joint_names)), -1.0)
    per_joint[0] = 0.0
    for i, (_, a) in enumerate(alphas, 1):
        for k, name in enumerate(joint_names):
            v = (metrics.get(f"per_joint@{a}") or {}).get(name)
            per_joint[i, k] = -1.0 if v is None else v / 100
    xs = np.array([0.0] + [x for x, _ in alphas])
    return plot_pck_curve(xs, np.array(mean), path, per_joint, joint_names, "torso")


# -------------------------------------------------------------------------------------------- real-data evaluation
def find_data(arg: str) -> Path | None:
    """``auto``: ../shared/data beside the repository when present; ``none``: skip; else a folder holding any of
    ``bccd/`` (VOC with ImageSets/Main/val.txt), ``raccoon/`` (VOC) and ``lspet/`` (LSPET joints.mat + images/)."""
    if arg == "none":
        return None
    if arg == "auto":
        path = REPO.parent / "shared" / "data"
        return path if path.is_dir() else None
    path = Path(arg)
    if not path.is_dir():
        raise CLIError(f"--data: {path} is not a folder (expected one holding bccd/, raccoon/ and/or lspet/)")
    if not any((path / name).is_dir() for name in EVAL_LIMITS):
        raise CLIError(f"--data: {path} holds none of {', '.join(n + '/' for n in EVAL_LIMITS)}")
    return path


def spread(items: Sequence, limit: int) -> list:
    """At most ``limit`` items, evenly spaced over the sequence (all of them when ``limit`` <= 0)."""
    if limit <= 0 or len(items) <= limit:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, limit).round().astype(int)]


def image_folder(paths: Sequence[Path], folder: Path) -> Path:
    """A folder of symbolic links to ``paths`` (copies where links are impossible), so a CLI can run on a subset."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        link = folder / p.name
        if not link.exists():
            try:
                link.symlink_to(p.resolve())
            except OSError:
                shutil.copy2(p, link)
    return folder


def evaluate_detector(tools: Tools, ref: str, root: Path, files: Sequence[Path], total: int, vis_thr: float,
                      out: Path) -> dict:
    """``detect`` on ``files`` of VOC folder ``root``, then ``eval-map`` against its annotations."""
    from cvcore.io import atomic_write_text

    subset = atomic_write_text(out / "subset.txt", "".join(f"{p.name}\n" for p in files))
    det = tools("detect", image_folder(files, out / "images"), "--model", ref, "--out", out, "--vis",
                "--vis-thr", vis_thr)
    result = tools("eval-map", "--pred", out / "detections.json", "--gt", root, "--subset", subset, "--plot-dir", out)
    return {**result, "images": len(files), "total": total, "seconds_per_image": det.get("seconds_per_image"),
            "pr_curves": out / "pr_curves.png"}


def evaluate_pose(tools: Tools, ref: str, detector: str | None, root: Path, limit: int, out: Path) -> dict:
    """``pose`` on LSPET validation images (im08001-im09000) two ways, each scored by ``eval-pck`` at alpha 0.05 /
    0.1 / 0.2 (torso): the person box taken from the annotated joints (the single-person protocol,
    :func:`cvcore.datasets.person_detection_dataset`) and, with a person detector, ``pose``'s default (the detector
    finds the people)."""
    from cvcore.datasets import load_pose_dataset, person_detection_dataset, write_detections
    from cvcore.io import atomic_write_text
    from pose.config import PoseConfig
    from pose.data import select_range

    val = select_range(load_pose_dataset(root, "lspet"), *PoseConfig().data.val_range)
    records = spread([r for r in val if r.visible.sum() >= 2], limit)  # a box needs annotated joints
    boxes = [{"file": d.file, "width": d.width, "height": d.height,
              "detections": [{"label": "person", "score": 1.0, "box": b.tolist()} for b in d.boxes]}
             for d in person_detection_dataset(records)]
    box_file = write_detections(out / "person_boxes.json", ["person"], boxes)
    subset = atomic_write_text(out / "subset.txt", "".join(f"{r.file}\n" for r in records))
    images = image_folder([r.image_path for r in records], out / "images")
    ways = {"boxes": ["--boxes", box_file]}
    if detector is not None:
        ways["detector"] = ["--detector", detector]
    result: dict = {"images": len(records), "total": len(val), "pck_curve": out / "boxes" / "pck_curve.png"}
    eval_log = logging.getLogger("cvcore.evaluation")
    try:
        for way, extra in ways.items():
            run = tools("pose", images, "--model", ref, "--out", out / way, *extra)
            result[f"images_per_s {way}"] = run.get("images_per_s")
            for alpha in (0.2, 0.1, 0.05):
                plot = ["--plot-dir", out / way] if alpha == 0.2 else []
                r = tools("eval-pck", "--pred", out / way / "poses.json", "--gt", root, "--format", "lspet",
                          "--subset", subset, "--alpha", alpha, *plot)
                result[f"PCK@{alpha}" + ("" if way == "boxes" else f" {way}")] = r["PCK"]
                eval_log.disabled = True  # the same ground-truth warnings again for the other runs: say them once
    finally:
        eval_log.disabled = False
    result["images_per_s"] = result["images_per_s boxes"]
    return result


def evaluate_on_data(tools: Tools, data: Path, refs: dict[str, str], limits: dict[str, int],
                     vis_thr: dict[str, float], out: Path, quiet: bool) -> dict[str, dict]:
    """Every model with a matching data set in ``data``: BCCD val, Raccoon val (every 4th sorted image), LSPET val."""
    from cvcore.datasets import read_voc

    results: dict[str, dict] = {}
    if (data / "bccd").is_dir():
        val = [r.image_path for r in read_voc(data / "bccd", "val")]
        for name in (n for n in refs if n.startswith("bccd")):
            say(quiet, f"demo: evaluating {name} on BCCD val ({min(len(val), limits['bccd'] or len(val))} images)")
            results[name] = {"data": "BCCD val", **evaluate_detector(
                tools, refs[name], data / "bccd", spread(val, limits["bccd"]), len(val), vis_thr[name], out / name)}
    if (data / "raccoon").is_dir():
        val = [r.image_path for r in read_voc(data / "raccoon")][3::4]
        for name in (n for n in refs if n.startswith("raccoon")):
            say(quiet, f"demo: evaluating {name} on Raccoon val "
                       f"({min(len(val), limits['raccoon'] or len(val))} images)")
            results[name] = {"data": "Raccoon val (every 4th)", **evaluate_detector(
                tools, refs[name], data / "raccoon", spread(val, limits["raccoon"]), len(val), vis_thr[name],
                out / name)}
    if (data / "pennfudan").is_dir() and PERSON_DETECTOR in refs:
        from cvcore.datasets import read_pennfudan

        val = [r.image_path for r in read_pennfudan(data / "pennfudan")][3::4]
        say(quiet, f"demo: evaluating {PERSON_DETECTOR} on Penn-Fudan val "
                   f"({min(len(val), limits['pennfudan'] or len(val))} images)")
        results[PERSON_DETECTOR] = {"data": "Penn-Fudan val (every 4th)", **evaluate_detector(
            tools, refs[PERSON_DETECTOR], data / "pennfudan", spread(val, limits["pennfudan"]), len(val),
            vis_thr[PERSON_DETECTOR], out / PERSON_DETECTOR)}
    if (data / "lspet").is_dir() and POSE_MODEL in refs:
        say(quiet, f"demo: evaluating {POSE_MODEL} on LSPET val")
        results[POSE_MODEL] = {"data": "LSPET val (im08001-im09000)",
                               **evaluate_pose(tools, refs[POSE_MODEL], refs.get(PERSON_DETECTOR), data / "lspet",
                                               limits["lspet"], out / POSE_MODEL)}
    return results


# ------------------------------------------------------------------------------------------------------ steps
def run_detectors(tools: Tools, files: dict[str, Path | None], refs: dict[str, str], smears: Path, photos: Path,
                  out: Path, vis_thr: dict[str, float]) -> tuple[dict, dict, dict]:
    """``detect --vis`` with every available detector (BCCD ones on the smears, raccoon ones on the photos), and
    ``eval-map`` on the smears, whose ground truth is known. Returns (model rows, {name: output folder},
    {name: eval-map result})."""
    models, detections, generated = {}, {}, {}
    for name in (n for n in DETECTORS if n in refs):
        say(tools.quiet, f"demo: detect with {name}")
        folder = out / name
        images = smears / "JPEGImages" if DETECTORS[name] == "smears" else photos
        run = tools("detect", images, "--model", refs[name], "--out", folder, "--vis",
                    "--vis-thr", vis_thr[name])
        detections[name] = folder
        models[name] = {"file": files[name].name, "stored": stored_metrics(files[name]),
                        "speed": f"{run['seconds_per_image']:.1f} s/image"}
        if DETECTORS[name] == "smears":
            g = tools("eval-map", "--pred", folder / "detections.json", "--gt", smears, "--plot-dir", folder)
            generated[name] = models[name]["generated"] = {**g, "plot": folder / "pr_curves.png"}
    return models, detections, generated


def run_pose(tools: Tools, file: Path, ref: str, detector: str | None, photos: Path, out: Path, device: str
             ) -> tuple[dict, list[Path], tuple[Path, str], tuple[Path, str] | None]:
    """``pose --vis`` on the photos (top-down with the person detector, else whole images), the heatmap picture and
    the stored PCK curve. Returns (model row, skeleton pictures, (heatmap picture, caption), (PCK curve, caption)
    or None)."""
    from cvcore.io import safe_torch_load

    folder = out / "pose" / POSE_MODEL
    run = tools("pose", photos, "--model", ref, "--out", folder, "--vis", "--detector", detector or "none")
    raw = safe_torch_load(file)
    row = {"file": file.name, "stored": dict(raw.get("metrics") or {}), "speed": f"{run['images_per_s']:.1f} images/s"}
    picture = (heatmaps_picture(ref, photos / f"{PERSON_PHOTO}.png", out / "pictures" / f"heatmaps_{PERSON_PHOTO}.jpg",
                                device),
               f"{POSE_MODEL} on {PERSON_PHOTO}: network input with the decoded skeleton | part-detector heatmaps | "
               "final heatmaps, after the spatial model (each joint scaled to peak 1, maximum over joints)")
    curve = stored_pck_curve(row["stored"], raw["joint_names"], out / "pictures" / f"pck_curve_{POSE_MODEL}_stored.png")
    caption = f"{POSE_MODEL}: PCK versus threshold, as stored with the model (validation split)"
    row["people"] = run.get("people")
    vis = sorted(vis_images(folder / "vis", 12), key=lambda p: p.stem not in (GROUP_PHOTO, PERSON_PHOTO))[:6]
    return row, vis, picture, (curve, caption) if curve else None


# ------------------------------------------------------------------------------------------------------- report
def fmt_metric(value: float | None, percent: bool = False) -> str:
    """A fraction (or a percentage with ``percent``) as a percentage with one decimal; '-' when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value if percent else 100 * value:.1f}"


def stored_summary(metrics: dict) -> str:
    """The headline validation number stored in a model file: R-CNN ``{"val": {"mAP", "metric"}}`` or pose
    ``{"PCK@0.2", "num_images"}``."""
    if "val" in metrics:
        return f"mAP {fmt_metric(metrics['val'].get('mAP'))} ({metrics['val'].get('metric', 'voc07')})"
    if "PCK@0.2" in metrics:
        n = metrics.get("num_images")
        return f"PCK@0.2 {fmt_metric(metrics['PCK@0.2'], percent=True)}" + (f" ({n} images)" if n else "")
    return "not stored in the model file"


def vis_images(folder: Path, limit: int) -> list[Path]:
    return sorted(folder.glob("*.jpg"))[:limit]


def detection_pictures(report: Report, name: str, folder: Path, limit: int, vis_thr: float) -> None:
    """Up to ``limit`` of the images ``detect --vis`` wrote into ``folder``, captioned with how many boxes are drawn."""
    from cvcore.datasets import read_detections

    _, dets = read_detections(folder / "detections.json")
    drawn = {Path(f).stem: int((d.scores >= vis_thr).sum()) for f, d in dets.items()}
    for path in vis_images(folder / "vis", limit):
        n = drawn.get(path.stem, 0)
        report.image(path, f"{name} on {path.stem}: {n} box{'es' if n != 1 else ''} with SVM score >= {vis_thr:.4g}")


def build_report(out: Path, ctx: dict) -> Report:
    """Assemble the report from the results of the steps (``ctx``, see :func:`main`)."""
    report = Report("R-CNN detection and Tompson-style pose estimation: demo", out)
    report.text(f"Made by `{ctx['command']}` in {ctx['seconds']:.0f} s on {ctx['threads']} CPU thread(s) "
                f"(device: {ctx['device']}). Inputs were generated by the project (blood smears) or ship inside "
                "scikit-image (photos); nothing was downloaded.")

    report.heading("Models and accuracy")
    rows = []
    for name, r in ctx["models"].items():
        real = ctx["real"].get(name)
        if real is None:
            measured = "-"
        elif "mAP" in real:
            measured = f"mAP {fmt_metric(real['mAP'])} on {real['images']} of {real['total']} {real['data']} images"
        else:
            measured = (f"PCK@0.2 {fmt_metric(real['PCK@0.2'])} on {real['images']} of {real['total']} "
                        f"{real['data']} images")
        if real and real["images"] < real["total"]:
            measured += " (subset)"
        generated = fmt_metric(r["generated"]["mAP"]) if "generated" in r else "-"
        rows.append([name, r["file"], stored_summary(r["stored"]), measured, generated, r["speed"]])
    report.table(["model", "file", "validation, as stored with the model", "this run, real data",
                  "this run, generated smears (mAP)", "speed (this run)"], rows)
    report.text("Percentages. mAP: PASCAL VOC07 11-point AP at IoU 0.5; PCK@0.2: share of joints within 0.2 x "
                "the left-shoulder-to-right-hip distance. "
                + ("Real-data numbers were measured on evenly spaced subsets when marked so (--eval-limit)."
                   if ctx["real"] else "No real data folder was used (--data), so there are no real-data numbers."))

    if ctx["detections"]:
        report.heading("Detections")
        for name, folder in ctx["detections"].items():
            detection_pictures(report, name, folder, 3, ctx["vis_thr"][name])

    if ctx["generated"]:
        report.heading("Precision-recall on generated blood smears")
        report.text("These images are GENERATED (cvcore.synthetic.blood_smear), not BCCD photographs: their ground "
                    "truth is known, so the curves show the whole pipeline working, but their AP does not measure "
                    "accuracy on real smears (see the real-data numbers above for that).")
        classes = sorted({c for g in ctx["generated"].values() for c in g["AP"]})
        report.table(["model", *classes, "mAP"], [[n, *(fmt_metric(g["AP"].get(c)) for c in classes),
                                                   fmt_metric(g["mAP"])] for n, g in ctx["generated"].items()])
        for name, g in ctx["generated"].items():
            report.image(g["plot"], f"{name}: precision-recall per class on {ctx['n_smears']} generated smears")

    report.heading("Proposals and heatmaps")
    for path, caption in ctx["pictures"]:
        report.image(path, caption)
    if ctx["pose_vis"]:
        how = (f"people found by the '{PERSON_DETECTOR}' detector, one pose each" if ctx["person_detector"]
               else "whole image")
        for path in ctx["pose_vis"]:
            report.image(path, f"{POSE_MODEL}: skeletons on {path.stem} ({how}; '{GROUP_PHOTO}' is generated from "
                               f"scikit-image's photos: three people)")

    if ctx["curves"]:
        report.heading("Curves")
        for path, caption in ctx["curves"]:
            report.image(path, caption)
    if ctx["real"]:
        report.heading("Real data (this run)")
        for name, r in ctx["real"].items():
            plot = r.get("pr_curves") or r.get("pck_curve")
            if plot is not None and Path(plot).is_file():
                report.image(plot, f"{name} on {r['images']} of {r['total']} {r['data']} images")
            if "mAP" in r:
                detection_pictures(report, name, Path(plot).parent, 2, ctx["vis_thr"][name])
        pose = ctx["real"].get(POSE_MODEL)
        if pose:
            report.text(f"{POSE_MODEL}: PCK@0.05 {fmt_metric(pose['PCK@0.05'])}, @0.1 {fmt_metric(pose['PCK@0.1'])}, "
                        f"@0.2 {fmt_metric(pose['PCK@0.2'])} with the person box taken from the annotated joints "
                        "(the single-person protocol).")
            if "PCK@0.2 detector" in pose:
                report.text(f"{POSE_MODEL} after the '{PERSON_DETECTOR}' detector (`pose`'s default; each annotated "
                            "person matched to the predicted person whose box overlaps its joints' box most): "
                            f"PCK@0.05 {fmt_metric(pose['PCK@0.05 detector'])}, "
                            f"@0.1 {fmt_metric(pose['PCK@0.1 detector'])}, "
                            f"@0.2 {fmt_metric(pose['PCK@0.2 detector'])}.")
    if ctx["notes"]:
        report.heading("Not shown")
        for note in ctx["notes"]:
            report.text(note)
    report.heading("Commands")
    report.text("Each result above comes from one of these commands (run from the folder the demo ran in):")
    report.code("\n".join(ctx["commands"]))
    return report


# --------------------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="demo", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--models-dir", default=os.environ.get("DEMO_MODELS_DIR"),
                        help="folder of model files <name>.pt to use instead of the shipped ones "
                             "(default: $DEMO_MODELS_DIR, else rcnn/models and pose/models)")
    parser.add_argument("--data", default="auto", help="real data for evaluation: auto (../shared/data beside the "
                        "repository, when present), none, or a folder holding bccd/, raccoon/, pennfudan/, lspet/")
    parser.add_argument("--eval-limit", type=int, default=None,
                        help="images per real-data set (evenly spaced; 0 = all; default: "
                             + ", ".join(f"{k} {v}" for k, v in EVAL_LIMITS.items()) + ")")
    parser.add_argument("--smears", type=int, default=4, help="generated blood smears (default 4)")
    parser.add_argument("--vis-thr", type=float, default=None,
                        help="draw detections scoring at least this (SVM margin; default: the 'vis_thr' stored in "
                             "the detector file, else 0)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: one smear, two photos, one image per real-data set")
    add_common_args(parser)
    return parser.parse_args(argv)


def run_demo(argv: Sequence[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    setup_logging(args.quiet, args.debug)
    if args.quiet:
        from cvcore.datasets import DatasetWarning

        warnings.simplefilter("ignore", DatasetWarning)
    start, quiet = time.time(), args.quiet
    out = Path(args.out)
    models_dir = Path(args.models_dir) if args.models_dir else None
    if models_dir is not None and not models_dir.is_dir():
        raise CLIError(f"--models-dir: {models_dir} is not a folder")
    data = find_data(args.data)
    if args.smears < 1:
        raise CLIError(f"--smears must be at least 1, got {args.smears}")
    limits = {k: 1 if args.quick else v for k, v in EVAL_LIMITS.items()}
    if args.eval_limit is not None:
        limits = dict.fromkeys(EVAL_LIMITS, args.eval_limit)

    files = {n: model_path(n, "rcnn", models_dir) for n in DETECTORS}
    files[POSE_MODEL] = model_path(POSE_MODEL, "pose", models_dir)
    refs = {n: (str(p) if models_dir else n) for n, p in files.items() if p is not None}
    if not refs:
        raise CLIError(f"no model files in {models_dir or 'rcnn/models, pose/models'}: train them (rcnn-train, "
                       "pose-train) or pass --models-dir")
    where = models_dir or "rcnn/models, pose/models"
    notes = [f"{n}: no model file {n}.pt in {where}, skipped." for n, p in files.items() if p is None]
    for note in notes:
        print(f"demo: warning: {note}", file=sys.stderr)

    say(quiet, f"demo: writing inputs to {out / 'inputs'}")
    n_smears = 1 if args.quick else args.smears
    smears = write_smears(out / "inputs" / "smears", n_smears)
    photos = write_photos(out / "inputs" / "photos", args.quick)
    tools = Tools(quiet, args.device)
    vis_thr = {n: stored_vis_thr(files[n]) if args.vis_thr is None else args.vis_thr for n in DETECTORS if n in refs}
    models, detections, generated = run_detectors(tools, files, refs, smears, photos, out / "detect", vis_thr)

    say(quiet, "demo: pictures of selective-search proposals")
    ss = "top 100 selective-search proposals (fast mode, as R-CNN)"
    pictures = [(proposals_picture(photos / "chelsea.png", out / "pictures" / "proposals_chelsea_top100.jpg"),
                 f"{ss} on chelsea"),
                (proposals_picture(smears / "JPEGImages" / "smear_000.jpg",
                                   out / "pictures" / "proposals_smear_top100.jpg"), f"{ss} on a generated smear")]
    curves: list[tuple[Path, str]] = []
    pose_vis: list[Path] = []
    if POSE_MODEL in refs:
        say(quiet, f"demo: pose with {POSE_MODEL}")
        models[POSE_MODEL], pose_vis, picture, curve = run_pose(tools, files[POSE_MODEL], refs[POSE_MODEL],
                                                                refs.get(PERSON_DETECTOR), photos, out, args.device)
        pictures.append(picture)
        if curve:
            curves.append(curve)
        else:
            notes.append(f"{POSE_MODEL}: the model file stores no PCK@<alpha> metrics, so no stored PCK curve.")
    for name, path in files.items():
        if path is not None:
            plot = plot_logs(training_logs(path, out / "logs"), out / "pictures" / f"training_{name}.png")
            if plot:
                curves.append((plot, f"{name}: training curves ({path.stem}.log.jsonl next to the model file)"))
            else:
                notes.append(f"{name}: no training log next to the model file ({path.stem}.log.jsonl), "
                             "so no training curves.")

    real = evaluate_on_data(tools, data, refs, limits, vis_thr, out / "eval", quiet) if data is not None else {}
    ctx = {"command": shlex.join(["python", "tools/demo.py", *(argv if argv is not None else sys.argv[1:])]),
           "seconds": time.time() - start, "threads": torch.get_num_threads(), "device": args.device,
           "models": models, "real": real, "detections": detections, "generated": generated, "n_smears": n_smears,
           "vis_thr": vis_thr, "person_detector": PERSON_DETECTOR in refs,
           "pictures": pictures, "pose_vis": pose_vis, "curves": curves, "notes": notes, "commands": tools.commands}
    md, html = build_report(out, ctx).write()
    summary = {"report": str(html), "markdown": str(md), "seconds": round(ctx["seconds"], 1),
               "models": {n: {k: v for k, v in m.items() if k in ("file", "speed")} for n, m in models.items()},
               "generated_smears": {n: {"mAP": g["mAP"], "AP": g["AP"]} for n, g in generated.items()},
               "real": {n: {k: v for k, v in r.items() if k.startswith("PCK@") or k in ("data", "mAP", "AP", "images",
                                                                                        "total")}
                        for n, r in real.items()},
               "commands": tools.commands}
    atomic_write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"demo: done in {ctx['seconds']:.0f} s; report: {html} (and {md.name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(run_demo, argv, prog="demo")


if __name__ == "__main__":
    sys.exit(main())
