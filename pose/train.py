"""Staged training (Tompson et al. 2014): part detector, then the spatial model on the frozen part detector, then both.

Each stage runs through :class:`cvcore.engine.Trainer` in ``<out_dir>/<stage>/`` and resumes from its ``last.pt``;
a finished stage writes ``done.json`` and is skipped on re-runs. After each stage the validation PCK (all alphas,
per joint) is written to ``<out_dir>/<stage>/pck.json``; the final model file is ``<out_dir>/model.pt``, with the
resolved config in ``<out_dir>/config.yaml``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from cvcore.cli import add_common_args, add_config_args, config_from_args, setup_logging
from cvcore.config import save_config
from cvcore.datasets import load_pose_dataset
from cvcore.device import seed_everything, set_num_threads
from cvcore.distributed import (
    DistInfo,
    all_gather_objects,
    barrier,
    broadcast_buffers,
    distributed_sampler,
    init_distributed,
    is_main_process,
    rank,
    world_size,
    wrap_ddp,
)
from cvcore.engine import Trainer
from cvcore.evaluation import PCKEvaluator
from cvcore.io import atomic_write_json, safe_torch_load
from cvcore.nn import build_optimizer, build_scheduler
from pose.config import PoseConfig, StageConfig
from pose.data import CropCache, PoseEvalSet, PoseTrainSet, build_crop_cache, select_range
from pose.estimator import build_pose_model, init_from_model_file, resolve_model_path, save_model_file
from pose.model import STAGES, PoseModel

__all__ = ["train", "build_stage_optimizer", "evaluate_pck", "PoseData", "load_pose_data", "load_val_cache",
           "format_pck_table"]

log = logging.getLogger("pose.train")

MOMENTUM_OPTIMIZERS = ("momentum", "nesterov", "rmsprop")  # cvcore.nn.build_optimizer names that take a momentum


class PoseData:
    """Training set (augmented), validation crops, and the dataset's skeleton."""

    def __init__(self, train_set: PoseTrainSet, val: CropCache, joint_names: list[str], skeleton: list,
                 flip_pairs: list):
        self.train_set, self.val = train_set, val
        self.joint_names, self.skeleton, self.flip_pairs = joint_names, skeleton, flip_pairs


def _split_records(cfg: PoseConfig) -> tuple[Any, list, list]:
    """(skeleton, training records, validation records) as configured (reader split, then record range)."""
    d = cfg.data
    if len(d.train_range) != 2 or len(d.val_range) != 2 or len(d.input_size) != 2:
        raise ValueError("data.train_range, data.val_range and data.input_size take two numbers each")
    train_ds = load_pose_dataset(d.root, d.format, split=d.train_split or None)
    val_ds = (train_ds if d.val_split == d.train_split
              else load_pose_dataset(d.root, d.format, split=d.val_split or None))
    train_records = select_range(train_ds, *d.train_range)
    val_records = select_range(val_ds, *d.val_range)
    if not train_records or not val_records:
        raise ValueError(f"{d.root}: empty split (train {d.train_range} of {len(train_ds)} records, "
                         f"val {d.val_range} of {len(val_ds)})")
    return train_ds.skeleton, train_records, val_records


def load_val_cache(cfg: PoseConfig, progress: bool = True) -> tuple[CropCache, list[str]]:
    """Only the validation crops (person-centric, unaugmented) and the joint names, e.g. to re-evaluate a model."""
    d = cfg.data
    skeleton, _, val_records = _split_records(cfg)
    cache = build_crop_cache(val_records, tuple(d.input_size), d.margin, d.min_crop, context=1.0,
                             cache_dir=d.cache_dir or None, min_visible=1, progress=progress, tag="val-")
    return cache, list(skeleton.joints)


def load_pose_data(cfg: PoseConfig, progress: bool = True) -> PoseData:
    """Read the dataset, split it, and build (or reuse) the cached crops."""
    d = cfg.data
    sk, train_records, _ = _split_records(cfg)
    size = tuple(d.input_size)
    train_cache = build_crop_cache(train_records, size, d.margin, d.min_crop, context=d.context,
                                   cache_dir=d.cache_dir or None, min_visible=d.min_visible, progress=progress,
                                   tag="train-")
    val_cache, _ = load_val_cache(cfg, progress)
    train_set = PoseTrainSet(train_cache, size, cfg.augment, sk.flip_pairs)
    return PoseData(train_set, val_cache, list(sk.joints), [tuple(e) for e in sk.edges],
                    [tuple(p) for p in sk.flip_pairs])


@torch.no_grad()
def predict_cache(model: PoseModel, cache: CropCache, batch_size: int = 64, limit: int | None = None,
                  flip_test: bool = False) -> np.ndarray:
    """Joints Array[N, K, 2] in original pixels for the (first ``limit``) cached evaluation crops.

    Distributed: rank r predicts crops r, r + W, ... with rank 0's buffers (BatchNorm statistics), and every rank
    returns all N, gathered by crop index (each crop once)."""
    was_training = model.training
    model.eval()
    broadcast_buffers(model)
    device = next(model.parameters()).device
    n = len(cache) if limit is None else min(limit, len(cache))
    mine = range(rank(), n, world_size())
    loader = DataLoader(torch.utils.data.Subset(PoseEvalSet(cache), mine), batch_size=batch_size)
    indices, predicted = [], []
    for batch in loader:
        joints = model.predict(batch["image"].to(device), flip_test=flip_test)["joints"].cpu().numpy()
        indices.append(batch["index"].numpy())
        predicted.append(joints)
    out = np.zeros((n, cache.joints.shape[1], 2))
    for idx, joints in all_gather_objects((indices, predicted)):
        for i, j in zip(np.concatenate(idx) if idx else [], np.concatenate(joints) if joints else []):
            out[i] = cache.crop(int(i)).to_original(j)
    model.train(was_training)
    return out


def evaluate_pck(model: PoseModel, cache: CropCache, joint_names: list[str], alphas=(0.05, 0.1, 0.2),
                 norm: str = "torso", limit: int | None = None, flip_test: bool = False) -> dict[str, Any]:
    """PCK on original-image coordinates: ``{"PCK@a": mean, "per_joint@a": {...}, "num_samples", ...}``."""
    pred = predict_cache(model, cache, limit=limit, flip_test=flip_test)
    n = len(pred)
    result: dict[str, Any] = {"num_images": n}
    for a in alphas:
        ev = PCKEvaluator(joint_names, alpha=a, norm=norm)
        ev.process(pred, cache.original_joints[:n], cache.visible[:n])
        r = ev.evaluate()
        result[f"PCK@{a}"] = 100.0 * r["PCK"]
        result[f"per_joint@{a}"] = {k: (None if v is None else 100.0 * v) for k, v in r["per_joint"].items()}
        result[f"per_part@{a}"] = {k: (None if v is None else 100.0 * v) for k, v in r["per_part"].items()}
        result["num_excluded"] = r["num_excluded"]
    return result


def format_pck_table(results: dict[str, dict], alphas=(0.05, 0.1, 0.2)) -> str:
    """Markdown table: one row per run, PCK per pooled part and mean at the largest alpha, mean at every alpha."""
    rows = []
    parts = None
    top = max(alphas)
    for name, r in results.items():
        per_part = r[f"per_part@{top}"]
        parts = parts or list(per_part)
        cells = [f"{per_part[p]:.1f}" if per_part[p] is not None else "-" for p in parts]
        rows.append(f"| {name} | " + " | ".join(cells) + " | "
                    + " | ".join(f"{r[f'PCK@{a}']:.1f}" for a in alphas) + " |")
    header = ("| model | " + " | ".join(f"{p}@{top}" for p in parts) + " | "
              + " | ".join(f"mean@{a}" for a in alphas) + " |")
    sep = "|" + "---|" * (1 + len(parts) + len(alphas))
    return "\n".join([header, sep, *rows])


def _stage_state(path: Path) -> dict:
    ckpt = safe_torch_load(path)
    return ckpt["model"]


SPATIAL_INITS = ("identity", "histogram")


def _init_spatial_model(model: PoseModel, data: PoseData, cfg: PoseConfig) -> None:
    """Kernels from the training set's displacement histograms (in heatmap cells); then either the identity start
    (``init: identity``: the output is the part detector's) or the paper's all-messages start with its output scale
    calibrated on the frozen part detector's output for a few unaugmented training crops (``init: histogram``)."""
    scfg = cfg.model.spatial_model
    cache = data.train_set.cache
    stride = cfg.codec.stride
    model.spatial_model.init_from_displacements(torch.from_numpy(cache.joints / stride),
                                                torch.from_numpy(cache.visible), blur=scfg.histogram_blur)
    if scfg.init == "identity":
        model.spatial_model.init_identity()
        return
    with torch.no_grad():
        model.spatial_model.edge_weight.fill_(1.0)  # the paper: every message counts once
    ow, oh = data.train_set.out_size
    h, w = cache.images.shape[1:3]
    x0, y0 = (w - ow) // 2, (h - oh) // 2
    idx = np.random.default_rng(0).choice(len(cache), size=min(128, len(cache)), replace=False)
    images = torch.from_numpy(np.stack([cache.images[i][y0:y0 + oh, x0:x0 + ow] for i in sorted(idx)]))
    device = next(model.parameters()).device
    model.part_detector.eval()
    with torch.no_grad():
        parts = torch.cat([model.part_detector(b.permute(0, 3, 1, 2).to(device)) for b in images.split(32)])
    model.spatial_model.calibrate(parts)


def _barrier_unless(skip: bool, info: DistInfo) -> None:
    """Wait for the other ranks (``torch.distributed.barrier``) unless ``skip`` or not distributed."""
    if info.enabled and not skip:
        torch.distributed.barrier()


def build_stage_optimizer(params: list[torch.nn.Parameter], scfg: StageConfig) -> torch.optim.Optimizer:
    """The optimizer of one stage; ``scfg.momentum`` goes only to the optimizers that take one (plain ``sgd`` has
    none and :func:`cvcore.nn.build_optimizer` rejects it there)."""
    momentum = scfg.momentum if scfg.optimizer.lower() in MOMENTUM_OPTIMIZERS else None
    return build_optimizer(params, scfg.optimizer, scfg.lr, momentum=momentum, weight_decay=scfg.weight_decay)


def train(cfg: PoseConfig, progress: bool = True, stages: tuple[str, ...] = STAGES) -> dict[str, Any]:
    """Run the configured stages (each resumable); returns ``{stage: validation PCK}`` and writes the model file."""
    if cfg.model.spatial_model.init not in SPATIAL_INITS:  # fail now, not after the part-detector stage
        raise ValueError(f"unknown model.spatial_model.init '{cfg.model.spatial_model.init}' "
                         f"({', '.join(SPATIAL_INITS)})")
    out_dir = Path(cfg.train.out_dir)
    dist_info = init_distributed(cfg.train.device)   # under torchrun: one process per GPU / CPU worker
    main = is_main_process()
    progress = progress and main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    seed_everything(cfg.train.seed)
    if cfg.train.threads:
        set_num_threads(cfg.train.threads)
    _barrier_unless(main, dist_info)          # rank 0 builds the crop cache first, the others then read it
    data = load_pose_data(cfg, progress=progress)
    _barrier_unless(not main, dist_info)
    model = build_pose_model(cfg, len(data.joint_names), data.skeleton, data.flip_pairs,
                             left_right_tolerant=cfg.train.left_right_tolerant)
    if cfg.train.sync_batchnorm and dist_info.enabled:
        if dist_info.device.type != "cuda":
            raise ValueError("train.sync_batchnorm needs CUDA (torch's SyncBatchNorm has no CPU kernel)")
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    seed_everything(cfg.train.seed + dist_info.rank)  # the same initial model, a different augmentation per rank
    spatial_loaded = False
    extra: dict[str, Any] = {}
    if cfg.train.init_from:  # a stage's own checkpoint, when there is one, still takes precedence (resume)
        source = resolve_model_path(cfg.train.init_from)
        # as given (a shipped name or a path, not this machine's absolute path) + the file's hash
        extra["init_from"] = {"path": str(cfg.train.init_from),
                              "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
        fresh = init_from_model_file(model, source)
        spatial_loaded = model.spatial_model is not None and "spatial_model.weight" not in fresh
        log.info("initialised from %s%s", cfg.train.init_from,
                 f" (kept fresh: {', '.join(fresh)})" if fresh else " (every weight)")
    alphas = tuple(cfg.eval.alphas)
    results: dict[str, Any] = {}
    previous: Path | None = None
    for stage in stages:
        scfg = getattr(cfg.train, stage)
        if scfg.epochs <= 0 or (stage != "part_detector" and model.spatial_model is None):
            continue
        stage_dir = out_dir / stage
        model.set_stage(stage)
        if previous is not None:
            model.load_state_dict(_stage_state(previous))
        done = stage_dir / "done.json"
        if done.is_file():
            log.info("stage %s already finished: %s", stage, stage_dir)
            model.load_state_dict(_stage_state(stage_dir / "last.pt"))
            results[stage] = json.loads(done.read_text())["pck"]
            previous = stage_dir / "last.pt"
            continue
        if stage == "spatial_model" and not (stage_dir / "last.pt").is_file() and not spatial_loaded:
            _init_spatial_model(model, data, cfg)  # (a trained spatial model from train.init_from is kept)
        sampler = distributed_sampler(data.train_set, dist_info, seed=cfg.train.seed)
        loader = DataLoader(data.train_set, batch_size=cfg.train.batch_size, shuffle=sampler is None,
                            sampler=sampler, drop_last=True, num_workers=cfg.data.num_workers)
        steps = max(1, math.ceil(scfg.epochs * len(loader)))
        optimizer = build_stage_optimizer(model.trainable_parameters(), scfg)
        scheduler = build_scheduler(optimizer, scfg.scheduler, total_steps=steps,
                                    warmup_steps=min(scfg.warmup_steps, steps // 2))
        limit = cfg.train.eval_limit or None

        full: dict[str, Any] = {}  # the latest evaluation on the whole validation set (the engine's last one is
        #                             after the final step: the stage's result, so it is not computed twice)

        def eval_fn(m: PoseModel, limit=limit, full=full) -> dict[str, float]:
            r = evaluate_pck(m, data.val, data.joint_names, alphas=alphas, norm=cfg.eval.norm, limit=limit)
            if limit is None:
                full["pck"] = r
            return {f"pck@{a}": r[f"PCK@{a}"] for a in alphas}

        model.to(dist_info.device)
        trainer = Trainer(wrap_ddp(model, dist_info, find_unused_parameters=True), optimizer, loader,
                          scheduler=scheduler, device=dist_info.device,
                          out_dir=stage_dir, max_steps=steps, grad_clip=cfg.train.grad_clip or None,
                          log_every=cfg.train.log_every, eval_fn=eval_fn, eval_every=cfg.train.eval_every or None,
                          checkpoint_every=cfg.train.checkpoint_every, progress=progress, resume=True)
        log.info("stage %s: %d steps (%.2f epochs of %d crops) -> %s", stage, steps, scfg.epochs,
                 len(data.train_set), stage_dir)
        full.clear()
        trainer.train()
        pck = full.get("pck") or evaluate_pck(model, data.val, data.joint_names, alphas=alphas, norm=cfg.eval.norm)
        if main:
            atomic_write_json(stage_dir / "pck.json", pck)
            atomic_write_json(done, {"stage": stage, "steps": steps, "pck": pck})
            save_model_file(stage_dir / "model.pt", model, cfg, data.joint_names, data.skeleton, metrics=pck,
                            extra=extra)
        results[stage] = pck
        previous = stage_dir / "last.pt"
        barrier()  # rank 0 has written the stage's files before any rank starts the next stage from them
        log.info("stage %s: val PCK %s", stage, ", ".join(f"@{a} {pck[f'PCK@{a}']:.1f}" for a in alphas))
    if results and main:
        last = list(results)[-1]
        save_model_file(out_dir / "model.pt", model, cfg, data.joint_names, data.skeleton, metrics=results[last],
                        extra=extra)
        atomic_write_json(out_dir / "pck.json", results)
        (out_dir / "pck.md").write_text(format_pck_table(results, alphas) + "\n")
    barrier()
    return results


TRAIN_EXAMPLES = """examples:
  pose-train --config configs/pose/lspet.yaml
  pose-train --config configs/pose/lspet.yaml train.out_dir=runs/pose/try train.part_detector.epochs=2
  pose-train --config configs/pose/lspet.yaml model.part_detector.banks=1 model.spatial_model.enabled=false
"""


def train_cli(argv: Sequence[str] | None = None) -> int:
    """``pose-train``: parse the arguments, train, print the PCK table (or ``--json``)."""
    p = argparse.ArgumentParser(prog="pose-train", description="Staged training of the pose model: part detector, "
                                "spatial model on the frozen part detector, then joint; each stage resumes.",
                                epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p, "configs/pose/lspet.yaml", "train.part_detector.epochs=2")
    p.add_argument("--stages", default="part_detector,spatial_model,joint", help="comma-separated stages to run")
    add_common_args(p)
    args = p.parse_intermixed_args(argv)  # overrides may follow options
    setup_logging(args.quiet, args.debug)
    cfg = config_from_args(PoseConfig, args)
    stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    results = train(cfg, progress=not args.quiet, stages=stages)
    if rank() != 0:  # under torchrun rank 0 reports
        return 0
    if args.json:
        print(json.dumps({k: {a: v for a, v in r.items() if a.startswith("PCK@")} for k, r in results.items()}))
    elif not args.quiet and results:
        print(format_pck_table(results, tuple(cfg.eval.alphas)))
        print(f"model: {Path(cfg.train.out_dir) / 'model.pt'}")
    return 0


if __name__ == "__main__":  # ``torchrun --nproc_per_node N -m pose.train --config ...`` (same arguments as pose-train)
    import sys

    from cvcore.cli import run_cli

    sys.exit(run_cli(train_cli, prog="pose-train"))
