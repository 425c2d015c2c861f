"""FLIC (Sapp & Taskar 2013, "MODEC") ``examples.mat``.

``examples`` is a 1 x N MATLAB struct array; per example: ``coords`` 2 x 29 (x; y) with NaN in the unused slots,
``filepath`` (image name in ``images/``), ``torsobox`` [x1 y1 x2 y2], ``istrain`` / ``istest`` flags.
Eleven of the 29 slots are annotated (:data:`cvcore.datasets.records.FLIC_JOINTS`); joints without finite
coordinates are missing. Coordinates are MATLAB 1-based and get ``- 1`` (the torso box too).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .records import FLIC, FLIC_SLOTS, DatasetError, PoseDataset, PoseRecord

__all__ = ["read_flic"]

_REQUIRED = ("coords", "filepath")


def _field(example: np.void, name: str) -> np.ndarray:
    return np.asarray(example[name])


def read_flic(root: str | os.PathLike, split: str | None = None) -> PoseDataset:
    """Read FLIC ``examples.mat``.

    Args:
        root: the dataset folder (``examples.mat`` + ``images/``) or the ``examples.mat`` file.
        split: None (all), ``"train"`` (``istrain``) or ``"test"`` (``istest``).

    Returns:
        a :class:`PoseDataset` (skeleton :data:`FLIC`, 11 joints); ``torso_box`` from ``torsobox``.

    Raises:
        DatasetError: unreadable file, no ``examples`` struct, missing fields or a ``coords`` of the wrong shape,
            naming the file and the example index.
    """
    import scipy.io

    root = Path(root)
    path, folder = (root, root.parent) if root.is_file() else (root / "examples.mat", root)
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    examples = mat.get("examples")
    if examples is None or examples.dtype.names is None:
        raise DatasetError(f"{path}: no struct array 'examples' (found: "
                           f"{', '.join(k for k in mat if not k.startswith('__')) or 'none'})")
    missing = [f for f in _REQUIRED if f not in examples.dtype.names]
    if split is not None and f"is{split}" not in examples.dtype.names:
        missing.append(f"is{split}")
    if missing:
        raise DatasetError(f"{path}: 'examples' lacks field(s) {', '.join(missing)} "
                           f"(has {', '.join(examples.dtype.names)})")
    examples = np.atleast_1d(examples)

    images = folder / "images"
    records = []
    for i, ex in enumerate(examples):
        if split is not None and not bool(_field(ex, f"is{split}")):
            continue
        coords = _field(ex, "coords").astype(np.float64)
        if coords.shape != (2, 29):
            raise DatasetError(f"{path}: example {i}: coords has shape {coords.shape}, expected (2, 29)")
        xy = coords[:, list(FLIC_SLOTS)].T - 1.0
        visible = np.isfinite(xy).all(axis=1)
        name = str(_field(ex, "filepath"))
        torso = None
        if "torsobox" in examples.dtype.names:
            tb = _field(ex, "torsobox").astype(np.float64).reshape(-1)
            if tb.shape == (4,) and np.isfinite(tb).all():
                torso = tb - 1.0  # corner points in MATLAB coordinates, like the joints
        records.append(PoseRecord(image_path=images / name, joints=np.where(visible[:, None], xy, 0.0),
                                  visible=visible, torso_box=torso, file=Path(name).as_posix()))
    return PoseDataset(skeleton=FLIC, records=records, image_root=images)
