"""Resumable stages: a stage's result is one file holding the result and a key of everything that determined it;
a later run reuses the file only when its key matches, and otherwise computes the stage again and replaces it.

    svms = keyed_stage(out / "svm.pt", stage_key(features_key, svm_config, images), train_svms)

Files are written atomically (rank 0 alone under torchrun) and read with ``weights_only=True``, so results are
tensors and plain data. A file that cannot be read, or holds another key, is a miss (logged), never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from cvcore.distributed import is_main_process
from cvcore.io import atomic_torch_save, safe_torch_load

__all__ = ["stage_key", "load_keyed", "save_keyed", "keyed_stage"]

log = logging.getLogger("cvcore")
T = TypeVar("T")


def stage_key(*parts: Any) -> str:
    """A short hash of JSON-able ``parts`` (sorted keys; other objects by ``str``)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def load_keyed(path: str | os.PathLike, key: str) -> Any | None:
    """The result stored in ``path`` under ``key``; None when the file is absent, unreadable or keyed otherwise."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        saved = safe_torch_load(path)
    except (ValueError, FileNotFoundError) as e:
        log.warning("%s: not reused (%s)", path, e)
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or "value" not in saved:
        log.info("%s: computed again (its inputs changed)", path)
        return None
    log.info("%s: reused", path)
    return saved["value"]


def save_keyed(path: str | os.PathLike, key: str, value: Any) -> None:
    """Store ``value`` (tensors and plain data) under ``key``, atomically, on the main process only."""
    if is_main_process():
        atomic_torch_save({"key": key, "value": value}, Path(path))


def keyed_stage(path: str | os.PathLike, key: str, compute: Callable[[], T]) -> T:
    """``compute()``'s result, or the one ``path`` holds under ``key`` (then ``compute`` is not called)."""
    value = load_keyed(path, key)
    if value is None:
        value = compute()
        save_keyed(path, key, value)
    return value
