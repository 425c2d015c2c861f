"""Device selection, mixed precision, seeding and RNG state capture (for exact resume)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

__all__ = [
    "resolve_device", "autocast", "amp_dtype", "seed_everything", "set_num_threads", "pipeline_threads",
    "DEFAULT_THREADS", "capture_rng_state", "restore_rng_state",
]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; otherwise ``torch.device(name)``, checked to exist.

    Raises:
        ValueError: an unknown device string, or CUDA asked for on a machine without it.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device '{name}' requested but CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device '{name}' requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return device


def amp_dtype() -> torch.dtype:
    """bfloat16 where the GPU supports it (no loss scaling needed), else float16."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


@contextlib.contextmanager
def autocast(device: torch.device | str, enabled: bool = True) -> Iterator[None]:
    """Mixed precision on CUDA; a no-op elsewhere (CPU autocast would only slow these convnets down)."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=amp_dtype()):
            yield
    else:
        yield


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices). ``deterministic`` also asks cuDNN for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def set_num_threads(n: int | None) -> int:
    """Set torch's intra-op threads (``None`` or 0: leave torch's default, honouring ``OMP_NUM_THREADS``)."""
    if n:
        torch.set_num_threads(int(n))
    elif "OMP_NUM_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return torch.get_num_threads()


DEFAULT_THREADS = torch.get_num_threads()  # torch's default (physical cores), before anything here changes it


def pipeline_threads(n: int | None, device: torch.device) -> int:
    """Torch threads for a loop whose worker threads prepare the next inputs (decoding, proposals, warping) while
    the network runs: ``n`` when given, else one fewer than torch's default on the CPU (the workers get that core;
    on 2 cores this made ``detect`` 7% faster than 2 threads), leaving ``OMP_NUM_THREADS`` and CUDA alone."""
    if n or "OMP_NUM_THREADS" in os.environ or device.type != "cpu":
        return set_num_threads(n)
    return set_num_threads(max(1, DEFAULT_THREADS - 1))


def capture_rng_state() -> dict:
    """All RNG states as tensors / plain types (so the dict loads with ``weights_only=True``)."""
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
