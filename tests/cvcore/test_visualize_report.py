import json

import numpy as np

from cvcore.io import load_image
from cvcore.report import Report
from cvcore.synthetic import blood_smear
from cvcore.visualize import draw_boxes, draw_skeleton, overlay_heatmaps, plot_training_curves, save_image


def test_drawing_changes_pixels_only_where_expected(tmp_path):
    img = np.full((100, 120, 3), 128, np.uint8)
    out = draw_boxes(img, np.array([[10, 10, 50, 60]]), ["cat"], [0.9])
    assert (img == 128).all()  # input untouched
    changed = np.argwhere((out != 128).any(axis=2))
    assert changed[:, 0].min() >= 0 and changed[:, 1].max() <= 75 and changed[:, 0].max() <= 62
    sk = draw_skeleton(img, np.array([[10, 10, 1.0], [90, 80, 1.0], [5, 5, 0.0]]), [(0, 1), (1, 2)], min_score=0.5)
    assert (sk[45, 50] != 128).any()  # on the 0-1 limb
    assert (sk[2:4, 2:4] == 128).all()  # joint 2 is below min_score: neither it nor its limb is drawn
    hm = np.zeros((2, 10, 12), np.float32)
    hm[0, 5, 6] = 1
    ov = overlay_heatmaps(img, hm)
    assert ov.shape == img.shape and np.abs(ov.astype(int) - 128).sum() > 0
    p = save_image(tmp_path / "x.png", out)
    assert np.array_equal(load_image(p), out)


def test_training_curves_and_report(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / (s + 1)}) for s in range(10)))
    png = plot_training_curves({"run": log}, tmp_path / "curves.png")
    assert png.stat().st_size > 1000
    r = Report("Demo", tmp_path)
    r.heading("Results")
    r.table(["model", "mAP"], [["bccd", 0.912345]])
    r.image(png, "loss")
    md, html = r.write()
    assert "| bccd | 0.912 |" in md.read_text() and "![loss](curves.png)" in md.read_text()
    assert "<img src='curves.png'" in html.read_text()


def test_blood_smear_boxes_cover_coloured_cells():
    img, boxes, labels = blood_smear(np.random.default_rng(0))
    assert img.shape == (480, 640, 3) and len(boxes) == len(labels) > 5
    assert {"RBC"} <= set(labels)
    for b, lab in zip(boxes, labels):
        cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
        assert img[cy, cx].astype(int).sum() < 232 + 214 + 200 - 40, lab  # darker than background at the centre
