"""MPII Human Pose annotations in the common JSON form (HRNet / mmpose ``mpii_train.json``, ``mpii_val.json``).

The file is a list with one entry per person: ``{"image": "015601864.jpg", "joints": [[x, y] x 16],
"joints_vis": [0|1 x 16], "center": [x, y], "scale": s}``; the person box is about ``200 * s`` pixels tall.
Head boxes (for PCKh) come from an optional ``"head_box": [x1, y1, x2, y2]`` per entry or from the official
ground-truth file (``mpii_gt_val.mat``: ``headboxes_src`` 2 x 2 x N, one column per JSON entry, in order).

Coordinates are MATLAB 1-based and get ``- 1`` (joints, centre, head box), as HRNet and mmpose do.
Joints with ``joints_vis == 0`` are missing. Joint order: :data:`cvcore.datasets.records.MPII_JOINTS`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .records import MPII, DatasetError, PoseDataset, PoseRecord

__all__ = ["read_mpii", "load_mpii_head_boxes"]

_HEAD_KEYS = ("head_box", "headbox", "head_bbox")


def load_mpii_head_boxes(path: str | os.PathLike) -> np.ndarray:
    """Head boxes float64[N, 4] xyxy (still 1-based) from ``headboxes_src`` of an MPII ground-truth ``.mat``."""
    import scipy.io

    path = Path(path)
    try:
        mat = scipy.io.loadmat(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as e:
        raise DatasetError(f"{path}: not a readable MATLAB file ({type(e).__name__}: {e})") from None
    boxes = mat.get("headboxes_src")
    if boxes is None or boxes.ndim != 3 or boxes.shape[:2] != (2, 2):
        shape = None if boxes is None else boxes.shape
        raise DatasetError(f"{path}: expected 'headboxes_src' of shape 2 x 2 x N, got {shape}")
    # headboxes_src[corner, axis, n]: corner 0 = top-left, 1 = bottom-right; axis 0 = x, 1 = y.
    return np.stack([boxes[0, 0], boxes[0, 1], boxes[1, 0], boxes[1, 1]], axis=1).astype(np.float64)


def _vector(entry: dict, key: str, shape: tuple[int, ...], path: Path, i: int, flatten: bool = False) -> np.ndarray:
    try:
        arr = np.asarray(entry[key], dtype=np.float64)
        if flatten:
            arr = arr.reshape(-1)
    except KeyError:
        raise DatasetError(f"{path}: entry {i} ({entry.get('image', '?')}): missing '{key}'") from None
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: entry {i} ({entry.get('image', '?')}): '{key}' is not numeric") from None
    if arr.shape != shape:
        raise DatasetError(f"{path}: entry {i} ({entry.get('image', '?')}): '{key}' has shape {arr.shape}, "
                           f"expected {shape}")
    return arr


def read_mpii(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None,
    head_boxes: str | os.PathLike | None = None,
) -> PoseDataset:
    """Read an MPII JSON annotation file.

    Args:
        path: ``mpii_train.json`` / ``mpii_val.json`` (a list of per-person entries, see the module docstring).
        image_root: folder of the images (default: ``images/`` next to the JSON or one level up).
        head_boxes: optional ``mpii_gt_val.mat`` whose ``headboxes_src`` gives one head box per entry.

    Returns:
        a :class:`PoseDataset` (skeleton :data:`MPII`, 16 joints); ``box`` is the square of side ``200 * scale``
        around ``center``, or None when the entry has no usable centre / scale.

    Raises:
        DatasetError: unreadable JSON, an entry without joints (the test split has none) or with wrong shapes,
            naming the file and the entry.
    """
    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a JSON list of MPII person entries, got {type(entries).__name__}")
    if image_root is None:
        image_root = next((p for p in (path.parent / "images", path.parent.parent / "images") if p.is_dir()),
                          path.parent / "images")
    image_root = Path(image_root)
    mat_boxes = None
    if head_boxes is not None:
        mat_boxes = load_mpii_head_boxes(head_boxes)
        if len(mat_boxes) != len(entries):
            raise DatasetError(f"{head_boxes}: {len(mat_boxes)} head boxes but {path} has {len(entries)} entries")

    k = MPII.num_joints
    records = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise DatasetError(f"{path}: entry {i}: expected an object with an 'image' file name")
        joints = _vector(entry, "joints", (k, 2), path, i)
        flags = _vector(entry, "joints_vis", (k,), path, i)
        visible = (flags > 0) & np.isfinite(joints).all(axis=1)
        box = None
        if "center" in entry and "scale" in entry:
            center = _vector(entry, "center", (2,), path, i) - 1.0
            scale = float(entry["scale"])
            if scale > 0 and center[0] >= 0:
                half = 100.0 * scale
                box = np.array([center[0] - half, center[1] - half, center[0] + half, center[1] + half])
        head = None
        if mat_boxes is not None:
            head = mat_boxes[i] - 1.0
        else:
            key = next((key for key in _HEAD_KEYS if key in entry), None)
            if key is not None:
                # [x1, y1, x2, y2] or [[x1, y1], [x2, y2]]
                head = _vector(entry, key, (4,), path, i, flatten=True) - 1.0
        records.append(PoseRecord(image_path=image_root / entry["image"], joints=joints - 1.0, visible=visible,
                                  box=box, head_box=head, file=Path(entry["image"]).as_posix()))
    return PoseDataset(skeleton=MPII, records=records, image_root=image_root)
