"""Training stages of R-CNN, run in order by :func:`train` (``rcnn-train --config configs/rcnn/<name>.yaml``):

1. proposals: selective search on every image (cached per image by :func:`rcnn.proposals.compute_proposals`);
2. fine-tuning (optional): backbone + softmax head on warped proposals (:mod:`rcnn.finetune`), or in the shared
   mode on RoIs pooled from whole-image maps (:mod:`rcnn.finetune_shared`, Fast R-CNN);
3. features: CNN features of ground-truth boxes and proposals (training images) and proposals (validation images),
   cached per image in fp16 (:class:`rcnn.features.FeatureCache`);
4. SVMs: per-class linear SVMs with hard-negative mining (:mod:`rcnn.svm`);
5. box regression: per-class ridge regression (:mod:`rcnn.bbox_regression`);
6. evaluation on the validation split: VOC mAP with and without box regression, report JSON + PR curves.

Every stage is resumable: proposals and features are per-image files, fine-tuning checkpoints through the engine,
SVM and regression results are saved in the output folder under a key of their inputs. Per-image cost is
independent, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou
from tqdm import tqdm

from cvcore.config import config_to_dict, save_config
from cvcore.datasets import DetectionRecord
from cvcore.device import resolve_device, seed_everything, set_num_threads
from cvcore.distributed import barrier, cleanup_distributed, init_distributed
from cvcore.evaluation import eval_detections, f1_threshold
from cvcore.evaluation.plots import plot_pr_curves
from cvcore.io import atomic_write_json
from cvcore.stages import keyed_stage, stage_key
from rcnn.bbox_regression import BoxRegressor, fit_box_regressor
from rcnn.config import RCNNConfig
from rcnn.data import load_splits, select_records
from rcnn.detector import Detector, meta_proposer, proposal_meta
from rcnn.features import FeatureExtractor, ImageFeatures, box_sets, build_extractor, extract_features, feature_scale
from rcnn.finetune import PARTIAL_LABELS_MIN_IOU, lr_step_milestone
from rcnn.proposals import image_proposals
from rcnn.shard import finetune_stage
from rcnn.svm import LinearSVMs, TrainingImage, hard_negative_mining

log = logging.getLogger("rcnn.train")

__all__ = ["train", "load_splits", "image_proposals", "box_sets", "extract_features", "training_images",
           "regression_examples", "evaluate", "build_extractor"]


# ------------------------------------------------------------------------------------------------ SVM / regression
def _gt_for_class(record: DetectionRecord, c: str, use_difficult: bool) -> tuple[np.ndarray, np.ndarray]:
    mask = np.array([label == c for label in record.labels], bool)
    return mask, mask & (use_difficult | ~record.difficult)


def training_images(items: Sequence[ImageFeatures], classes: Sequence[str], scale: float, neg_iou: float = 0.3,
                    use_difficult: bool = False) -> list[TrainingImage]:
    """SVM roles of every row: positives = non-difficult ground-truth boxes of the class, negatives = rows with
    IoU < ``neg_iou`` to every ground-truth box of the class (other classes' boxes included), others ignored.
    On images whose labels are not exhaustive (``record.exhaustive`` False) negatives must also overlap a labelled
    box by at least :data:`rcnn.finetune.PARTIAL_LABELS_MIN_IOU` (elsewhere an unlabelled object may be)."""
    out = []
    for it in items:
        boxes = torch.from_numpy(it.boxes)
        n = len(boxes)
        pos = torch.zeros((n, len(classes)), dtype=torch.bool)
        neg = torch.zeros((n, len(classes)), dtype=torch.bool)
        gt = torch.from_numpy(np.asarray(it.record.boxes, np.float32).reshape(-1, 4))
        for c, name in enumerate(classes):
            all_c, usable = _gt_for_class(it.record, name, use_difficult)
            rows = torch.zeros(n, dtype=torch.bool)
            rows[: it.num_gt] = torch.from_numpy(usable[: it.num_gt])
            pos[:, c] = rows
            if all_c.any():
                overlap = box_iou(boxes, gt[torch.from_numpy(all_c)]).max(1).values
                neg[:, c] = overlap < neg_iou
            else:
                neg[:, c] = True
            if not it.record.exhaustive:
                any_gt = box_iou(boxes, gt).max(1).values if len(gt) else torch.zeros(n)
                neg[:, c] &= any_gt >= PARTIAL_LABELS_MIN_IOU
            neg[: it.num_gt, c] &= ~torch.from_numpy(all_c[: it.num_gt])
        out.append(TrainingImage(it.features, pos, neg, scale))  # a loader stays a loader (streamed)
    return out


def regression_examples(items: Sequence[ImageFeatures], classes: Sequence[str], scale: float, min_iou: float = 0.6
                        ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows with IoU > ``min_iou`` to a ground-truth box: (scaled features, boxes, their best gt box, gt class)."""
    index = {c: i for i, c in enumerate(classes)}
    feats, props, targets, labels = [], [], [], []
    for it in items:
        if len(it.record.boxes) == 0:
            continue
        gt = torch.from_numpy(np.asarray(it.record.boxes, np.float32).reshape(-1, 4))
        boxes = torch.from_numpy(it.boxes)
        overlap, best = box_iou(boxes, gt).max(1)
        keep = torch.nonzero(overlap > min_iou).flatten()
        keep = keep[[it.record.labels[b] in index for b in best[keep].tolist()]] if keep.numel() else keep
        if keep.numel() == 0:
            continue
        feats.append(it.rows[keep].float() * scale)
        props.append(boxes[keep])
        targets.append(gt[best[keep]])
        labels.append(torch.tensor([index[it.record.labels[b]] for b in best[keep].tolist()]))
    if not feats:
        raise ValueError("box regression: no proposal overlaps a ground-truth box by more than "
                         f"{min_iou}; check the proposals")
    return torch.cat(feats), torch.cat(props), torch.cat(targets), torch.cat(labels)


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(detector: Detector, items: Sequence[ImageFeatures], classes: Sequence[str], metric: str = "voc07",
             regression: bool = True) -> dict[str, Any]:
    """VOC AP of ``detector`` on cached validation features (the same post-processing as :meth:`Detector.detect`;
    ``regression`` False: without box regression)."""
    preds = []
    for it in items:
        det = detector.detect_from_features(it.rows.float() * detector.feature_scale, it.boxes,
                                            (it.record.height, it.record.width), regression=regression)
        preds.append({"boxes": det.boxes, "scores": det.scores, "labels": det.labels})
    return eval_detections(preds, [it.record for it in items], list(classes), iou_thr=0.5, metric=metric)


def _summary(result: dict[str, Any]) -> dict[str, Any]:
    def clean(v: float) -> float | None:
        return None if v is None or not np.isfinite(v) else round(float(v), 4)

    return {"metric": result["metric"], "mAP": clean(result["mAP"]),
            "AP": {c: clean(v) for c, v in result["AP"].items()}}


# ------------------------------------------------------------------------------------------------ the pipeline
def train(cfg: RCNNConfig, progress: bool = True) -> tuple[Detector | None, dict[str, Any]]:
    """Run every stage (see the module docstring); returns the detector and the evaluation report.

    Writes into ``cfg.train.out_dir``: ``config.yaml``, ``train.log``, ``detector.pt``, ``svm.pt``,
    ``regression.pt``, ``report.json``, ``pr_curves.png`` (and ``finetune/`` when fine-tuning).

    Under torchrun (``WORLD_SIZE`` > 1) every rank computes the proposals and features of its share of the images
    (:func:`rcnn.shard.run_stages` with shard ``RANK/WORLD_SIZE``) and fine-tunes together with the others (DDP); then
    rank 0 alone trains the SVMs and regressors on the cached features and evaluates; the other ranks return
    ``(None, {"rank": r})``.
    """
    info = init_distributed(cfg.train.device)
    if info.enabled:
        from rcnn.shard import run_stages

        try:
            run_stages(cfg, f"{info.rank}/{info.world_size}", "features", progress=progress and info.rank == 0)
            barrier()  # every shard's features are cached
        finally:
            if info.rank != 0:
                cleanup_distributed()
        if info.rank != 0:
            return None, {"rank": info.rank}
        try:
            return train_single(cfg, progress)
        finally:
            cleanup_distributed()
    return train_single(cfg, progress)


def train_single(cfg: RCNNConfig, progress: bool = True) -> tuple[Detector, dict[str, Any]]:
    """:func:`train` in one process."""
    out = Path(cfg.train.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("rcnn").addHandler(handler)
    logging.getLogger("rcnn").setLevel(logging.INFO)
    try:
        return _train(cfg, out, progress)
    finally:
        logging.getLogger("rcnn").removeHandler(handler)
        handler.close()


def _train(cfg: RCNNConfig, out: Path, progress: bool) -> tuple[Detector, dict[str, Any]]:
    lr_step_milestone(cfg.finetune.steps, cfg.finetune.lr_step_at)  # a bad value fails now, not after the proposals
    save_config(cfg, out / "config.yaml")
    seed_everything(cfg.train.seed)
    if cfg.train.num_threads:
        set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    timings: dict[str, float] = {}
    train_recs, val_recs, classes = select_records(cfg)
    log.info("data: %d training, %d validation images, classes %s", len(train_recs), len(val_recs), classes)

    # 1. proposals
    t = time.time()
    for record in tqdm(train_recs + val_recs, desc="proposals", disable=not progress, dynamic_ncols=True):
        image_proposals(record, None, cfg)
    timings["proposals"] = time.time() - t

    # 2. fine-tuning (optional)
    state_dict = softmax = None
    if cfg.finetune.enabled:
        t = time.time()  # R-CNN: warped windows; shared mode (Fast R-CNN): whole images, RoI pooling
        state_dict, softmax = finetune_stage(cfg, train_recs, classes, device, out / "finetune", progress=progress)
        timings["finetune"] = time.time() - t

    # 3. features
    t = time.time()
    extractor, backbone_spec = build_extractor(cfg, device, state_dict)
    train_items = extract_features(train_recs, cfg, extractor, True, "features (train)", progress)
    val_items = extract_features(val_recs, cfg, extractor, False, "features (val)", progress)
    # mean L2 norm over the training proposals, image by image (a float32 copy of them all would not fit in memory)
    norms = torch.cat([it.rows[it.num_gt:].float().norm(dim=1) for it in train_items])
    scale = feature_scale(norms[:, None], cfg.features.target_norm)
    timings["features"] = time.time() - t
    log.info("feature scale %.5f (mean L2 norm -> %.1f), dim %d", scale, cfg.features.target_norm, extractor.dim)

    # 4. SVMs with hard-negative mining (svm.pt, reused while its inputs are unchanged)
    s = cfg.svm
    svm_key = stage_key(extractor.key(), config_to_dict(s), config_to_dict(cfg.proposals), classes,
                        [r.file for r in train_recs], scale)
    t = time.time()

    def train_svms() -> dict[str, Any]:
        images = training_images(train_items, classes, scale, s.neg_iou, cfg.data.use_difficult)
        svms, stats = hard_negative_mining(
            images, len(classes), C=s.C, pos_weight=s.pos_weight, bias_multiplier=s.bias_multiplier,
            hard_threshold=s.hard_threshold, evict_threshold=s.evict_threshold, retrain_every=s.retrain_every,
            max_cache=s.max_cache, first_negatives=s.first_negatives, backend=s.backend, device=device,
            seed=cfg.train.seed, progress=progress, workers=s.workers or min(len(classes), os.cpu_count() or 1))
        return {"svm": svms.state_dict(), "stats": stats}

    trained = keyed_stage(out / "svm.pt", svm_key, train_svms)
    svms, svm_stats = LinearSVMs.from_state_dict(trained["svm"]), trained["stats"]
    timings["svm"] = time.time() - t

    # 5. box regression (regression.pt, likewise)
    regressor = None
    if cfg.regression.enabled:
        t = time.time()

        def fit_regression() -> dict[str, Any]:
            feats, props, targets, labels = regression_examples(train_items, classes, scale, cfg.regression.min_iou)
            log.info("box regression: %d examples", len(labels))
            return fit_box_regressor(feats, props, targets, labels, len(classes), cfg.regression.lam).state_dict()

        state = keyed_stage(out / "regression.pt", stage_key(svm_key, config_to_dict(cfg.regression)),
                            fit_regression)
        regressor = BoxRegressor.from_state_dict(state)
        timings["regression"] = time.time() - t

    meta = {
        "config": config_to_dict(cfg),
        "backbone": backbone_spec,
        "features": {k: v for k, v in config_to_dict(cfg.features).items()
                     if k not in ("backbone", "layer", "weights", "target_norm")},
        "proposals": proposal_meta(cfg.proposals),
        "fine_tuned": state_dict is not None,
    }
    if softmax is not None:
        meta["softmax"] = softmax
    detector = Detector(classes, extractor, svms, regressor, scale, meta_proposer(meta["proposals"]),
                        nms_iou=cfg.test.nms_iou, score_thr=cfg.test.score_thr,
                        max_per_image=cfg.test.max_per_image, meta=meta)

    # 6. evaluation on the validation split
    report: dict[str, Any] = {"classes": classes, "train_images": len(train_recs), "val_images": len(val_recs),
                              "feature_mode": cfg.features.mode, "feature_dim": extractor.dim,
                              "svm": svm_stats}
    if val_items:
        t = time.time()
        full = evaluate(detector, val_items, classes, cfg.train.metric, regression=True)
        report["val"] = _summary(full)
        if regressor is not None:
            report["val_no_bbox_reg"] = _summary(evaluate(detector, val_items, classes, cfg.train.metric, False))
        if softmax is not None:
            report["val_softmax"] = _summary(evaluate_softmax(detector, softmax, val_items, classes,
                                                              cfg.train.metric, extractor))
        plot_pr_curves(full, out / "pr_curves.png")
        timings["evaluation"] = time.time() - t
        detector.meta["metrics"] = {k: report[k] for k in ("val", "val_no_bbox_reg", "val_softmax") if k in report}
        # `detect --vis` draws detections from the validation F1-optimal score threshold by default
        vis_thr, f1 = f1_threshold(full)
        report["val"]["f1_threshold"], report["val"]["f1"] = round(vis_thr, 4), round(f1, 4)
        detector.meta["vis_thr"] = vis_thr  # not rounded: rounding up would drop the detections at the threshold
        log.info("val %s mAP %.4f %s", cfg.train.metric, full["mAP"], report["val"]["AP"])
    report["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    detector.save(out / "detector.pt")
    atomic_write_json(out / "report.json", report)
    return detector, report


def evaluate_softmax(detector: Detector, softmax: dict[str, Tensor], items: Sequence[ImageFeatures],
                     classes: Sequence[str], metric: str, extractor: FeatureExtractor) -> dict[str, Any]:
    """Ablation: the fine-tuned softmax head's class probabilities instead of the SVM scores (no box regression)."""
    weight, bias = softmax["weight"].float(), softmax["bias"].float()
    # softmax(W f + b) over C + 1 classes; the score of class c is its probability (column 0 is background)
    preds = []
    for it in items:
        probs = torch.softmax(it.rows.float() @ weight.T + bias, dim=1)[:, 1:]
        boxes = torch.from_numpy(it.boxes)[:, None, :].expand(-1, len(classes), 4)
        det = detector.postprocess(boxes, probs, (it.record.height, it.record.width), score_thr=0.0)
        preds.append({"boxes": det.boxes, "scores": det.scores, "labels": det.labels})
    return eval_detections(preds, [it.record for it in items], list(classes), iou_thr=0.5, metric=metric)
