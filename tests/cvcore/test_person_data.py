"""Person data: the PASCAL 1.00 text reader (Penn-Fudan), person boxes from annotated joints, format detection."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cvcore.datasets import (
    DatasetError,
    DatasetWarning,
    joints_box,
    load_detection_dataset,
    person_detection_dataset,
    read_lspet,
    read_pennfudan,
    write_detections,
)
from cvcore.datasets.auto import detect_detection_format
from cvcore.evaluation.cli import eval_map_main
from cvcore.synthetic import PENNFUDAN_EXAMPLE, write_lspet_folder, write_pennfudan_folder

PEOPLE = PENNFUDAN_EXAMPLE


def write_pennfudan(root: Path) -> Path:
    return write_pennfudan_folder(root)


def test_pennfudan_reader_converts_one_based_inclusive_boxes(tmp_path):
    root = write_pennfudan(tmp_path / "pf")
    ds = read_pennfudan(root)
    assert ds.classes == ["person"] and [r.file for r in ds] == [p[0] for p in PEOPLE]
    for record, (_, (w, h), boxes) in zip(ds, PEOPLE):
        assert (record.width, record.height) == (w, h) and record.image_path.is_file() and record.exhaustive
        expected = np.array([(x1 - 1, y1 - 1, x2, y2) for x1, y1, x2, y2 in boxes], np.float32)
        np.testing.assert_array_equal(record.boxes, expected)
        assert record.labels == ["person"] * len(boxes) and not record.difficult.any()
    # a box covering the whole image, written (1, 1) - (W, H), is [0, 0, W, H]
    np.testing.assert_array_equal(ds[1].boxes[0], [0, 0, 100, 80])


def test_pennfudan_reader_on_the_original_text(tmp_path):
    """The release's own text (readme.txt's example, verbatim) and a label without the view suffix."""
    root = tmp_path / "PennFudanPed"
    (root / "Annotation").mkdir(parents=True)
    (root / "PNGImages").mkdir()
    Image.new("RGB", (559, 536)).save(root / "PNGImages" / "FudanPed00001.png")
    (root / "Annotation" / "FudanPed00001.txt").write_text(
        '# Compatible with PASCAL Annotation Version 1.00\n'
        'Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"\n'
        'Image size (X x Y x C) : 559 x 536 x 3\n'
        'Database : "The Penn-Fudan-Pedestrian Database"\n'
        'Objects with ground truth : 2 { "PASpersonWalking" "PASperson" }\n'
        '# Top left pixel co-ordinates : (1, 1)\n'
        '# Details for pedestrian 1 ("PASpersonWalking")\n'
        'Original label for object 1 "PASpersonWalking" : "PennFudanPed"\n'
        'Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)\n'
        'Pixel mask for object 1 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"\n\n'
        'Bounding box for object 2 "PASperson" (Xmin, Ymin) - (Xmax, Ymax) : (420, 171) - (535, 486)\n')
    ds = load_detection_dataset(root)  # format detected from the folder
    np.testing.assert_array_equal(ds[0].boxes, [[159, 181, 302, 431], [419, 170, 535, 486]])
    assert ds[0].labels == ["person", "person"] and ds.classes == ["person"]
    assert detect_detection_format(root) == "pennfudan"
    assert detect_detection_format(root / "Annotation") == "pennfudan"
    assert len(load_detection_dataset(root / "Annotation")) == 1  # the annotation folder itself


def test_pennfudan_reader_errors_name_the_file(tmp_path):
    root = write_pennfudan(tmp_path / "pf")
    bad = root / "Annotation" / "FudanPed00002.txt"
    text = bad.read_text()
    bad.write_text(text.replace("(Xmin, Ymin) - (Xmax, Ymax) : (1, 1) - (100, 80)", "(Xmin, Ymin) : (1, 1) - (x, 80)"))
    with pytest.raises(DatasetError, match=r"FudanPed00002\.txt: line \d+: malformed bounding box"):
        read_pennfudan(root)
    bad.write_text(text.replace("Image size (X x Y x C) : 100 x 80 x 3", ""))
    with pytest.raises(DatasetError, match=r"FudanPed00002\.txt: no 'Image size"):
        read_pennfudan(root)
    # a box leaving the image is clipped with a warning naming the file and the object ("raise": an error)
    bad.write_text(text.replace("(1, 1) - (100, 80)", "(1, 1) - (130, 80)"))
    with pytest.warns(DatasetWarning, match=r"FudanPed00002\.txt: object 1"):
        ds = read_pennfudan(root)
    np.testing.assert_array_equal(ds[1].boxes, [[0, 0, 100, 80]])
    with pytest.raises(DatasetError, match="extends outside"):
        read_pennfudan(root, on_error="raise")
    with pytest.raises(DatasetError, match="no PASCAL 1.00 text annotations"):
        read_pennfudan(tmp_path)


def test_eval_map_accepts_a_pennfudan_folder(tmp_path, capsys):
    root = write_pennfudan(tmp_path / "pf")
    ds = read_pennfudan(root)
    pred = tmp_path / "dets.json"
    images = [{"file": r.file, "width": r.width, "height": r.height,
               "detections": [{"label": "person", "score": 1.0 - 0.1 * i, "box": b.tolist()}
                              for i, b in enumerate(r.boxes)]} for r in ds]
    images[0]["detections"].append({"label": "person", "score": 0.05, "box": [0, 0, 5, 5]})  # a false positive, last
    write_detections(pred, ["person"], images)
    assert eval_map_main(["--pred", str(pred), "--gt", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["mAP"] == pytest.approx(1.0)


def test_joints_box_against_a_direct_computation():
    rng = np.random.default_rng(3)
    for _ in range(50):
        joints = rng.uniform(-20, 200, (14, 2))
        visible = rng.random(14) < 0.7
        if not visible.any():
            assert joints_box(joints, visible) is None
            continue
        box = joints_box(joints, visible, margin=1.2, min_aspect=0.3)
        pts = joints[visible]
        lo, hi = pts.min(0), pts.max(0)
        w, h = (hi - lo) * 1.2
        w, h = max(w, 0.3 * max(w, h), 1.0), max(h, 0.3 * max(w, h), 1.0)
        cx, cy = (lo + hi) / 2
        np.testing.assert_allclose(box, [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5, atol=1e-4)
        clipped = joints_box(joints, visible, margin=1.2, min_aspect=0.3, image_size=(100, 80))
        np.testing.assert_allclose(clipped, np.clip(box, 0, [100, 80, 100, 80]), atol=1e-4)
    # missing joints are ignored even when their coordinates are NaN
    joints = np.array([[10, 10], [30, 50], [np.nan, np.nan]], np.float64)
    np.testing.assert_allclose(joints_box(joints, np.array([True, True, True]), margin=1.0, min_aspect=0),
                               [10, 10, 30, 50])


def test_person_boxes_of_a_pose_dataset(lspet_folder):
    poses = read_lspet(lspet_folder)
    ds = person_detection_dataset(poses, margin=1.15, min_visible=10)
    assert ds.classes == ["person"] and len(ds) == len(poses)
    assert load_detection_dataset(lspet_folder).classes == ["person"]
    assert detect_detection_format(lspet_folder) == "poses"
    for det, pose in zip(ds, poses):
        assert not det.exhaustive and det.file == pose.file and det.labels == ["person"]
        w, h = Image.open(pose.image_path).size
        assert (det.width, det.height) == (w, h)
        np.testing.assert_allclose(det.boxes[0], joints_box(pose.joints, pose.visible, 1.15, image_size=(w, h)))
        assert det.difficult[0] == (pose.visible.sum() < 10)


@pytest.fixture
def lspet_folder(tmp_path) -> Path:
    return write_lspet_folder(tmp_path / "lspet", n=6, seed=1, visible=(0.95, 0.5))


def test_real_pennfudan_counts(shared_data):
    root = shared_data / "pennfudan"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DatasetWarning)  # every released box lies inside its image
        ds = read_pennfudan(root)
    # ../shared/data/README.md: 128 images, 312 people
    assert len(ds) == 128 and sum(len(r) for r in ds) == 312 and ds.classes == ["person"]
    for r in ds[:5]:
        assert Image.open(r.image_path).size == (r.width, r.height)
