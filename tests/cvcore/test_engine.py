"""cvcore.engine.Trainer: toy training, exact resume in a fresh process, non-finite loss, best model, early stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from cvcore.engine import NonFiniteLossError, Trainer
from cvcore.io import safe_torch_load
from cvcore.nn import build_optimizer, build_scheduler

REPO = Path(__file__).resolve().parents[2]

# A small but complete training script: shuffled DataLoader (global torch RNG), augmentation drawing from numpy and
# python RNGs, dropout, momentum, warm-up + cosine schedule, periodic evaluation. Every RNG state matters for resume.
TOY_SCRIPT = textwrap.dedent('''
    import random
    import sys

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from cvcore.device import seed_everything
    from cvcore.engine import Trainer
    from cvcore.nn import build_optimizer, build_scheduler, penalty


    class Noisy(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(22, 6, generator=g)
            self.y = (self.x[:, 0] > 0).long()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i] + 0.1 * float(np.random.randn()) + 0.01 * random.random(), self.y[i]


    class Net(nn.Module):
        def __init__(self, crash_at_step=None):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 2))
            self.train_calls, self.crash_at_step = 0, crash_at_step

        def forward(self, batch):
            x, y = batch
            if not self.training:
                return self.body(x)
            self.train_calls += 1
            if self.train_calls == self.crash_at_step:
                raise KeyboardInterrupt("simulated kill")
            return {"ce": F.cross_entropy(self.body(x), y), "l2": penalty(self, "l2", l2=1e-3)}


    def main(out_dir, max_steps=12, resume=False, crash_at_step=None):
        torch.set_num_threads(1)
        seed_everything(0)
        model = Net(crash_at_step)
        opt = build_optimizer(model, "momentum", lr=0.1, weight_decay=1e-4)
        sched = build_scheduler(opt, "cosine", total_steps=12, warmup_steps=2)
        loader = DataLoader(Noisy(), batch_size=4, shuffle=True)  # 6 batches per epoch
        val_x = torch.linspace(-1, 1, 12).reshape(2, 6)

        def eval_fn(m):
            return {"score": float(m.body(val_x).sum())}

        trainer = Trainer(model, opt, loader, scheduler=sched, device="cpu", out_dir=out_dir, max_steps=max_steps,
                          checkpoint_every=4, eval_fn=eval_fn, eval_every=3, best_metric="score", log_every=1,
                          progress=False, resume=resume)
        trainer.train()
        return model


    if __name__ == "__main__":
        model = main(sys.argv[1], resume=True)
        torch.save(model.state_dict(), sys.argv[2])
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy_train.py"
    path.write_text(TOY_SCRIPT)
    import runpy

    namespace = runpy.run_path(str(path))
    return path, namespace["main"]


def _read_log(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def test_resume_in_a_fresh_process_is_exact(toy, tmp_path, monkeypatch):
    script, main = toy
    threads = torch.get_num_threads()
    try:
        straight = main(tmp_path / "straight")
        # killed at step 10 (checkpoints at 4 and 8): last.pt holds step 8, mid-epoch 1 (batch 2 of 6)
        with pytest.raises(KeyboardInterrupt):
            main(tmp_path / "killed", crash_at_step=10)
        ckpt = safe_torch_load(tmp_path / "killed" / "last.pt")
        assert (ckpt["step"], ckpt["epoch"], ckpt["batch_index"]) == (8, 1, 2)

        # a resumed run whose RNG states are NOT restored must differ: the test below is sensitive to them
        import cvcore.engine

        (tmp_path / "norng").mkdir()
        (tmp_path / "norng" / "last.pt").write_bytes((tmp_path / "killed" / "last.pt").read_bytes())
        monkeypatch.setattr(cvcore.engine, "restore_rng_state", lambda state: None)
        no_rng = main(tmp_path / "norng", resume=True)
        monkeypatch.undo()
    finally:
        torch.set_num_threads(threads)
    assert not all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), no_rng.state_dict().values()))

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    final = tmp_path / "resumed_final.pt"
    subprocess.run([sys.executable, str(script), str(tmp_path / "killed"), str(final)], check=True, cwd=REPO,
                   env=env, timeout=120)
    resumed = torch.load(final, weights_only=True)
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed[name]), name
    # the log of the resumed run has every step exactly once (lines after the checkpoint were dropped, redone)
    train_lines = [r for r in _read_log(tmp_path / "killed") if "losses" in r]
    assert [r["step"] for r in train_lines] == list(range(1, 13))
    straight_lines = [r for r in _read_log(tmp_path / "straight") if "losses" in r]
    assert [r["losses"] for r in train_lines] == [r["losses"] for r in straight_lines]
    assert [r["lr"] for r in train_lines] == [r["lr"] for r in straight_lines]
    assert {"step", "epoch", "losses", "loss", "lr", "images_per_s", "time"} <= set(train_lines[0])
    evals = [r for r in _read_log(tmp_path / "killed") if "eval" in r]
    assert [r["step"] for r in evals] == [3, 6, 9, 12]


class Regression(nn.Module):
    """y = x w* + noise; returns {"mse": ...} in training and predictions in eval."""

    def __init__(self, nan_at_step: int | None = None):
        super().__init__()
        self.linear = nn.Linear(4, 1)
        self.calls, self.nan_at_step = 0, nan_at_step

    def forward(self, batch):
        x, y = batch
        pred = self.linear(x).squeeze(1)
        if not self.training:
            return pred
        self.calls += 1
        loss = ((pred - y) ** 2).mean()
        if self.calls == self.nan_at_step:
            loss = loss * float("nan")
        return {"mse": loss, "zero": torch.zeros(())}


def _regression_data(n_batches=8, batch=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    batches = []
    for _ in range(n_batches):
        x = torch.randn(batch, 4, generator=g)
        batches.append((x, x @ w + 0.01 * torch.randn(batch, generator=g)))
    return batches


def test_toy_loss_goes_down_and_files_are_written(tmp_path):
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "adam", lr=0.1)
    sched = build_scheduler(opt, "step", step_size=50, gamma=0.5)
    result = Trainer(model, opt, _regression_data(), scheduler=sched, device="cpu", out_dir=tmp_path, max_steps=120,
                     log_every=10, grad_clip=10.0, snapshot_every=40, progress=False).train()
    log = _read_log(tmp_path)
    assert [r["lr"] for r in log] == [0.1 * 0.5 ** ((r["step"] - 1) // 50) for r in log]  # the rate of that step
    assert [r["step"] for r in log] == list(range(10, 121, 10))
    assert log[-1]["loss"] < 0.01 * log[0]["loss"]
    assert result["step"] == 120 and result["epoch"] == 14  # 8 batches per epoch
    assert all(r["images_per_s"] > 0 for r in log)
    for k in (1, 2, 3):
        assert safe_torch_load(tmp_path / f"snapshot_{k}.pt")["step"] == 40 * k
    ckpt = safe_torch_load(tmp_path / "last.pt")
    assert ckpt["step"] == 120
    assert all(torch.equal(a, b) for a, b in zip(ckpt["model"].values(), model.state_dict().values()))


def test_lbfgs_runs_through_a_closure(tmp_path):
    data = _regression_data(n_batches=1, batch=64)
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "lbfgs", lr=1.0, max_iter=50, line_search_fn="strong_wolfe")
    Trainer(model, opt, data, device="cpu", out_dir=tmp_path, max_steps=2, progress=False).train()
    x, y = data[0]
    design = torch.cat([x, torch.ones(64, 1)], 1)
    solution = torch.linalg.lstsq(design, y[:, None]).solution.squeeze(1)
    fitted = torch.cat([model.linear.weight.detach().squeeze(0), model.linear.bias.detach()])
    assert torch.allclose(fitted, solution, atol=1e-4)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "sgd", lr=0.01)
    Trainer(model, opt, _regression_data(), device="cpu", out_dir=tmp_path, max_steps=5, progress=False).train()
    # resume with checkpoints every 3 steps: step 6 is saved, then step 8 (the 3rd call after resume) is NaN
    model = Regression(nan_at_step=3)
    opt = build_optimizer(model, "sgd", lr=0.01)
    trainer = Trainer(model, opt, _regression_data(), device="cpu", out_dir=tmp_path, max_steps=20,
                      checkpoint_every=3, log_every=1, progress=False, resume=True)
    with pytest.raises(NonFiniteLossError, match=r"step 8 .*mse=nan.*zero=0\.0"):
        trainer.train()
    ckpt = safe_torch_load(tmp_path / "last.pt")
    assert ckpt["step"] == 6  # the last good checkpoint, not overwritten by the failing step
    assert all(torch.isfinite(p).all() for p in model.parameters())  # no update was made with the NaN loss
    assert [r["step"] for r in _read_log(tmp_path)][-1] == 7


def _scripted_eval(values):
    """eval_fn returning the next value of ``values`` and recording the model's weights at each call."""
    seen = []

    def eval_fn(model):
        assert not model.training
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"metric": values[len(seen) - 1], "other": 1}

    return eval_fn, seen


@pytest.mark.parametrize("mode,values,best_index,stop_step", [
    ("max", [0.5, 0.7, 0.6, 0.65, 0.7, 0.9], 1, 5),   # ties are not improvements
    ("min", [3.0, 2.0, 2.5, 1.0, 1.5, 1.2, 1.1], 3, 7),
])
def test_best_model_rule_and_early_stopping(tmp_path, mode, values, best_index, stop_step):
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "sgd", lr=0.01)
    eval_fn, seen = _scripted_eval(values)
    result = Trainer(model, opt, _regression_data(), device="cpu", out_dir=tmp_path, max_steps=50, eval_fn=eval_fn,
                     eval_every=1, best_metric="metric", best_mode=mode, early_stop_patience=3,
                     progress=False).train()
    assert result["stopped_early"] and result["step"] == stop_step
    assert result["best_value"] == values[best_index] and result["best_step"] == best_index + 1
    best = safe_torch_load(tmp_path / "best.pt")
    assert best["step"] == best_index + 1 and best["value"] == values[best_index]
    for k, v in best["model"].items():
        assert torch.equal(v, seen[best_index][k])
    assert safe_torch_load(tmp_path / "last.pt")["step"] == stop_step
    # resuming a run that already stopped early does not train further
    model2 = Regression()
    again = Trainer(model2, build_optimizer(model2, "sgd", lr=0.01), _regression_data(), device="cpu",
                    out_dir=tmp_path, max_steps=50, eval_fn=eval_fn, eval_every=1, best_metric="metric",
                    best_mode=mode, early_stop_patience=3, progress=False, resume=True).train()
    assert again["step"] == stop_step and again["stopped_early"]


def test_trainer_argument_errors(tmp_path):
    model = Regression()
    opt = build_optimizer(model, "sgd", lr=0.01)
    with pytest.raises(ValueError, match="early_stop_patience needs best_metric"):
        Trainer(model, opt, [], device="cpu", out_dir=tmp_path, max_steps=3, early_stop_patience=2)
    with pytest.raises(ValueError, match="no batches"):
        Trainer(model, opt, [], device="cpu", out_dir=tmp_path, max_steps=3, progress=False).train()
    with pytest.raises(ValueError, match="one-shot iterator"):
        Trainer(model, opt, iter(_regression_data(2)), device="cpu", out_dir=tmp_path, max_steps=5,
                progress=False).train()

    class NotADict(Regression):
        def forward(self, batch):
            return super().forward(batch)["mse"]

    bad = NotADict()
    with pytest.raises(TypeError, match="dict of scalar losses"):
        Trainer(bad, build_optimizer(bad, "sgd", lr=0.1), _regression_data(1), device="cpu", out_dir=tmp_path,
                max_steps=1, progress=False).train()


def test_ddp_wrapped_model_checkpoints_plain_keys(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = nn.parallel.DistributedDataParallel(Regression())
        opt = build_optimizer(model, "momentum", lr=0.01)
        Trainer(model, opt, _regression_data(2), device="cpu", out_dir=tmp_path / "run", max_steps=3,
                progress=False).train()
    finally:
        dist.destroy_process_group()
    ckpt = safe_torch_load(tmp_path / "run" / "last.pt")
    assert set(ckpt["model"]) == {"linear.weight", "linear.bias"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="mixed precision is CUDA-only")
def test_amp_on_cuda_trains_and_resumes(tmp_path):
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "momentum", lr=0.01)
    Trainer(model, opt, _regression_data(), device="cuda", out_dir=tmp_path, max_steps=60, log_every=10,
            checkpoint_every=30, grad_clip=5.0, progress=False).train()
    log = _read_log(tmp_path)
    assert log[-1]["loss"] < 0.1 * log[0]["loss"]
    model2 = Regression()
    resumed = Trainer(model2, build_optimizer(model2, "momentum", lr=0.01), _regression_data(), device="cuda",
                      out_dir=tmp_path, max_steps=60, progress=False, resume=True).train()
    assert resumed["step"] == 60


def test_snapshot_ensemble_with_cyclic_cosine(tmp_path):
    """Snapshots land at the end of each cosine cycle, where the learning rate is lowest (Huang et al. 2017)."""
    torch.manual_seed(0)
    model = Regression()
    opt = build_optimizer(model, "momentum", lr=0.05)
    sched = build_scheduler(opt, "cyclic_cosine", cycle_steps=10)
    Trainer(model, opt, _regression_data(), scheduler=sched, device="cpu", out_dir=tmp_path, max_steps=30,
            log_every=1, snapshot_every=10, progress=False).train()
    lrs = {r["step"]: r["lr"] for r in _read_log(tmp_path)}
    for k in (1, 2, 3):
        snap = safe_torch_load(tmp_path / f"snapshot_{k}.pt")
        assert snap["step"] == 10 * k
        cycle = [lrs[s] for s in range(10 * k - 9, 10 * k + 1)]
        assert lrs[10 * k] == min(cycle) and lrs[10 * k - 9] == 0.05
    assert not torch.equal(safe_torch_load(tmp_path / "snapshot_1.pt")["model"]["linear.weight"],
                           safe_torch_load(tmp_path / "snapshot_3.pt")["model"]["linear.weight"])
