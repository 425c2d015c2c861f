"""The baseline R-CNN is measured against (issue 3): torchvision's Faster R-CNN on the same ImageNet MobileNetV2
backbone (offline weights), trained on the same split on this machine and scored with the same VOC07 mAP.

    python tools/baseline_faster_rcnn.py --data ../shared/data/bccd --out runs/baseline/bccd
    python tools/baseline_faster_rcnn.py --data ../shared/data/raccoon --val-every 4 --out runs/baseline/raccoon

Training goes through :class:`cvcore.engine.Trainer` (torchvision detection models already return a dict of losses
in training), so an interrupted run resumes when the same command is run again. The model follows torchvision's
"Faster R-CNN with a MobileNetV2 backbone" recipe: the stride-32 ``features`` map (1280 channels, frozen batch norm)
reduced to 256 channels by a 1x1 convolution (torchvision's non-FPN MobileNet extractor), one-level anchors, 7x7
RoIAlign, the two-layer box head; SGD with momentum, warm-up and a cosine schedule; horizontal flips. Writes
``report.json`` (mAP and per-class AP) and ``pr_curves.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cvcore.cli import add_common_args, run_cli, setup_logging
from cvcore.datasets import DetectionRecord
from cvcore.device import resolve_device, seed_everything, set_num_threads
from cvcore.engine import Trainer
from cvcore.evaluation import eval_detections, plot_pr_curves
from cvcore.io import atomic_write_json, load_image
from cvcore.nn import build_optimizer, build_scheduler


def build_model(num_classes: int, min_size: int, max_size: int) -> nn.Module:
    """Faster R-CNN on ImageNet MobileNetV2 ``features`` (weights from the offline package), ``num_classes`` + 1."""
    import torchvision
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.misc import FrozenBatchNorm2d

    from rcnn.features import offline_mobilenet_weights

    net = torchvision.models.mobilenet_v2(weights=None, norm_layer=FrozenBatchNorm2d)
    net.load_state_dict(torch.load(offline_mobilenet_weights(), map_location="cpu", weights_only=True))
    for p in net.features[:4].parameters():  # the stem and first blocks stay at their ImageNet values
        p.requires_grad_(False)
    # as torchvision's _mobilenet_extractor(fpn=False): a 1x1 conv to 256 channels, so the box head's first fc
    # layer sees 256 x 7 x 7 inputs (12.8 M weights) instead of 1280 x 7 x 7 (64 M)
    backbone = nn.Sequential(net.features, nn.Conv2d(1280, 256, 1))
    backbone.out_channels = 256
    anchors = AnchorGenerator(sizes=((16, 32, 64, 128, 256),), aspect_ratios=((0.5, 1.0, 2.0),))
    pooler = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes=num_classes + 1, rpn_anchor_generator=anchors, box_roi_pool=pooler,
                      min_size=min_size, max_size=max_size, box_detections_per_img=300, box_score_thresh=0.001)


class LossDict(nn.Module):
    """``model(batch)`` for the engine: a torchvision detector called as ``model(images, targets)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.model(batch["images"], batch["targets"])


class DetectionSet(torch.utils.data.Dataset):
    """VOC records -> (float image tensor in [0, 1], target dict with 1-based labels), random horizontal flip."""

    def __init__(self, records: Sequence[DetectionRecord], classes: Sequence[str], flip: bool = True) -> None:
        self.records, self.index, self.flip = list(records), {c: i + 1 for i, c in enumerate(classes)}, flip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rec = self.records[i]
        image = torch.from_numpy(load_image(rec.image_path)).permute(2, 0, 1).float() / 255
        boxes = torch.as_tensor(np.asarray(rec.boxes, np.float32).reshape(-1, 4))
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes = torch.stack([rec.width - boxes[:, 2], boxes[:, 1], rec.width - boxes[:, 0], boxes[:, 3]], 1)
        labels = torch.tensor([self.index[lab] for lab in rec.labels], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels}


def collate(items: list) -> dict:
    return {"images": [im for im, _ in items], "targets": [t for _, t in items]}


@torch.inference_mode()
def evaluate(model: nn.Module, records: Sequence[DetectionRecord], classes: Sequence[str], device: torch.device
             ) -> dict:
    """VOC07 AP of the model's detections on ``records`` (the same evaluator as rcnn-train)."""
    model.eval()
    preds = []
    for rec in records:
        image = torch.from_numpy(load_image(rec.image_path)).permute(2, 0, 1).float().div(255).to(device)
        out = model([image])[0]
        preds.append({"boxes": out["boxes"].cpu().numpy(), "scores": out["scores"].cpu().numpy(),
                      "labels": [classes[i - 1] for i in out["labels"].tolist()]})
    return eval_detections(preds, list(records), list(classes), iou_thr=0.5, metric="voc07")


def run(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="baseline_faster_rcnn", description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="VOC-layout folder (BCCD, Raccoon, ...)")
    ap.add_argument("--train-split", default="train")
    ap.add_argument("--val-split", default="val")
    ap.add_argument("--val-every", type=int, default=0, help="hold out every N-th sorted image instead (Raccoon: 4)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=float, default=12)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--min-size", type=int, default=480, help="shorter side (torchvision's transform)")
    ap.add_argument("--max-size", type=int, default=640)
    ap.add_argument("--threads", type=int, default=0)
    add_common_args(ap)
    args = ap.parse_args(argv)
    setup_logging(args.quiet, args.debug)

    from rcnn.train import load_splits

    seed_everything(0)
    if args.threads:
        set_num_threads(args.threads)
    device = resolve_device(args.device)
    train_recs, val_recs, classes = load_splits(args.data, None if args.val_every else args.train_split,
                                                None if args.val_every else args.val_split, args.val_every)
    model = build_model(len(classes), args.min_size, args.max_size)
    loader = torch.utils.data.DataLoader(DetectionSet(train_recs, classes), batch_size=args.batch_size,
                                         shuffle=True, drop_last=True, collate_fn=collate)
    steps = max(1, round(args.epochs * len(loader)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, "momentum", args.lr, momentum=0.9, weight_decay=1e-4)
    scheduler = build_scheduler(optimizer, "cosine", total_steps=steps, warmup_steps=min(100, steps // 4))
    out = Path(args.out)
    t0 = time.time()
    Trainer(LossDict(model), optimizer, loader, scheduler=scheduler, device=device, out_dir=out, max_steps=steps,
            grad_clip=10.0, checkpoint_every=50, progress=not args.quiet, resume=True,
            batch_size_fn=lambda b: len(b["images"])).train()
    train_s = time.time() - t0
    t0 = time.time()
    result = evaluate(model.to(device), val_recs, classes, device)
    eval_s = time.time() - t0
    plot_pr_curves(result, out / "pr_curves.png")
    report = {"model": "torchvision FasterRCNN, MobileNetV2 ImageNet backbone", "data": args.data,
              "train_images": len(train_recs), "val_images": len(val_recs), "steps": steps, "epochs": args.epochs,
              "min_size": args.min_size, "metric": "voc07", "mAP": round(float(result["mAP"]), 4),
              "AP": {c: round(float(v), 4) for c, v in result["AP"].items()},
              "seconds": {"train_this_call": round(train_s, 1), "eval": round(eval_s, 1)},
              "seconds_per_val_image": round(eval_s / max(len(val_recs), 1), 3)}
    atomic_write_json(out / "report.json", report)
    if args.json:
        import json

        print(json.dumps(report))
    elif not args.quiet:
        aps = ", ".join(f"{c} {v:.3f}" for c, v in report["AP"].items())
        print(f"Faster R-CNN baseline: VOC07 mAP {report['mAP']:.4f} ({aps}); {report['seconds_per_val_image']} "
              f"s/image; report: {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(run, None, prog="baseline_faster_rcnn"))
