"""Model files: a path, or the name of a model shipped in a package's ``models/`` folder (``MODELS_DIR``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["shipped_models", "resolve_model_path"]


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
