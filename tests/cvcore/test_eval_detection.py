"""PASCAL VOC AP / mAP against the REFERENCE.md toy vector, a brute-force devkit-style matcher and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvcore.evaluation import (
    DetectionEvaluator,
    eval_detections,
    f1_threshold,
    match_detections,
    plot_pr_curves,
    precision_recall,
    voc_ap,
)

# --------------------------------------------------------------------------------------------- reference code


def _iou_ref(a, b):
    """IoU of two xyxy boxes, no "+1", by hand."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_class_ap(dets, gts, iou_thr):
    """The VOC devkit's voc_eval loop for one class, literally: dets = [(image, score, box)], gts = {image: [(box,
    difficult)]}. Returns (tp list, fp list in score order, npos, ap07, ap12)."""
    npos = sum(1 for boxes in gts.values() for _, d in boxes if not d)
    dets = sorted(dets, key=lambda d: -d[1])  # scores are distinct in these tests
    detected = {img: [False] * len(b) for img, b in gts.items()}
    tp, fp = [], []
    for img, _, box in dets:
        best, best_j = -math.inf, -1
        for j, (g, _) in enumerate(gts.get(img, [])):
            o = _iou_ref(box, g)
            if o > best:
                best, best_j = o, j
        if best >= iou_thr:
            if gts[img][best_j][1]:
                tp.append(0)
                fp.append(0)
            elif not detected[img][best_j]:
                detected[img][best_j] = True
                tp.append(1)
                fp.append(0)
            else:
                tp.append(0)
                fp.append(1)
        else:
            tp.append(0)
            fp.append(1)
    # precision / recall after each detection (ignored ones kept, as the devkit does)
    ctp = cfp = 0
    rec, prec = [], []
    for t, f in zip(tp, fp):
        ctp += t
        cfp += f
        rec.append(ctp / npos if npos else float("nan"))
        prec.append(ctp / max(ctp + cfp, 1e-300) if ctp + cfp else 0.0)
    # 11-point: for t = 0, 0.1, ..., 1 the max precision at recall >= t
    ap07 = 0.0
    for i in range(11):
        t = i / 10
        ps = [p for r, p in zip(rec, prec) if r >= t]
        ap07 += (max(ps) if ps else 0.0) / 11
    # all-point, written per true positive: each TP adds 1/npos recall at the best precision from its rank onwards
    ap12 = 0.0
    for k, t in enumerate(tp):
        if t:
            ap12 += max(prec[k:]) / npos
    return tp, fp, npos, ap07, ap12


def _random_case(rng, num_images=6, classes=("a", "b", "c")):
    """Random ground truth; detections = jittered copies (some duplicated) + random clutter."""
    gts, preds = [], []
    for _ in range(num_images):
        m = int(rng.integers(0, 6))
        xy = rng.uniform(0, 80, size=(m, 2))
        wh = rng.uniform(8, 40, size=(m, 2))
        g_boxes = np.concatenate([xy, xy + wh], axis=1)
        g_labels = [classes[i] for i in rng.integers(0, len(classes), m)]
        g_diff = rng.random(m) < 0.2
        gts.append({"boxes": g_boxes, "labels": g_labels, "difficult": g_diff})
        p_boxes, p_labels = [], []
        for box, label in zip(g_boxes, g_labels):
            for _ in range(int(rng.integers(0, 3))):  # 0, 1 or 2 detections (a duplicate) per object
                p_boxes.append(box + rng.normal(0, 4, size=4))
                p_labels.append(label if rng.random() < 0.85 else classes[int(rng.integers(0, len(classes)))])
        for _ in range(int(rng.integers(0, 5))):
            xy = rng.uniform(0, 80, size=2)
            p_boxes.append(np.concatenate([xy, xy + rng.uniform(8, 40, size=2)]))
            p_labels.append(classes[int(rng.integers(0, len(classes)))])
        p_boxes = np.array(p_boxes).reshape(-1, 4)
        p_boxes[:, 2:] = np.maximum(p_boxes[:, 2:], p_boxes[:, :2] + 1)
        preds.append({"boxes": p_boxes, "scores": rng.random(len(p_boxes)), "labels": p_labels})
    return preds, gts


def _per_class_inputs(preds, gts, cls):
    dets = [(i, s, b) for i, p in enumerate(preds) for b, s, lab in zip(p["boxes"], p["scores"], p["labels"])
            if lab == cls]
    gt = {}
    for i, g in enumerate(gts):
        boxes = [(b, d) for b, lab, d in zip(g["boxes"], g["labels"], g["difficult"]) if lab == cls]
        if boxes:
            gt[i] = boxes
    return dets, gt


# ---------------------------------------------------------------------------------------------------- voc_ap


TOY_TP = np.array([1, 0, 1, 1, 0], dtype=bool)  # REFERENCE.md: [TP, FP, TP, TP, FP], 4 positives


def test_toy_vector_voc_ap():
    rec, prec = precision_recall(TOY_TP, ~TOY_TP, 4)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(0.6136363636, abs=1e-9)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.625, abs=1e-12)


def test_eleven_point_includes_recall_exactly_point_three():
    # 3 TPs of 10 positives reach recall 3/10 == 0.3 exactly; np.arange(0, 1.1, 0.1)[3] = 0.30000000000000004 would
    # miss it and give 3/11 instead of 4/11.
    tp = np.array([1, 1, 1, 0, 0], dtype=bool)
    rec, prec = precision_recall(tp, ~tp, 10)
    assert rec[2] == 0.3
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(4 / 11, abs=1e-12)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(0.3, abs=1e-12)


def test_voc_ap_edge_cases():
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0
    # perfect detector
    rec, prec = precision_recall(np.ones(3, bool), np.zeros(3, bool), 3)
    assert voc_ap(rec, prec, True) == pytest.approx(1.0)
    assert voc_ap(rec, prec, False) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        voc_ap(np.zeros(2), np.zeros(3))


# ---------------------------------------------------------------------------------------------- eval_detections


def _toy_scene():
    """Boxes that produce the toy vector [TP, FP, TP, TP, FP] for class "cat" with 4 positives."""
    g = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], dtype=float)
    gts = [{"boxes": g[:2], "labels": ["cat", "cat"]}, {"boxes": g[2:], "labels": ["cat", "cat"]}]
    preds = [
        {"boxes": np.array([[0, 0, 10, 10], [100, 100, 110, 110], [20, 20, 30, 31]], dtype=float),
         "scores": np.array([0.9, 0.8, 0.7]), "labels": ["cat"] * 3},
        {"boxes": np.array([[40, 40, 50, 50], [0, 0, 5, 5]], dtype=float),
         "scores": np.array([0.6, 0.5]), "labels": ["cat", "cat"]},
    ]
    return preds, gts


@pytest.mark.parametrize("metric, expected", [("voc07", 0.6136363636), ("voc12", 0.625)])
def test_toy_vector_eval_detections(metric, expected):
    preds, gts = _toy_scene()
    result = eval_detections(preds, gts, ["cat"], metric=metric)
    assert result["AP"]["cat"] == pytest.approx(expected, abs=1e-9)
    assert result["mAP"] == pytest.approx(expected, abs=1e-9)
    rec, prec = result["pr"]["cat"]
    np.testing.assert_allclose(rec, [0.25, 0.25, 0.5, 0.75, 0.75])  # [20,20,30,31] hits gt 2 at IoU 100/110
    np.testing.assert_allclose(prec, [1, 0.5, 2 / 3, 0.75, 0.6])
    assert result["num_positives"]["cat"] == 4


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("iou_thr", [0.3, 0.5, 0.7])
def test_against_bruteforce_devkit(seed, iou_thr):
    rng = np.random.default_rng(seed)
    classes = ("a", "b", "c")
    preds, gts = _random_case(rng, num_images=int(rng.integers(1, 9)), classes=classes)
    r07 = eval_detections(preds, gts, classes, iou_thr=iou_thr, metric="voc07")
    r12 = eval_detections(preds, gts, classes, iou_thr=iou_thr, metric="voc12")
    means07, means12 = [], []
    for cls in classes:
        dets, gt = _per_class_inputs(preds, gts, cls)
        tp_ref, fp_ref, npos, ap07, ap12 = _reference_class_ap(dets, gt, iou_thr)

        order, tp, fp, npos_ours = match_detections(
            np.array([d[2] for d in dets]).reshape(-1, 4), np.array([d[1] for d in dets]), [d[0] for d in dets],
            {k: np.array([b for b, _ in v]) for k, v in gt.items()},
            {k: np.array([d for _, d in v]) for k, v in gt.items()}, iou_thr)
        assert npos_ours == npos
        np.testing.assert_array_equal(tp, np.array(tp_ref, bool))
        np.testing.assert_array_equal(fp, np.array(fp_ref, bool))
        if npos == 0:
            assert math.isnan(r07["AP"][cls]) and math.isnan(r12["AP"][cls])
            continue
        assert r07["AP"][cls] == pytest.approx(ap07, abs=1e-12)
        assert r12["AP"][cls] == pytest.approx(ap12, abs=1e-12)
        means07.append(ap07)
        means12.append(ap12)
    if means07:
        assert r07["mAP"] == pytest.approx(np.mean(means07), abs=1e-12)
        assert r12["mAP"] == pytest.approx(np.mean(means12), abs=1e-12)


def _f1_bruteforce(preds, gts, classes, thr, iou_thr=0.5):
    """Micro F1 of the detections with score >= thr, each class matched by the devkit loop."""
    tp = dets = npos = 0
    for cls in classes:
        d, g = _per_class_inputs(preds, gts, cls)
        tp_ref, fp_ref, n, _, _ = _reference_class_ap([x for x in d if x[1] >= thr], g, iou_thr)
        tp, dets, npos = tp + sum(tp_ref), dets + sum(tp_ref) + sum(fp_ref), npos + n
    return 2 * tp / (dets + npos) if dets + npos else 0.0


@pytest.mark.parametrize("seed", range(8))
def test_f1_threshold_against_bruteforce(seed):
    rng = np.random.default_rng(100 + seed)
    classes = ("a", "b", "c")
    preds, gts = _random_case(rng, num_images=int(rng.integers(2, 9)), classes=classes)
    if seed % 2:  # tied scores: a threshold keeps every detection of its score
        for p in preds:
            p["scores"] = np.round(np.asarray(p["scores"]) * 4) / 4
    thr, f1 = f1_threshold(eval_detections(preds, gts, classes))
    candidates = {float(s) for p in preds for s in np.asarray(p["scores"]).reshape(-1)}
    best = max(_f1_bruteforce(preds, gts, classes, t) for t in candidates) if candidates else 0.0
    assert f1 == pytest.approx(best, abs=1e-12)
    if candidates:
        assert _f1_bruteforce(preds, gts, classes, thr) == pytest.approx(f1, abs=1e-12)


def test_difficult_boxes_are_ignored_not_counted():
    gts = [{"boxes": np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), "labels": ["a", "a"],
            "difficult": np.array([False, True])}]
    preds = [{"boxes": np.array([[50, 50, 60, 60], [0, 0, 10, 10]], float), "scores": np.array([0.9, 0.8]),
              "labels": ["a", "a"]}]
    result = eval_detections(preds, gts, ["a"], metric="voc12")
    assert result["num_positives"]["a"] == 1
    assert result["AP"]["a"] == pytest.approx(1.0)  # the hit on the difficult box is neither TP nor FP
    # the same scene without the flag: the first detection is a TP, the second too, but 2 positives exist -> 1.0;
    # with the flag but no detection on the normal box, recall stays 0
    result = eval_detections([{"boxes": preds[0]["boxes"][:1], "scores": [0.9], "labels": ["a"]}], gts, ["a"])
    assert result["AP"]["a"] == 0.0
    assert len(result["pr"]["a"][0]) == 0  # the only detection was ignored


def test_duplicates_are_false_positives():
    gts = [{"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float), "labels": ["a", "a"]}]
    preds = [{"boxes": np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 0, 30, 10]], float),
              "scores": np.array([0.9, 0.8, 0.7]), "labels": ["a", "a", "a"]}]
    result = eval_detections(preds, gts, ["a"], metric="voc12")
    rec, prec = result["pr"]["a"]
    np.testing.assert_allclose(rec, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 2 / 3])
    assert result["AP"]["a"] == pytest.approx(0.5 * 1.0 + 0.5 * 2 / 3)


def test_best_iou_box_taken_even_when_already_matched():
    # the second detection overlaps the matched box A best (IoU 0.9) and box B less (IoU >= 0.5): the devkit does not
    # fall back to B, it is a duplicate (FP)
    gts = [{"boxes": np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float), "labels": ["a", "a"]}]
    preds = [{"boxes": np.array([[0, 0, 10, 10], [0.5, 0, 10.5, 10]], float), "scores": np.array([0.9, 0.8]),
              "labels": ["a", "a"]}]
    _, tp, fp, _ = match_detections(preds[0]["boxes"], preds[0]["scores"], [0, 0], {0: gts[0]["boxes"]}, None, 0.5)
    np.testing.assert_array_equal(tp, [True, False])
    np.testing.assert_array_equal(fp, [False, True])


def test_iou_threshold_inclusive_and_no_plus_one():
    gt = {0: np.array([[0.0, 0.0, 10.0, 10.0]])}
    # IoU exactly 0.5 (no +1 widths: 50 / 100) -> TP; a hair less -> FP
    _, tp, _, _ = match_detections(np.array([[0, 0, 10, 5.0]]), [1.0], [0], gt, None, 0.5)
    assert tp.tolist() == [True]
    _, tp, _, _ = match_detections(np.array([[0, 0, 10, 5.0 - 1e-5]]), [1.0], [0], gt, None, 0.5)
    assert tp.tolist() == [False]
    # [5, 0, 15, 10] vs [0, 0, 10, 10]: IoU 50 / 150 = 1/3 without "+1" (with "+1" it would be 66/176 = 0.375)
    _, tp, _, _ = match_detections(np.array([[5, 0, 15, 10.0]]), [1.0], [0], gt, None, 1 / 3)
    assert tp.tolist() == [True]
    _, tp, _, _ = match_detections(np.array([[5, 0, 15, 10.0]]), [1.0], [0], gt, None, 1 / 3 + 1e-9)
    assert tp.tolist() == [False]


def test_zero_area_boxes():
    # a zero-area ground-truth box does not disturb a real match; an empty detection on it (IoU 0/0) is no match
    gt = {0: np.array([[5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]])}
    _, tp, _, _ = match_detections(np.array([[0.0, 0.0, 10.0, 10.0]]), [1.0], [0], gt, None, 0.5)
    assert tp.tolist() == [True]
    _, tp, fp, _ = match_detections(np.array([[5.0, 5.0, 5.0, 5.0]]), [1.0], [0], gt, None, 0.5)
    assert tp.tolist() == [False] and fp.tolist() == [True]


def test_wrong_image_or_class_is_a_miss():
    gts = [{"boxes": np.array([[0, 0, 10, 10]], float), "labels": ["a"]}, {"boxes": np.zeros((0, 4)), "labels": []}]
    preds = [{"boxes": np.array([[0, 0, 10, 10]], float), "scores": [0.5], "labels": ["b"]},
             {"boxes": np.array([[0, 0, 10, 10]], float), "scores": [0.9], "labels": ["a"]}]
    result = eval_detections(preds, gts, ["a", "b"])
    assert result["AP"]["a"] == 0.0  # right box, wrong image
    assert math.isnan(result["AP"]["b"])  # no ground truth of b: undefined, left out of the mean
    assert result["mAP"] == 0.0


def test_class_without_ground_truth_excluded_from_mean():
    preds, gts = _toy_scene()
    result = eval_detections(preds, gts, ["cat", "dog"], metric="voc12")
    assert math.isnan(result["AP"]["dog"])
    assert result["mAP"] == pytest.approx(0.625)
    empty = eval_detections([{"boxes": [], "scores": [], "labels": []}], [{"boxes": [], "labels": []}], ["x"])
    assert math.isnan(empty["mAP"])


def test_integer_labels_and_errors():
    preds, gts = _toy_scene()
    as_int = [dict(p, labels=[0] * len(p["labels"])) for p in preds]
    assert eval_detections(as_int, gts, ["cat"])["mAP"] == pytest.approx(0.6136363636)
    with pytest.raises(ValueError, match="not among the classes"):
        eval_detections(preds, gts, ["dog"])
    with pytest.raises(ValueError, match="metric"):
        eval_detections(preds, gts, ["cat"], metric="coco")
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        eval_detections([{"boxes": np.zeros((1, 3)), "scores": [1], "labels": ["cat"]}], gts[:1], ["cat"])


def test_evaluator_batches_equal_one_call_and_reset():
    rng = np.random.default_rng(7)
    preds, gts = _random_case(rng, num_images=8)
    whole = eval_detections(preds, gts, ["a", "b", "c"], metric="voc12")
    ev = DetectionEvaluator(["a", "b", "c"], metric="voc12")
    ev.process(preds[:3], gts[:3])
    ev.process(preds[3:], gts[3:])
    result = ev.evaluate()
    for c in "abc":
        assert result["AP"][c] == pytest.approx(whole["AP"][c], nan_ok=True)
    ev.reset()
    ev.process(preds[:1], gts[:1])
    assert ev.evaluate()["num_positives"] == eval_detections(preds[:1], gts[:1], ["a", "b", "c"])["num_positives"]


def test_records_with_attributes_are_accepted():
    from types import SimpleNamespace

    preds, gts = _toy_scene()
    records = [SimpleNamespace(boxes=g["boxes"].astype(np.float32), labels=g["labels"],
                               difficult=np.zeros(len(g["labels"]), bool)) for g in gts]
    assert eval_detections(preds, records, ["cat"], metric="voc12")["mAP"] == pytest.approx(0.625)


def test_plot_pr_curves_writes_png(tmp_path):
    preds, gts = _toy_scene()
    result = eval_detections(preds, gts, ["cat", "dog"])
    path = plot_pr_curves(result, tmp_path / "sub" / "pr.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
