"""rcnn.data: splits of one or several datasets; labelling rules on images whose labels are not exhaustive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvcore.config import load_config
from cvcore.datasets import DetectionRecord
from cvcore.synthetic import write_lspet_folder, write_pennfudan_folder
from rcnn.config import RCNNConfig
from rcnn.data import select_records
from rcnn.features import ImageFeatures
from rcnn.finetune import PARTIAL_LABELS_MIN_IOU, label_windows
from rcnn.train import training_images


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_select_records_concatenates_sources_with_their_splits(tmp_path, rect_voc):
    pf = write_pennfudan_folder(tmp_path / "pf")
    poses = write_lspet_folder(tmp_path / "poses", n=10)
    cfg = load_config(RCNNConfig, data={"data": {"classes": ["person"], "sources": [
        {"root": str(pf), "val_every": 3},
        {"root": str(poses), "format": "poses", "train_range": [1, 8], "val_range": [9, 10], "train_every": 2},
    ]}})
    train, val, classes = select_records(cfg)
    assert classes == ["person"]
    # Penn-Fudan: 3 images, the 3rd is validation; poses: images 1, 3, 5, 7 train, 9 and 10 validation
    assert [r.file for r in train] == ["FudanPed00001.png", "FudanPed00002.png", "im00001.jpg", "im00003.jpg",
                                       "im00005.jpg", "im00007.jpg"]
    assert [r.file for r in val] == ["PennPed00001.png", "im00009.jpg", "im00010.jpg"]
    assert [r.exhaustive for r in train] == [True, True, False, False, False, False]
    # val_stride keeps every n-th validation image; one source without `sources` reads as before
    cfg = load_config(RCNNConfig, data={"data": {"root": str(poses), "format": "poses", "train_range": [1, 4],
                                                 "val_range": [5, 10], "val_stride": 3}})
    train, val, _ = select_records(cfg)
    assert [r.file for r in train] == [f"im{i:05d}.jpg" for i in range(1, 5)]
    assert [r.file for r in val] == ["im00005.jpg", "im00008.jpg"]
    cfg = load_config(RCNNConfig, data={"data": {"root": str(rect_voc), "classes": ["red", "blue"]}})
    train, val, classes = select_records(cfg)
    assert len(train) == 10 and len(val) == 5 and classes == ["red", "blue"]
    with pytest.raises(ValueError, match="train_range"):
        select_records(load_config(RCNNConfig, data={"data": {"root": str(poses), "format": "poses",
                                                              "train_range": [5, 2]}}))


def _random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size * 0.8, (n, 2))
    wh = rng.uniform(5, size * 0.5, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("exhaustive", [True, False])
def test_label_windows_against_brute_force(exhaustive):
    rng = np.random.default_rng(5)
    for trial in range(20):
        gt = _random_boxes(rng, int(rng.integers(0, 4)))
        gt_labels = rng.integers(0, 3, len(gt)).tolist()
        boxes = np.concatenate([gt, _random_boxes(rng, 60)])
        fg_iou, bg_iou, bg_min = 0.5, 0.5, [0.0, 0.1][trial % 2]
        labels = label_windows(boxes, gt, gt_labels, fg_iou, bg_iou, bg_min, exhaustive=exhaustive)
        floor = bg_min if exhaustive else max(bg_min, PARTIAL_LABELS_MIN_IOU)
        for box, label in zip(boxes, labels):
            ious = [_iou(box, g) for g in gt]
            best = max(ious, default=0.0)
            if ious and best >= fg_iou:
                expected = gt_labels[int(np.argmax(ious))] + 1
            elif not gt.size:
                expected = 0 if exhaustive else -1  # no labelled box: all background only when labels are complete
            elif floor <= best < bg_iou:
                expected = 0
            else:
                expected = -1
            assert label == expected, (box, ious, label, expected)


def test_svm_negatives_against_brute_force():
    """Negatives: IoU < 0.3 with every box of the class; on non-exhaustive images also >= 0.1 with some labelled box.
    Positives: the non-difficult ground-truth rows of the class."""
    rng = np.random.default_rng(7)
    classes = ["person", "dog"]
    for exhaustive in (True, False):
        gt = _random_boxes(rng, 3)
        labels = ["person", "dog", "person"]
        difficult = np.array([False, False, True])
        record = DetectionRecord("x.jpg", 100, 100, gt, labels, difficult, exhaustive=exhaustive)
        boxes = np.concatenate([gt, _random_boxes(rng, 80)])
        item = ImageFeatures(record, boxes, torch.zeros(len(boxes), 4, dtype=torch.float16), num_gt=len(gt))
        image = training_images([item], classes, 1.0, neg_iou=0.3)[0]
        for c, name in enumerate(classes):
            for row, box in enumerate(boxes):
                same = [_iou(box, g) for g, lab in zip(gt, labels) if lab == name]
                any_iou = max(_iou(box, g) for g in gt)
                is_gt_of_class = row < len(gt) and labels[row] == name
                want_pos = is_gt_of_class and not difficult[row]
                want_neg = (max(same) < 0.3 and not is_gt_of_class
                            and (exhaustive or any_iou >= PARTIAL_LABELS_MIN_IOU))
                assert bool(image.positive[row, c]) == want_pos, (exhaustive, name, row)
                assert bool(image.negative[row, c]) == want_neg, (exhaustive, name, row, same, any_iou)


def test_regression_examples_against_brute_force():
    """Box-regression examples: the rows with IoU > 0.6 to a ground-truth box of a known class, each paired with its
    best-overlapping box (R-CNN appendix C)."""
    from rcnn.train import regression_examples

    rng = np.random.default_rng(3)
    gt = _random_boxes(rng, 3)
    labels = ["person", "dog", "cat"]  # "cat" is not a trained class
    record = DetectionRecord("x.jpg", 100, 100, gt, labels, np.zeros(3, bool))
    near = gt[rng.integers(0, 3, 60)] + rng.normal(0, 4, (60, 4)).astype(np.float32)
    boxes = np.concatenate([gt, near, _random_boxes(rng, 40)]).astype(np.float32)
    feats = torch.arange(len(boxes), dtype=torch.float16)[:, None].repeat(1, 2)
    item = ImageFeatures(record, boxes, feats, num_gt=len(gt))
    x, props, targets, classes = regression_examples([item], ["person", "dog"], scale=1.0, min_iou=0.6)
    want = []
    for row, box in enumerate(boxes):
        ious = [_iou(box, g) for g in gt]
        best = int(np.argmax(ious))
        if ious[best] > 0.6 and labels[best] != "cat":
            want.append((row, best, ["person", "dog"].index(labels[best])))
    assert [int(v) for v in x[:, 0]] == [r for r, _, _ in want]  # the feature rows, in order
    np.testing.assert_array_equal(props.numpy(), boxes[[r for r, _, _ in want]])
    np.testing.assert_array_equal(targets.numpy(), gt[[b for _, b, _ in want]])
    assert classes.tolist() == [c for _, _, c in want] and len(want) > 10
