"""Leeds Sports Pose (LSP) and LSP Extended (LSPET) ``joints.mat`` files.

The two files differ (../shared/REFERENCE.md, "File conventions differ"):

* LSP: ``joints`` is 3 x 14 x N (N = 2000), rows (x, y, occlusion flag), flag 0 = visible. Every joint is annotated,
  occluded ones included, so every joint counts (``visible`` all True). Images ``images/im%04d.jpg``; train
  im0001-im1000, test im1001-im2000.
* LSPET: ``joints`` is 14 x 3 x N (N = 10000; 9000 in ../shared/data), columns (x, y, visibility flag), flag 1 =
  visible. A flag-0 joint may have no coordinates at all, so flag-0 joints are missing (``visible`` False).
  Images ``images/im%05d.jpg``.

Joint order: :data:`cvcore.datasets.records.LSP_JOINTS`. Coordinates are MATLAB 1-based and get ``- 1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .records import LSP, DatasetError, PoseDataset, PoseRecord

__all__ = ["read_lsp", "read_lspet", "load_joints_mat", "LSP_SPLITS"]

LSP_SPLITS = {"train": range(0, 1000), "test": range(1000, 2000)}


def load_joints_mat(path: str | os.PathLike) -> np.ndarray:
    """The ``joints`` array of an LSP / LSPET ``joints.mat`` (float64, 3-D, shape unchanged).

    Raises:
        DatasetError: unreadable file, no ``joints`` variable, or not a 3-D numeric array.
    """
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as e:  # scipy raises ValueError / MatReadError / TypeError on corrupt files
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    if "joints" not in mat:
        names = [k for k in mat if not k.startswith("__")]
        raise DatasetError(f"{path}: no variable 'joints' (found: {', '.join(names) or 'none'})")
    joints = mat["joints"]
    if joints.ndim != 3 or not np.issubdtype(joints.dtype, np.number):
        raise DatasetError(f"{path}: 'joints' must be a 3-D numeric array, got {joints.dtype} {joints.shape}")
    return joints.astype(np.float64)


def _joints_file(root: Path) -> tuple[Path, Path]:
    """``(joints.mat, dataset folder)`` from either the folder or the file."""
    if root.is_file():
        return root, root.parent
    return root / "joints.mat", root


def _check_flags(flags: np.ndarray, path: Path, what: str) -> None:
    bad = ~np.isin(flags, (0, 1))
    if bad.any():
        j, n = np.argwhere(bad)[0]
        raise DatasetError(f"{path}: {what} flag of joint {j} in example {n} is {flags[j, n]:g}, expected 0 or 1 "
                           "(is this the other LSP variant? LSP is 3 x 14 x N, LSPET 14 x 3 x N)")


def read_lsp(root: str | os.PathLike, split: str | None = None) -> PoseDataset:
    """Read LSP (``joints.mat`` 3 x 14 x N, occlusion flags): every joint counts.

    Args:
        root: the dataset folder (with ``joints.mat`` and ``images/``) or the ``joints.mat`` file.
        split: None (all), ``"train"`` (im0001-im1000) or ``"test"`` (im1001-im2000, the usual LSP test set).

    Returns:
        a :class:`PoseDataset` of N records (joints float32[14, 2] 0-based, visible all True, box None).
    """
    path, folder = _joints_file(Path(root))
    joints = load_joints_mat(path)
    if joints.shape[:2] != (3, 14):
        hint = " (looks like LSPET: use read_lspet / format 'lspet')" if joints.shape[:2] == (14, 3) else ""
        raise DatasetError(f"{path}: LSP joints must be 3 x 14 x N, got {' x '.join(map(str, joints.shape))}{hint}")
    _check_flags(joints[2], path, "occlusion")
    n = joints.shape[2]
    if split is None:
        indices = range(n)
    elif split in LSP_SPLITS:
        if n != 2000:
            raise DatasetError(f"{path}: split {split!r} needs the 2000 LSP examples, file has {n}")
        indices = LSP_SPLITS[split]
    else:
        raise ValueError(f"split must be None, 'train' or 'test', got {split!r}")
    images = folder / "images"
    records = []
    for i in indices:
        name = f"im{i + 1:04d}.jpg"
        records.append(PoseRecord(image_path=images / name, joints=joints[:2, :, i].T - 1.0,
                                  visible=np.ones(14, dtype=bool), file=name))
    return PoseDataset(skeleton=LSP, records=records, image_root=images)


def read_lspet(root: str | os.PathLike) -> PoseDataset:
    """Read LSPET (``joints.mat`` 14 x 3 x N, visibility flags): flag-0 joints are missing.

    Args:
        root: the dataset folder (with ``joints.mat`` and ``images/``) or the ``joints.mat`` file.

    Returns:
        a :class:`PoseDataset` of N records; slice i is ``im{i+1:05d}.jpg``; joints float32[14, 2] 0-based,
        ``visible`` = flag 1 with finite coordinates.
    """
    path, folder = _joints_file(Path(root))
    joints = load_joints_mat(path)
    if joints.shape[:2] != (14, 3):
        hint = " (looks like LSP: use read_lsp / format 'lsp')" if joints.shape[:2] == (3, 14) else ""
        raise DatasetError(f"{path}: LSPET joints must be 14 x 3 x N, got {' x '.join(map(str, joints.shape))}{hint}")
    _check_flags(joints[:, 2, :], path, "visibility")
    images = folder / "images"
    records = []
    for i in range(joints.shape[2]):
        xy = joints[:, :2, i]
        visible = (joints[:, 2, i] == 1) & np.isfinite(xy).all(axis=1)
        name = f"im{i + 1:05d}.jpg"
        records.append(PoseRecord(image_path=images / name, joints=xy - 1.0, visible=visible, file=name))
    return PoseDataset(skeleton=LSP, records=records, image_root=images)
