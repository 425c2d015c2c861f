"""Optimizer and learning-rate schedule factories: config names -> ``torch.optim`` / ``torch.optim.lr_scheduler``.

Schedules are stepped once per optimizer step (the :class:`~cvcore.engine.Trainer` is step-based), so ``t`` below
counts optimizer steps from 0.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim import lr_scheduler as sched

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler", "parameter_groups"]

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw", "lbfgs")
SCHEDULERS = ("constant", "step", "multistep", "exponential", "inverse_time", "cosine", "cyclic_cosine")


def parameter_groups(module: nn.Module, weight_decay: float, bias_decay: float | None = 0.0) -> list[dict]:
    """Two parameter groups: weights (>= 2 dims) with ``weight_decay``; biases and norm parameters with
    ``bias_decay`` (0 by default, as Caffe's ``decay_mult: 0`` on biases). ``bias_decay=None``: same as weights."""
    params = [p for p in module.parameters() if p.requires_grad]
    if bias_decay is None:
        return [{"params": params, "weight_decay": weight_decay}]
    weights = [p for p in params if p.dim() >= 2]
    others = [p for p in params if p.dim() < 2]
    return [g for g in ({"params": weights, "weight_decay": weight_decay},
                        {"params": others, "weight_decay": bias_decay}) if g["params"]]


def build_optimizer(params: Iterable[torch.Tensor] | Iterable[dict] | nn.Module, name: str, lr: float,
                    momentum: float | None = None, weight_decay: float = 0.0, **kwargs: Any) -> Optimizer:
    """Optimizer by config name. ``weight_decay`` is the L2 coefficient added to the gradient (``g + wd * w``).

    ============  ====================================================  ================================================
    name          torch                                                 update (g: gradient + wd * w)
    ============  ====================================================  ================================================
    ``sgd``       ``SGD(momentum=0)``                                   w -= lr g
    ``momentum``  ``SGD(momentum=0.9)``                                 b = mu b + g; w -= lr b
    ``nesterov``  ``SGD(momentum=0.9, nesterov=True)``                  b = mu b + g; w -= lr (g + mu b)
    ``adagrad``   ``Adagrad``                                           G += g^2; w -= lr g / (sqrt(G) + eps)
    ``rmsprop``   ``RMSprop(alpha=0.99)``                               v = a v + (1-a) g^2; w -= lr g / (sqrt(v) + eps)
    ``adam``      ``Adam(betas=(0.9, 0.999))``                          bias-corrected moments
    ``adamw``     ``AdamW`` (decoupled decay)
    ``lbfgs``     ``LBFGS`` (needs a closure; the Trainer provides it)  no weight_decay: use ``penalty``
    ============  ====================================================  ================================================

    Args:
        params: parameters, parameter-group dicts, or a module (all its trainable parameters).
        momentum: for ``momentum``/``nesterov`` (default 0.9) and ``rmsprop`` (default 0).
        **kwargs: passed to the torch optimizer (``eps``, ``betas``, ``alpha``, ``dampening``, ``lr_decay``,
            ``max_iter``, ``history_size``, ``line_search_fn``, ...).
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer '{name}' (choose from {', '.join(OPTIMIZERS)})")
    if lr <= 0:
        raise ValueError(f"optimizer '{name}': lr must be > 0, got {lr}")
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    try:
        if key == "sgd":
            if momentum:
                raise ValueError("optimizer 'sgd' is plain SGD; use 'momentum' or 'nesterov' for momentum")
            return torch.optim.SGD(params, lr=lr, momentum=0.0, weight_decay=weight_decay, **kwargs)
        if key in ("momentum", "nesterov"):
            mu = 0.9 if momentum is None else momentum
            return torch.optim.SGD(params, lr=lr, momentum=mu, nesterov=key == "nesterov",
                                   weight_decay=weight_decay, **kwargs)
        if key == "adagrad":
            return torch.optim.Adagrad(params, lr=lr, weight_decay=weight_decay, **kwargs)
        if key == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay, **kwargs)
        if key == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **kwargs)
        if key == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **kwargs)
        if weight_decay:
            raise ValueError("optimizer 'lbfgs' has no weight_decay: add cvcore.nn.penalty(..., 'l2', l2=...) "
                             "to the loss instead")
        return torch.optim.LBFGS(params, lr=lr, **kwargs)
    except TypeError as e:
        raise ValueError(f"optimizer '{name}': bad arguments {kwargs} ({e})") from None


class _InverseTime:
    """lr factor ``(1 + k t)^(-power)`` (Caffe's ``inv`` policy; power 1 is the classic 1 / (1 + k t)).

    A class rather than a lambda so ``LambdaLR.state_dict`` stores its (plain) attributes."""

    def __init__(self, k: float, power: float) -> None:
        self.k, self.power = float(k), float(power)

    def __call__(self, t: int) -> float:
        return (1.0 + self.k * t) ** (-self.power)


class _Constant:
    def __call__(self, t: int) -> float:
        return 1.0


def build_scheduler(optimizer: Optimizer, name: str, total_steps: int | None = None, warmup_steps: int = 0,
                    warmup_factor: float = 0.001, **kwargs: Any) -> sched.LRScheduler:
    """Learning-rate schedule by config name, stepped once per optimizer step (t = 0, 1, ...).

    With base rate lr0 and t counted from the end of warm-up:

    ================  ============================  ====================================================
    name              kwargs (defaults)             lr(t)
    ================  ============================  ====================================================
    ``constant``                                    lr0
    ``step``          step_size, gamma=0.1          lr0 * gamma ** (t // step_size)
    ``multistep``     milestones, gamma=0.1         lr0 * gamma ** (number of milestones <= t)
    ``exponential``   gamma                         lr0 * gamma ** t
    ``inverse_time``  k, power=1.0                  lr0 * (1 + k t) ** -power  (``LambdaLR``)
    ``cosine``        eta_min=0 (needs total_steps) eta_min + (lr0 - eta_min)(1 + cos(pi t / T)) / 2,
                                                    T = total_steps - warmup_steps
    ``cyclic_cosine`` cycle_steps, eta_min=0        cosine restarted every cycle_steps (SGDR; for
                                                    snapshot ensembles, Huang et al. 2017)
    ================  ============================  ====================================================

    Warm-up (``warmup_steps > 0``): lr rises linearly from ``warmup_factor * lr0`` at t=0 to lr0 at
    ``t = warmup_steps`` (``LinearLR``), then the schedule above starts from its own t = 0 (``SequentialLR``).
    """
    key = name.lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown lr schedule '{name}' (choose from {', '.join(SCHEDULERS)})")
    if warmup_steps < 0:
        raise ValueError(f"lr schedule: warmup_steps must be >= 0, got {warmup_steps}")

    def need(arg: str) -> Any:
        if arg not in kwargs:
            raise ValueError(f"lr schedule '{name}' needs '{arg}'")
        return kwargs.pop(arg)

    try:
        if key == "constant":
            main = sched.LambdaLR(optimizer, _Constant())
        elif key == "step":
            main = sched.StepLR(optimizer, step_size=need("step_size"), gamma=kwargs.pop("gamma", 0.1))
        elif key == "multistep":
            main = sched.MultiStepLR(optimizer, milestones=list(need("milestones")), gamma=kwargs.pop("gamma", 0.1))
        elif key == "exponential":
            main = sched.ExponentialLR(optimizer, gamma=need("gamma"))
        elif key == "inverse_time":
            main = sched.LambdaLR(optimizer, _InverseTime(need("k"), kwargs.pop("power", 1.0)))
        elif key == "cosine":
            if total_steps is None or total_steps <= warmup_steps:
                raise ValueError(f"lr schedule 'cosine' needs total_steps > warmup_steps, got {total_steps}")
            main = sched.CosineAnnealingLR(optimizer, T_max=total_steps - warmup_steps,
                                           eta_min=kwargs.pop("eta_min", 0.0))
        else:
            main = sched.CosineAnnealingWarmRestarts(optimizer, T_0=need("cycle_steps"),
                                                     eta_min=kwargs.pop("eta_min", 0.0))
    except TypeError as e:
        raise ValueError(f"lr schedule '{name}': bad arguments ({e})") from None
    if kwargs:
        raise ValueError(f"lr schedule '{name}': unexpected arguments {sorted(kwargs)}")
    if warmup_steps == 0:
        return main
    if not 0 < warmup_factor <= 1:
        raise ValueError(f"lr schedule: warmup_factor must be in (0, 1], got {warmup_factor}")
    warmup = sched.LinearLR(optimizer, start_factor=warmup_factor, end_factor=1.0, total_iters=warmup_steps)
    return sched.SequentialLR(optimizer, [warmup, main], milestones=[warmup_steps])


