"""Smoke test of ``tools/bench.py``: the ``--quick`` run on synthetic images prints every section. No timing asserts."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_helpers():
    bench = load_bench()
    threads_before = torch.get_num_threads()
    mem = bench.rss_mb()
    assert mem["VmRSS"] > 0 and mem["VmHWM"] >= mem["VmRSS"] - 1  # MiB, peak >= current
    assert bench.verdict(1.2, 1.25, at_most=True) == "met"
    assert bench.verdict(1.3, 1.25, at_most=True) == "NOT met"
    assert bench.verdict(31.0, 30.0, at_most=False) == "met"
    assert bench.verdict(float("nan"), 1.0, at_most=True) == "n/a"

    clock = bench.Clock()
    net = torch.nn.Conv2d(3, 4, 3)
    clock.hook(net, "cnn")
    keep = bench.KeepLast(lambda x: net(x).sum())
    out = keep(torch.ones(1, 3, 8, 8))
    assert keep.last is out and clock.seconds["cnn"] > 0
    before = clock.seconds["cnn"]
    net(torch.ones(1, 3, 8, 8))
    assert clock.seconds["cnn"] > before  # every forward pass is added
    clock.intervals["streams"] = [(5.0, 6.0), (0.0, 2.0), (1.0, 3.0), (1.5, 2.5)]  # passes overlapping in time
    assert clock.seconds["streams"] == pytest.approx(4.0)  # the union: [0, 3] and [5, 6]
    clock.clear()
    assert clock.seconds["cnn"] == 0.0

    seconds, how, rows = bench.best_floor(net, 8, [1, 2], channels_last=True, crops=5)
    configs = 2 if bench.cores() > 1 else 1  # all cores as torch threads; one thread per core, one batch each
    assert seconds > 0 and how.startswith("batch ")
    # each config x 2 batches, then the best one in the other memory format
    assert len(rows) == 2 * configs + 1 and "contiguous" in rows[-1]
    assert bench.floor_seconds(net, 5, 8, 2, True, threads=1, streams=2) > 0
    assert torch.get_num_threads() == threads_before  # restored


def test_quick_run_prints_every_section():
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--data", "none", "--threads", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"^machine: .+ logical CPUs", out, re.M) and "torch " in out
    for title in ("## 1. detect, warp mode", "## 2. warp mode / shared mode", "## 3. proposals",
                  "## 4. pose", "## 5. training side", "## 6. peak resident memory", "## summary"):
        assert title in out, f"missing section {title!r}\n{out}"
    for row in ("| CNN |", "| opencv ximgproc fast |", "| forward |", "| forward+backward |", "| sklearn |",
                "| torch |"):
        assert row in out, f"missing row {row!r}\n{out}"
    summary = out.split("## summary", 1)[1]
    for figure in ("detect warp / backbone floor", "warp / shared s/image, features", "proposals native / OpenCV",
                   "pose images/s / 10", "detect RSS growth"):
        assert figure in summary, f"missing figure {figure!r} in the summary\n{summary}"
    memory = out.split("## 6.", 1)[1].split("## summary", 1)[0]
    assert len(re.findall(r"^\| \d+ \| \d+ \| \d+ \|", memory, re.M)) == 3  # RSS at 3 checkpoints
    assert "recall" in out and "n/a (synthetic)" in out  # no data: recall and mAP omitted, not invented


def test_cli_help():
    proc = subprocess.run([sys.executable, str(BENCH), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--quick" in proc.stdout and "--data" in proc.stdout
