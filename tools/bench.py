"""One benchmark for issue 5: every speed figure as a ratio against its reference, absolute numbers beside it.

    python tools/bench.py                  # full run (~10-15 min on 2 cores); uses ../shared/data when present
    python tools/bench.py --quick          # smoke run (< 1 min): tiny sizes, same sections, meaningless numbers
    python tools/bench.py --data none      # synthetic images only (recall and mAP omitted)

Sections, on the same images in one process (the memory run is a fresh child process, so that its peak RSS is
detect's alone):

1. detect, warp mode: the ``detect`` CLI's loop (decoding and selective search of the next image in a worker
   thread) in seconds per image, split by stage (proposals, warp, CNN, SVM + regression + NMS), divided by the
   backbone-only floor: the same number of crops through the bare backbone at its best batch size and memory
   format, measured right after the loop (target <= 1.25);
2. warp / shared seconds per image (target >= 30x), with VOC07 mAP of both on BCCD val and Raccoon val;
3. proposals: native fast vs OpenCV ``ximgproc`` fast vs the ``selectivesearch`` package, run in turn on each image
   of 40 per set (``--proposal-images``; target time ratio <= 1.0 with recall >= OpenCV's at OpenCV's number of
   boxes);
4. pose: images per second of the ``pose`` CLI (target >= 10/s); FFT vs direct spatial-model convolution
   (both from ``tools/bench_pose.py``);
5. training side: fp16 feature-cache bytes per image, SVM training time per class per backend, peak memory;
6. resident memory of the ``detect`` loop after 50, 100 and 200 images (must not grow with the number of images).

Models: the shipped detectors (``bccd``, ``bccd-fast``, ``raccoon``, ``raccoon-fast``) and pose model (``lspet``),
or the files in ``--rcnn-models DIR`` / ``--pose-model``. A missing model is replaced by an untrained one built from
its config (same architecture and sizes, so the same speed; its mAP is not reported). Timings share the machine with
whatever else runs: the load average is printed at every section.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from cvcore.datasets import DetectionRecord
from cvcore.device import DEFAULT_THREADS, pipeline_threads
from cvcore.evaluation import eval_detections
from cvcore.io import load_image
from cvcore.report import rss_mb
from cvcore.synthetic import blood_smear
from rcnn.data import validation_records
from rcnn.detector import Detector, meta_proposer, proposal_meta, resolve_model_path
from rcnn.features import FeatureCache, ImageFeatures, auto_cnn_streams
from rcnn.proposals import proposal_best_iou, selective_search
from rcnn.svm import hard_negative_mining
from rcnn.train import training_images

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
warnings.filterwarnings("ignore", message=".*not writable.*")
warnings.filterwarnings("ignore", module="cvcore.datasets")


# ------------------------------------------------------------------------------------------------ helpers
def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the next peak belongs to the next section."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def verdict(value: float, target: float, at_most: bool) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "met" if (value <= target if at_most else value >= target) else "NOT met"


class Clock:
    """Busy seconds per stage name, from forward hooks on modules: the length of the union of the forward passes'
    intervals since :meth:`clear`, so passes running at once in several threads (CNN streams) count once."""

    def __init__(self) -> None:
        self.intervals: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._local = threading.local()

    @property
    def seconds(self) -> dict[str, float]:
        out = {}
        for name, spans in self.intervals.items():
            total, end = 0.0, float("-inf")
            for a, b in sorted(spans):
                total += max(0.0, b - max(a, end))
                end = max(end, b)
            out[name] = total
        return defaultdict(float, out)

    def clear(self) -> None:
        self.intervals.clear()

    def hook(self, module: torch.nn.Module, name: str) -> None:
        """Record the interval of every forward pass of ``module`` under ``name`` (start time per thread)."""

        def start(*_: Any) -> None:
            self._local.start = time.perf_counter()

        def stop(*_: Any) -> None:
            self.intervals[name].append((self._local.start, time.perf_counter()))  # list.append: thread-safe

        module.register_forward_pre_hook(start)
        module.register_forward_hook(stop)


class KeepLast:
    """Wraps a callable (the detector's feature extractor) and keeps its last output; other attributes pass."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.last = fn, None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.last = self.fn(*args, **kwargs)
        return self.last

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fn, name)


# ------------------------------------------------------------------------------------------------ models and images
def load_detector(name: str, models_dir: Path | None) -> tuple[Detector, bool]:
    """(detector, trained?) for a shipped name; an untrained one from ``configs/rcnn/<name>.yaml`` when missing."""
    path = models_dir / f"{name}.pt" if models_dir else None
    try:
        return Detector.load(path if path and path.is_file() else resolve_model_path(name)), True
    except FileNotFoundError:
        pass
    from cvcore.config import config_to_dict, load_config
    from rcnn.bbox_regression import BoxRegressor
    from rcnn.config import RCNNConfig
    from rcnn.features import build_extractor
    from rcnn.svm import LinearSVMs

    cfg = load_config(RCNNConfig, ROOT / "configs" / "rcnn" / f"{name}.yaml")
    extractor, spec = build_extractor(cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    c, d = len(cfg.data.classes), extractor.dim
    svms = LinearSVMs(torch.randn(c, d, generator=gen) * 0.01, torch.zeros(c))
    regressor = BoxRegressor(torch.randn(c, d, 4, generator=gen) * 1e-4, torch.zeros(c, 4))
    meta = {"config": config_to_dict(cfg), "backbone": spec, "proposals": proposal_meta(cfg.proposals)}
    return Detector(cfg.data.classes, extractor, svms, regressor, 1.0, meta_proposer(meta["proposals"]),
                    score_thr=-1e9, meta=meta), False


@dataclass
class ImageSet:
    """Images of one benchmark set, with ground truth (real data) or without (synthetic: recall/mAP omitted)."""

    name: str
    models: tuple[str, str]                   # (warp detector, shared detector)
    records: list[DetectionRecord]
    images: list[np.ndarray]
    real: bool


def image_sets(data: Path | None, limit: int) -> list[ImageSet]:
    """BCCD val and Raccoon val (the validation splits of their training configs, first ``limit``) or ``limit``
    synthetic smears."""
    if data is not None:
        out = []
        for name, models in (("bccd", ("bccd", "bccd-fast")), ("raccoon", ("raccoon", "raccoon-fast"))):
            records = validation_records(ROOT / "configs" / "rcnn" / f"{name}.yaml", data / name, limit)
            out.append(ImageSet(f"{'BCCD' if name == 'bccd' else 'Raccoon'} val", models, records,
                                [load_image(r.image_path) for r in records], True))
        return out
    rng = np.random.default_rng(0)
    records, images = [], []
    for i in range(limit):
        image, boxes, labels = blood_smear(rng)
        records.append(DetectionRecord(f"synthetic_{i}.png", image.shape[1], image.shape[0], boxes, labels,
                                       np.zeros(len(boxes), bool), f"synthetic_{i}.png"))
        images.append(image)
    return [ImageSet("synthetic smears", ("bccd", "bccd-fast"), records, images, False)]


# ------------------------------------------------------------------------------------------------ backbone floor
def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def floor_seconds(net: torch.nn.Module, n: int, size: int, batch: int, channels_last: bool, threads: int,
                  streams: int = 1) -> float:
    """Seconds for ``n`` random crops through the bare backbone at ``batch`` crops per forward pass, with ``threads``
    torch threads and ``streams`` forward passes at once (one Python thread each)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)

    @torch.inference_mode()
    def forward(count: int) -> None:
        net(x[:count])

    try:
        forward(2)  # warm-up (memory format, batch shape)
        counts = [min(batch, n - start) for start in range(0, n, batch)]
        t = time.perf_counter()
        if streams > 1:
            with ThreadPoolExecutor(streams) as pool:
                list(pool.map(forward, counts))
        else:
            for count in counts:
                forward(count)
        return time.perf_counter() - t
    finally:
        torch.set_num_threads(before)


def best_floor(net: torch.nn.Module, size: int, batch_sizes: list[int], channels_last: bool, crops: int
               ) -> tuple[float, str, list[str]]:
    """The fastest way to run ``crops`` random crops through the bare backbone on the whole machine. Swept on a few
    batches each: every batch size with all cores as torch threads, and with one torch thread per core each running
    its own batches, in the detector's memory format, then the best of those in the other format; the best is then
    timed on ``crops`` crops -> (seconds, description, sweep table rows)."""
    n = cores()
    configs = [(n, 1), (1, n)] if n > 1 else [(1, 1)]
    rows, best = [], (0.0, (batch_sizes[0], n, 1, channels_last))

    def name(threads: int, streams: int) -> str:
        return f"{threads} torch thread{'s' if threads > 1 else ''} x {streams} stream{'s' if streams > 1 else ''}"

    def measure(bs: int, threads: int, streams: int, cl: bool) -> None:
        nonlocal best
        count = max(2 * bs * streams, 192)
        rate = count / floor_seconds(net, count, size, bs, cl, threads, streams)
        rows.append(f"| {bs} | {name(threads, streams)} | {'channels_last' if cl else 'contiguous'} | {rate:.1f} |")
        best = max(best, (rate, (bs, threads, streams, cl)))

    for threads, streams in configs:
        for bs in batch_sizes:
            measure(bs, threads, streams, channels_last)
    bs, threads, streams, cl = best[1]
    measure(bs, threads, streams, not channels_last)
    bs, threads, streams, cl = best[1]
    seconds = floor_seconds(net, crops, size, bs, cl, threads, streams)
    return seconds, f"batch {bs}, {name(threads, streams)}, {'channels_last' if cl else 'contiguous'}", rows


# ------------------------------------------------------------------------------------------------ detection pass
@dataclass
class ModeRun:
    """Per-image results of one detector on one image set."""

    name: str
    trained: bool
    detector: Detector
    stages: list[dict[str, float]] = field(default_factory=list)
    preds: list[dict] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)         # proposals scored, per image
    features: list[torch.Tensor] = field(default_factory=list)   # their features (unscaled, fp16), per image
    wall: float = float("nan")                                    # seconds per image of the whole loop
    floor_net: torch.nn.Module | None = None                      # an untouched copy of the backbone


def shrink(det: Detector, quick: bool, top_k: int | None) -> None:
    """``--top-k``: fewer proposals per image; ``--quick``: tiny working sizes as well (the numbers then mean
    nothing; only that every section runs is checked)."""
    p = det.meta["proposals"] = dict(det.meta["proposals"])
    if top_k:
        p["test_per_image"] = top_k
    if quick:
        p["max_side"] = 160
        if det.extractor.mode == "shared":
            det.extractor.scales, det.extractor.max_image_side = [160], 240
    det.propose = meta_proposer(p)


def detection_pass(s: ImageSet, name: str, models_dir: Path | None, top_k: int | None, quick: bool,
                   input_size: int | None = None, limit: int | None = None) -> ModeRun:
    """Detector ``name`` on every image of ``s`` in the ``detect`` CLI's loop: a worker thread decodes the next image
    and runs selective search (:func:`cvcore.io.prefetch`) while the main thread runs
    :meth:`Detector.detect_proposals`. Per image: the stage seconds (the detector's ``timings``, a forward hook
    splitting the CNN from the warp / RoI pooling; proposals as timed in the worker, overlapped). The loop's wall time
    per image is ``run.wall``. Warmed up first (numba, oneDNN kernels for the batch shapes), outside the timings."""
    from cvcore.io import prefetch

    det, trained = load_detector(name, models_dir)
    if quick or top_k:
        shrink(det, quick, top_k)
    if input_size:  # timing at another crop size: the SVMs still apply (pooled features do not depend on it)
        det.extractor.input_size = input_size
    run = ModeRun(name, trained, det, floor_net=copy.deepcopy(det.extractor.net))
    clock = Clock()
    clock.hook(det.extractor.net if det.extractor.mode == "warp" else det.extractor.net.trunk, "cnn")
    det.extractor = KeepLast(det.extractor)
    det.detect_proposals(s.images[0], det.propose(s.images[0])[: det.extractor.batch_size + 1])  # warm-up

    def prepare(i: int) -> tuple[np.ndarray, np.ndarray, float]:
        start = time.perf_counter()
        image = load_image(s.records[i].image_path) if s.real else s.images[i]
        return image, det.propose(image), time.perf_counter() - start

    start = time.perf_counter()
    indices = range(min(len(s.images), limit or len(s.images)))
    for image, boxes, propose_seconds in prefetch(prepare, indices, workers=1):
        clock.clear()
        det.timings.clear()
        t = time.perf_counter()
        result = det.detect_proposals(image, boxes)
        total = time.perf_counter() - t
        cnn, feats = clock.seconds["cnn"], det.timings["features"]
        run.stages.append({"decode+proposals (worker)": propose_seconds, "warp/pool": feats - cnn, "cnn": cnn,
                           "svm+reg+nms": total - feats, "boxes": len(boxes)})
        run.preds.append({"boxes": result.boxes, "scores": result.scores, "labels": result.labels})
        run.boxes.append(boxes)
        run.features.append(det.extractor.last.to(torch.float16))
    run.wall = (time.perf_counter() - start) / len(indices)
    return run


def backbone_floor(run: ModeRun, batch_sizes: list[int], max_crops: int) -> tuple[float, list[str]]:
    """The same number of crops as ``run`` scored, through the bare backbone the fastest way the whole machine allows
    (:func:`best_floor`, on random crops) -> (seconds per image, sweep table rows). At most ``max_crops`` are timed
    per configuration and the time is scaled to the full count."""
    ext = run.detector.extractor
    crops = sum(len(b) for b in run.boxes)
    timed = min(crops, max_crops)  # the floor is linear in the number of crops: time at most max_crops of them
    seconds, how, rows = best_floor(run.floor_net, ext.input_size, batch_sizes, ext.channels_last, timed)
    rows.append(f"best: {how} (the detector: batch {ext.batch_size}, {torch.get_num_threads()} torch thread(s) x "
                f"{ext.cnn_streams or auto_cnn_streams(ext.device)} stream(s), "
                f"{'channels_last' if ext.channels_last else 'contiguous'})")
    return seconds * crops / timed / len(run.boxes), rows


def paper_sizes_pass(s: ImageSet, args: argparse.Namespace, batch_sizes: list[int], summary: list) -> None:
    """The warp detector timed at R-CNN's own sizes (227 px crops, 2,000 proposals per image) against its floor: the
    pipeline's overhead where the CNN dominates, as on a faithful run (the shipped CPU models use 112-128 px)."""
    run = detection_pass(s, s.models[0], args.rcnn_models, 2000, False, input_size=227, limit=args.paper_images)
    floor, _ = backbone_floor(run, batch_sizes, args.floor_crops)
    m = stage_table(run)
    r = ratio(m["loop"], floor)
    print(f"paper sizes ({len(run.boxes)} images, 227 px crops, {np.mean([len(b) for b in run.boxes]):.0f} "
          f"proposals/image): detect {m['loop']:.2f} s/image, floor {floor:.2f} s/image, ratio {r:.2f} "
          "(target <= 1.25)")
    n = np.mean([len(b) for b in run.boxes])
    summary.append((f"detect warp / floor at 227 px, {n:.0f} proposals ({s.name})", r, "<= 1.25",
                    verdict(r, 1.25, True), f"{m['loop']:.2f} vs {floor:.2f} s/image"))


def mean_stages(run: ModeRun) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in run.stages])) for k in run.stages[0]}


def map_of(run: ModeRun, s: ImageSet) -> str:
    if not (s.real and run.trained):
        return "n/a (untrained model)" if s.real else "n/a (synthetic)"
    result = eval_detections(run.preds, s.records, run.detector.class_names, metric="voc07")
    aps = ", ".join(f"{c} {v:.3f}" for c, v in result["AP"].items() if np.isfinite(v))
    trained = run.detector.meta.get("metrics", {}).get("val", {}).get("mAP")
    full = f"; training report, full val: {trained:.4f}" if trained is not None else ""
    return f"{result['mAP']:.4f} ({aps}){full}"


# ------------------------------------------------------------------------------------------------ proposals
def proposal_row(name: str, boxes: list[np.ndarray], seconds: list[float], gts: list[np.ndarray] | None,
                 reference: float | None = None) -> str:
    """``| run | images | s/image | boxes/image | recall@0.5 | recall@0.7 | time / OpenCV |``."""
    recall = "| - | - "
    if gts is not None:
        ious = np.concatenate([proposal_best_iou(b, g) for b, g in zip(boxes, gts)])
        recall = f"| {(ious >= 0.5).mean():.3f} | {(ious >= 0.7).mean():.3f} "
    sec = np.mean(seconds) if seconds else float("nan")
    rel = f"{ratio(sec, reference):.2f}" if reference and np.isfinite(sec) else "-"
    return f"| {name} | {len(boxes)} | {sec:.2f} | {np.mean([len(b) for b in boxes]):.0f} {recall}| {rel} |"


def proposal_section(s: ImageSet, props: dict, few: int) -> tuple[float, str]:
    """Native vs OpenCV ``ximgproc`` (every image) and the ``selectivesearch`` package (first ``few``) in the
    detector's mode and working size, run in turn on each image so that each sees the same machine load.
    Prints the table; returns (time ratio native / OpenCV, recall comparison at OpenCV's box count)."""
    gts = [r.boxes[(r.boxes[:, 2] > r.boxes[:, 0]) & (r.boxes[:, 3] > r.boxes[:, 1])] for r in s.records] \
        if s.real else None
    kw = {"mode": props["mode"], "max_side": props["max_side"], "min_size": props["min_size"]}
    backends = ["native"] + (["opencv"] if hasattr(cv2, "ximgproc") else []) + ["selectivesearch"]
    boxes: dict[str, list] = {b: [] for b in backends}
    seconds: dict[str, list] = {b: [] for b in backends}
    for i, image in enumerate(s.images):
        for backend in backends:
            if backend == "selectivesearch" and i >= few:
                continue
            t = time.perf_counter()
            boxes[backend].append(selective_search(image, backend=backend, **kw))
            seconds[backend].append(time.perf_counter() - t)
    reference = float(np.mean(seconds["opencv"])) if "opencv" in backends else None
    print(f"\n{s.name}: {props['mode']} mode, longer side {props['max_side']} px, min box side {props['min_size']}")
    print("| run | images | s/image | boxes/image | recall@0.5 | recall@0.7 | time / OpenCV |\n"
          "|---|---|---|---|---|---|---|")
    print(proposal_row("native fast", boxes["native"], seconds["native"], gts, reference))
    recall_note = "n/a (synthetic)"
    if reference is None:
        print("| opencv ximgproc fast | cv2.ximgproc not importable | | | | | |")
        recall_note = "n/a (no OpenCV ximgproc)"
    else:
        print(proposal_row("opencv ximgproc fast", boxes["opencv"], seconds["opencv"], gts, reference))
        cut = [b[: len(c)] for b, c in zip(boxes["native"], boxes["opencv"])]
        print(proposal_row("native fast, top boxes cut to OpenCV's count", cut, [], gts))
        if gts is not None:
            mine = np.concatenate([proposal_best_iou(b, g) for b, g in zip(cut, gts)])
            theirs = np.concatenate([proposal_best_iou(b, g) for b, g in zip(boxes["opencv"], gts)])
            ok = all((mine >= t).mean() >= (theirs >= t).mean() for t in (0.5, 0.7))
            recall_note = ("recall >= OpenCV's at 0.5 and 0.7 (same box count)" if ok
                           else "recall BELOW OpenCV's (same box count)")
    if boxes["selectivesearch"]:
        n = len(boxes["selectivesearch"])
        print(proposal_row(f"selectivesearch package (first {n} images)", boxes["selectivesearch"],
                           seconds["selectivesearch"], gts[:n] if gts else None, reference))
    else:
        print("| selectivesearch package | 0 | skipped (--few 0) | | | | |")
    return ratio(float(np.mean(seconds["native"])), reference or 0.0), recall_note


# ------------------------------------------------------------------------------------------------ pose
def pose_section(data: Path | None, model: str, n_images: int, batch: int, repeats: int, quick: bool
                 ) -> dict[str, float]:
    """``pose`` CLI images per second and FFT vs direct spatial-model convolution, by ``tools/bench_pose.py``."""
    from bench_pose import fft_vs_direct, images_per_second

    from cvcore.config import load_config
    from pose.config import PoseConfig
    from pose.estimator import resolve_model_path as resolve_pose_model

    with tempfile.TemporaryDirectory() as tmp:
        try:
            resolve_pose_model(model)
            label = model
        except FileNotFoundError:  # an untrained model of the default config: the same network, the same speed
            from cvcore.datasets import LSP
            from pose.estimator import build_pose_model, save_model_file

            cfg = load_config(PoseConfig, ROOT / "configs" / "pose" / "lspet.yaml")
            net = build_pose_model(cfg, len(LSP.joints), LSP.edges, LSP.flip_pairs, stage="joint")
            model = str(save_model_file(Path(tmp) / "untrained.pt", net, cfg, LSP.joints, LSP.edges))
            label = "untrained (configs/pose/lspet.yaml)"
        speed = images_per_second(model, data / "lspet" if data else Path(tmp) / "no-data", n_images, "cpu")
    print(f"model {label}; {speed['source']}: {speed['images']} images in {speed['seconds']} s through the pose CLI "
          f"(decode, crop, network, joints, JSON) after a warm-up run")
    rate = speed["images_per_s"]
    print(f"pose: {rate:.1f} images/s = {rate / 10:.2f}x the 10 images/s target")
    # --quick: 8x8 heatmaps instead of 32x32 (a 15x15 kernel instead of 63x63), so the direct path stays cheap
    cfg = load_config(PoseConfig, ROOT / "configs" / "pose" / "lspet.yaml",
                      ["data.input_size=[32, 32]"] if quick else [])
    f = fft_vs_direct(cfg, batch, repeats)
    print(f"spatial model: {f['pairs']} joint pairs, {f['kernel']}x{f['kernel']} kernels on {f['heatmap']} maps, "
          f"batch {f['batch']}, best of {repeats} after a warm-up")
    print("| pass | FFT s | direct s | direct / FFT |\n|---|---|---|---|")
    for name in ("forward", "forward_backward"):
        r = f[name]
        print(f"| {name.replace('_', '+')} | {r['fft_s']:.4f} | {r['direct_s']:.4f} | {r['direct_over_fft']:.1f} |")
    return {"images_per_s": rate, "fft_speedup": f["forward"]["direct_over_fft"],
            "fft_speedup_train": f["forward_backward"]["direct_over_fft"]}


# ------------------------------------------------------------------------------------------------ training side
def training_section(s: ImageSet, runs: list[ModeRun]) -> None:
    """fp16 feature-cache bytes per image, SVM training time per class per backend and peak RSS, per mode."""
    from rcnn.config import SVMConfig
    from rcnn.features import feature_scale

    print("| mode | rows/image (gt + proposals) | dim | cache bytes/image (fp16) | backend | SVM s/class "
          "| retrains/class | negatives cached/class | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|")
    for run in runs:
        det = run.detector
        cfg = det.meta.get("config", {})
        k = cfg.get("proposals", {}).get("train_per_image", 10**9)
        items, sizes = [], []
        with tempfile.TemporaryDirectory() as tmp:
            cache = FeatureCache(tmp, det.extractor.key())
            for record, image, props, feats in zip(s.records, s.images, run.boxes, run.features):
                gt = np.asarray(record.boxes, np.float32).reshape(-1, 4)
                gt_feats = det.extractor.fn(image, gt).to(torch.float16)
                n = min(k, len(feats))
                boxes = np.concatenate([gt, props[:n]])
                both = torch.cat([gt_feats, feats[:n]])
                sizes.append(cache.save(record.image_path, boxes, both).stat().st_size)
                items.append(ImageFeatures(record, boxes, both, len(gt)))
        scale = det.feature_scale if run.trained else feature_scale(torch.cat([it.features for it in items]))
        svm = SVMConfig(**cfg.get("svm", {}))
        rows = np.mean([len(it.boxes) for it in items])
        classes = [c for c in det.class_names if any(c in r.labels for r in s.records)]  # with a positive
        images = training_images(items, classes, scale, svm.neg_iou)
        for backend in ("sklearn", "torch"):
            reset_peak_rss()
            t = time.perf_counter()
            _, stats = hard_negative_mining(
                images, len(classes), C=svm.C, pos_weight=svm.pos_weight, bias_multiplier=svm.bias_multiplier,
                hard_threshold=svm.hard_threshold, evict_threshold=svm.evict_threshold,
                retrain_every=svm.retrain_every, max_cache=svm.max_cache, first_negatives=svm.first_negatives,
                backend=backend)
            per_class = (time.perf_counter() - t) / len(classes)
            print(f"| {det.extractor.mode} ({run.name}) | {rows:.0f} | {items[0].features.shape[1]} | "
                  f"{np.mean(sizes) / 1e6:.2f} MB | {backend} | {per_class:.2f} | {np.mean(stats['retrains']):.1f} | "
                  f"{np.mean(stats['cache']):.0f} | {rss_mb()['VmHWM']:.0f} |")
    print(f"(SVMs trained on the {len(s.images)} benchmark images of {s.name} with the detectors' SVM settings; "
          "a real training set has more images, more negatives and more retrains.)")



# ------------------------------------------------------------------------------------------------ memory
def memory_child(args: argparse.Namespace) -> None:
    """``detect``'s loop (:func:`cvcore.io.prefetch`: the next image is generated and its proposals computed in a
    worker thread) over ``--memory-images`` synthetic smears; prints RSS at 1/4, 1/2 and all of them. Runs in its
    own process, so that VmHWM is detect's alone."""
    from cvcore.io import prefetch

    det, _ = load_detector(args.memory_model, args.rcnn_models)
    if args.quick:
        shrink(det, True, 16)
    n = args.memory_images
    checkpoints = {max(1, n // 4), n // 2, n}
    rng = np.random.default_rng(1)

    def prepare(_: int) -> tuple[np.ndarray, np.ndarray]:
        image = blood_smear(rng)[0]
        return image, det.propose(image)

    t = time.perf_counter()
    for i, (image, proposals) in enumerate(prefetch(prepare, range(n), workers=1), start=1):
        det.detect_proposals(image, proposals)
        if i in checkpoints:
            m = rss_mb()
            print(f"MEM {i} {m['VmRSS']:.1f} {m['VmHWM']:.1f} {(time.perf_counter() - t) / i:.3f}", flush=True)


def memory_section(args: argparse.Namespace) -> tuple[float, str]:
    """Runs :func:`memory_child` in a fresh interpreter and prints its RSS table; returns (growth MiB, verdict)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", "--memory-images",
           str(args.memory_images), "--memory-model", args.memory_model]
    cmd += ["--quick"] * args.quick + (["--rcnn-models", str(args.rcnn_models)] if args.rcnn_models else [])
    cmd += ["--threads", str(args.threads)]
    print(f"detector {args.memory_model}, synthetic 640x480 smears, the detect loop in one fresh process")
    print("| images | RSS MiB | peak RSS (VmHWM) MiB | s/image |\n|---|---|---|---|")
    rows = []
    with tempfile.TemporaryFile("w+") as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                                               cwd=ROOT) as proc:
        for line in proc.stdout:  # rows as they come: the run is long
            if line.startswith("MEM "):
                n, rss, hwm, sec = line.split()[1:]
                rows.append((int(n), float(rss)))
                print(f"| {n} | {float(rss):.0f} | {float(hwm):.0f} | {float(sec):.2f} |")
        proc.wait()
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0 or not rows:
        print(f"memory run failed (exit {proc.returncode}):\n{stderr[-2000:]}")
        return float("nan"), "n/a"
    first, last = rows[0][1], rows[-1][1]
    growth = last - first
    flat = growth <= max(20.0, 0.03 * first)
    print(f"RSS growth from {rows[0][0]} to {rows[-1][0]} images: {growth:+.1f} MiB "
          f"({'flat' if flat else 'GROWS'}: threshold max(20 MiB, 3%))")
    return growth, "met" if flat else "NOT met"


# ------------------------------------------------------------------------------------------------ report
def machine() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    isa = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags)
    mem = next((int(line.split()[1]) / 2**20 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), float("nan"))
    print(f"machine: {cpu} ({isa or 'no AVX2'}); {os.cpu_count()} logical CPUs "
          f"({len(os.sched_getaffinity(0))} usable); "
          f"{mem:.0f} GiB RAM; load average {os.getloadavg()[0]:.1f} at start")
    print(f"software: Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} "
          f"intra-op threads, {torch.get_num_interop_threads()} inter-op, oneDNN "
          f"{'on' if torch.backends.mkldnn.is_available() else 'off'}), OpenCV {cv2.__version__} "
          f"(ximgproc {'yes' if hasattr(cv2, 'ximgproc') else 'no'}), numpy {np.__version__}; device cpu")


def stage_table(run: ModeRun) -> dict[str, float]:
    """Print the mean seconds per image of each stage of ``run``; returns them (+ ``loop``: wall s/image)."""
    m = mean_stages(run)
    warp = run.detector.extractor.mode == "warp"
    labels = {"decode+proposals (worker)": "decode + selective search (worker thread, overlapped)",
              "warp/pool": "warp crops (roi_align; the next batch in a worker: time waited)" if warp
              else "RoI pooling + head", "cnn": "CNN", "svm+reg+nms": "SVM + box regression + NMS"}
    print("| stage | s/image |\n|---|---|")
    for key, label in labels.items():
        print(f"| {label} | {m[key]:.3f} |")
    print(f"| detect loop, wall time | {run.wall:.3f} |")
    return {**m, "loop": run.wall, "features": m["warp/pool"] + m["cnn"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder with bccd/, raccoon/, lspet/ (default ../shared/data "
                        "when present), or 'none' for synthetic images")
    parser.add_argument("--limit", type=int, default=None, help="images per detection set (default 6; quick 1)")
    parser.add_argument("--batch-sizes", default=None, help="backbone floor sweep (default 4,8,16,32,64,128)")
    parser.add_argument("--floor-crops", type=int, default=1200, help="crops timed for the floor (default 1200)")
    parser.add_argument("--top-k", type=int, default=None, help="override proposals per image (default: model's)")
    parser.add_argument("--proposal-images", type=int, default=None, help="images per set for the proposal "
                        "comparison (default 40 with real data; the detection sets' otherwise)")
    parser.add_argument("--few", type=int, default=None, help="images per set for the selectivesearch package (2)")
    parser.add_argument("--pose-images", type=int, default=None, help="images for the pose speed (default 100)")
    parser.add_argument("--pose-model", default="lspet")
    parser.add_argument("--rcnn-models", type=Path, default=None, help="folder with bccd.pt, bccd-fast.pt, ...")
    parser.add_argument("--memory-images", type=int, default=None, help="detect calls in the memory run (200)")
    parser.add_argument("--memory-model", default="bccd-fast", help="detector of the memory run (default bccd-fast)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: as detect, one fewer than torch's "
                        "default; the floor always uses the whole machine)")
    parser.add_argument("--paper-images", type=int, default=1, help="images per set timed at the paper's sizes "
                        "(227 px crops, 2,000 proposals; 0 skips; default 1)")
    parser.add_argument("--stop-after", type=int, default=6, choices=range(1, 7), metavar="N",
                        help="print the summary after section N (default 6: every section)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that every section runs")
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress is visible when the output goes to a file
    quick = args.quick
    pick = lambda value, full, small: value if value is not None else (small if quick else full)  # noqa: E731
    args.limit = pick(args.limit, 6, 1)
    args.few, args.pose_images = pick(args.few, 2, 0), pick(args.pose_images, 100, 4)
    args.proposal_images = pick(args.proposal_images, 40, 1)
    args.memory_images, args.top_k = pick(args.memory_images, 200, 4), pick(args.top_k, None, 16)
    batch_sizes = [int(b) for b in pick(args.batch_sizes, "4,8,16,32,64,128", "4,8").split(",")]
    pipeline_threads(args.threads, torch.device("cpu"))  # as `detect`: one core fewer than torch's default
    if args.memory_child:
        return memory_child(args)
    if args.data is None:
        data = DEFAULT_DATA if (DEFAULT_DATA / "bccd").is_dir() else None
    elif args.data == "none":
        data = None
    elif (Path(args.data) / "bccd").is_dir():
        data = Path(args.data)
    else:
        raise SystemExit(f"bench: --data {args.data}: expected bccd/, raccoon/ (and lspet/) in it")
    start = time.perf_counter()
    summary: list[tuple[str, float, str, str, str]] = []  # figure, ratio, target, verdict, absolute

    def section(title: str) -> None:
        print(f"\n## {title}\n(at {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f})")

    print(f"# tools/bench.py {'--quick ' if quick else ''}{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    machine()
    print(f"data: {data or 'none (synthetic images; recall and mAP omitted)'}")

    sets = image_sets(data, args.limit)
    detection: list[tuple[ImageSet, ModeRun, ModeRun]] = []
    for s in sets:
        section(f"1. detect, warp mode, vs the backbone-only floor: {s.name}")
        reset_peak_rss()
        warp = detection_pass(s, s.models[0], args.rcnn_models, args.top_k, quick)
        peak = rss_mb()["VmHWM"]
        floor, sweep = backbone_floor(warp, batch_sizes if quick else
                                      sorted({*batch_sizes, warp.detector.extractor.batch_size}), args.floor_crops)
        ext = warp.detector.extractor
        print(f"{len(s.images)} images; detector {warp.name} ({'trained' if warp.trained else 'untrained'}), "
              f"{ext.input_size} px crops, context {ext.context_padding}, batch {ext.batch_size}, "
              f"{np.mean([len(b) for b in warp.boxes]):.0f} proposals/image; peak RSS {peak:.0f} MiB")
        m = stage_table(warp)
        print("backbone sweep after the loop (random crops, bare backbone, a few batches each):\n"
              "| batch | threads x streams | memory format | crops/s |\n|---|---|---|---|")
        print("\n".join(sweep))
        r = ratio(m["loop"], floor)
        crops = sum(len(b) for b in warp.boxes)
        print(f"floor: the same {crops} crops through the bare backbone at its best batch, right after the loop "
              f"({min(crops, args.floor_crops)} timed, scaled to {crops}): {floor:.3f} s/image")
        print(f"detect / floor = {r:.2f} (target <= 1.25); CNN stage / floor = {ratio(m['cnn'], floor):.2f}")
        summary.append((f"detect warp / backbone floor ({s.name})", r, "<= 1.25", verdict(r, 1.25, True),
                        f"{m['loop']:.2f} vs {floor:.2f} s/image"))
        if args.paper_images and not quick:
            paper_sizes_pass(s, args, batch_sizes, summary)
        if args.stop_after == 1:
            continue
        shared = detection_pass(s, s.models[1], args.rcnn_models, args.top_k, quick)
        detection.append((s, warp, shared))

    def done(n: int) -> bool:
        """After section ``n``: print the summary and stop if ``--stop-after n``."""
        if n < args.stop_after:
            return False
        section("summary")
        print("| figure | value | target | verdict | absolute |\n|---|---|---|---|---|")
        for name, value, target, ok, absolute in summary:
            print(f"| {name} | {value:.2f} | {target} | {ok} | {absolute} |")
        print(f"\nbench: {time.perf_counter() - start:.0f} s wall; load average {os.getloadavg()[0]:.1f} at the end")
        return True

    if done(1):
        return
    section("2. warp mode / shared mode, seconds per image and mAP (same images, each detector's own proposals)")
    for s, warp, shared in detection:
        print(f"\n{s.name}: {len(s.images)} images")
        for run in (warp, shared):
            print(f"\n{run.detector.extractor.mode} mode, detector {run.name}, "
                  f"{np.mean([len(b) for b in run.boxes]):.0f} proposals/image; VOC07 mAP on these images: "
                  f"{map_of(run, s)}")
            stage_table(run)
        mw, ms = mean_stages(warp), mean_stages(shared)
        fw, fs = mw["warp/pool"] + mw["cnn"], ms["warp/pool"] + ms["cnn"]
        end, feats = ratio(warp.wall, shared.wall), ratio(fw, fs)
        nw, ns = mw["boxes"], ms["boxes"]
        same = ratio(fw / nw * ns, fs)  # warp's cost is linear in the number of crops
        print(f"warp / shared: {feats:.1f}x features (warp + CNN vs CNN + RoI pooling, each with its own "
              f"proposals: {nw:.0f} vs {ns:.0f}; target >= 30x), {end:.1f}x detect loop (selective search in both); "
              f"{same:.1f}x with warp mode scaled to the shared detector's {ns:.0f} proposals")
        summary.append((f"warp / shared s/image, features ({s.name})", feats, ">= 30", verdict(feats, 30, False),
                        f"{fw:.2f} vs {fs:.3f} s/image ({nw:.0f} vs {ns:.0f} proposals)"))
        summary.append((f"warp / shared s/image, features at {ns:.0f} proposals each ({s.name})", same,
                        "(reported)", "-", f"{fw / nw * ns:.1f} vs {fs:.3f} s/image"))
        summary.append((f"warp / shared s/image, detect loop ({s.name})", end, "(reported)", "-",
                        f"{warp.wall:.2f} vs {shared.wall:.2f} s/image"))
        if s.real and warp.trained and shared.trained:
            maps = [eval_detections(r.preds, s.records, r.detector.class_names)["mAP"] for r in (warp, shared)]
            diff = 100 * (maps[1] - maps[0])
            stored = [r.detector.meta.get("metrics", {}).get("val", {}).get("mAP") for r in (warp, shared)]
            whole = None not in stored  # the whole validation split, measured when the files were written
            if whole:
                full = 100 * (stored[1] - stored[0])
                summary.append((f"mAP shared - warp, points ({s.name}, whole split)", full, ">= -2",
                                verdict(full, -2, False), f"{stored[1]:.3f} vs {stored[0]:.3f}, stored in the "
                                "detector files"))
            # a few dozen boxes: judged only when the whole-split figure is missing
            summary.append((f"mAP shared - warp, points ({s.name}, these images)", diff,
                            "(reported)" if whole else ">= -2", "-" if whole else verdict(diff, -2, False),
                            f"{maps[1]:.3f} vs {maps[0]:.3f} on {len(s.images)} images"))

    if done(2):
        return
    section("3. proposals: native fast vs OpenCV ximgproc fast vs the selectivesearch package")
    # more images than the detection sets: recall on 6 images moves by a sixth per ground-truth box
    more = data is not None and args.proposal_images > args.limit
    proposal_sets = image_sets(data, args.proposal_images) if more else [s for s, _, _ in detection]
    for s, (_, warp, _) in zip(proposal_sets, detection):
        r, note = proposal_section(s, warp.detector.meta["proposals"], args.few)
        print(f"time native / OpenCV: {r:.2f} (target <= 1.0 with recall >= OpenCV's); {note}")
        ok = verdict(r, 1.0, True)
        if ok == "met" and "BELOW" in note:
            ok = "NOT met (recall)"
        summary.append((f"proposals native / OpenCV s/image ({s.name})", r, "<= 1.0", ok, note))

    if done(3):
        return
    section("4. pose")
    torch.set_num_threads(args.threads or DEFAULT_THREADS)  # as the `pose` CLI: torch's default threads
    pose = pose_section(data, args.pose_model, args.pose_images, 2 if quick else 4, 1, quick)
    pipeline_threads(args.threads, torch.device("cpu"))
    summary.append(("pose images/s / 10", pose["images_per_s"] / 10, ">= 1.0",
                    verdict(pose["images_per_s"] / 10, 1.0, False), f"{pose['images_per_s']:.1f} images/s"))
    summary.append(("spatial model direct / FFT time, forward", pose["fft_speedup"], "(reported)", "-",
                    f"forward+backward {pose['fft_speedup_train']:.1f}x"))

    if done(4):
        return
    section("5. training side: feature cache, SVMs, peak memory")
    s, warp, shared = detection[0]
    training_section(s, [warp, shared])

    if done(5):
        return
    section(f"6. peak resident memory of detect over {args.memory_images} images")
    growth, ok = memory_section(args)
    summary.append((f"detect RSS growth over {args.memory_images} images, MiB", growth, "flat", ok, ""))

    done(6)

if __name__ == "__main__":
    main()
