"""Dataset readers on small fixtures written here in each format, plus counts on the real ../shared/data sets."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cvcore.datasets import (
    COCO,
    FLIC,
    LSP,
    LSP_JOINTS,
    MPII,
    SKELETONS,
    DatasetError,
    DatasetWarning,
    flip_permutation,
    load_detection_dataset,
    load_pose_dataset,
    read_coco_detection,
    read_coco_keypoints,
    read_flic,
    read_lsp,
    read_lspet,
    read_mpii,
    read_voc,
)
from cvcore.datasets.auto import detect_pose_format
from cvcore.datasets.records import FLIC_SLOTS

# ------------------------------------------------------------------------------------------------ VOC fixtures


def voc_xml(filename: str | None, size: tuple[int, int] | None, objects: list[tuple]) -> str:
    """objects: (name, xmin, ymin, xmax, ymax, difficult or None)."""
    parts = ["<annotation>", "<folder>JPEGImages</folder>"]
    if filename is not None:
        parts.append(f"<filename>{filename}</filename>")
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, x1, y1, x2, y2, difficult in objects:
        flag = "" if difficult is None else f"<difficult>{difficult}</difficult>"
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>{flag}"
                     f"<bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "\n".join(parts)


def write_image(path: Path, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def make_voc(root: Path, ann_dir="Annotations", img_dir="JPEGImages", splits=True) -> Path:
    (root / ann_dir).mkdir(parents=True)
    specs = {
        "000002": ((40, 30), [("cat", 1, 2, 10, 8, 0), ("dog", 5.5, 6, 40, 30, 1)]),
        "000001": ((50, 20), [("dog", 3, 4, 7, 9, None)]),
        "000003": ((20, 20), []),
    }
    for stem, (size, objects) in specs.items():
        (root / ann_dir / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", size, objects))
        write_image(root / img_dir / f"{stem}.jpg", size)
    if splits:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / "train.txt").write_text("000002\n000003\n")
        (root / "ImageSets" / "Main" / "val.txt").write_text("000001\n")
    return root


def test_voc_with_imagesets_converts_coordinates_and_flags(tmp_path):
    root = make_voc(tmp_path / "voc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset gives no warning
        train = read_voc(root, split="train")
    assert [r.file for r in train] == ["000002.jpg", "000003.jpg"]
    assert train.classes == ["cat", "dog"]
    r = train[0]
    assert (r.width, r.height) == (40, 30)
    assert r.image_path == root / "JPEGImages" / "000002.jpg"
    # x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax; the whole-image box [1, 1, W, H] becomes [0, 0, W, H]
    np.testing.assert_array_equal(r.boxes, np.array([[0, 1, 10, 8], [4.5, 5, 40, 30]], np.float32))
    assert r.boxes.dtype == np.float32
    assert r.labels == ["cat", "dog"]
    np.testing.assert_array_equal(r.difficult, [False, True])
    assert len(train[1]) == 0 and train[1].boxes.shape == (0, 4)

    val = read_voc(root, split="val")
    assert [r.file for r in val] == ["000001.jpg"] and val[0].difficult.tolist() == [False]  # missing tag = 0
    everything = read_voc(root)  # split None: every XML file, sorted
    assert [r.file for r in everything] == ["000001.jpg", "000002.jpg", "000003.jpg"]
    # the split file / annotation folder forms of the auto loader agree
    assert [r.file for r in load_detection_dataset(root / "ImageSets" / "Main" / "train.txt")] == ["000002.jpg",
                                                                                                  "000003.jpg"]
    assert len(load_detection_dataset(root / "Annotations")) == 3


def test_voc_without_imagesets_raccoon_layout(tmp_path):
    root = make_voc(tmp_path / "raccoon", ann_dir="annotations", img_dir="images", splits=False)
    ds = load_detection_dataset(root)
    assert [r.image_path for r in ds] == [root / "images" / f"00000{i}.jpg" for i in (1, 2, 3)]
    assert ds.image_root == root / "images"
    with pytest.raises(DatasetError, match="split file not found.*no ImageSets"):
        read_voc(root, split="val")


def test_voc_split_listing_missing_annotation(tmp_path):
    root = make_voc(tmp_path / "voc")
    (root / "ImageSets" / "Main" / "bad.txt").write_text("000001\n000099\n")
    with pytest.raises(DatasetError, match="000099.xml"):
        read_voc(root, split="bad")


def single_xml(tmp_path: Path, objects, size=(40, 30), filename="a.jpg") -> Path:
    root = tmp_path / "ds"
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / "a.xml").write_text(voc_xml(filename, size, objects))
    write_image(root / "JPEGImages" / "a.jpg", (40, 30))
    return root


def test_voc_box_outside_image_policies(tmp_path):
    root = single_xml(tmp_path, [("cat", 1, 1, 10, 10, 0), ("cat", 30, -4, 45, 20, 0)])
    xml = root / "Annotations" / "a.xml"
    with pytest.warns(DatasetWarning, match=rf"{xml}: object 1 \(cat.*outside the 40x30 image; clipped"):
        clipped = read_voc(root, on_error="clip")
    np.testing.assert_array_equal(clipped[0].boxes, [[0, 0, 10, 10], [29, 0, 40, 20]])
    with pytest.warns(DatasetWarning, match="object 1.*dropped"):
        dropped = read_voc(root, on_error="drop")
    np.testing.assert_array_equal(dropped[0].boxes, [[0, 0, 10, 10]])
    assert dropped[0].labels == ["cat"] and dropped[0].difficult.tolist() == [False]
    with pytest.raises(DatasetError, match=rf"{xml}: object 1 \(cat.*outside"):
        read_voc(root, on_error="raise")
    with pytest.raises(ValueError, match="on_error must be one of"):
        read_voc(root, on_error="ignore")


def test_voc_degenerate_and_near_duplicate_boxes(tmp_path):
    # BCCD-like: a click without a drag (xmin == xmax) and two near-duplicates 2 px apart
    root = single_xml(tmp_path, [("RBC", 504, 337, 504, 337, 0), ("RBC", 10, 10, 30, 25, 0),
                                 ("RBC", 12, 11, 32, 26, 0), ("RBC", 20, 10, 15, 20, 0)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = read_voc(root)  # clip (default): degenerate boxes dropped
    messages = [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]
    assert len(messages) == 2
    assert "object 0 (RBC, bndbox 504 337 504 337): degenerate" in messages[0]
    assert "object 3" in messages[1] and "degenerate" in messages[1]
    np.testing.assert_array_equal(ds[0].boxes, [[9, 9, 30, 25], [11, 10, 32, 26]])
    with pytest.raises(DatasetError, match="object 0 .*degenerate"):
        read_voc(root, on_error="raise")


def test_voc_unknown_class(tmp_path):
    root = single_xml(tmp_path, [("cat", 1, 1, 10, 10, 0), ("zebra", 2, 2, 9, 9, 0)])
    with pytest.warns(DatasetWarning, match=r"object 1 \(zebra\): unknown class 'zebra'.*dropped"):
        ds = read_voc(root, classes=["cat", "dog"])
    assert ds[0].labels == ["cat"] and ds.classes == ["cat", "dog"]
    with pytest.raises(DatasetError, match="object 1 .*unknown class"):
        read_voc(root, classes=["cat", "dog"], on_error="raise")


@pytest.mark.parametrize("text, expected", [
    ("<annotation><object>", "not a readable XML file"),
    ("<foo/>", "root element is <foo>"),
    (voc_xml("a.jpg", (40, 30), [("cat", 1, 1, "ten", 10, 0)]), r"object 0 \(cat\): <xmax> is not a number: 'ten'"),
    ("<annotation><size><width>4</width><height>3</height></size><object><name>cat</name></object></annotation>",
     r"object 0 \(cat\): missing <bndbox>"),
    ("<annotation><object><bndbox/></object></annotation>", "object 0: missing <name>"),
])
def test_voc_malformed_files_name_file_and_object(tmp_path, text, expected):
    root = single_xml(tmp_path, [])
    xml = root / "Annotations" / "a.xml"
    xml.write_text(text)
    with pytest.raises(DatasetError, match=expected) as info:
        read_voc(root)
    assert str(xml) in str(info.value)


def test_voc_missing_size_reads_image_header(tmp_path):
    root = single_xml(tmp_path, [("cat", 1, 1, 10, 10, 0)], size=None)
    r = read_voc(root)[0]
    assert (r.width, r.height) == (40, 30)


def test_voc_missing_image_file_warns(tmp_path):
    root = single_xml(tmp_path, [("cat", 1, 1, 10, 10, 0)], filename="nothere.jpg")
    (root / "JPEGImages" / "a.jpg").unlink()
    with pytest.warns(DatasetWarning, match="1 annotated images not found"):
        read_voc(root)
    with pytest.raises(DatasetError, match="not found"):
        read_voc(root, on_error="raise")


# ----------------------------------------------------------------------------------------------------- COCO


def coco_fixture(tmp_path: Path) -> Path:
    kps = np.zeros((17, 3))
    kps[:, 0] = np.arange(17) * 2.0
    kps[:, 1] = np.arange(17) + 0.5
    kps[:, 2] = [2, 1, 0] * 5 + [2, 2]
    data = {
        "images": [{"id": 7, "file_name": "a.jpg", "width": 100, "height": 80},
                   {"id": 3, "file_name": "sub/b.jpg", "width": 50, "height": 50}],
        "categories": [{"id": 2, "name": "dog"},
                       {"id": 1, "name": "person", "keypoints": list(COCO.joints), "skeleton": [[16, 14]]}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [10, 20, 30.5, 40], "iscrowd": 0,
             "keypoints": kps.reshape(-1).tolist(), "num_keypoints": 12},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [90, 70, 20, 5], "iscrowd": 0},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1,
             "keypoints": [0] * 51},
            {"id": 4, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0, "keypoints": [0] * 51},
        ],
    }
    path = tmp_path / "annotations" / "instances.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_detection_boxes_crowd_and_order(tmp_path):
    path = coco_fixture(tmp_path)
    with pytest.warns(DatasetWarning, match=r"annotations\[1\] .*outside the 100x80 image; clipped"):
        ds = read_coco_detection(path, image_root=tmp_path / "imgs")
    assert ds.classes == ["person", "dog"]  # category-id order
    assert [r.file for r in ds] == ["a.jpg", "sub/b.jpg"]  # images without objects are kept
    assert ds[1].image_path == tmp_path / "imgs" / "sub" / "b.jpg" and len(ds[1]) == 0
    a = ds[0]
    assert (a.width, a.height) == (100, 80)
    np.testing.assert_array_equal(a.boxes, [[10, 20, 40.5, 60], [90, 70, 100, 75], [0, 0, 5, 5], [1, 1, 6, 6]])
    assert a.labels == ["person", "dog", "person", "person"]
    np.testing.assert_array_equal(a.difficult, [False, False, True, False])  # iscrowd -> difficult
    with pytest.warns(DatasetWarning, match=r"annotations\[1\] .*outside the 100x80 image; dropped"):
        dropped = load_detection_dataset(path, image_root=tmp_path / "imgs", on_error="drop")
    assert dropped[0].labels == ["person", "person", "person"]


def test_coco_malformed(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(DatasetError, match=rf"{path}: missing or non-list 'annotations'"):
        read_coco_detection(path)
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a", "width": 5, "height": 5}],
                                "categories": [{"id": 1, "name": "c"}],
                                "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, "x", 3]}]}))
    with pytest.raises(DatasetError, match=r"annotations\[0\] .*bbox must be 4 numbers"):
        read_coco_detection(path)
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_coco_detection(path)


def test_coco_keypoints(tmp_path):
    path = coco_fixture(tmp_path)
    ds = read_coco_keypoints(path, image_root=tmp_path)
    assert ds.skeleton is COCO and len(ds) == 1  # crowd and zero-keypoint people skipped
    r = ds[0]
    np.testing.assert_array_equal(r.joints[:, 0], np.arange(17) * 2.0)  # used as is (0-based pixel centres)
    np.testing.assert_array_equal(r.joints[:, 1], np.arange(17) + 0.5)
    np.testing.assert_array_equal(r.visible, np.array([2, 1, 0] * 5 + [2, 2]) > 0)  # v = 1 and 2 count
    np.testing.assert_array_equal(r.box, [10, 20, 40.5, 60])
    assert len(read_coco_keypoints(path, include_crowd=True, min_keypoints=0)) == 3
    assert len(load_pose_dataset(path)) == 1 and detect_pose_format(path) == "coco"


# ------------------------------------------------------------------------------------------------ LSP / LSPET


def test_lsp_occlusion_flags_all_joints_count(tmp_path):
    rng = np.random.default_rng(0)
    joints = np.empty((3, 14, 2000))
    joints[:2] = rng.uniform(-5, 200, size=(2, 14, 2000))
    joints[2] = rng.integers(0, 2, size=(14, 2000))  # occlusion: 0 = visible, 1 = occluded
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": joints})
    ds = read_lsp(tmp_path)
    assert len(ds) == 2000 and ds.skeleton is LSP
    for i in (0, 1234, 1999):
        np.testing.assert_array_equal(ds[i].joints, (joints[:2, :, i].T - 1.0).astype(np.float32))
        assert ds[i].visible.all()  # every LSP joint is annotated, occluded ones included
    assert ds[0].file == "im0001.jpg" and ds[1999].image_path == tmp_path / "images" / "im2000.jpg"
    test = read_lsp(tmp_path, split="test")
    assert len(test) == 1000 and test[0].file == "im1001.jpg"
    np.testing.assert_array_equal(test[0].joints, ds[1000].joints)
    assert [r.file for r in read_lsp(tmp_path, split="train")][-1] == "im1000.jpg"
    assert detect_pose_format(tmp_path) == "lsp"


def lspet_fixture(root: Path, n=5) -> np.ndarray:
    rng = np.random.default_rng(1)
    joints = np.empty((14, 3, n))
    joints[:, :2] = rng.uniform(1, 300, size=(14, 2, n))
    joints[:, 2] = rng.integers(0, 2, size=(14, n))  # visibility: 1 = visible
    joints[0, :, 0] = [0.0, -26.1, 0]  # flag-0 joint without coordinates, as in the real file
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "joints.mat", {"joints": joints})
    return joints


def test_lspet_visibility_flags_missing_joints(tmp_path):
    joints = lspet_fixture(tmp_path)
    ds = read_lspet(tmp_path / "joints.mat")
    assert len(ds) == 5 and [r.file for r in ds][:2] == ["im00001.jpg", "im00002.jpg"]
    for i, r in enumerate(ds):
        np.testing.assert_array_equal(r.joints, (joints[:, :2, i] - 1.0).astype(np.float32))
        np.testing.assert_array_equal(r.visible, joints[:, 2, i] == 1)
    assert not ds[0].visible[0]
    assert detect_pose_format(tmp_path) == "lspet" and len(load_pose_dataset(tmp_path)) == 5


def test_lsp_and_lspet_files_are_not_confused(tmp_path):
    lspet_fixture(tmp_path / "lspet")
    with pytest.raises(DatasetError, match="LSP joints must be 3 x 14 x N, got 14 x 3 x 5 .*looks like LSPET"):
        read_lsp(tmp_path / "lspet")
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((3, 14, 4))})
    with pytest.raises(DatasetError, match="looks like LSP: use read_lsp"):
        read_lspet(tmp_path)
    bad = np.zeros((3, 14, 4))
    bad[2, 5, 3] = 7
    scipy.io.savemat(tmp_path / "joints.mat", {"joints": bad})
    with pytest.raises(DatasetError, match="occlusion flag of joint 5 in example 3 is 7"):
        read_lsp(tmp_path)
    scipy.io.savemat(tmp_path / "joints.mat", {"points": bad})
    with pytest.raises(DatasetError, match="no variable 'joints' \\(found: points\\)"):
        read_lsp(tmp_path)
    (tmp_path / "joints.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="joints.mat: not a readable MATLAB file"):
        read_lsp(tmp_path)
    with pytest.raises(DatasetError, match="needs the 2000 LSP examples"):
        scipy.io.savemat(tmp_path / "joints.mat", {"joints": np.zeros((3, 14, 4))})
        read_lsp(tmp_path, split="test")


# ---------------------------------------------------------------------------------------------------- FLIC


def flic_fixture(root: Path) -> np.ndarray:
    rng = np.random.default_rng(2)
    dtype = [("coords", "O"), ("filepath", "O"), ("torsobox", "O"), ("istrain", "O"), ("istest", "O")]
    examples = np.zeros((1, 3), dtype=dtype)
    all_coords = []
    for i in range(3):
        coords = np.full((2, 29), np.nan)
        coords[:, list(FLIC_SLOTS)] = rng.uniform(1, 700, size=(2, 11))
        if i == 2:
            coords[:, 16] = np.nan  # nose missing
        all_coords.append(coords)
        examples[0, i] = (coords, f"movie-{i:08d}.jpg", np.array([[10.0, 20.0, 110.0, 220.0]]),
                          np.array([[i < 2]], np.uint8), np.array([[i >= 2]], np.uint8))
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / "examples.mat", {"examples": examples})
    return np.stack(all_coords)


def test_flic_examples_struct(tmp_path):
    coords = flic_fixture(tmp_path)
    ds = read_flic(tmp_path)
    assert ds.skeleton is FLIC and len(ds) == 3 and ds[1].file == "movie-00000001.jpg"
    for i, r in enumerate(ds):
        expected = coords[i][:, list(FLIC_SLOTS)].T - 1.0
        visible = np.isfinite(expected).all(axis=1)
        np.testing.assert_array_equal(r.visible, visible)
        np.testing.assert_array_equal(r.joints[visible], expected[visible].astype(np.float32))
        np.testing.assert_array_equal(r.torso_box, [9, 19, 109, 219])
    assert not ds[2].visible[FLIC.index("nose")] and ds[2].visible.sum() == 10
    # slot 10 (MATLAB) is the right hip
    np.testing.assert_array_equal(ds[0].joints[FLIC.index("right_hip")], (coords[0][:, 9] - 1.0).astype(np.float32))
    assert [r.file for r in read_flic(tmp_path, split="train")] == ["movie-00000000.jpg", "movie-00000001.jpg"]
    assert [r.file for r in load_pose_dataset(tmp_path, split="test")] == ["movie-00000002.jpg"]
    scipy.io.savemat(tmp_path / "examples.mat", {"examples": np.zeros((1, 2), [("coords", "O"), ("x", "O")])})
    with pytest.raises(DatasetError, match="'examples' lacks field\\(s\\) filepath"):
        read_flic(tmp_path)


# ---------------------------------------------------------------------------------------------------- MPII


def mpii_fixture(tmp_path: Path) -> tuple[Path, list]:
    rng = np.random.default_rng(3)
    entries = []
    for i in range(3):
        joints = rng.uniform(1, 500, size=(16, 2))
        vis = rng.integers(0, 2, size=16)
        joints[vis == 0] = -1.0
        entry = {"image": f"{i:09d}.jpg", "joints": joints.tolist(), "joints_vis": vis.tolist(),
                 "center": [200.0 + i, 150.0], "scale": 1.5}
        if i == 0:
            entry["head_box"] = [10, 20, 50, 70]
        entries.append(entry)
    path = tmp_path / "annot" / "mpii_val.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(entries))
    return path, entries


def test_mpii_json(tmp_path):
    path, entries = mpii_fixture(tmp_path)
    ds = read_mpii(path, image_root=tmp_path / "images")
    assert ds.skeleton is MPII and len(ds) == 3 and ds[2].file == "000000002.jpg"
    for r, e in zip(ds, entries):
        np.testing.assert_array_equal(r.joints, np.asarray(e["joints"], np.float32) - 1.0)
        np.testing.assert_array_equal(r.visible, np.asarray(e["joints_vis"]) > 0)
        cx, cy = e["center"][0] - 1, e["center"][1] - 1
        np.testing.assert_allclose(r.box, [cx - 150, cy - 150, cx + 150, cy + 150])
    np.testing.assert_array_equal(ds[0].head_box, [9, 19, 49, 69])
    assert ds[1].head_box is None
    # head boxes from the official ground-truth .mat (headboxes_src[corner, axis, n])
    headboxes = np.zeros((2, 2, 3))
    headboxes[0, 0], headboxes[0, 1], headboxes[1, 0], headboxes[1, 1] = (
        [1, 2, 3], [4, 5, 6], [11, 12, 13], [14, 15, 16])
    scipy.io.savemat(tmp_path / "gt.mat", {"headboxes_src": headboxes})
    ds = load_pose_dataset(path, head_boxes=tmp_path / "gt.mat")
    np.testing.assert_array_equal(ds[2].head_box, [2, 5, 12, 15])
    assert detect_pose_format(path) == "mpii"


def test_mpii_malformed_entry(tmp_path):
    path, entries = mpii_fixture(tmp_path)
    del entries[1]["joints"]
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=r"mpii_val.json: entry 1 \(000000001.jpg\): missing 'joints'"):
        read_mpii(path)
    entries[1]["joints"] = [[1, 2]] * 15
    path.write_text(json.dumps(entries))
    with pytest.raises(DatasetError, match=r"entry 1 .*'joints' has shape \(15, 2\), expected \(16, 2\)"):
        read_mpii(path)


# ------------------------------------------------------------------------------------------------- skeletons


def test_lsp_joint_order_matches_the_dataset_readme():
    assert LSP_JOINTS == ("right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
                          "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
                          "neck", "head_top")
    assert (MPII.num_joints, COCO.num_joints, FLIC.num_joints) == (16, 17, 11)


@pytest.mark.parametrize("name", sorted(SKELETONS))
def test_skeleton_flip_pairs_swap_left_and_right(name):
    sk = SKELETONS[name]
    perm = flip_permutation(sk.num_joints, sk.flip_pairs)
    np.testing.assert_array_equal(perm[perm], np.arange(sk.num_joints))  # an involution
    for i, j in enumerate(perm):
        a, b = sk.joints[i], sk.joints[j]
        if a.startswith("left_"):
            assert b == "right_" + a[5:]
        elif a.startswith("right_"):
            assert b == "left_" + a[6:]
        else:
            assert i == j
    # a mirrored skeleton maps edges onto edges
    edges = {frozenset(e) for e in sk.edges}
    assert {frozenset((perm[a], perm[b])) for a, b in sk.edges} == edges
    assert all(a != b for a, b in sk.edges)
    # every joint is on the drawn skeleton
    assert {j for e in sk.edges for j in e} == set(range(sk.num_joints))


def test_auto_detection_rejects_unknown(tmp_path):
    with pytest.raises(DatasetError, match="no joints.mat"):
        load_pose_dataset(tmp_path)
    with pytest.raises(DatasetError, match="not a VOC folder"):
        load_detection_dataset(tmp_path)


# ----------------------------------------------------------------------------------------- real data (shared)


def needs(shared_data: Path, name: str) -> Path:
    path = shared_data / name
    if not path.is_dir():
        pytest.skip(f"{path} not found (the shared benchmark data is not on this machine)")
    return path


@pytest.mark.data
def test_real_bccd_counts(shared_data):
    root = needs(shared_data, "bccd")
    with pytest.warns(DatasetWarning, match="degenerate") as caught:  # two zero-area boxes, dropped
        everything = read_voc(root)
        train = load_detection_dataset(root / "ImageSets" / "Main" / "train.txt")
        val = load_detection_dataset(root, split="val")
    assert len(caught) == 4  # BloodImage_00338 (val) and _00343 (train), each read twice
    assert (len(everything), len(train), len(val)) == (292, 205, 87)
    assert not {r.file for r in train} & {r.file for r in val}
    assert everything.classes == ["Platelets", "RBC", "WBC"]
    assert sum(len(r) for r in everything) == 3943 - 2
    assert all(r.image_path.is_file() and (r.width, r.height) == (640, 480) for r in everything)
    boxes = np.concatenate([r.boxes for r in everything])
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 640 and boxes[:, 3].max() <= 480


@pytest.mark.data
def test_real_raccoon_counts(shared_data):
    root = needs(shared_data, "raccoon")
    ds = load_detection_dataset(root)
    assert len(ds) == 160 and ds.classes == ["raccoon"] and sum(len(r) for r in ds) == 174
    assert [r.file for r in ds] == sorted(r.file for r in ds)
    assert all(r.image_path.is_file() for r in ds)


@pytest.mark.data
def test_real_lspet_counts(shared_data):
    root = needs(shared_data, "lspet")
    ds = load_pose_dataset(root)
    assert ds.skeleton is LSP and len(ds) == 9000
    assert ds[0].file == "im00001.jpg" and ds[-1].file == "im09000.jpg"
    assert ds[-1].image_path.is_file() and ds[0].image_path.is_file()
    visible = np.stack([r.visible for r in ds])
    assert visible.sum() == 110819  # flag-1 joints of the 9000 x 14
    assert not visible[0, 0]  # im00001's right ankle has flag 0 (and a negative y)


def test_voc_absolute_filename_tag(tmp_path):
    root = single_xml(tmp_path, [("cat", 1, 1, 10, 10, 0)], filename="/home/someone/labelimg/a.jpg")
    r = read_voc(root)[0]
    assert r.image_path == root / "JPEGImages" / "a.jpg" and r.file == "a.jpg"


# --------------------------------------------------------------------------- download helpers (offline: file://)


def test_download_checks_md5_and_extract_refuses_escaping_members(tmp_path):
    import tarfile
    import zipfile

    from cvcore.datasets.download import download, extract, file_md5

    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("ds/joints.mat", b"x")
    md5 = file_md5(src)
    got = download(["file:///nonexistent/archive.zip", src.as_uri()], tmp_path / "dl" / "a.zip", md5=md5)
    assert got.read_bytes() == src.read_bytes() and not (tmp_path / "dl" / "a.zip.part").exists()
    with pytest.raises(RuntimeError, match="MD5 .* expected 0+"):
        download(src.as_uri(), tmp_path / "dl" / "b.zip", md5="0" * 32)
    assert not (tmp_path / "dl" / "b.zip").exists()
    assert (extract(got, tmp_path / "out") / "ds" / "joints.mat").read_bytes() == b"x"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escaped.txt", b"x")
    with pytest.raises(RuntimeError, match="outside"):
        extract(evil, tmp_path / "out2")
    assert not (tmp_path / "escaped.txt").exists()
    tgz = tmp_path / "a.tar.gz"
    with tarfile.open(tgz, "w:gz") as t:
        t.add(src, arcname="inner/src.zip")
    assert (extract(tgz, tmp_path / "out3") / "inner" / "src.zip").is_file()


def test_voc_xml_round_trips_through_the_reader(tmp_path):
    from cvcore.datasets import voc_xml
    from cvcore.datasets.voc import read_voc_xml

    (tmp_path / "img").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "img" / "a.jpg")
    boxes = np.array([[0, 0, 64, 48], [10, 5, 20, 30]], np.float32)  # whole image (VOC 1 1 64 48) and a small box
    (tmp_path / "a.xml").write_text(voc_xml("a.jpg", 64, 48, boxes, ["cat", "dog"], difficult=[False, True]))
    rec = read_voc_xml(tmp_path / "a.xml", tmp_path / "img")
    np.testing.assert_array_equal(rec.boxes, boxes)
    assert rec.labels == ["cat", "dog"] and rec.difficult.tolist() == [False, True]
    assert (rec.width, rec.height) == (64, 48)
    assert "<xmin>1</xmin>" in (tmp_path / "a.xml").read_text()  # VOC's 1-based inclusive pixels
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        voc_xml("a.jpg", 64, 48, boxes, ["cat"])
    fine = np.array([[10.25, 5.5, 20.75, 30.0]], np.float32)
    (tmp_path / "a.xml").write_text(voc_xml("a.jpg", 64, 48, fine, ["cat"], decimals=2))
    np.testing.assert_allclose(read_voc_xml(tmp_path / "a.xml", tmp_path / "img").boxes, fine)
