"""Fine-tuning: window labels against brute force, 32 fg + 96 bg batches, a few SGD steps through the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cvcore.datasets import DetectionRecord, read_voc
from cvcore.io import atomic_torch_save
from rcnn.features import build_feature_net
from rcnn.finetune import (
    WindowBatches,
    check_resumable,
    finetune_network,
    label_windows,
    reuse_finetuned,
    save_finetuned,
    step_schedule,
)


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_label_windows_matches_brute_force():
    rng = np.random.default_rng(0)
    gt = np.array([[10, 10, 50, 50], [60, 20, 100, 80]], np.float32)
    boxes = np.concatenate([gt, rng.uniform(0, 60, (200, 2)).repeat(2, 1) + rng.uniform(5, 50, (200, 4)) *
                            np.array([0, 0, 1, 1])]).astype(np.float32)
    labels = label_windows(boxes, gt, [1, 0], fg_iou=0.5, bg_iou=0.5)
    for box, label in zip(boxes, labels):
        overlaps = [iou(box, g) for g in gt]
        best = int(np.argmax(overlaps))
        expected = ([2, 1][best]) if overlaps[best] >= 0.5 else 0
        assert label == expected
    assert labels[0] == 2 and labels[1] == 1


@pytest.mark.slow
def test_window_batches_and_a_few_sgd_steps(rect_voc, tmp_path):
    records = list(read_voc(rect_voc, "train", ["red", "blue"]))
    rng = np.random.default_rng(0)

    def proposals(record):  # jittered copies of the ground truth and random boxes
        jitter = np.repeat(record.boxes, 10, 0) + rng.normal(0, 3, (10 * len(record.boxes), 4))
        rand = rng.uniform(0, 60, (30, 2)).repeat(2, 1) + rng.uniform(8, 60, (30, 4)) * np.array([0, 0, 1, 1])
        return np.concatenate([jitter, rand]).astype(np.float32)

    torch.manual_seed(0)
    batches = WindowBatches(records, proposals, ["red", "blue"], input_size=32, context_padding=2,
                            fg_per_batch=32, bg_per_batch=96, images_per_batch=2)
    batch = next(iter(batches))
    assert batch["crops"].shape == (128, 3, 32, 32)
    assert int((batch["labels"] > 0).sum()) == 32 and int((batch["labels"] == 0).sum()) == 96
    net = build_feature_net("mobilenet_v2", weights="none")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    model = finetune_network(net, batches, 2, tmp_path / "ft", steps=2, lr=0.01, freeze_blocks=10, lr_step_at=0.5,
                             checkpoint_every=1, log_every=1, progress=False)
    assert (tmp_path / "ft" / "last.pt").is_file() and (tmp_path / "ft" / "log.jsonl").is_file()
    logged = [json.loads(line) for line in (tmp_path / "ft" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in logged if "lr" in r] == pytest.approx([0.01, 0.001])  # the schedule reached the engine
    with pytest.raises(ValueError, match="another lr schedule"):   # resuming it with another schedule
        finetune_network(net, batches, 2, tmp_path / "ft", steps=2, lr=0.01, lr_step_at=0.0, progress=False)
    after = model.net.state_dict()
    assert torch.equal(after["trunk.0.0.weight"], before["trunk.0.0.weight"])  # frozen block
    assert not torch.equal(after["trunk.18.0.weight"], before["trunk.18.0.weight"])  # trained block
    assert model(batch).shape == (128, 3)


def test_label_windows_background_lower_bound():
    gt = np.array([[0, 0, 40, 40]], np.float32)
    boxes = np.array([[0, 0, 40, 40], [0, 0, 40, 20], [0, 0, 40, 4.0001], [0, 0, 40, 3.9999], [50, 50, 60, 60]],
                     np.float32)  # IoU 1, 0.5, just above 0.1, just below 0.1, 0
    np.testing.assert_array_equal(label_windows(boxes, gt, [0], bg_iou=0.5, bg_iou_min=0.1), [1, 1, 0, -1, -1])
    np.testing.assert_array_equal(label_windows(boxes, gt, [0], bg_iou=0.5), [1, 1, 0, 0, 0])


def test_step_schedule_drops_lr_tenfold_once():
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.5)
    assert step_schedule(opt, 10, 0.0) is None                      # constant: the shipped configs
    sched = step_schedule(opt, 10, 0.75)                            # Fast R-CNN: 30k of 40k -> here 8 of 10
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(seen, [0.5] * 8 + [0.05] * 2)
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="lr_step_at"):
            step_schedule(opt, 10, bad)
    late = step_schedule(torch.optim.SGD(params, lr=0.5), 10, 0.99)  # rounds to 10: clamped so the drop still happens
    assert late.milestones == {9: 1}


def test_finished_finetuning_is_reused_only_with_the_same_key(tmp_path):
    from cvcore.config import load_config
    from rcnn.config import RCNNConfig
    from rcnn.finetune import finetune_key

    model = torch.nn.Module()
    model.net, model.classifier = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3)
    cfg = load_config(RCNNConfig, data={"finetune": {"steps": 100, "lr_step_at": 0.75}})
    records = [DetectionRecord(tmp_path / "a.jpg", 10, 10, np.zeros((0, 4)), [], np.zeros(0), file="a.jpg")]
    key = finetune_key(cfg, records, ["x"])
    state, _ = save_finetuned(tmp_path, key, model)
    again = reuse_finetuned(tmp_path, key)
    assert again is not None and all(torch.equal(again[0][k], v) for k, v in state.items())
    for change in ("finetune.steps=200", "finetune.lr=0.01", "features.input_size=64"):
        other = load_config(RCNNConfig, data={"finetune": {"steps": 100, "lr_step_at": 0.75}}, overrides=[change])
        assert reuse_finetuned(tmp_path, finetune_key(other, records, ["x"])) is None, change
    assert reuse_finetuned(tmp_path, finetune_key(cfg, records, ["x", "y"])) is None
    atomic_torch_save({"steps": 100, "state_dict": {}, "softmax": {}}, tmp_path / "finetuned.pt")  # an older format
    assert reuse_finetuned(tmp_path, key) is None


def test_resuming_with_another_lr_schedule_is_refused(tmp_path):
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    check_resumable(tmp_path, 1200, 0.75)                            # nothing to resume
    atomic_torch_save({"scheduler": step_schedule(opt, 1200, 0.75).state_dict()}, tmp_path / "last.pt")
    check_resumable(tmp_path, 1200, 0.75)
    for steps, at in ((1600, 0.75), (1200, 0.5), (1200, 0.0)):      # another milestone, or none
        with pytest.raises(ValueError, match="another lr schedule"):
            check_resumable(tmp_path, steps, at)
    atomic_torch_save({"scheduler": None}, tmp_path / "last.pt")      # a constant-rate run may be extended
    check_resumable(tmp_path, 2400, 0.0)
    with pytest.raises(ValueError, match="another lr schedule"):
        check_resumable(tmp_path, 1200, 0.75)
