"""eval-map and eval-pck end to end on tiny synthetic datasets and prediction files written here.

Expected numbers are worked out by hand from the scenes (see the comments), not taken from the code under test.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvcore.evaluation.cli import eval_map_main, eval_pck_main

# ----------------------------------------------------------------------------------------------------- eval-map

# Ground truth in project coordinates (xyxy, image spanning [0, 100]); the XML gets VOC's 1-based xmin = x1 + 1.
GT = {
    "a.jpg": [("cat", [0, 0, 10, 10], 0), ("cat", [20, 20, 30, 30], 0), ("dog", [50, 50, 70, 70], 0)],
    "b.jpg": [("cat", [40, 40, 50, 50], 0), ("cat", [60, 60, 70, 70], 0), ("cat", [80, 80, 90, 90], 1)],
    "c.jpg": [("dog", [10, 10, 40, 40], 0), ("horse", [0, 50, 30, 90], 0)],
}
# cat, in score order: 0.9 TP, 0.8 FP (nothing there), 0.7 TP, 0.65 on the difficult box (ignored), 0.6 TP,
# 0.5 duplicate of the 0.9 one (FP) -> the REFERENCE toy vector [TP, FP, TP, TP, FP] with 4 positives.
# dog: one TP of 2 positives (c.jpg has no prediction). bird: predicted, never in the ground truth.
PRED = {
    "classes": ["cat", "dog", "bird"],
    "images": [
        {"file": "a.jpg", "width": 100, "height": 100, "detections": [
            {"label": "cat", "score": 0.9, "box": [0, 0, 10, 10]},
            {"label": "cat", "score": 0.8, "box": [85, 0, 95, 10]},
            {"label": "cat", "score": 0.5, "box": [0, 0, 10, 10.5]},
            {"label": "dog", "score": 0.95, "box": [50, 50, 70, 70]},
            {"label": "bird", "score": 0.3, "box": [0, 0, 50, 50]}]},
        # a path that is not relative to the image folder: matched by its base name
        {"file": "elsewhere/b.jpg", "width": 100, "height": 100, "detections": [
            {"label": "cat", "score": 0.7, "box": [40, 40, 50, 50]},
            {"label": "cat", "score": 0.65, "box": [80, 80, 90, 90]},
            {"label": "cat", "score": 0.6, "box": [60, 60, 70, 70]}]},
        {"file": "unknown.jpg", "width": 100, "height": 100, "detections": []},
    ],
}
CAT_07, CAT_12 = 0.6136363636363636, 0.625
DOG_07, DOG_12 = 6 / 11, 0.5  # recall 0.5 at precision 1: 11-point t = 0 ... 0.5


def _write_voc(root):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for name, objects in GT.items():
        Image.new("RGB", (100, 100)).save(root / "JPEGImages" / name)
        xml = [f"<annotation><filename>{name}</filename><size><width>100</width><height>100</height>"
               "<depth>3</depth></size>"]
        for label, (x1, y1, x2, y2), difficult in objects:
            xml.append(f"<object><name>{label}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1 + 1}</xmin>"
                       f"<ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
        xml.append("</annotation>")
        (root / "Annotations" / name.replace(".jpg", ".xml")).write_text("".join(xml))
    return root


@pytest.fixture()
def voc_case(tmp_path):
    root = _write_voc(tmp_path / "voc")
    pred = tmp_path / "dets.json"
    pred.write_text(json.dumps(PRED))
    return root, pred


@pytest.mark.parametrize("metric, cat, dog", [("voc07", CAT_07, DOG_07), ("voc12", CAT_12, DOG_12)])
def test_eval_map_json(voc_case, capsys, metric, cat, dog):
    root, pred = voc_case
    assert eval_map_main(["--pred", str(pred), "--gt", str(root), "--metric", metric, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert set(summary) == {"metric", "mAP", "AP", "f1", "f1_threshold"}
    assert summary["metric"] == metric
    # pooled, by score: dog TP, cat TP, FP, TP, (difficult: ignored), TP, FP, bird FP; 6 positives
    # -> F1 after each: 2/7, 4/8, 4/9, 6/10, 8/11 (best, score 0.6), 8/12, 8/13
    assert summary["f1"] == pytest.approx(round(8 / 11, 4)) and summary["f1_threshold"] == pytest.approx(0.6)
    assert summary["AP"]["cat"] == pytest.approx(cat, abs=1e-9)
    assert summary["AP"]["dog"] == pytest.approx(dog, abs=1e-9)
    assert summary["AP"]["bird"] is None  # no ground truth: undefined, left out of the mean
    assert summary["mAP"] == pytest.approx((cat + dog) / 2, abs=1e-9)
    assert "c.jpg" in err and "no prediction" in err  # the missing image is a miss, with a warning
    assert "unknown.jpg" in err  # prediction without ground truth
    assert "horse" in err  # ground-truth class the detector does not know


def test_eval_map_table_subset_and_plots(voc_case, tmp_path, capsys):
    root, pred = voc_case
    subset = tmp_path / "val.txt"
    subset.write_text("a\nb\n")  # VOC ImageSets style: names without extension
    plots = tmp_path / "plots"
    code = eval_map_main(["--pred", str(pred), "--gt", str(root), "--metric", "voc12", "--subset", str(subset),
                          "--plot-dir", str(plots)])
    assert code == 0
    out, err = capsys.readouterr()
    # c.jpg is outside the subset: dog has 1 positive, found -> AP 1; cat unchanged
    assert "mAP" in out and "62.5" in out and "100.0" in out and "81.2" in out  # mAP (0.625 + 1) / 2 = 81.25
    assert "no prediction" not in err
    for name in ("pr_curves.png", "pr_cat.png", "pr_dog.png", "pr_bird.png"):
        assert (plots / name).read_bytes()[:4] == b"\x89PNG"


def test_eval_map_iou_threshold(voc_case, capsys):
    root, pred = voc_case
    # every true positive here is an exact box (IoU 1), so a strict threshold changes nothing; the table says which
    assert eval_map_main(["--pred", str(pred), "--gt", str(root), "--iou", "0.99", "--metric", "voc12"]) == 0
    out = capsys.readouterr().out
    assert "IoU >= 0.99" in out and "62.5" in out
    assert eval_map_main(["--pred", str(pred), "--gt", str(root), "--iou", "1.5"]) == 2
    assert "--iou" in capsys.readouterr().err


def test_eval_map_bad_inputs(voc_case, tmp_path, capsys):
    root, pred = voc_case
    missing = tmp_path / "nope.json"
    assert eval_map_main(["--pred", str(missing), "--gt", str(root)]) == 2
    err = capsys.readouterr().err
    assert "nope.json" in err and len(err.strip().splitlines()) == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"classes": ["cat"], "images": [{"file": "a.jpg", "width": 100, "height": 100,
                                                              "detections": [{"label": "cow", "score": 1,
                                                                              "box": [0, 0, 1, 1]}]}]}))
    assert eval_map_main(["--pred", str(bad), "--gt", str(root)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "cow" in err
    subset = tmp_path / "none.txt"
    subset.write_text("zzz\n")
    assert eval_map_main(["--pred", str(pred), "--gt", str(root), "--subset", str(subset)]) == 2
    assert "none of the" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------- eval-pck

LSP_NAMES = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
             "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]


def _write_lspet(root, rng):
    """Three LSPET examples (joints.mat 14 x 3 x N, 1-based, flag 1 = visible) with a 100 px torso each."""
    (root / "images").mkdir(parents=True)
    joints = np.zeros((14, 3, 3))
    for n in range(3):
        joints[:, :2, n] = rng.uniform(20, 180, size=(14, 2)).round()
        joints[9, :2, n] = [50, 50]  # left shoulder
        joints[2, :2, n] = [50, 150]  # right hip: torso = 100 px -> PCK@0.2 threshold 20 px
        joints[:, 2, n] = 1
        Image.new("RGB", (200, 200)).save(root / "images" / f"im{n + 1:05d}.jpg")
    joints[0, :, 0] = 0  # right ankle of im00001: not annotated (flag 0, no coordinates)
    import scipy.io

    scipy.io.savemat(root / "joints.mat", {"joints": joints})
    return joints


@pytest.fixture()
def lspet_case(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "lspet"
    joints = _write_lspet(root, rng)
    gt = joints[:, :2, :].transpose(2, 0, 1) - 1.0  # 0-based pixel coordinates, [N, 14, 2]

    def person(xy):
        return {"box": None, "joints": [[float(x), float(y), 1.0] for x, y in xy]}

    im2 = gt[1].copy()
    im2[:7, 0] += 30  # joints 0-6 off by 30 px (wrong), 7-13 off by 5 px (right)
    im2[7:, 0] += 5
    poses = {"joint_names": LSP_NAMES, "images": [
        # two people: the first is far away, the second (10 px off everywhere) is the one that gets scored
        {"file": "im00001.jpg", "people": [person(gt[0] + 500), person(gt[0] + [10, 0])]},
        {"file": "im00002.jpg", "people": [person(im2)]},
        # im00003.jpg has no prediction: every joint is a miss
    ]}
    pred = tmp_path / "poses.json"
    pred.write_text(json.dumps(poses))
    return root, pred


def test_eval_pck_json(lspet_case, capsys):
    root, pred = lspet_case
    assert eval_pck_main(["--pred", str(pred), "--gt", str(root), "--format", "lspet", "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert set(summary) == {"alpha", "norm", "PCK", "PCK_all", "joints", "per_joint", "match", "matched", "annotated",
                            "left_right"}
    assert summary["alpha"] == 0.2 and summary["norm"] == "torso"
    lr = summary["left_right"]  # values checked against brute force in test_eval_pose.py
    assert set(lr) == {"mirrored_misses", "pooled_pck", "pooled_pck_best_orientation", "people_better_mirrored"}
    assert lr["pooled_pck"] == pytest.approx((13 + 7 + 0) / (13 + 14 + 14))  # right per image / annotated
    per_joint = summary["per_joint"]
    assert per_joint["right_ankle"] == pytest.approx(0 / 2)  # annotated in im2 (wrong) and im3 (missing)
    for name in LSP_NAMES[1:7]:
        assert per_joint[name] == pytest.approx(1 / 3)  # right only in im1
    for name in LSP_NAMES[7:]:
        assert per_joint[name] == pytest.approx(2 / 3)  # right in im1 and im2
    assert summary["PCK"] == pytest.approx((0 + 6 / 3 + 7 * 2 / 3) / 14)
    assert "im00003.jpg" in err and "no prediction" in err


def test_eval_pck_subset_table_plot(lspet_case, tmp_path, capsys):
    root, pred = lspet_case
    subset = tmp_path / "subset.txt"
    subset.write_text("im00001.jpg\nim00002.jpg\n")
    plots = tmp_path / "plots"
    code = eval_pck_main(["--pred", str(pred), "--gt", str(root / "joints.mat"), "--subset", str(subset),
                          "--plot-dir", str(plots)])  # format detected from the file
    assert code == 0
    out, err = capsys.readouterr()
    assert "no prediction" not in err
    lines = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.strip()}
    assert lines["right_ankle"] == "0.0" and lines["right_knee"] == "50.0" and lines["neck"] == "100.0"
    assert lines["mean"] == f"{100 * 10 / 14:.1f}"
    assert lines["wrist"] == "75.0"  # pooled: right wrist (joint 6) 1/2, left wrist (joint 11) 2/2
    assert (plots / "pck_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_pck_alpha_and_bbox(lspet_case, capsys):
    root, pred = lspet_case
    # alpha 0.05 -> 5 px: the 10 px offsets of im1 fail, the 5 px ones of im2 pass (5 <= 5)
    assert eval_pck_main(["--pred", str(pred), "--gt", str(root), "--alpha", "0.05", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["per_joint"]["neck"] == pytest.approx(1 / 3)
    assert summary["per_joint"]["right_knee"] == 0.0
    assert eval_pck_main(["--pred", str(pred), "--gt", str(root), "--norm", "bbox", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["norm"] == "bbox"


def test_eval_pck_bad_inputs(lspet_case, tmp_path, capsys):
    root, pred = lspet_case
    assert eval_pck_main(["--pred", str(pred), "--gt", str(root), "--norm", "head"]) == 2
    assert "head" in capsys.readouterr().err
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"joint_names": ["a", "b"], "images": []}))
    assert eval_pck_main(["--pred", str(wrong), "--gt", str(root)]) == 2
    err = capsys.readouterr().err
    assert "wrong.json" in err and len(err.strip().splitlines()) == 1


def test_people_paired_one_to_one_by_distance():
    from cvcore.evaluation.matching import match_people_by_joints as _pair_people

    gt = np.array([[[0.0, 0.0], [10.0, 0.0]], [[100.0, 0.0], [110.0, 0.0]]])
    visible = np.ones((2, 2), bool)
    far, near_b, near_a = gt[0] + 300, gt[1] + 1, gt[0] + 2
    assert _pair_people(gt, visible, [far, near_b, near_a]) == [2, 1]
    # one predicted person close to both: it goes to the closer one, the other ground-truth person gets none
    middle = gt[0] + [40.0, 0.0]
    assert _pair_people(gt, visible, [middle]) == [0, None]
    assert _pair_people(gt, visible, []) == [None, None]
    # a person without annotated joints still gets a partner, and missing predicted joints cost as far-away ones
    nan_person = np.full((2, 2), np.nan)
    assert _pair_people(gt[:1], visible[:1], [nan_person, far]) == [1]


def test_eval_pck_joint_order_by_name(lspet_case, tmp_path, capsys):
    root, pred = lspet_case
    assert eval_pck_main(["--pred", str(pred), "--gt", str(root), "--json"]) == 0
    expected = json.loads(capsys.readouterr().out)
    poses = json.loads(pred.read_text())
    poses["joint_names"] = poses["joint_names"][::-1]
    for image in poses["images"]:
        for person in image["people"]:
            person["joints"] = person["joints"][::-1]
    reversed_file = tmp_path / "reversed.json"
    reversed_file.write_text(json.dumps(poses))
    assert eval_pck_main(["--pred", str(reversed_file), "--gt", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == expected


def test_eval_pck_mpii_several_people_pckh(tmp_path, capsys):
    """MPII JSON: two people in x.jpg (predicted in the other order), one in y.jpg; PCKh@0.5 by default."""
    rng = np.random.default_rng(2)
    a = rng.uniform(50, 150, size=(16, 2)).round()
    b, c = a + 200, rng.uniform(50, 150, size=(16, 2)).round()
    head = [1, 1, 31, 41]  # 1-based file coordinates -> [0, 0, 30, 40]: head size 0.6 x 50 = 30, threshold 15 px

    def entry(image, joints):  # joints given 0-based; the file is 1-based
        return {"image": image, "joints": (joints + 1).tolist(), "joints_vis": [1] * 16, "center": [100, 100],
                "scale": 1.0, "head_box": head}

    gt_file = tmp_path / "mpii_val.json"
    gt_file.write_text(json.dumps([entry("x.jpg", a), entry("x.jpg", b), entry("y.jpg", c)]))

    def person(xy):
        return {"box": None, "joints": [[float(x), float(y), 1.0] for x, y in xy]}

    from cvcore.datasets import MPII_JOINTS

    pred = tmp_path / "poses.json"
    pred.write_text(json.dumps({"joint_names": list(MPII_JOINTS), "images": [
        {"file": "x.jpg", "people": [person(b + 10), person(a + [20, 0])]},  # b right (10 px), a wrong (20 px)
        {"file": "y.jpg", "people": [person(c + [0, 5])]},  # right
    ]}))
    assert eval_pck_main(["--pred", str(pred), "--gt", str(gt_file), "--format", "mpii", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["norm"] == "head" and summary["alpha"] == 0.5
    for name in MPII_JOINTS:
        if name in ("pelvis", "thorax"):
            assert summary["per_joint"][name] is None  # not scored in PCKh
        else:
            assert summary["per_joint"][name] == pytest.approx(2 / 3)
    assert summary["PCK"] == pytest.approx(2 / 3)


# ------------------------------------------------------------------------------------------------ real data


@pytest.mark.data
@pytest.mark.filterwarnings("ignore::UserWarning")  # BCCD's degenerate boxes are dropped with a warning
def test_ground_truth_as_prediction_scores_perfectly_on_real_data(shared_data, tmp_path, capsys):
    """BCCD val and 200 LSPET images: the ground truth written as a prediction file scores 100 %."""
    from cvcore.datasets import (
        ImageDetections,
        ImagePoses,
        PersonPose,
        load_detection_dataset,
        load_pose_dataset,
        write_detections,
        write_poses,
    )

    split = shared_data / "bccd" / "ImageSets" / "Main" / "val.txt"
    ds = load_detection_dataset(split)
    dets = tmp_path / "bccd.json"
    write_detections(dets, ds.classes, [ImageDetections(r.file, r.width, r.height, r.boxes, np.ones(len(r)), r.labels)
                                        for r in ds])
    assert eval_map_main(["--pred", str(dets), "--gt", str(split), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["mAP"] == pytest.approx(1.0)

    poses = load_pose_dataset(shared_data / "lspet", "lspet")
    subset = list(poses)[:200]
    pred = tmp_path / "lspet.json"
    write_poses(pred, poses.joint_names, [ImagePoses(r.file, [PersonPose(r.joints, np.ones(14))]) for r in subset])
    names = tmp_path / "subset.txt"
    names.write_text("\n".join(r.file for r in subset))
    assert eval_pck_main(["--pred", str(pred), "--gt", str(shared_data / "lspet"), "--subset", str(names),
                          "--alpha", "0.01", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["PCK"] == pytest.approx(1.0)


def test_cli_warnings_are_one_line_unless_debug():
    import warnings

    from cvcore.cli import setup_logging

    original = warnings.formatwarning
    try:
        setup_logging()
        assert warnings.formatwarning("bad box in a.xml", UserWarning, "reader.py", 7) == "warning: bad box in a.xml\n"
        setup_logging(debug=True)
        assert "reader.py:7" in warnings.formatwarning("bad box in a.xml", UserWarning, "reader.py", 7)
    finally:
        warnings.formatwarning = original
