"""Keyed stage results: reused only when the key matches; unreadable or foreign files are misses."""

from __future__ import annotations

import torch

from cvcore.stages import keyed_stage, load_keyed, save_keyed, stage_key


def test_keyed_stage_reuses_only_a_matching_key(tmp_path):
    path, calls = tmp_path / "r.pt", []

    def compute(v):
        def run():
            calls.append(v)
            return {"w": torch.full((2,), float(v)), "n": v}
        return run

    k1, k2 = stage_key({"C": 1}, ["a.jpg"]), stage_key({"C": 2}, ["a.jpg"])
    assert k1 == stage_key({"C": 1}, ["a.jpg"]) and k1 != k2
    assert keyed_stage(path, k1, compute(1))["n"] == 1
    assert keyed_stage(path, k1, compute(9))["n"] == 1 and calls == [1]  # reused
    assert keyed_stage(path, k2, compute(2))["n"] == 2 and calls == [1, 2]  # inputs changed: computed again
    assert load_keyed(path, k1) is None and torch.equal(load_keyed(path, k2)["w"], torch.full((2,), 2.0))
    path.write_bytes(b"truncated")
    assert load_keyed(path, k2) is None  # unreadable: a miss, not an error
    torch.save({"something": "else"}, path)
    assert load_keyed(path, k2) is None
    save_keyed(path, k2, [1, 2])
    assert load_keyed(path, k2) == [1, 2] and load_keyed(tmp_path / "missing.pt", k2) is None
