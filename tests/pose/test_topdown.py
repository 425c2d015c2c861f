"""Top-down pose: person detector -> one pose per person (pose.TopDown, `pose --detector`), and box jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pose_helpers import synthetic_pose, tiny_config
from test_pose_cli import _save_tiny_model

from cvcore.config import config_to_dict, load_config
from cvcore.datasets import read_poses
from pose import PoseEstimator, TopDown
from pose.cli import pose_main
from pose.data import box_jitter
from pose.topdown import person_boxes
from rcnn.detector import Detections


class StubDetector:
    """What TopDown needs of an rcnn.Detector: class names, stored threshold, detect()."""

    def __init__(self, detections: Detections, vis_thr: float = 0.5, classes=("person", "dog")):
        self.class_names, self.meta, self.detections, self.calls = list(classes), {"vis_thr": vis_thr}, detections, 0

    def detect(self, image):
        self.calls += 1
        return self.detections


DETS = Detections(np.array([[10, 5, 50, 70], [40, 5, 80, 70], [0, 0, 20, 20], [5, 5, 60, 60]], np.float32),
                  np.array([0.9, 0.7, 0.6, 0.2], np.float32), ["person", "person", "dog", "person"])


def test_person_boxes_keeps_the_label_above_the_threshold_best_first():
    boxes, scores = person_boxes(DETS, "person", 0.5, 10)
    np.testing.assert_array_equal(boxes, DETS.boxes[[0, 1]])
    np.testing.assert_array_equal(scores, DETS.scores[[0, 1]])
    boxes, scores = person_boxes(DETS, "person", -1.0, 2)
    np.testing.assert_array_equal(scores, DETS.scores[[0, 1]])  # max_people keeps the best
    assert person_boxes(DETS, "cat", -1.0, 5)[0].shape == (0, 4)


def test_topdown_one_pose_per_detected_person(tmp_path):
    path, _ = _save_tiny_model(tmp_path)
    est = PoseEstimator.load(path, device="cpu")
    image = synthetic_pose(np.random.default_rng(0))[0]
    td = TopDown(StubDetector(DETS), est)
    assert td.min_score == 0.5  # the threshold stored with the detector
    people = td.predict(image)
    assert len(people) == 2
    expected = est.predict_batch([image, image], [DETS.boxes[0], DETS.boxes[1]])
    for person, box, score, joints in zip(people, DETS.boxes[:2], [0.9, 0.7], expected):
        np.testing.assert_array_equal(person.box, box)
        assert person.box_score == pytest.approx(score)
        np.testing.assert_allclose(person.joints, joints, atol=1e-5)
    assert len(TopDown(StubDetector(DETS), est, min_score=0.1).predict(image)) == 3
    # no detector: the whole image is one person without a box, as PoseEstimator.predict
    whole = TopDown(None, est).predict(image)
    assert len(whole) == 1 and whole[0].box is None and whole[0].box_score is None
    np.testing.assert_allclose(whole[0].joints, est.predict(image), atol=1e-5)
    with pytest.raises(ValueError, match="no class 'person'"):
        TopDown(StubDetector(DETS, classes=("RBC",)), est)


@pytest.fixture(scope="module")
def person_detector_file(tmp_path_factory):
    """A real (untrained) shared-mode detector file with a 'person' class: zero SVM weights, so every proposal
    scores the bias and NMS keeps non-overlapping ones."""
    from rcnn import Detector
    from rcnn.config import RCNNConfig
    from rcnn.detector import meta_proposer, proposal_meta
    from rcnn.features import build_extractor
    from rcnn.svm import LinearSVMs

    cfg = load_config(RCNNConfig, data={
        "data": {"classes": ["person"]},
        "proposals": {"max_side": 96, "min_size": 8, "test_per_image": 30},
        "features": {"mode": "shared", "weights": "none", "layer": "block13", "scales": [64], "max_image_side": 96},
        "train": {"device": "cpu"}})
    torch.manual_seed(0)
    extractor, spec = build_extractor(cfg, torch.device("cpu"))
    meta = {"config": config_to_dict(cfg), "backbone": spec, "proposals": proposal_meta(cfg.proposals),
            "features": {k: v for k, v in config_to_dict(cfg.features).items()
                         if k not in ("backbone", "layer", "weights", "target_norm")},
            "vis_thr": 0.0}
    det = Detector(["person"], extractor, LinearSVMs(torch.zeros(1, extractor.dim), torch.ones(1)), None, 1.0,
                   meta_proposer(meta["proposals"]), max_per_image=3, meta=meta)
    return det.save(tmp_path_factory.mktemp("det") / "person.pt")


def test_pose_cli_runs_the_person_detector(tmp_path, capsys, person_detector_file):
    from PIL import Image

    from rcnn import Detector

    path, _ = _save_tiny_model(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    images = [synthetic_pose(np.random.default_rng(i), size_hw=(72, 96))[0] for i in range(2)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    assert pose_main([str(folder), "--model", str(path), "--detector", str(person_detector_file), "--out", str(out),
                      "--vis", "--json", "--quiet", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 2 and set(summary["seconds_by_stage"]) == {"decode", "detector", "pose", "write"}
    _, poses = read_poses(out / "poses.json")
    det = Detector.load(person_detector_file)
    est = PoseEstimator.load(path, device="cpu")
    for i, img in enumerate(images):
        d = det.detect(img)
        people = poses[f"p{i}.png"].people
        assert len(people) == len(d.boxes) > 0
        for person, box, score in zip(people, d.boxes, d.scores):
            np.testing.assert_allclose(person.box, box, atol=1e-3)
            assert person.box_score == pytest.approx(float(score), abs=1e-5)
            np.testing.assert_allclose(person.joints, est.predict(img, box)[:, :2], atol=1e-3)
    assert sorted(p.name for p in (out / "vis").iterdir()) == ["p0.jpg", "p1.jpg"]
    # a detector without a person class is refused in one line
    assert pose_main([str(folder), "--model", str(path), "--detector", "bccd-fast", "--out", str(out),
                      "--quiet"]) == 2
    assert "no class 'person'" in capsys.readouterr().err


def test_box_jitter_moves_joints_with_the_pixels():
    image = np.zeros((80, 80, 3), np.uint8)
    joints = np.array([[20.0, 30.0], [55.0, 61.0]], np.float32)
    for x, y in joints.astype(int):
        image[y, x] = 255
    for scale, shift in [(1.0, (0.0, 0.0)), (1.3, (5.0, -3.0)), (0.8, (-7.0, 4.0))]:
        out, moved = box_jitter(image, joints, scale, shift)
        assert out.shape == image.shape
        for (x, y) in moved:
            # the brightest pixel near the moved joint is where the joint's pixel went
            xi, yi = int(round(x)), int(round(y))
            patch = out[yi - 2:yi + 3, xi - 2:xi + 3, 0].astype(float)
            dy, dx = np.unravel_index(np.argmax(patch), patch.shape)
            assert abs(xi - 2 + dx - x) <= 1.0 and abs(yi - 2 + dy - y) <= 1.0 and patch.max() > 0
    # identity
    out, moved = box_jitter(image, joints, 1.0, (0.0, 0.0))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(moved, joints, atol=1e-5)


def test_train_set_box_jitter_is_seeded_and_changes_framing(tmp_path, lspet_root):
    from pose.train import load_pose_data

    cfg = tiny_config(lspet_root, tmp_path, augment={"rotate": 0.0, "scale": [1.0, 1.0], "translate": 0.0,
                                                     "flip": 0.0, "color_jitter": 0.0})
    plain = load_pose_data(cfg, progress=False).train_set
    jit_cfg = tiny_config(lspet_root, tmp_path, augment={**config_to_dict(cfg.augment), "box_scale_sd": 0.2,
                                                         "box_shift_sd": 0.1})
    jittered = load_pose_data(jit_cfg, progress=False).train_set
    assert plain.jitter is None and jittered.jitter == (0.0, 0.2, 0.1)
    np.random.seed(0)
    a = jittered[0]
    np.random.seed(0)
    b = jittered[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["joints"], b["joints"])
    np.random.seed(0)
    c = plain[0]
    assert not torch.allclose(a["joints"], c["joints"])


def test_person_threshold_prefers_the_pose_threshold():
    from types import SimpleNamespace

    from pose.topdown import person_threshold

    assert person_threshold(SimpleNamespace(meta={"vis_thr": -0.3, "pose_thr": -0.6})) == -0.6
    assert person_threshold(SimpleNamespace(meta={"vis_thr": -0.3, "pose_thr": None})) == -0.3
    assert person_threshold(SimpleNamespace(meta={})) == 0.0
