"""Property-based tests (hypothesis): the annotation and prediction readers never crash other than with their
documented error types, whatever the file holds; the box and heatmap ops keep their invariants."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from cvcore.datasets import DatasetError, PredictionFileError, read_detections, read_poses  # noqa: E402
from cvcore.datasets.pennfudan import read_pascal_text  # noqa: E402
from cvcore.datasets.voc import read_voc_xml  # noqa: E402
from cvcore.ops import box_iou, clip_boxes, decode_heatmaps, render_gaussian_heatmaps  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), st.none(),
                    st.booleans(), st.text(max_size=5))
json_values = st.recursive(numbers, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                           max_leaves=20)
box = st.lists(numbers, min_size=0, max_size=5)
detection = st.fixed_dictionaries({"label": st.sampled_from(["person", "dog", 3, None]), "score": numbers, "box": box})
detections_file = st.one_of(json_values, st.fixed_dictionaries({
    "classes": st.one_of(st.just(["person"]), json_values),
    "images": st.lists(st.fixed_dictionaries({"file": st.one_of(st.text(max_size=6), numbers), "width": numbers,
                                              "height": numbers, "detections": st.lists(detection, max_size=3)}),
                       max_size=3)}))
joint = st.lists(numbers, min_size=0, max_size=4)
poses_file = st.one_of(json_values, st.fixed_dictionaries({
    "joint_names": st.one_of(st.just(["a", "b"]), json_values),
    "images": st.lists(st.fixed_dictionaries({"file": st.one_of(st.text(max_size=6), numbers), "people": st.lists(
        st.fixed_dictionaries({"box": st.one_of(st.none(), box), "joints": st.lists(joint, max_size=3)}), max_size=2)}),
        max_size=3)}))


def _write(tmp_path, obj) -> object:
    path = tmp_path / "f.json"
    path.write_text(json.dumps(obj, allow_nan=True))
    return path


def _check_detections(classes, images):
    for d in images.values():  # what is accepted is clean
        assert np.isfinite(d.boxes).all() and np.isfinite(d.scores).all() and set(d.labels) <= set(classes)
        assert (d.boxes[:, 2:] >= d.boxes[:, :2]).all()


def _check_poses(names, images):
    for image in images.values():
        for p in image.people:
            assert p.joints.shape == (len(names), 2) and np.isfinite(p.joints).all()


@FAST
@given(data=st.data())
@pytest.mark.parametrize("read,strategy,check", [(read_detections, detections_file, _check_detections),
                                                 (read_poses, poses_file, _check_poses)])
def test_prediction_readers_parse_or_name_the_problem(tmp_path, data, read, strategy, check):
    try:
        parsed = read(_write(tmp_path, data.draw(strategy)))
    except PredictionFileError as e:
        assert "f.json" in str(e)
        return
    check(*parsed)


xml_numbers = st.one_of(st.integers(-100, 1000).map(str), st.sampled_from(["nan", "inf", "", "1e9", "abc", "-0"]))


@FAST
@given(w=xml_numbers, h=xml_numbers, coords=st.lists(xml_numbers, min_size=4, max_size=4),
       name=st.sampled_from(["dog", "", "person"]), truncate=st.integers(0, 400),
       on_error=st.sampled_from(["clip", "drop", "raise"]))
def test_voc_xml_reader_parses_or_raises_dataset_error(tmp_path, w, h, coords, name, truncate, on_error):
    x1, y1, x2, y2 = coords
    text = (f"<annotation><filename>a.jpg</filename><size><width>{w}</width><height>{h}</height></size>"
            f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object></annotation>")
    path = tmp_path / "a.xml"
    path.write_text(text[: len(text) - truncate] if truncate < len(text) else "")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = read_voc_xml(path, tmp_path, on_error=on_error)
    except DatasetError as e:
        assert "a.xml" in str(e)
        return
    boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
    assert np.isfinite(boxes).all() and (boxes[:, 2:] >= boxes[:, :2]).all()


@FAST
@given(lines=st.lists(st.one_of(st.text(max_size=40), st.sampled_from([
    'Image filename : "PNGImages/a.png"', "Image size (X x Y x C) : 100 x 80 x 3",
    'Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (10, 12) - (40, 80)',
    'Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (50, 1e9) - (nan, 80)',
    'Original label for object 1 "PASpersonWalking" : "PennFudanPed"'])), max_size=6))
def test_pascal_text_reader_parses_or_raises_dataset_error(tmp_path, lines):
    path = tmp_path / "a.txt"
    path.write_text("\n".join(lines))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            record = read_pascal_text(path, tmp_path)
    except DatasetError as e:
        assert "a.txt" in str(e)
        return
    boxes = np.asarray(record.boxes, np.float64).reshape(-1, 4)
    assert np.isfinite(boxes).all()


coord = st.floats(-50, 150, allow_nan=False)


@FAST
@given(a=st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=6),
       b=st.lists(st.tuples(coord, coord, coord, coord), min_size=1, max_size=6))
def test_box_iou_and_clip_invariants(a, b):
    def boxes(rows):
        t = torch.tensor(rows, dtype=torch.float64)
        return torch.cat([torch.minimum(t[:, :2], t[:, 2:]), torch.maximum(t[:, :2], t[:, 2:])], 1)

    ba, bb = boxes(a), boxes(b)
    iou = box_iou(ba, bb)
    assert iou.shape == (len(a), len(b)) and torch.isfinite(iou).all()
    assert ((iou >= 0) & (iou <= 1 + 1e-9)).all()
    torch.testing.assert_close(iou, box_iou(bb, ba).T)  # symmetric
    clipped = clip_boxes(ba, (80, 100))
    assert (clipped[:, 0::2] >= 0).all() and (clipped[:, 0::2] <= 100).all() and (clipped[:, 1::2] <= 80).all()
    assert torch.equal(clip_boxes(clipped, (80, 100)), clipped)  # idempotent


@FAST
@given(x=st.floats(0, 63, allow_nan=False), y=st.floats(0, 47, allow_nan=False), sigma=st.floats(0.8, 3.0),
       refine=st.sampled_from(["dark", "quarter", None]))
def test_heatmap_round_trip(x, y, sigma, refine):
    """A Gaussian rendered at (x, y) decodes back near (x, y): within a quarter cell with DARK (exact for a
    Gaussian away from the border), within a cell otherwise."""
    stride = 4
    maps = render_gaussian_heatmaps(torch.tensor([[[x, y]]]), torch.tensor([[True]]), (12, 16), stride, sigma)
    coords, scores = decode_heatmaps(maps, stride, refine=refine)
    err = (coords[0, 0] - torch.tensor([x, y])).abs().max().item()
    inner = 1.5 * stride <= x <= 64 - 1.5 * stride - 1 and 1.5 * stride <= y <= 48 - 1.5 * stride - 1
    assert np.isfinite(err) and 0 < float(scores[0, 0]) <= 1
    assert err <= (0.25 * stride if refine == "dark" and inner else stride)
