"""Matching annotated people to predicted people, and eval-pck on files with several predicted people per image."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from cvcore.datasets import LSP_JOINTS, joints_box, read_lspet, write_poses
from cvcore.evaluation.cli import eval_pck_main, evaluate_poses_file, select_joints
from cvcore.evaluation.matching import box_iou_matrix, match_people_by_box
from cvcore.evaluation.pose import PCKEvaluator


def _boxes(rng, n):
    xy = rng.uniform(0, 60, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(10, 50, (n, 2))], 1)


def _brute_force_best(iou: np.ndarray, min_iou: float) -> float:
    """Largest total IoU over all one-to-one pairings using only pairs with IoU >= min_iou."""
    p, q = iou.shape
    best = 0.0
    for k in range(min(p, q) + 1):
        for rows in itertools.combinations(range(p), k):
            for cols in itertools.permutations(range(q), k):
                if all(iou[r, c] >= min_iou for r, c in zip(rows, cols)):
                    best = max(best, sum(iou[r, c] for r, c in zip(rows, cols)))
    return best


def test_box_iou_matrix_against_torchvision():
    import torch
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    a, b = _boxes(rng, 7), _boxes(rng, 5)
    np.testing.assert_allclose(box_iou_matrix(a, b), box_iou(torch.tensor(a), torch.tensor(b)).numpy(), rtol=1e-9)


def test_match_by_box_against_brute_force():
    rng = np.random.default_rng(1)
    for trial in range(200):
        gt, pred = _boxes(rng, int(rng.integers(0, 5))), _boxes(rng, int(rng.integers(0, 5)))
        min_iou = [0.0, 0.1, 0.3, 0.5][trial % 4]
        pairing = match_people_by_box(gt, pred, min_iou)
        iou = box_iou_matrix(gt, pred)
        used = [b for b in pairing if b is not None]
        assert len(used) == len(set(used))  # never one prediction twice
        assert all(iou[a, b] >= min_iou for a, b in enumerate(pairing) if b is not None)
        total = sum(iou[a, b] for a, b in enumerate(pairing) if b is not None)
        assert total == pytest.approx(_brute_force_best(iou, min_iou), abs=1e-9)


@pytest.fixture
def crowd(tmp_path):
    """An LSPET-format folder of 4 images, one annotated person each (several annotated people per image are covered
    by the brute-force matching test above)."""
    rng = np.random.default_rng(2)
    root = tmp_path / "lspet"
    (root / "images").mkdir(parents=True)
    n = 4
    joints = np.zeros((14, 3, n))
    for i in range(n):
        Image.new("RGB", (200, 150)).save(root / "images" / f"im{i + 1:05d}.jpg")
        x0 = 20 + 90 * (i % 2)
        joints[:, 0, i] = rng.uniform(x0, x0 + 60, 14)
        joints[:, 1, i] = rng.uniform(20, 130, 14)
        joints[:, 2, i] = 1
    savemat(root / "joints.mat", {"joints": joints})
    return root


def _person(joints, box, score=None):
    return {"box": None if box is None else [float(v) for v in box],
            **({} if score is None else {"box_score": score}),
            "joints": [[float(x), float(y), 1.0] for x, y in joints]}


def test_eval_pck_matches_people_by_box(crowd, tmp_path, capsys):
    records = list(read_lspet(crowd))
    gt = [r.joints for r in records]
    boxes = [joints_box(r.joints, r.visible) for r in records]
    rng = np.random.default_rng(3)
    noisy = [g + rng.normal(0, 3, g.shape) for g in gt]
    far = [g + 60 for g in gt]
    images = [
        # image 1: the right person with a good box, a spurious person whose joints fit better but box does not
        {"file": "im00001.jpg", "people": [_person(far[0], boxes[0] + 1, 2.0), _person(gt[0], [150, 0, 199, 40])]},
        # image 2: two predictions, one box per person would match, but both lie on person 2 -> one match only
        {"file": "im00002.jpg", "people": [_person(noisy[1], boxes[1], 1.0), _person(noisy[1], boxes[1] + 2, 0.5)]},
        # image 3: nothing found
        {"file": "im00003.jpg", "people": []},
        {"file": "im00004.jpg", "people": [_person(noisy[3], boxes[3])]},
    ]
    pred = tmp_path / "poses.json"
    write_poses(pred, LSP_JOINTS, images)
    result, _ = evaluate_poses_file(str(pred), str(crowd))
    assert result["match"] == "box" and result["matched"] == 3 and result["annotated"] == 4
    # the reference: pred of each annotated person as matched by hand, unmatched = all wrong (NaN)
    ref_pred = np.stack([far[0], noisy[1], np.full((14, 2), np.nan), noisy[3]])
    ev = PCKEvaluator(LSP_JOINTS, alpha=0.2, norm="torso")
    ev.process(ref_pred, np.stack(gt), np.stack([r.visible for r in records]))
    assert result["PCK"] == pytest.approx(ev.evaluate()["PCK"])
    # by joints, the spurious person of image 1 would be chosen: the score differs, proving the rule matters
    by_joints, _ = evaluate_poses_file(str(pred), str(crowd), match="joints")
    assert by_joints["match"] == "joints" and by_joints["PCK"] > result["PCK"]
    # the CLI reports the matched count
    assert eval_pck_main(["--pred", str(pred), "--gt", str(crowd), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["matched"], summary["annotated"], summary["match"]) == (3, 4, "box")
    assert eval_pck_main(["--pred", str(pred), "--gt", str(crowd)]) == 0
    assert "people matched (box): 3 of 4" in capsys.readouterr().out


def test_eval_pck_without_boxes_falls_back_to_joints(crowd, tmp_path):
    records = list(read_lspet(crowd))
    pred = tmp_path / "poses.json"
    write_poses(pred, LSP_JOINTS, [{"file": r.file, "people": [_person(r.joints, None)]} for r in records])
    result, _ = evaluate_poses_file(str(pred), str(crowd))
    assert result["match"] == "joints" and result["matched"] == 4 and result["PCK"] == pytest.approx(1.0)
    with pytest.raises(Exception, match="match"):
        evaluate_poses_file(str(pred), str(crowd), match="nearest")


def test_eval_pck_joints_restricts_the_mean(crowd, tmp_path, capsys):
    records = list(read_lspet(crowd))
    rng = np.random.default_rng(4)
    pred = tmp_path / "poses.json"
    write_poses(pred, LSP_JOINTS, [{"file": r.file, "people": [_person(r.joints + rng.normal(0, 8, (14, 2)), None)]}
                                   for r in records])
    full, _ = evaluate_poses_file(str(pred), str(crowd))
    limbs, _ = evaluate_poses_file(str(pred), str(crowd), joints="limbs")
    assert limbs["joints"] == [n for n in LSP_JOINTS if n not in ("neck", "head_top")] and len(limbs["joints"]) == 12
    expected = np.mean([full["per_joint"][n] for n in limbs["joints"]])
    assert limbs["PCK"] == pytest.approx(expected) and limbs["PCK_all"] == pytest.approx(full["PCK"])
    two, _ = evaluate_poses_file(str(pred), str(crowd), joints="left_wrist, right_wrist")
    assert two["PCK"] == pytest.approx(np.mean([full["per_joint"]["left_wrist"], full["per_joint"]["right_wrist"]]))
    assert eval_pck_main(["--pred", str(pred), "--gt", str(crowd), "--joints", "left_wirst"]) == 2
    assert "unknown joint 'left_wirst'" in capsys.readouterr().err
    assert select_joints(LSP_JOINTS, None) == list(LSP_JOINTS)
