"""Optional fine-tuning stage (R-CNN section 2.3, "Domain-specific fine-tuning").

The ImageNet backbone gets a new (classes + 1)-way softmax layer and is trained with SGD (lr 0.001, momentum 0.9) on
warped proposals: each batch of 128 windows holds 32 foreground windows (IoU >= 0.5 with a ground-truth box; label =
that box's class) and 96 background windows (IoU < 0.5 with every box), sampled from a few random training images.
The loop is :class:`cvcore.engine.Trainer` (checkpoints, exact resume, JSON-lines log).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler
from torchvision.ops import box_iou

from cvcore.config import config_to_dict
from cvcore.datasets import DetectionRecord
from cvcore.device import seed_everything
from cvcore.distributed import barrier, epoch_groups, init_distributed, wrap_ddp
from cvcore.engine import Trainer
from cvcore.io import load_image, safe_torch_load
from cvcore.nn import build_optimizer, build_scheduler
from cvcore.stages import load_keyed, save_keyed, stage_key
from rcnn.features import FeatureNet, build_feature_net
from rcnn.warp import normalize_image, warp_regions

log = logging.getLogger(__name__)

__all__ = ["FinetuneModel", "WindowBatches", "label_windows", "finetune", "finetune_network", "train_distributed",
           "finetune_key", "reuse_finetuned", "save_finetuned",
           "PARTIAL_LABELS_MIN_IOU"]

# Images whose labels are not exhaustive (one annotated person in a crowd, records with ``exhaustive=False``) give
# background / negative windows only where they overlap a labelled box by at least this much: elsewhere an
# unlabelled person may stand. Fast R-CNN's background floor.
PARTIAL_LABELS_MIN_IOU = 0.1


def label_windows(boxes: np.ndarray, gt_boxes: np.ndarray, gt_labels: Sequence[int], fg_iou: float = 0.5,
                  bg_iou: float = 0.5, bg_iou_min: float = 0.0, exhaustive: bool = True) -> np.ndarray:
    """Fine-tuning label of every window: class index + 1 when IoU >= ``fg_iou`` with a ground-truth box (its best
    match's class), 0 (background) when ``bg_iou_min`` <= max IoU < ``bg_iou`` (Fast R-CNN: [0.1, 0.5); R-CNN:
    [0, 0.5)), -1 (unused) otherwise. An image without ground-truth boxes is all background.

    ``exhaustive=False`` (not every object is labelled): the background floor is at least
    :data:`PARTIAL_LABELS_MIN_IOU`, and an image without ground-truth boxes has no background either.

    Args: boxes ``[N, 4]``, gt_boxes ``[M, 4]`` xyxy; gt_labels M class indices. Returns int64 ``[N]``.
    """
    if not exhaustive:
        bg_iou_min = max(bg_iou_min, PARTIAL_LABELS_MIN_IOU)
    labels = np.zeros(len(boxes), np.int64) if exhaustive else np.full(len(boxes), -1, np.int64)
    if len(gt_boxes) == 0 or len(boxes) == 0:
        return labels
    overlap, best = box_iou(torch.as_tensor(boxes).float(), torch.as_tensor(gt_boxes).float()).max(1)
    overlap, best = overlap.numpy(), best.numpy()
    labels[:] = -1
    labels[(overlap < bg_iou) & (overlap >= bg_iou_min)] = 0
    fg = overlap >= fg_iou
    labels[fg] = np.asarray(gt_labels, np.int64)[best[fg]] + 1
    return labels


class WindowBatches:
    """Re-iterable batches ``{"crops": Tensor[B, 3, S, S], "labels": Tensor[B]}`` of warped windows.

    Each batch samples ``fg_per_batch`` foreground and ``bg_per_batch`` background windows (with replacement when an
    image group has too few) from ``images_per_batch`` random training images; windows are ground-truth boxes plus
    proposals; crops are mirrored at random. The images of each epoch come from
    :func:`cvcore.distributed.epoch_groups` (seeded by ``seed`` and the epoch the engine sets with :meth:`set_epoch`;
    under torchrun each rank takes its own share of the groups); window sampling and mirroring draw from the global
    torch RNG, so the engine's resume replays the same batches.
    """

    def __init__(self, records: Sequence[DetectionRecord], proposals: Callable[[DetectionRecord], np.ndarray],
                 classes: Sequence[str], *, input_size: int, context_padding: int = 16, sampling_ratio: int = 2,
                 fg_per_batch: int = 32, bg_per_batch: int = 96, fg_iou: float = 0.5, bg_iou: float = 0.5,
                 images_per_batch: int = 4, bg_iou_min: float = 0.0, seed: int = 0) -> None:
        self.records, self.proposals, self.classes = list(records), proposals, list(classes)
        self.seed, self.epoch = seed, 0
        self.input_size, self.context_padding, self.sampling_ratio = input_size, context_padding, sampling_ratio
        self.fg, self.bg, self.fg_iou, self.bg_iou = fg_per_batch, bg_per_batch, fg_iou, bg_iou
        self.bg_iou_min = bg_iou_min
        self.images_per_batch = images_per_batch
        self._windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(epoch_groups(len(self.records), self.images_per_batch, 0, self.seed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def windows(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes ``[N, 4]``, labels ``[N]``) of training image ``i``: ground-truth boxes + proposals."""
        if i not in self._windows:
            r = self.records[i]
            index = {c: k for k, c in enumerate(self.classes)}
            keep = [k for k, label in enumerate(r.labels) if label in index]
            gt = np.asarray(r.boxes, np.float32).reshape(-1, 4)[keep]
            gt_labels = [index[r.labels[k]] for k in keep]
            boxes = np.concatenate([gt, np.asarray(self.proposals(r), np.float32).reshape(-1, 4)])
            self._windows[i] = (boxes, label_windows(boxes, gt, gt_labels, self.fg_iou, self.bg_iou,
                                                     self.bg_iou_min, r.exhaustive))
        return self._windows[i]

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        for group in epoch_groups(len(self.records), self.images_per_batch, self.epoch, self.seed):
            picks = []  # (image, window) pairs
            for want, is_fg in ((self.fg, True), (self.bg, False)):
                pool = [(i, j) for i in group for j in np.nonzero((self.windows(i)[1] > 0) if is_fg
                                                                   else (self.windows(i)[1] == 0))[0]]
                if not pool:
                    continue
                idx = torch.randint(len(pool), (want,)) if len(pool) < want else torch.randperm(len(pool))[:want]
                picks += [pool[k] for k in idx.tolist()]
            crops, labels = [], []
            for i in sorted({i for i, _ in picks}):
                rows = [j for ii, j in picks if ii == i]
                boxes, lab = self.windows(i)
                image = normalize_image(load_image(self.records[i].image_path))
                crops.append(warp_regions(image, torch.from_numpy(boxes[rows]), self.input_size,
                                          self.context_padding, self.sampling_ratio))
                labels.append(torch.from_numpy(lab[rows]))
            crops_t = torch.cat(crops)
            flip = torch.rand(len(crops_t)) < 0.5
            crops_t[flip] = crops_t[flip].flip(-1)
            yield {"crops": crops_t.contiguous(memory_format=torch.channels_last), "labels": torch.cat(labels)}


class FinetuneModel(nn.Module):
    """Backbone feature (:class:`rcnn.features.FeatureNet`) + dropout + (classes + 1)-way linear softmax layer.

    ``forward(batch)`` returns ``{"loss_cls": cross-entropy}`` in training and logits ``[B, C + 1]`` in eval mode.
    """

    def __init__(self, net: FeatureNet, num_classes: int, dropout: float = 0.5, freeze_blocks: int = 0) -> None:
        super().__init__()
        self.net = net
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(net.dim, num_classes + 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)
        blocks = list(net.trunk.children())
        for block in blocks[:freeze_blocks]:
            block.requires_grad_(False)
        self.frozen = blocks[:freeze_blocks]

    def train(self, mode: bool = True) -> FinetuneModel:
        super().train(mode)
        for block in self.frozen:  # frozen blocks keep ImageNet batch-norm statistics
            block.eval()
        return self

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor] | Tensor:
        logits = self.classifier(self.dropout(self.net(batch["crops"])))
        if not self.training:
            return logits
        return {"loss_cls": nn.functional.cross_entropy(logits, batch["labels"])}


def lr_step_milestone(steps: int, lr_step_at: float) -> int | None:
    """The step after which :func:`step_schedule` divides the rate by 10 (None: a constant rate)."""
    if not 0.0 <= lr_step_at < 1.0:
        raise ValueError(f"finetune.lr_step_at must be in [0, 1), got {lr_step_at}")
    if lr_step_at == 0.0 or steps < 2:
        return None
    return min(steps - 1, max(1, round(lr_step_at * steps)))


def step_schedule(optimizer: torch.optim.Optimizer, steps: int, lr_step_at: float) -> LRScheduler | None:
    """The Caffe ``step`` policy of R-CNN / Fast R-CNN fine-tuning: lr x 0.1 once ``lr_step_at`` of the ``steps``
    are done (None for 0: a constant rate)."""
    milestone = lr_step_milestone(steps, lr_step_at)
    return None if milestone is None else build_scheduler(optimizer, "multistep", milestones=[milestone], gamma=0.1)


def check_resumable(out_dir: str | Path, steps: int, lr_step_at: float) -> None:
    """Refuse to resume a fine-tuning run (``out_dir/last.pt``) whose lr schedule differs from the configured one:
    the checkpoint would bring back its own milestone (or none), and the result would be saved under the new
    settings."""
    last = Path(out_dir) / "last.pt"
    if not last.is_file():
        return
    saved = safe_torch_load(last).get("scheduler")
    had = sorted(saved["milestones"]) if saved and "milestones" in saved else []
    want = lr_step_milestone(steps, lr_step_at)
    if had != ([] if want is None else [want]):
        raise ValueError(f"{last}: this fine-tuning run has another lr schedule (lr / 10 after step "
                         f"{had[0] if had else 'never'}; configured: {want or 'never'}, from finetune.steps={steps} "
                         f"and finetune.lr_step_at={lr_step_at}); keep its settings, or delete {Path(out_dir)} to "
                         f"fine-tune again")


def train_distributed(model: nn.Module, batches: Any, out_dir: str | Path, *, steps: int, lr: float, momentum: float,
                      weight_decay: float, lr_step_at: float, device: str | torch.device, checkpoint_every: int,
                      log_every: int, progress: bool, seed: int = 0, **trainer_args: Any) -> nn.Module:
    """The SGD loop of both fine-tuning modes (:class:`cvcore.engine.Trainer`, resuming from ``out_dir/last.pt``).
    Under torchrun: DistributedDataParallel (NCCL on CUDA, gloo on the CPU), each rank on its share of the image
    groups with its own sampling stream (``seed`` + rank; the model starts as rank 0's), rank 0 alone writing the
    checkpoints and the log. Returns the model (eval mode)."""
    check_resumable(out_dir, steps, lr_step_at)
    info = init_distributed(device)
    model = model.to(info.device)
    if info.enabled:
        seed_everything(seed + info.rank)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, "momentum", lr=lr, momentum=momentum, weight_decay=weight_decay)
    trainer = Trainer(wrap_ddp(model, info), optimizer, batches, scheduler=step_schedule(optimizer, steps, lr_step_at),
                      device=info.device, out_dir=out_dir, max_steps=steps, log_every=log_every,
                      checkpoint_every=checkpoint_every, progress=progress and info.rank == 0, resume=True,
                      **trainer_args)
    trainer.train()
    return model.eval()


def finetune_network(net: FeatureNet, batches: WindowBatches, num_classes: int, out_dir: str | Path, *, steps: int,
                     lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 5e-4, freeze_blocks: int = 0,
                     lr_step_at: float = 0.0, device: str | torch.device = "cpu", checkpoint_every: int = 50,
                     log_every: int = 10, progress: bool = True, seed: int = 0) -> FinetuneModel:
    """Fine-tune ``net`` with a new softmax layer on ``batches`` for ``steps`` SGD steps (:func:`train_distributed`).
    Returns the trained model (eval mode)."""
    model = FinetuneModel(net, num_classes, freeze_blocks=freeze_blocks).to(memory_format=torch.channels_last)
    return train_distributed(model, batches, out_dir, steps=steps, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, lr_step_at=lr_step_at, device=device,
                             checkpoint_every=checkpoint_every, log_every=log_every, progress=progress, seed=seed)


def finetune_key(cfg: Any, records: Sequence[DetectionRecord], classes: Sequence[str]) -> str:
    """Key of a fine-tuning result (:mod:`cvcore.stages`): the fine-tuning, feature and proposal settings, the
    training images, the classes and the seed."""
    return stage_key(config_to_dict(cfg.finetune), config_to_dict(cfg.features), config_to_dict(cfg.proposals),
                     [r.file for r in records], list(classes), cfg.train.seed)


def reuse_finetuned(out_dir: Path, key: str) -> tuple[dict[str, Tensor], dict[str, Tensor]] | None:
    """(state dict, softmax layer) of a finished fine-tuning run with this key in ``out_dir``, else None."""
    saved = load_keyed(out_dir / "finetuned.pt", key)
    return None if saved is None else (saved["state_dict"], saved["softmax"])


def save_finetuned(out_dir: Path, key: str, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Write a finished run's network and softmax layer to ``out_dir/finetuned.pt`` under ``key`` (read back by
    :func:`reuse_finetuned`; under torchrun rank 0 writes it and every rank waits for it); returns them (CPU
    copies)."""
    model = model.to(memory_format=torch.contiguous_format).cpu()
    state = {k: v.detach().clone() for k, v in model.net.state_dict().items()}
    softmax = {"weight": model.classifier.weight.detach().clone(), "bias": model.classifier.bias.detach().clone()}
    save_keyed(out_dir / "finetuned.pt", key, {"state_dict": state, "softmax": softmax})
    barrier()
    return state, softmax


def finetune(cfg: Any, records: Sequence[DetectionRecord], classes: Sequence[str], device: torch.device,
             out_dir: Path, proposals: Callable[[DetectionRecord], np.ndarray], progress: bool = True
             ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The fine-tuning stage of :func:`rcnn.train.train` (reads the config; result cached in ``out_dir``).

    ``proposals``: a training image's ranked proposal boxes (the training run's cached ones, cut to
    ``proposals.train_per_image``).

    Returns (fine-tuned :class:`FeatureNet` state dict, softmax layer ``{"weight": [C+1, D], "bias": [C+1]}``).
    """
    f, ft = cfg.features, cfg.finetune
    key = finetune_key(cfg, records, classes)
    if (finished := reuse_finetuned(out_dir, key)) is not None:
        return finished
    batches = WindowBatches(records, proposals, classes,
                            input_size=f.input_size, context_padding=f.context_padding,
                            sampling_ratio=f.sampling_ratio, fg_per_batch=ft.fg_per_batch,
                            bg_per_batch=ft.bg_per_batch, fg_iou=ft.fg_iou, bg_iou=ft.bg_iou,
                            images_per_batch=ft.images_per_batch, bg_iou_min=ft.bg_iou_min, seed=cfg.train.seed)
    net = build_feature_net(f.backbone, f.layer, f.weights).train()
    model = finetune_network(net, batches, len(classes), out_dir, steps=ft.steps, lr=ft.lr, momentum=ft.momentum,
                             weight_decay=ft.weight_decay, freeze_blocks=ft.freeze_blocks,
                             lr_step_at=ft.lr_step_at, device=device, checkpoint_every=ft.checkpoint_every,
                             log_every=ft.log_every, progress=progress, seed=cfg.train.seed)
    return save_finetuned(out_dir, key, model)
