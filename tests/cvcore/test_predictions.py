"""Prediction files: exact round trips, the documented JSON layout, COCO export, and validation errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cvcore.datasets import (
    ImageDetections,
    ImagePoses,
    PersonPose,
    PredictionFileError,
    detections_to_coco,
    read_detections,
    read_poses,
    write_coco_results,
    write_detections,
    write_poses,
)

CLASSES = ["RBC", "WBC", "Platelets"]


def random_detections(seed: int = 0) -> list[ImageDetections]:
    rng = np.random.default_rng(seed)
    images = []
    for i, n in enumerate([5, 0, 3]):
        xy = rng.uniform(0, 500, size=(n, 2)).astype(np.float32)
        wh = rng.uniform(0, 100, size=(n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        scores = rng.normal(size=n).astype(np.float32)  # SVM scores can be negative
        labels = [CLASSES[k] for k in rng.integers(0, 3, size=n)]
        images.append(ImageDetections(f"dir/img_{i}.jpg", 640, 480, boxes, scores, labels))
    return images


def test_detections_round_trip_exactly(tmp_path):
    images = random_detections()
    path = write_detections(tmp_path / "out" / "detections.json", CLASSES, images)
    classes, read = read_detections(path)
    assert classes == CLASSES and list(read) == [im.file for im in images]
    for im in images:
        got = read[im.file]
        assert (got.width, got.height, got.labels) == (im.width, im.height, im.labels)
        assert got.boxes.dtype == np.float32 and got.scores.dtype == np.float32
        np.testing.assert_array_equal(got.boxes, im.boxes)  # bit-exact float32
        np.testing.assert_array_equal(got.scores, im.scores)
    assert [p.name for p in path.parent.iterdir()] == ["detections.json"]  # no temp files left behind


def test_detections_file_layout_is_the_documented_one(tmp_path):
    box = np.array([[1.5, 2.25, 30.0, 40.125]], np.float32)
    image = ImageDetections("a.jpg", 64, 48, box, np.array([0.1], np.float32), ["WBC"])
    path = write_detections(tmp_path / "d.json", CLASSES, [image, ImageDetections("b.jpg", 10, 20)])
    assert json.loads(path.read_text()) == {
        "classes": CLASSES,
        "images": [
            {"file": "a.jpg", "width": 64, "height": 48,
             "detections": [{"label": "WBC", "score": 0.1, "box": [1.5, 2.25, 30.0, 40.125]}]},
            {"file": "b.jpg", "width": 10, "height": 20, "detections": []},
        ],
    }
    assert "0.1," in path.read_text()  # shortest float32 text, not 0.10000000149011612
    # plain dicts in the file's own form are accepted too and give the same file
    again = write_detections(tmp_path / "e.json", CLASSES, json.loads(path.read_text())["images"])
    assert again.read_text() == path.read_text()


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d.pop("classes"), r"missing 'classes'"),
    (lambda d: d["images"][0]["detections"][0].update(label="cat"),
     r"images\[0\]\.detections\[0\]\.label: 'cat' is not one of the file's classes"),
    (lambda d: d["images"][0]["detections"][1].update(score="high"),
     r"images\[0\]\.detections\[1\]\.score: expected a number, got 'high'"),
    (lambda d: d["images"][2]["detections"][0].update(box=[1, 2, 3]),
     r"images\[2\]\.detections\[0\]\.box: expected 4 numbers"),
    (lambda d: d["images"][2]["detections"][0].update(box=[10, 2, 3, 4]),
     r"images\[2\]\.detections\[0\]\.box: box .* x2 < x1"),
    (lambda d: d["images"][1].update(file="dir/img_0.jpg"), r"images\[1\]\.file: file 'dir/img_0.jpg' appears twice"),
    (lambda d: d["images"][1].update(width=0), r"images\[1\]\.width: expected a positive integer"),
    (lambda d: d["images"][1].pop("height"), r"images\[1\]: missing 'height'"),
    (lambda d: d.update(classes=["a", "a"]), r"classes: duplicate names"),
    (lambda d: d.update(images={}), r"images: expected a list"),
])
def test_read_detections_names_file_and_entry(tmp_path, mutate, expected):
    path = write_detections(tmp_path / "d.json", CLASSES, random_detections())
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PredictionFileError, match=expected) as info:
        read_detections(path)
    assert str(info.value).startswith(str(path))


def test_read_detections_bad_json_and_nan(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('{"classes": ["a"], "images": [')
    with pytest.raises(PredictionFileError, match=rf"{path}: not valid JSON"):
        read_detections(path)
    path.write_text('{"classes": ["a"], "images": [{"file": "x", "width": 2, "height": 2, '
                    '"detections": [{"label": "a", "score": NaN, "box": [0, 0, 1, 1]}]}]}')
    with pytest.raises(PredictionFileError, match=r"detections\[0\]\.score: expected a finite number"):
        read_detections(path)
    with pytest.raises(PredictionFileError, match=r"no such file|cannot read"):
        read_detections(tmp_path / "missing.json")


def test_write_detections_validates_before_writing(tmp_path):
    bad = ImageDetections("a.jpg", 10, 10, [[0, 0, 1, 1]], [np.inf], ["RBC"])
    with pytest.raises(PredictionFileError, match=r"\(writing\): images\[0\]\.detections\[0\]\.score"):
        write_detections(tmp_path / "d.json", CLASSES, [bad])
    assert not (tmp_path / "d.json").exists()
    with pytest.raises(PredictionFileError, match="not one of the file's classes"):
        write_detections(tmp_path / "d.json", ["WBC"], [ImageDetections("a.jpg", 10, 10, [[0, 0, 1, 1]], [1], ["RBC"])])


def test_detections_to_coco(tmp_path):
    images = random_detections()
    results = detections_to_coco(images, classes=CLASSES)
    assert len(results) == 8
    first = results[0]
    x1, y1, x2, y2 = images[0].boxes[0]
    assert first["image_id"] == 1 and first["category_id"] == CLASSES.index(images[0].labels[0]) + 1
    np.testing.assert_allclose(first["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-6)
    assert results[-1]["image_id"] == 3
    # ids from a COCO ground-truth file
    gt = {"images": [{"id": 40 + i, "file_name": im.file} for i, im in enumerate(images)],
          "categories": [{"id": 7, "name": "RBC"}, {"id": 8, "name": "WBC"}, {"id": 9, "name": "Platelets"}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    path = write_coco_results(tmp_path / "res.json", read_detections(
        write_detections(tmp_path / "d.json", CLASSES, images))[1], coco_gt=tmp_path / "gt.json")
    loaded = json.loads(path.read_text())
    assert [r["image_id"] for r in loaded] == [40] * 5 + [42] * 3
    assert {r["category_id"] for r in loaded} <= {7, 8, 9}
    gt["images"].pop()
    with pytest.raises(PredictionFileError, match="no image with file_name 'dir/img_2.jpg'"):
        detections_to_coco(images, coco_gt=gt)


# ---------------------------------------------------------------------------------------------------- poses

JOINTS = ["right_ankle", "right_knee", "head_top"]


def random_poses(seed: int = 0) -> list[ImagePoses]:
    rng = np.random.default_rng(seed)
    people = [PersonPose(rng.uniform(-5, 300, (3, 2)).astype(np.float32), rng.uniform(0, 1, 3).astype(np.float32),
                         box=None if k == 0 else rng.uniform(0, 100, 4).astype(np.float32).cumsum())
              for k in range(3)]
    return [ImagePoses("im00001.jpg", people[:1]), ImagePoses("im00002.jpg", people[1:]), ImagePoses("im00003.jpg")]


def test_poses_round_trip_exactly(tmp_path):
    images = random_poses()
    path = write_poses(tmp_path / "poses.json", JOINTS, images)
    names, read = read_poses(path)
    assert names == JOINTS and list(read) == ["im00001.jpg", "im00002.jpg", "im00003.jpg"]
    for im in images:
        got = read[im.file]
        assert len(got.people) == len(im.people)
        for a, b in zip(got.people, im.people):
            np.testing.assert_array_equal(a.joints, b.joints)
            np.testing.assert_array_equal(a.scores, b.scores)
            assert (a.box is None) == (b.box is None)
            if b.box is not None:
                np.testing.assert_array_equal(a.box, b.box)
    data = json.loads(path.read_text())
    assert set(data) == {"joint_names", "images"}
    person = data["images"][0]["people"][0]
    assert person["box"] is None and len(person["joints"]) == 3 and len(person["joints"][0]) == 3


@pytest.mark.parametrize("mutate, expected", [
    (lambda d: d["images"][1]["people"][0]["joints"].pop(), r"images\[1\]\.people\[0\]\.joints: 2 joints, expected 3"),
    (lambda d: d["images"][1]["people"][1]["joints"][2].pop(),
     r"images\[1\]\.people\[1\]\.joints\[2\]: expected \[x, y, score\]"),
    (lambda d: d["images"][1]["people"][1].update(box=[5, 5, 1, 1]), r"images\[1\]\.people\[1\]\.box: box"),
    (lambda d: d["images"][0]["people"][0]["joints"][0].__setitem__(0, None),
     r"images\[0\]\.people\[0\]\.joints\[0\]: expected a number, got None"),
    (lambda d: d["images"][2].pop("people"), r"images\[2\]: missing 'people'"),
    (lambda d: d.pop("joint_names"), r"missing 'joint_names'"),
])
def test_read_poses_names_file_and_entry(tmp_path, mutate, expected):
    path = write_poses(tmp_path / "p.json", JOINTS, random_poses())
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(PredictionFileError, match=expected) as info:
        read_poses(path)
    assert str(info.value).startswith(str(path))


def test_write_poses_rejects_wrong_joint_count(tmp_path):
    with pytest.raises(PredictionFileError, match=r"images\[0\]\.people\[0\]\.joints: 3 joints, expected 2"):
        write_poses(tmp_path / "p.json", JOINTS[:2], random_poses())
    assert not (tmp_path / "p.json").exists()


def test_pose_image_size_is_kept_and_dicts_are_accepted(tmp_path):
    entry = {"file": "a.jpg", "width": 320, "height": 240,
             "people": [{"box": None, "joints": [[1.0, 2.0, 0.5], [3.0, 4.0, 0.25], [5.0, 6.0, 1.0]]}]}
    path = write_poses(tmp_path / "p.json", JOINTS, [entry, {"file": "b.jpg", "people": []}])
    _, images = read_poses(path)
    assert (images["a.jpg"].width, images["a.jpg"].height) == (320, 240)
    assert images["b.jpg"].width is None and "width" not in json.loads(path.read_text())["images"][1]
    # what read_* returns can be written back unchanged
    again = write_poses(tmp_path / "q.json", JOINTS, images)
    assert again.read_text() == path.read_text()
    dets = write_detections(tmp_path / "d.json", CLASSES, random_detections())
    assert write_detections(tmp_path / "e.json", CLASSES, read_detections(dets)[1]).read_text() == dets.read_text()
