"""Untrusted model files: a pickle that would run code is refused everywhere a file is loaded (and the code does not
run); truncated, empty, wrong-kind and wrong-version files get one clear line."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

from cvcore.engine import Trainer
from cvcore.io import safe_torch_load

ROOT = Path(__file__).resolve().parents[2]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": "pose-model", "svm": _Evil(marker), "state_dict": {}}, path)
    return path, marker


def test_every_loader_refuses_a_pickle_that_would_run_code(evil, tmp_path, capsys):
    from pose import PoseEstimator
    from pose.cli import pose_main
    from pose.estimator import init_from_model_file
    from rcnn import Detector
    from rcnn.cli import detect_main

    path, marker = evil
    for load in (safe_torch_load, Detector.load, PoseEstimator.load, lambda p: init_from_model_file(None, p)):
        with pytest.raises(ValueError, match="refused: it holds pickled Python objects"):
            load(path)
    images = tmp_path / "imgs"
    images.mkdir()
    from cvcore.synthetic import write_photo_folder

    write_photo_folder(images, 1)
    assert detect_main([str(images), "--model", str(path), "--out", str(tmp_path / "o")]) == 2
    assert pose_main([str(images), "--model", str(path), "--detector", "none", "--out", str(tmp_path / "o")]) == 2
    assert pose_main([str(images), "--detector", str(path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.count("refused") == 3
    # a resume checkpoint of the training engine
    (tmp_path / "run").mkdir()
    os.replace(path, tmp_path / "run" / "last.pt")
    model = torch.nn.Linear(1, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), [torch.zeros(1)], out_dir=tmp_path / "run",
                      max_steps=1, progress=False, resume=True)
    with pytest.raises(ValueError, match="refused"):
        trainer.train()
    assert not marker.exists()


def test_every_torch_load_in_the_packages_is_weights_only():
    """A static check: each ``torch.load(...)`` call in cvcore / rcnn / pose passes ``weights_only=True``."""
    calls = []
    for package in ("cvcore", "rcnn", "pose"):
        for file in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                        and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                    ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                             for k in node.keywords)
                    calls.append((f"{file.relative_to(ROOT)}:{node.lineno}", ok))
    assert calls and all(ok for _, ok in calls), [c for c, ok in calls if not ok]


def test_truncated_empty_and_wrong_kind_files_get_one_clear_line(tmp_path):
    from pose import PoseEstimator
    from pose.estimator import MODELS_DIR as POSE_MODELS
    from rcnn import Detector
    from rcnn.detector import MODELS_DIR as RCNN_MODELS

    detector, pose_model = RCNN_MODELS / "person.pt", POSE_MODELS / "lspet.pt"
    (tmp_path / "trunc.pt").write_bytes(detector.read_bytes()[:50_000])
    (tmp_path / "empty.pt").write_bytes(b"")
    for name in ("trunc.pt", "empty.pt"):
        with pytest.raises(ValueError, match=f"{name}: not a complete torch file"):
            Detector.load(tmp_path / name)
    with pytest.raises(ValueError, match="not an R-CNN detector file: a pose model"):
        Detector.load(pose_model)
    with pytest.raises(ValueError, match="not a pose model file: an R-CNN detector"):
        PoseEstimator.load(detector)
    d = torch.load(detector, weights_only=True)
    d["format_version"] = 99
    torch.save(d, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="format version 99"):
        Detector.load(tmp_path / "v99.pt")
