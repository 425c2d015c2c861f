"""R-CNN's per-image stages on a share of the images, for extraction spread over several machines.

Proposals and CNN features are computed per image and cached in one file per image under ``train.cache_dir``, keyed
by a hash of everything that determines them (:mod:`rcnn.proposals`, :class:`rcnn.features.FeatureCache`). Machines
that share the cache folder can therefore split the work (``rcnn-train ... --shard i/n``, interleaved shares from
:func:`cvcore.distributed.shard_items`); the run without ``--shard`` then finds every file cached and trains the SVMs
and box regressors. With fine-tuning, features need the fine-tuned network: a shard run extracts them only once
``train.out_dir/finetune/finetuned.pt`` exists (``rcnn-train ... --stop-after finetune`` on one machine makes it).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cvcore.datasets import DetectionRecord
from cvcore.device import resolve_device, set_num_threads
from cvcore.distributed import barrier, parse_shard, shard_items, world_size
from rcnn.config import RCNNConfig
from rcnn.data import select_records
from rcnn.features import build_extractor, extract_features
from rcnn.finetune import finetune as finetune_warp
from rcnn.finetune_shared import finetune_shared
from rcnn.proposals import image_proposals

log = logging.getLogger("rcnn.shard")

__all__ = ["STOP_AFTER", "select_records", "finetune_stage", "run_stages"]

STOP_AFTER = ("proposals", "finetune", "features")


def finetune_stage(cfg: RCNNConfig, records: list[DetectionRecord], classes: list[str], device: torch.device,
                   out_dir: Path, progress: bool = True) -> tuple[dict, dict]:
    """Fine-tuning for the configured feature mode (warped windows, or whole images + RoI pooling in shared mode);
    resumes from, or reuses, ``out_dir``. Returns (network state dict, softmax layer)."""
    top_k = cfg.proposals.train_per_image
    finetune = finetune_shared if cfg.features.mode == "shared" else finetune_warp
    return finetune(cfg, records, classes, device, out_dir, lambda r: image_proposals(r, None, cfg)[:top_k],
                    progress=progress)


def run_stages(cfg: RCNNConfig, shard: str | None = None, stop_after: str | None = None, progress: bool = True
               ) -> dict[str, Any]:
    """Proposals, fine-tuning and features for shard ``i/n`` of the images (all images without ``shard``), stopping
    after ``stop_after``. Returns a summary (images, stages run, seconds)."""
    if stop_after is not None and stop_after not in STOP_AFTER:
        raise ValueError(f"stop_after must be one of {', '.join(STOP_AFTER)}, got {stop_after!r}")
    i, n = parse_shard(shard)
    if cfg.train.num_threads:
        set_num_threads(cfg.train.num_threads)
    device = resolve_device(cfg.train.device)
    all_train, val, classes = select_records(cfg)
    train, val = shard_items(all_train, (i, n)), shard_items(val, (i, n))
    summary: dict[str, Any] = {"shard": f"{i}/{n}", "train_images": len(train), "val_images": len(val),
                               "stages": [], "seconds": {}}

    t = time.time()
    for record in tqdm(train + val, desc=f"proposals {i}/{n}", disable=not progress, dynamic_ncols=True):
        image_proposals(record, None, cfg)
    summary["stages"].append("proposals")
    summary["seconds"]["proposals"] = round(time.time() - t, 1)
    barrier()  # under torchrun: every rank's proposals are cached before fine-tuning reads them all
    if stop_after == "proposals":
        return summary

    state_dict = None
    if cfg.finetune.enabled:
        ft_dir = Path(cfg.train.out_dir) / "finetune"
        if n > 1 and world_size() == 1 and not (ft_dir / "finetuned.pt").is_file():
            log.warning("shard %d/%d: %s/finetuned.pt not found: features need the fine-tuned network; run "
                        "`rcnn-train ... --stop-after finetune` on one machine, then the shards again", i, n, ft_dir)
            summary["waiting_for"] = str(ft_dir / "finetuned.pt")
            return summary
        t = time.time()
        # on every training image (under torchrun: all ranks together, DistributedDataParallel)
        state_dict, _ = finetune_stage(cfg, all_train, classes, device, ft_dir, progress)
        summary["stages"].append("finetune")
        summary["seconds"]["finetune"] = round(time.time() - t, 1)
    if stop_after == "finetune":
        return summary

    t = time.time()
    extractor, _ = build_extractor(cfg, device, state_dict)
    extract_features(train, cfg, extractor, True, f"features (train) {i}/{n}", progress)
    extract_features(val, cfg, extractor, False, f"features (val) {i}/{n}", progress)
    summary["stages"].append("features")
    summary["seconds"]["features"] = round(time.time() - t, 1)
    return summary
