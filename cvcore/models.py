"""Model files: a path or the name of a model shipped in a package's ``models/`` folder (``MODELS_DIR``); reading one
with a check of its kind; fp16 weights in the file, fp32 in memory."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["shipped_models", "resolve_model_path", "half_state_dict", "float_state_dict", "read_model_file"]


def shipped_models(models_dir: str | os.PathLike) -> list[str]:
    """The names of the ``*.pt`` files in ``models_dir``."""
    return sorted(p.stem for p in Path(models_dir).glob("*.pt"))


def resolve_model_path(path_or_name: str | os.PathLike, models_dir: str | os.PathLike, what: str = "model",
                       expected: Sequence[str] = ()) -> Path:
    """``path_or_name`` as a file, else ``models_dir/<name>.pt``.

    Raises:
        FileNotFoundError: neither; the message lists the shipped names (and says when one of ``expected``, the
            names the package ships, is missing from the installation).
    """
    p = Path(path_or_name)
    if p.is_file():
        return p
    shipped = Path(models_dir) / f"{path_or_name}.pt"
    if shipped.is_file():
        return shipped
    if str(path_or_name) in expected:
        raise FileNotFoundError(f"shipped {what} '{path_or_name}' is missing from {models_dir}")
    names = sorted(set(shipped_models(models_dir)) | set(expected))
    raise FileNotFoundError(f"{path_or_name}: no such {what} file, and not a shipped model "
                            f"({', '.join(names) or 'none shipped'})")


def half_state_dict(state: dict) -> dict:
    """A state dict for a model file: floating-point tensors in float16 (half the size), all on the CPU, detached."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in state.items()}


def float_state_dict(state: dict) -> dict:
    """A model file's state dict ready to load: floating-point tensors back in float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def read_model_file(path: str | os.PathLike, is_kind: Callable[[Any], bool], what: str) -> dict:
    """A model file's dict (``weights_only`` load), checked to be ``what`` (``is_kind``).

    Raises:
        ValueError: unreadable, refused (a pickle that could run code), truncated, or another kind of file (the
            message says which kind it is and where it belongs).
    """
    from cvcore.io import describe_torch_file, safe_torch_load

    obj = safe_torch_load(path)
    if not isinstance(obj, dict) or not is_kind(obj):
        raise ValueError(f"{path}: not {what}: {describe_torch_file(obj)}")
    return obj
