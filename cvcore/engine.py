"""One step-based training loop for both pipelines (detectron2 ``SimpleTrainer`` style).

``model(batch)`` in train mode returns a dict of scalar losses; the loop sums it, back-propagates, optionally clips
gradients, steps the optimizer and the learning-rate schedule (once per step), logs, evaluates, keeps the best model,
stops early, saves snapshots and atomic checkpoints, and resumes exactly.

Exact resume. ``out_dir/last.pt`` holds the model, optimizer, schedule, GradScaler, the RNG states (python, numpy,
torch, CUDA) at the checkpointed step, and the data position: epoch, number of batches consumed in that epoch, and the
RNG states captured just before the epoch's ``iter(train_data)``. Resuming restores the epoch-start RNG states,
re-creates the iterator and draws (and discards) the consumed batches, then restores the step's RNG states. A
``DataLoader`` whose shuffling and augmentation draw from the global RNGs (or from ``generator=``, seeded
``worker_init_fn``, a ``DistributedSampler``: ``set_epoch(epoch)`` is called) therefore yields the same remaining
batches as an uninterrupted run, with any ``num_workers``. The cost is re-loading up to one epoch of batches.

Distributed (DDP): the model may be DDP-wrapped; every rank runs the same loop, only rank 0 writes files, and all
ranks resume from rank 0's checkpoint, which holds every rank's RNG states (each rank restores its own when the run
resumes with as many ranks, else rank 0's). Logged losses are averaged over the ranks. ``eval_fn`` runs on every rank
and must return the same metrics on each (gather inside it) so that best-model and early-stopping decisions agree.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from cvcore.device import amp_dtype, autocast, capture_rng_state, resolve_device, restore_rng_state
from cvcore.distributed import all_gather_objects, mean_over_ranks, rank, world_size
from cvcore.io import atomic_torch_save, atomic_write_text, safe_torch_load

__all__ = ["NonFiniteLossError", "Trainer", "unwrap_model"]

CHECKPOINT_VERSION = 1


class NonFiniteLossError(RuntimeError):
    """A loss term was NaN or infinite; training stopped before the update, checkpoints untouched."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` (state-dict keys without ``module.``)."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def _to_device(batch: Any, device: torch.device) -> Any:
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _default_batch_size(batch: Any) -> int:
    """Leading dim of the first tensor found depth-first; ``len`` of a list of non-tensors."""
    if torch.is_tensor(batch):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        return _default_batch_size(next(iter(batch.values()))) if batch else 0
    if isinstance(batch, (list, tuple)) and batch:
        first = batch[0]
        return _default_batch_size(first) if torch.is_tensor(first) or isinstance(first, (Mapping, list, tuple)) \
            else len(batch)
    return 1


def _plain_metrics(metrics: Mapping[str, Any]) -> dict[str, float | int | str]:
    """Keep metrics JSON- and weights_only-friendly (tensors / numpy scalars -> float)."""
    out: dict[str, float | int | str] = {}
    for k, v in metrics.items():
        if torch.is_tensor(v) and v.numel() == 1:
            v = v.item()
        if hasattr(v, "item") and not isinstance(v, (int, float, str)):
            try:
                v = v.item()
            except (ValueError, TypeError):
                continue
        if isinstance(v, (bool, int, float, str)):
            out[str(k)] = v
    return out


class Trainer:
    """Step-based trainer.

    Args:
        model: ``model(batch)`` in train mode returns ``dict[str, Tensor[]]`` of losses (summed for backward).
            May be DDP-wrapped. Moved to ``device``.
        optimizer: a ``torch.optim`` optimizer (``cvcore.nn.build_optimizer``); ``LBFGS`` is driven with a closure.
        train_data: a re-iterable of batches (a ``DataLoader``, a list, ...), iterated again for every epoch.
            Tensors inside a batch (also inside dicts / lists / tuples) are moved to ``device``.
        scheduler: stepped once after every optimizer step (``cvcore.nn.build_scheduler``).
        device: ``"auto"``, ``"cpu"``, ``"cuda:0"`` or a ``torch.device``.
        out_dir: where ``last.pt``, ``best.pt``, ``snapshot_<k>.pt`` and ``log.jsonl`` go.
        max_steps: total number of optimizer steps.
        grad_clip: max global L2 norm of the gradients (``clip_grad_norm_``), None for no clipping.
        amp: mixed precision (autocast, plus a GradScaler for float16) on CUDA; ignored on CPU.
        log_every: steps between log lines and progress-bar updates (``log.jsonl``: step, epoch, losses, loss,
            lr used by the step, images_per_s over the interval, time in seconds since this ``train()`` call began).
        eval_fn: ``eval_fn(model) -> dict[str, float]`` (the bare model, not its DDP wrapper), called in eval mode
            under ``torch.no_grad()`` every ``eval_every`` steps and after the last step; metrics go to
            ``log.jsonl`` (``"eval"`` lines).
        best_metric, best_mode: the metric and direction (``"max"`` / ``"min"``) that select ``best.pt``.
        early_stop_patience: stop after this many evaluations in a row without improvement of ``best_metric``.
        checkpoint_every: steps between ``last.pt`` checkpoints (always written after the last step as well).
            ``eval_every``, ``checkpoint_every``, ``snapshot_every``: None or 0 switch the periodic action off.
        snapshot_every: save the model to ``snapshot_<k>.pt`` at steps k * snapshot_every (snapshot ensembles,
            Huang et al. 2017: pair with ``build_scheduler(opt, "cyclic_cosine", cycle_steps=snapshot_every)`` so each
            snapshot sits at a learning-rate minimum; average the snapshots' predictions at test time).
        progress: show a tqdm bar (rank 0 only).
        resume: continue from ``out_dir/last.pt`` if it exists (fresh start otherwise).
        batch_size_fn: ``batch -> number of images`` for images/s (default: leading dim of the first tensor).
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, train_data: Iterable, *,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 device: str | torch.device = "auto", out_dir: str | Path, max_steps: int,
                 grad_clip: float | None = None, amp: bool = True, log_every: int = 20,
                 eval_fn: Callable[[nn.Module], Mapping[str, Any]] | None = None, eval_every: int | None = None,
                 best_metric: str | None = None, best_mode: str = "max", early_stop_patience: int | None = None,
                 checkpoint_every: int | None = None, snapshot_every: int | None = None, progress: bool = True,
                 resume: bool = False, batch_size_fn: Callable[[Any], int] | None = None) -> None:
        eval_every, checkpoint_every, snapshot_every = (eval_every or None, checkpoint_every or None,
                                                        snapshot_every or None)
        if max_steps < 1:
            raise ValueError(f"Trainer: max_steps must be >= 1, got {max_steps}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"Trainer: best_mode must be 'max' or 'min', got '{best_mode}'")
        if eval_every is not None and eval_fn is None:
            raise ValueError("Trainer: eval_every is set but eval_fn is None")
        if early_stop_patience is not None and best_metric is None:
            raise ValueError("Trainer: early_stop_patience needs best_metric (the metric to watch)")
        for name, value in (("log_every", log_every), ("eval_every", eval_every),
                            ("checkpoint_every", checkpoint_every), ("snapshot_every", snapshot_every),
                            ("early_stop_patience", early_stop_patience)):
            if value is not None and value < 1:
                raise ValueError(f"Trainer: {name} must be >= 1 or None, got {value}")
        self.device = resolve_device(device)
        self.model = model.to(self.device)
        self.optimizer = optimizer
        self.train_data = train_data
        self.scheduler = scheduler
        self.out_dir = Path(out_dir)
        self.max_steps = int(max_steps)
        self.grad_clip = grad_clip
        self.log_every = log_every
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self.best_metric, self.best_mode = best_metric, best_mode
        self.early_stop_patience = early_stop_patience
        self.checkpoint_every, self.snapshot_every = checkpoint_every, snapshot_every
        self.progress = progress
        self.resume = resume
        self.batch_size_fn = batch_size_fn or _default_batch_size
        self.is_main = rank() == 0

        self.closure_based = isinstance(optimizer, torch.optim.LBFGS)
        on_cuda = self.device.type == "cuda"
        self.use_autocast = amp and on_cuda and not self.closure_based
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_autocast and amp_dtype() == torch.float16)

        # loop state (all of it goes into the checkpoint)
        self.step = 0
        self.epoch = 0
        self.batch_index = 0          # batches consumed in the current epoch
        self.epoch_rng: dict | None = None
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.last_metrics: dict = {}

    # ------------------------------------------------------------------ paths
    @property
    def last_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out_dir / "best.pt"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.jsonl"

    # ------------------------------------------------------------- main loop
    def train(self) -> dict[str, Any]:
        """Run until ``max_steps`` or early stop.

        Returns:
            ``{"step", "epoch", "losses" (last step), "best_metric", "best_value", "best_step", "metrics" (last
            evaluation), "stopped_early"}``.

        Raises:
            NonFiniteLossError: a loss term is NaN/inf (nothing is written for that step).
        """
        from tqdm.auto import tqdm

        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        data_iter = self._load_checkpoint() if self.resume and self.last_path.is_file() else None
        if self.is_main and self.step == 0:
            atomic_write_text(self.log_path, "")
        self.model.train()
        bar = tqdm(total=self.max_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.is_main))
        losses: dict[str, float] = {}
        stopped_early = self._patience_exhausted()
        window_start, window_images, start_time = time.perf_counter(), 0, time.perf_counter()
        evaluated_at = checkpointed_at = -1
        first_step = self.step
        try:
            while self.step < self.max_steps and not stopped_early:
                if data_iter is None:
                    data_iter = self._start_epoch()
                try:
                    batch = next(data_iter)
                except StopIteration:
                    if self.batch_index == 0:
                        raise ValueError(f"train_data yielded no batches in epoch {self.epoch}; pass a re-iterable "
                                         "(list, DataLoader), not a one-shot iterator") from None
                    self.epoch += 1
                    data_iter = None
                    continue
                self.batch_index += 1
                window_images += self.batch_size_fn(batch)
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step uses
                losses = self._train_step(_to_device(batch, self.device))
                self.step += 1
                bar.update(1)

                if self.step % self.log_every == 0 or self.step == self.max_steps:
                    elapsed = time.perf_counter() - window_start
                    losses = mean_over_ranks(losses, self.device)  # the whole global batch's loss, not rank 0's
                    record = {"step": self.step, "epoch": self.epoch, "losses": losses,
                              "loss": sum(losses.values()), "lr": lr,
                              "images_per_s": window_images / max(elapsed, 1e-9),
                              "time": time.perf_counter() - start_time}
                    self._log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4g}", lr=f"{record['lr']:.3g}",
                                    img_s=f"{record['images_per_s']:.1f}")
                    window_start, window_images = time.perf_counter(), 0

                if self.eval_every and self.step % self.eval_every == 0:
                    stopped_early = self._evaluate()
                    evaluated_at = self.step
                if self.snapshot_every and self.step % self.snapshot_every == 0:
                    self._save_snapshot()
                if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                    self._save_checkpoint()
                    checkpointed_at = self.step

            if self.step > first_step:  # something was trained in this call
                if self.eval_fn is not None and evaluated_at != self.step and not stopped_early:
                    stopped_early = self._evaluate()
                    checkpointed_at = -1  # best value / patience changed
                if checkpointed_at != self.step:
                    self._save_checkpoint()
        finally:
            bar.close()
        return {"step": self.step, "epoch": self.epoch, "losses": losses, "best_metric": self.best_metric,
                "best_value": self.best_value, "best_step": self.best_step, "metrics": self.last_metrics,
                "stopped_early": stopped_early}

    def _start_epoch(self) -> Any:
        """Capture the epoch-start RNG states (for exact resume), tell a distributed sampler the epoch, iterate."""
        self.batch_index = 0
        self.epoch_rng = capture_rng_state()
        for holder in (self.train_data, getattr(self.train_data, "sampler", None),
                       getattr(self.train_data, "batch_sampler", None)):
            if holder is not None and hasattr(holder, "set_epoch"):
                holder.set_epoch(self.epoch)
        return iter(self.train_data)

    def _forward(self, batch: Any) -> tuple[Tensor, dict[str, float]]:
        with autocast(self.device, enabled=self.use_autocast):
            loss_dict = self.model(batch)
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(f"model(batch) must return a non-empty dict of scalar losses in train mode, got "
                            f"{type(loss_dict).__name__}")
        bad = [k for k, v in loss_dict.items() if not (torch.is_tensor(v) and v.numel() == 1)]
        if bad:
            raise TypeError(f"model(batch) returned non-scalar or non-tensor losses {bad}; each loss must be a "
                            "Tensor[] (reduce it inside the model)")
        total = sum(v.float().reshape(()) for v in loss_dict.values())
        values = {k: float(v.detach()) for k, v in loss_dict.items()}
        if not all(math.isfinite(v) for v in values.values()):
            terms = ", ".join(f"{k}={v}" for k, v in values.items())
            raise NonFiniteLossError(f"non-finite loss at step {self.step + 1} (epoch {self.epoch}, batch "
                                     f"{self.batch_index}): {terms}; last good checkpoint left intact at "
                                     f"{self.last_path} (lower the learning rate or enable grad_clip)")
        return total, values

    def _clip(self) -> None:
        if self.grad_clip is not None:
            params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)

    def _train_step(self, batch: Any) -> dict[str, float]:
        if self.closure_based:
            first: dict[str, float] = {}

            def closure() -> Tensor:
                self.optimizer.zero_grad(set_to_none=True)
                total, values = self._forward(batch)
                first.update(values if not first else {})
                total.backward()
                self._clip()
                return total

            self.optimizer.step(closure)
            values = first
        else:
            self.optimizer.zero_grad(set_to_none=True)
            total, values = self._forward(batch)
            self.scaler.scale(total).backward()
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                self._clip()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return values

    # ------------------------------------------------------ eval / best model
    def _patience_exhausted(self) -> bool:
        return self.early_stop_patience is not None and self.bad_evals >= self.early_stop_patience

    def _evaluate(self) -> bool:
        """Run ``eval_fn``; update best model and patience. Returns True when early stopping triggers."""
        self.model.eval()
        try:
            with torch.no_grad():
                metrics = _plain_metrics(self.eval_fn(unwrap_model(self.model)))
        finally:
            self.model.train()
        self.last_metrics = metrics
        improved = False
        if self.best_metric is not None:
            if self.best_metric not in metrics:
                raise KeyError(f"best_metric '{self.best_metric}' is not among the metrics returned by eval_fn: "
                               f"{sorted(metrics)}")
            value = float(metrics[self.best_metric])
            if math.isnan(value):
                improved = False
            elif self.best_value is None:
                improved = True
            else:
                improved = value > self.best_value if self.best_mode == "max" else value < self.best_value
            if improved:
                self.best_value, self.best_step, self.bad_evals = value, self.step, 0
                if self.is_main:
                    atomic_torch_save({"model": unwrap_model(self.model).state_dict(), "step": self.step,
                                       "metric": self.best_metric, "value": value, "metrics": metrics},
                                      self.best_path)
            else:
                self.bad_evals += 1
        self._log({"step": self.step, "epoch": self.epoch, "eval": metrics, "improved": improved,
                   "best": self.best_value})
        return self._patience_exhausted()

    # ------------------------------------------------------------ checkpoints
    def _save_snapshot(self) -> None:
        if self.is_main:
            k = self.step // self.snapshot_every
            atomic_torch_save({"model": unwrap_model(self.model).state_dict(), "step": self.step, "snapshot": k},
                              self.out_dir / f"snapshot_{k}.pt")

    def _save_checkpoint(self) -> None:
        # every rank's RNG states (each rank draws its own augmentation stream), gathered on all ranks
        per_rank = all_gather_objects({"rng": capture_rng_state(), "epoch_rng": self.epoch_rng})
        if not self.is_main:
            return
        state = {
            "version": CHECKPOINT_VERSION,
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": per_rank[0]["rng"],
            "epoch_rng": per_rank[0]["epoch_rng"],
            "per_rank_rng": per_rank if len(per_rank) > 1 else None,
            "step": self.step, "epoch": self.epoch, "batch_index": self.batch_index,
            "best_metric": self.best_metric, "best_value": self.best_value, "best_step": self.best_step,
            "bad_evals": self.bad_evals,
        }
        atomic_torch_save(state, self.last_path)

    def _load_checkpoint(self) -> Any:
        """Restore everything from ``last.pt``; return the data iterator positioned after the consumed batches."""
        ckpt = safe_torch_load(self.last_path, map_location="cpu")
        if not isinstance(ckpt, dict) or ckpt.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{self.last_path}: not a cvcore.engine checkpoint (version {CHECKPOINT_VERSION})")
        try:
            unwrap_model(self.model).load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ValueError(f"{self.last_path}: does not match this model/optimizer ({e})") from None
        if (ckpt["scheduler"] is None) != (self.scheduler is None):
            raise ValueError(f"{self.last_path}: checkpoint and trainer disagree on having an lr scheduler")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] is not None and self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step, self.epoch, self.batch_index = ckpt["step"], ckpt["epoch"], ckpt["batch_index"]
        self.best_value, self.best_step, self.bad_evals = ckpt["best_value"], ckpt["best_step"], ckpt["bad_evals"]
        if self.is_main and self.log_path.is_file():
            self._truncate_log()

        data_iter = None
        finished = self.step >= self.max_steps or self._patience_exhausted()
        own = ckpt.get("per_rank_rng")  # this rank's states when the run had as many ranks, else rank 0's
        own = own[rank()] if own is not None and len(own) == world_size() else ckpt
        if own["epoch_rng"] is not None and not finished:
            # replay the current epoch's iterator up to the checkpointed position
            restore_rng_state(own["epoch_rng"])
            data_iter = self._start_epoch()
            for i in range(ckpt["batch_index"]):
                try:
                    next(data_iter)
                except StopIteration:
                    raise ValueError(f"{self.last_path}: train_data has fewer than {ckpt['batch_index']} batches "
                                     f"per epoch (only {i}); resume with the same data") from None
            self.batch_index = ckpt["batch_index"]
        restore_rng_state(own["rng"])
        return data_iter

    def _truncate_log(self) -> None:
        """Drop log lines written after the checkpoint by the interrupted run (they will be written again)."""
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line).get("step", 0) <= self.step:
                    kept.append(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
        atomic_write_text(self.log_path, "".join(f"{line}\n" for line in kept))

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
