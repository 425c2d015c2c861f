"""Fine-tuning for the shared feature mode, as Fast R-CNN (Girshick, ICCV 2015, section 2.3).

The warp mode fine-tunes on warped crops (:mod:`rcnn.finetune`); here the network is trained the way the shared mode
computes its features: the trunk runs once per training image (resized as at test time, mirrored at random), each
sampled RoI is pooled from its map (:func:`rcnn.features.roi_pool`) and goes through the RoI head (a new fc layer
when ``features.roi_hidden > 0``), then a (classes + 1)-way softmax layer and class-specific box offsets. Loss:
cross-entropy + smooth-L1 on the offsets of the foreground RoIs (Fast R-CNN's multi-task loss). RoIs: ground-truth
boxes and proposals; foreground IoU >= 0.5 (label of the best-matching box), background IoU in [0.1, 0.5).
Batch-norm layers keep their ImageNet statistics (a batch is one or two images). The loop is
:class:`cvcore.engine.Trainer` (checkpoints, exact resume). As in the paper, the SVMs and ridge regressors are then
trained on the fine-tuned features.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torchvision.ops import box_iou

from cvcore.datasets import DetectionRecord
from cvcore.distributed import epoch_groups
from cvcore.io import load_image
from rcnn.bbox_regression import BoxCoder
from rcnn.features import FeatureNet, build_feature_net, resize_for_scale, roi_pool
from rcnn.finetune import finetune_key, label_windows, reuse_finetuned, save_finetuned, train_distributed
from rcnn.warp import normalize_image

log = logging.getLogger(__name__)

__all__ = ["RoIBatches", "SharedFinetuneModel", "finetune_shared_network", "finetune_shared"]

# Fast R-CNN's target normalisation: offsets divided by (0.1, 0.1, 0.2, 0.2)
BOX_CODER_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class RoIBatches:
    """Re-iterable batches of whole images with sampled RoIs (Fast R-CNN's hierarchical sampling).

    A batch is ``{"images": [Tensor[3, H_i, W_i]] (normalised), "rois": Tensor[R, 5] (image index in the batch,
    xyxy in resized pixels), "labels": Tensor[R] (0 = background), "gt_boxes": Tensor[R, 4] (each RoI's
    best-matching ground-truth box, resized pixels)}``. ``images_per_batch`` random training images, resized so their
    shorter side is ``scale`` (longer side at most ``max_image_side``), mirrored with probability 1/2; from each,
    ``fg_per_batch / images_per_batch`` foreground and ``bg_per_batch / images_per_batch`` background RoIs (with
    replacement when the image has too few). The images of each epoch come from
    :func:`cvcore.distributed.epoch_groups` (as :class:`rcnn.finetune.WindowBatches`: under torchrun each rank its
    share); RoI sampling and mirroring draw from the global torch RNG, so the engine's resume replays the same batches.
    """

    def __init__(self, records: Sequence[DetectionRecord], proposals: Callable[[DetectionRecord], np.ndarray],
                 classes: Sequence[str], *, scale: int, max_image_side: int, fg_per_batch: int = 32,
                 bg_per_batch: int = 96, fg_iou: float = 0.5, bg_iou: float = 0.5, bg_iou_min: float = 0.1,
                 images_per_batch: int = 2, seed: int = 0) -> None:
        self.records, self.proposals, self.classes = list(records), proposals, list(classes)
        self.seed, self.epoch = seed, 0
        self.scale, self.max_image_side = scale, max_image_side
        self.fg = max(1, fg_per_batch // images_per_batch)
        self.bg = max(1, bg_per_batch // images_per_batch)
        self.fg_iou, self.bg_iou, self.bg_iou_min = fg_iou, bg_iou, bg_iou_min
        self.images_per_batch = images_per_batch
        self._windows: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(epoch_groups(len(self.records), self.images_per_batch, 0, self.seed))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def windows(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(boxes ``[N, 4]``, labels ``[N]``, best ground-truth box ``[N, 4]``) of image ``i``, original pixels."""
        if i not in self._windows:
            r = self.records[i]
            index = {c: k for k, c in enumerate(self.classes)}
            keep = [k for k, label in enumerate(r.labels) if label in index]
            gt = np.asarray(r.boxes, np.float32).reshape(-1, 4)[keep]
            boxes = np.concatenate([gt, np.asarray(self.proposals(r), np.float32).reshape(-1, 4)])
            labels = label_windows(boxes, gt, [index[r.labels[k]] for k in keep], self.fg_iou, self.bg_iou,
                                   self.bg_iou_min, r.exhaustive)
            if not (labels == 0).any() and r.exhaustive:  # nothing in [bg_iou_min, bg_iou): any window below bg_iou
                labels = label_windows(boxes, gt, [index[r.labels[k]] for k in keep], self.fg_iou, self.bg_iou)
            best = np.zeros_like(boxes)
            if len(gt):
                best = gt[box_iou(torch.from_numpy(boxes), torch.from_numpy(gt)).argmax(1).numpy()]
            self._windows[i] = (boxes, labels, best)
        return self._windows[i]

    def _sample(self, labels: np.ndarray) -> np.ndarray:
        rows = []
        for want, pool in ((self.fg, np.nonzero(labels > 0)[0]), (self.bg, np.nonzero(labels == 0)[0])):
            if len(pool) == 0:
                continue
            idx = torch.randint(len(pool), (want,)) if len(pool) < want else torch.randperm(len(pool))[:want]
            rows.append(pool[idx.numpy()])
        return np.concatenate(rows) if rows else np.zeros(0, np.int64)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for group in epoch_groups(len(self.records), self.images_per_batch, self.epoch, self.seed):
            images, rois, labels, gts = [], [], [], []
            for k, i in enumerate(group):
                boxes, lab, best = self.windows(i)
                rows = self._sample(lab)
                flip = bool(torch.rand(()) < 0.5)
                image, scale = resize_for_scale(load_image(self.records[i].image_path), self.scale,
                                                 self.max_image_side)
                image_t = normalize_image(np.ascontiguousarray(image[:, ::-1]) if flip else image)
                sel, sel_gt = boxes[rows] * scale, best[rows] * scale
                if flip:
                    width = image.shape[1]
                    sel = np.stack([width - sel[:, 2], sel[:, 1], width - sel[:, 0], sel[:, 3]], 1)
                    sel_gt = np.stack([width - sel_gt[:, 2], sel_gt[:, 1], width - sel_gt[:, 0], sel_gt[:, 3]], 1)
                images.append(image_t)
                rois.append(torch.cat([torch.full((len(rows), 1), float(k)), torch.from_numpy(sel)], 1))
                labels.append(torch.from_numpy(lab[rows]))
                gts.append(torch.from_numpy(sel_gt))
            yield {"images": images, "rois": torch.cat(rois).float(), "labels": torch.cat(labels),
                   "gt_boxes": torch.cat(gts).float()}


def _freeze_batch_norm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


class SharedFinetuneModel(nn.Module):
    """Fast R-CNN on a :class:`rcnn.features.FeatureNet`: trunk per image -> RoI pooling (``pool_size`` grid) ->
    ``roi_head`` -> dropout -> softmax layer (C + 1) and class-specific box offsets (C x 4).

    ``forward(batch)`` (a :class:`RoIBatches` batch) returns ``{"loss_cls", "loss_box"}`` in training and logits
    ``[R, C + 1]`` in eval mode. The first ``freeze_blocks`` trunk blocks are frozen; batch norm is frozen throughout.
    """

    def __init__(self, net: FeatureNet, num_classes: int, pool_size: int, *, dropout: float = 0.5,
                 freeze_blocks: int = 0, box_loss_weight: float = 1.0) -> None:
        super().__init__()
        self.net, self.num_classes = net, num_classes
        self.grid = net.fixed_roi_size or pool_size
        dim = net.shared_dim(pool_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes + 1)
        self.box_head = nn.Linear(dim, 4 * num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.normal_(self.box_head.weight, std=0.001)
        nn.init.zeros_(self.classifier.bias)
        nn.init.zeros_(self.box_head.bias)
        for block in list(net.trunk.children())[:freeze_blocks]:
            block.requires_grad_(False)
        self.box_loss_weight = box_loss_weight
        self.coder = BoxCoder(BOX_CODER_WEIGHTS)

    def train(self, mode: bool = True) -> SharedFinetuneModel:
        super().train(mode)
        _freeze_batch_norm(self)
        return self

    def roi_features(self, images: Sequence[Tensor], rois: Tensor) -> Tensor:
        """Features ``[R, D]`` of ``rois`` (``[R, 5]``: image index, xyxy in pixels of ``images[index]``)."""
        pooled, order = [], []
        for k, image in enumerate(images):  # one map per image (their sizes differ)
            fmap = self.net.trunk(image[None].contiguous(memory_format=torch.channels_last))
            rows = torch.nonzero(rois[:, 0] == k).flatten()
            own = torch.cat([torch.zeros_like(rois[rows, :1]), rois[rows, 1:]], 1)  # batch index 0 of this map
            pooled.append(roi_pool(fmap, own, self.grid, self.net.stride))
            order.append(rows)
        out = torch.cat(pooled)[torch.argsort(torch.cat(order))]  # back to the order of ``rois``
        return self.net.roi_head(out)

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor] | Tensor:
        feats = self.roi_features(batch["images"], batch["rois"])
        logits = self.classifier(self.dropout(feats))
        if not self.training:
            return logits
        labels = batch["labels"]
        loss_cls = nn.functional.cross_entropy(logits, labels)
        rois, gt = batch["rois"][:, 1:], batch["gt_boxes"]
        fg = (labels > 0) & (gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])  # zero-area boxes have no offsets
        deltas = self.box_head(feats).view(-1, self.num_classes, 4)[fg, labels[fg] - 1]
        targets = self.coder.encode(rois[fg], gt[fg])
        loss_box = nn.functional.smooth_l1_loss(deltas, targets, beta=1.0 / 9, reduction="sum") / len(labels)
        return {"loss_cls": loss_cls, "loss_box": self.box_loss_weight * loss_box}


def finetune_shared_network(net: FeatureNet, batches: RoIBatches, num_classes: int, pool_size: int,
                            out_dir: str | Path, *, steps: int, lr: float = 1e-3, momentum: float = 0.9,
                            weight_decay: float = 5e-4, freeze_blocks: int = 0, box_loss_weight: float = 1.0,
                            lr_step_at: float = 0.0, device: str | torch.device = "cpu", checkpoint_every: int = 50,
                            log_every: int = 10, progress: bool = True, seed: int = 0) -> SharedFinetuneModel:
    """Fine-tune ``net`` Fast R-CNN style on ``batches`` for ``steps`` SGD steps
    (:func:`rcnn.finetune.train_distributed`). Returns the trained model (eval mode)."""
    model = SharedFinetuneModel(net, num_classes, pool_size, freeze_blocks=freeze_blocks,
                                box_loss_weight=box_loss_weight).to(memory_format=torch.channels_last)
    return train_distributed(model, batches, out_dir, steps=steps, lr=lr, momentum=momentum,
                             weight_decay=weight_decay, lr_step_at=lr_step_at, device=device,
                             checkpoint_every=checkpoint_every, log_every=log_every, progress=progress, seed=seed,
                             batch_size_fn=lambda batch: len(batch["images"]))


def finetune_shared(cfg: Any, records: Sequence[DetectionRecord], classes: Sequence[str], device: torch.device,
                    out_dir: Path, proposals: Callable[[DetectionRecord], np.ndarray], progress: bool = True
                    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The fine-tuning stage of :func:`rcnn.train.train` in the shared mode (reads the config; result cached in
    ``out_dir``). Trains at the first of ``features.scales``.

    ``proposals``: a training image's ranked proposal boxes (the training run's cached ones, cut to
    ``proposals.train_per_image``).

    Returns (fine-tuned :class:`FeatureNet` state dict, softmax layer ``{"weight": [C+1, D], "bias": [C+1]}``).
    """
    f, ft = cfg.features, cfg.finetune
    key = finetune_key(cfg, records, classes)
    if (finished := reuse_finetuned(out_dir, key)) is not None:
        return finished
    batches = RoIBatches(records, proposals, classes, scale=f.scales[0],
                         max_image_side=f.max_image_side, fg_per_batch=ft.fg_per_batch, bg_per_batch=ft.bg_per_batch,
                         fg_iou=ft.fg_iou, bg_iou=ft.bg_iou, bg_iou_min=ft.bg_iou_min,
                         images_per_batch=ft.images_per_batch, seed=cfg.train.seed)
    net = build_feature_net(f.backbone, f.layer, f.weights, roi_hidden=f.roi_hidden, pool_size=f.pool_size)
    model = finetune_shared_network(net, batches, len(classes), f.pool_size, out_dir, steps=ft.steps, lr=ft.lr,
                                    momentum=ft.momentum, weight_decay=ft.weight_decay,
                                    freeze_blocks=ft.freeze_blocks, box_loss_weight=ft.box_loss_weight,
                                    lr_step_at=ft.lr_step_at, device=device, checkpoint_every=ft.checkpoint_every,
                                    log_every=ft.log_every, progress=progress, seed=cfg.train.seed)
    return save_finetuned(out_dir, key, model)
