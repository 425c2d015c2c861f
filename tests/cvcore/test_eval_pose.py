"""PCK against the mmpose public vectors (REFERENCE.md), a brute-force loop, normalisers, AUC and the evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvcore.evaluation import (
    PCKEvaluator,
    bbox_normaliser,
    head_normaliser,
    joint_index,
    left_right_confusion,
    pck,
    pck_auc,
    pck_curve,
    plot_pck_curve,
    pooled_parts,
    torso_normaliser,
)

LSP_NAMES = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
             "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top"]


def _mmpose_case():
    """mmpose tests/test_evaluation/test_functional/test_keypoint_eval.py::test_keypoint_pck_accuracy."""
    output = np.zeros((2, 5, 2))
    target = np.zeros((2, 5, 2))
    mask = np.array([[True, True, False, True, True], [True, True, False, True, True]])
    output[0, 0], target[0, 0] = [10, 0], [10, 0]
    output[0, 1], target[0, 1] = [20, 20], [10, 10]
    output[0, 2], target[0, 2] = [0, 0], [-1, 0]
    output[0, 3], target[0, 3] = [30, 30], [30, 30]
    output[0, 4], target[0, 4] = [0, 10], [0, 10]
    return output, target, mask


def _bruteforce_pck(pred, gt, mask, thr, norm):
    """Straight loops: per joint, count valid samples and hits."""
    n, k, _ = gt.shape
    acc = []
    for j in range(k):
        hits = total = 0
        for i in range(n):
            if not mask[i, j] or not (norm[i] > 0) or not np.isfinite(norm[i]) or not np.isfinite(gt[i, j]).all():
                continue
            total += 1
            d = math.hypot(pred[i, j, 0] - gt[i, j, 0], pred[i, j, 1] - gt[i, j, 1])
            hits += int(np.isfinite(d) and d <= thr * norm[i])
        acc.append(hits / total if total else -1.0)
    valid = [a for a in acc if a >= 0]
    return np.array(acc), (sum(valid) / len(valid) if valid else 0.0)


def test_mmpose_public_vector():
    output, target, mask = _mmpose_case()
    per_joint, mean, counts = pck(output, target, mask, 0.5, np.full(2, 10.0))
    np.testing.assert_allclose(per_joint, [1, 0.5, -1, 1, 1], atol=1e-6)
    assert mean == pytest.approx(0.875, abs=1e-6)
    np.testing.assert_array_equal(counts, [2, 2, 0, 2, 2])
    assert int((counts > 0).sum()) == 4  # mmpose's `cnt`


def test_all_zero_normaliser_gives_all_minus_one_and_mean_zero():
    output, target, mask = _mmpose_case()
    per_joint, mean, counts = pck(output, target, mask, 0.5, np.zeros(2))
    np.testing.assert_array_equal(per_joint, [-1, -1, -1, -1, -1])
    assert mean == 0.0
    assert counts.sum() == 0


@pytest.mark.parametrize("seed", range(8))
def test_against_bruteforce(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 30)), int(rng.integers(1, 10))
    gt = rng.uniform(0, 200, size=(n, k, 2))
    pred = gt + rng.normal(0, 15, size=(n, k, 2))
    pred[rng.random((n, k)) < 0.1] = np.nan  # missing predictions count as wrong
    mask = rng.random((n, k)) < 0.8
    gt[~mask & (rng.random((n, k)) < 0.5)] = np.nan  # unannotated joints may carry garbage
    norm = rng.uniform(20, 80, size=n)
    norm[rng.random(n) < 0.15] = 0.0
    norm[rng.random(n) < 0.1] = np.nan
    for thr in (0.05, 0.1, 0.2, 0.5):
        per_joint, mean, _ = pck(pred, gt, mask, thr, norm)
        ref_joint, ref_mean = _bruteforce_pck(pred, gt, mask, thr, norm)
        np.testing.assert_allclose(per_joint, ref_joint, atol=1e-12)
        assert mean == pytest.approx(ref_mean, abs=1e-12)


def test_threshold_is_inclusive_and_missing_joints():
    gt = np.array([[[0.0, 0.0], [10.0, 10.0], [0.0, 0.0]]])
    pred = np.array([[[2.0, 0.0], [np.nan, np.nan], [-5.0, -5.0]]])
    # distance 2 == 0.2 * 10 exactly -> correct; NaN prediction -> wrong; the third joint is not annotated
    per_joint, mean, counts = pck(pred, gt, np.array([[True, True, False]]), 0.2, np.array([10.0]))
    np.testing.assert_array_equal(per_joint, [1.0, 0.0, -1.0])
    assert mean == 0.5
    np.testing.assert_array_equal(counts, [1, 1, 0])
    per_joint, _, _ = pck(pred, gt, np.array([[True, True, False]]), 0.2 - 1e-9, np.array([10.0]))
    assert per_joint[0] == 0.0


def test_shape_errors():
    with pytest.raises(ValueError, match="pred and gt"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 3, 2)), np.ones((1, 2), bool), 0.2, np.ones(1))
    with pytest.raises(ValueError, match="mask"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((2, 2), bool), 0.2, np.ones(1))
    with pytest.raises(ValueError, match="norm"):
        pck(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((1, 2), bool), 0.2, np.ones(3))


# ------------------------------------------------------------------------------------------------- normalisers


def test_torso_normaliser_by_name_and_index():
    gt = np.zeros((2, 14, 2))
    gt[:, 9] = [[10, 10], [0, 0]]  # left shoulder
    gt[:, 2] = [[13, 14], [6, 8]]  # right hip
    mask = np.ones((2, 14), bool)
    np.testing.assert_allclose(torso_normaliser(gt, mask, joint_names=LSP_NAMES), [5.0, 10.0])
    np.testing.assert_allclose(torso_normaliser(gt, mask, 9, 2), [5.0, 10.0])
    mask[1, 2] = False  # missing right hip -> no normaliser -> the sample is left out
    norm = torso_normaliser(gt, mask, joint_names=LSP_NAMES)
    assert norm[0] == 5.0 and np.isnan(norm[1])
    pred = gt + 100.0
    per_joint, _, counts = pck(pred, gt, mask, 0.2, norm)
    assert counts.max() == 1  # only the first sample counts
    with pytest.raises(ValueError, match="left_shoulder"):
        torso_normaliser(gt, mask, joint_names=["a"] * 14)


def test_joint_index_aliases():
    assert joint_index(LSP_NAMES, "left_shoulder") == 9
    assert joint_index(["Left Shoulder", "Right Hip"], "left_shoulder") == 0
    assert joint_index(["lsho", "rhip"], "right_hip") == 1


def test_bbox_normaliser():
    gt = np.array([[[0, 0], [30, 10], [5, 40]], [[1, 1], [2, 2], [3, 3]]], dtype=float)
    mask = np.array([[True, True, False], [True, False, False]])
    norm = bbox_normaliser(gt, mask)
    assert norm[0] == 30.0  # visible joints span 30 x 10
    assert norm[1] == 0.0  # a single joint: zero size, excluded from PCK
    boxes = np.array([[0, 0, 20, 50], [np.nan] * 4])
    np.testing.assert_allclose(bbox_normaliser(gt, mask, boxes), [50.0, 0.0])
    all_missing = bbox_normaliser(gt, np.zeros_like(mask))
    assert np.isnan(all_missing).all()


def test_head_normaliser():
    np.testing.assert_allclose(head_normaliser(np.array([[0, 0, 30, 40], [10, 10, 16, 18]])), [30.0, 6.0])


# ------------------------------------------------------------------------------------------------------- AUC


def test_auc_perfect_and_closed_form():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, size=(2000, 1, 2))
    mask = np.ones((2000, 1), bool)
    norm = np.full(2000, 100.0)
    assert pck_auc(gt.copy(), gt, mask, norm) == pytest.approx(1.0)
    # normalised errors spread evenly over [0, 0.2] -> PCK(alpha) = alpha / 0.2 on [0, 0.2] -> AUC 0.5
    d = (np.arange(2000) + 0.5) / 2000 * 0.2 * 100.0
    angle = rng.uniform(0, 2 * np.pi, 2000)
    pred = gt + np.stack([d * np.cos(angle), d * np.sin(angle)], axis=-1)[:, None]
    alphas = np.linspace(0, 0.2, 201)
    assert pck_auc(pred, gt, mask, norm, alphas) == pytest.approx(0.5, abs=2e-3)
    # errors of exactly 0.3: PCK is 0 up to alpha 0.3, then 1 -> AUC over [0, 0.4] (trapezoid on a 0.1 grid) = 0.375
    gt = np.round(gt)  # integer coordinates keep the distance exactly 30 = 0.3 x 100
    pred = gt + np.array([30.0, 0.0])
    assert pck_auc(pred, gt, mask, norm, [0.0, 0.1, 0.2, 0.3, 0.4]) == pytest.approx((0.5 + 1) * 0.1 / 0.4)


def test_auc_matches_trapezoid_of_pck():
    rng = np.random.default_rng(3)
    gt = rng.uniform(0, 100, size=(40, 6, 2))
    pred = gt + rng.normal(0, 8, size=gt.shape)
    mask = rng.random((40, 6)) < 0.9
    norm = rng.uniform(30, 60, size=40)
    alphas = [0.0, 0.05, 0.1, 0.2, 0.35, 0.5]
    means = [pck(pred, gt, mask, a, norm)[1] for a in alphas]
    expected = np.trapezoid(means, alphas) / 0.5 if hasattr(np, "trapezoid") else np.trapz(means, alphas) / 0.5
    assert pck_auc(pred, gt, mask, norm, alphas) == pytest.approx(expected, abs=1e-12)
    got_alphas, curve, per_joint = pck_curve(pred, gt, mask, norm, alphas)
    np.testing.assert_allclose(curve, means)
    assert per_joint.shape == (6, 6)
    assert np.all(np.diff(curve) >= 0)  # PCK grows with alpha
    with pytest.raises(ValueError):
        pck_auc(pred, gt, mask, norm, [0.2])


# ------------------------------------------------------------------------------------------------- evaluator


def _lsp_batch(rng, n):
    gt = rng.uniform(0, 200, size=(n, 14, 2))
    mask = rng.random((n, 14)) < 0.85
    pred = gt + rng.normal(0, 10, size=gt.shape)
    return pred, gt, mask


def test_evaluator_torso_matches_functions_and_batches():
    rng = np.random.default_rng(5)
    pred, gt, mask = _lsp_batch(rng, 30)
    ev = PCKEvaluator(LSP_NAMES, alpha=0.2, norm="torso")
    ev.process(pred[:10], gt[:10], mask[:10])
    ev.process(pred[10:], gt[10:], mask[10:])
    result = ev.evaluate()
    norm = torso_normaliser(gt, mask, joint_names=LSP_NAMES)
    per_joint, mean, counts = pck(pred, gt, mask, 0.2, norm)
    assert result["PCK"] == pytest.approx(mean)
    for name, a, c in zip(LSP_NAMES, per_joint, counts):
        assert result["per_joint"][name] == (pytest.approx(a) if c else None)
        assert result["counts"][name] == c
    assert result["num_excluded"] == int(np.sum(~np.isfinite(norm)))
    # left / right pooled over both sides' valid samples
    correct = np.linalg.norm(pred - gt, axis=-1) <= 0.2 * norm[:, None]
    valid = mask & np.isfinite(norm)[:, None]
    idx = [LSP_NAMES.index("left_wrist"), LSP_NAMES.index("right_wrist")]
    assert result["per_part"]["wrist"] == pytest.approx((correct & valid)[:, idx].sum() / valid[:, idx].sum())
    assert result["AUC"] == pytest.approx(pck_auc(pred, gt, mask, norm))
    ev.reset()
    ev.process(pred[:1], gt[:1], mask[:1])
    assert ev.evaluate()["num_samples"] == 1


def test_evaluator_bbox_and_head():
    rng = np.random.default_rng(6)
    pred, gt, mask = _lsp_batch(rng, 12)
    boxes = np.tile([0.0, 0.0, 100.0, 50.0], (12, 1))
    ev = PCKEvaluator(LSP_NAMES, alpha=0.1, norm="bbox")
    ev.process(pred, gt, mask, boxes=boxes)
    assert ev.evaluate()["PCK"] == pytest.approx(pck(pred, gt, mask, 0.1, np.full(12, 100.0))[1])
    ev = PCKEvaluator(LSP_NAMES, alpha=0.5, norm="head")
    with pytest.raises(ValueError, match="head boxes"):
        ev.process(pred, gt, mask)
    ev.process(pred, gt, mask, head_boxes=np.tile([0.0, 0.0, 30.0, 40.0], (12, 1)))
    assert ev.evaluate()["PCK"] == pytest.approx(pck(pred, gt, mask, 0.5, np.full(12, 30.0))[1])
    with pytest.raises(ValueError, match="normaliser"):
        PCKEvaluator(LSP_NAMES, norm="elbow")


def test_pooled_parts_lsp():
    parts = pooled_parts(LSP_NAMES)
    assert parts["shoulder"] == [8, 9] and parts["ankle"] == [0, 5]
    assert parts["neck"] == [12] and parts["head_top"] == [13]


def test_plot_pck_curve_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    pred, gt, mask = _lsp_batch(rng, 5)
    alphas, mean, per_joint = pck_curve(pred, gt, mask, np.full(5, 50.0))
    path = plot_pck_curve(alphas, mean, tmp_path / "pck.png", per_joint, LSP_NAMES, "torso")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("seed", range(4))
def test_left_right_confusion_against_bruteforce(seed):
    from cvcore.datasets import LSP_FLIP_PAIRS

    rng = np.random.default_rng(seed)
    n, k, thr = 40, 14, 0.2
    mirror = list(range(k))
    for a, b in LSP_FLIP_PAIRS:
        mirror[a], mirror[b] = b, a
    gt = rng.uniform(0, 200, (n, k, 2))
    mask = rng.random((n, k)) > 0.15
    norm = rng.uniform(60, 120, n)
    norm[0] = np.nan  # no normaliser: left out
    pred = gt + rng.normal(0, 8, (n, k, 2))
    pred[:12] = pred[:12][:, mirror]  # whole people with left and right exchanged
    pred[12:20, 3] += 300  # far misses
    r = left_right_confusion(pred, gt, mask, thr, norm, LSP_FLIP_PAIRS)

    def hit(p, i, j):
        return np.linalg.norm(p - gt[i, j]) <= thr * norm[i]

    misses = mirrored = total = right = best = better = 0
    for i in range(1, n):
        for j in range(k):
            if mask[i, j] and not hit(pred[i, j], i, j):
                misses += 1
                m = mirror[j]
                mirrored += m != j and mask[i, m] and hit(pred[i, j], i, m)
        as_is = sum(mask[i, j] and hit(pred[i, j], i, j) for j in range(k))
        swapped = sum(mask[i, j] and hit(pred[i, mirror[j]], i, j) for j in range(k))
        total, right, best, better = total + mask[i].sum(), right + as_is, best + max(as_is, swapped), better + (
            swapped > as_is)
    assert r["mirrored_misses"] == pytest.approx(mirrored / misses)
    assert r["people_better_mirrored"] == better and better >= 9  # most of the 12 exchanged people
    assert r["pooled_pck"] == pytest.approx(right / total)
    assert r["pooled_pck_best_orientation"] == pytest.approx(best / total) and best > right
