"""The shared image-folder run: inputs, shards, the journal of finished images, merging."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cvcore.cli import CLIError
from cvcore.inference import FolderRun, Journal, list_inputs, parse_shard, read_journal


def _folder(tmp_path, names):
    folder = tmp_path / "imgs"
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / name)
    return folder


def test_parse_shard_explicit_and_from_the_environment():
    assert parse_shard("2/5", {}) == (2, 5)
    assert parse_shard(None, {}) == parse_shard("auto", {}) == (0, 1)
    assert parse_shard("auto", {"RANK": "3", "WORLD_SIZE": "4"}) == (3, 4)
    slurm = {"SLURM_ARRAY_TASK_ID": "11", "SLURM_ARRAY_TASK_MIN": "10", "SLURM_ARRAY_TASK_COUNT": "3",
             "RANK": "0", "WORLD_SIZE": "2"}
    assert parse_shard(None, slurm) == (1, 3)  # the array task wins over the process rank
    assert parse_shard("0/1", {"RANK": "1", "WORLD_SIZE": "2"}) == (0, 1)  # explicit wins
    for bad in ("3/3", "-1/2", "1/0", "a/b", "2"):
        with pytest.raises(CLIError, match="--shard"):
            parse_shard(bad, {})


def test_list_inputs(tmp_path):
    folder = _folder(tmp_path, ["b.png", "a b/é.png", "c.jpg"])
    (folder / "notes.txt").write_text("x")
    root, files = list_inputs(folder)
    assert root == folder and [p.name for p in files] == ["b.png", "c.jpg"]
    assert [f.relative_to(folder).as_posix() for f in list_inputs(folder, recursive=True)[1]] == [
        "a b/é.png", "b.png", "c.jpg"]
    assert list_inputs(folder / "c.jpg") == (folder, [folder / "c.jpg"])
    (folder / "link.png").symlink_to(folder / "b.png")
    assert "link.png" in [p.name for p in list_inputs(folder)[1]]
    with pytest.raises(CLIError, match="not an image file"):
        list_inputs(folder / "notes.txt")
    with pytest.raises(CLIError, match="no such folder or file"):
        list_inputs(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CLIError, match="no images found$"):
        list_inputs(tmp_path / "empty")


def test_journal_resumes_drops_a_torn_last_line_and_refuses_other_settings(tmp_path):
    path = tmp_path / "r.jsonl"
    j = Journal(path, {"model": "m", "thr": (0.5,)})
    j.add({"file": "a.png", "v": 1})
    j.add({"file": "b.png", "v": 2})
    j.close()
    with open(path, "ab") as fh:
        fh.write(b'{"file": "c.png", "v"')
    j = Journal(path, {"model": "m", "thr": [0.5]})  # tuples read back as lists
    assert j.done == {"a.png": {"file": "a.png", "v": 1}, "b.png": {"file": "b.png", "v": 2}}
    j.add({"file": "c.png", "v": 3})
    j.close()
    settings, done, good, size = read_journal(path)
    assert settings == {"model": "m", "thr": [0.5]} and list(done) == ["a.png", "b.png", "c.png"] and good == size
    with pytest.raises(CLIError, match=r"other settings \(model\)"):
        Journal(path, {"model": "other", "thr": [0.5]})
    assert Journal(path, {"model": "other"}, overwrite=True).done == {}
    lines = [json.dumps({"settings": {}}), "not json", json.dumps({"file": "x"}), ""]
    path.write_text("\n".join(lines))
    with pytest.raises(CLIError, match="line 2 is not a JSON object"):
        Journal(path, {})
    path.write_text("")  # killed before the header was written: a fresh start
    assert Journal(path, {}).done == {}


def test_shards_cover_every_image_once_and_the_last_one_merges(tmp_path):
    folder = _folder(tmp_path, [f"{i}.png" for i in range(7)])
    out = tmp_path / "out"
    written = {}

    def write(path, entries):
        written[path.name] = [e["file"] for e in entries]
        path.write_text(json.dumps(entries))

    seen = []
    for i in (1, 0, 2):
        run = FolderRun(folder, out, "res", {"k": 1}, shard=f"{i}/3")
        for p in run.todo:
            run.add({"file": run.relative(p)})
        seen += [run.relative(p) for p in run.todo]
        run.finish(write)
        assert (run.merged is not None) == (i == 2)
    assert sorted(seen) == sorted(f"{i}.png" for i in range(7)) and len(seen) == 7
    assert written["res.shard-00000-of-00003.json"] == ["0.png", "3.png", "6.png"]
    assert written["res.json"] == [f"{i}.png" for i in range(7)]
    run = FolderRun(folder, out, "res", {"k": 1}, shard="0/3")  # finished: nothing left to do
    assert run.todo == [] and run.resumed == 3
