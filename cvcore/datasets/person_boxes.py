"""Person boxes from annotated joints: pose datasets (LSPET) as person-detection ground truth.

A person's box is the extent of the annotated joints, enlarged about its centre by ``margin`` on each axis (the
joints stop at the wrists, ankles and head top; the body goes a little further), each side at least ``min_aspect``
times the longer one (a side view's joints are nearly collinear), clipped to the image. The same box serves three
purposes, so it is defined once here: detector ground truth (``rcnn-train`` on LSPET), the annotated person's box
that ``eval-pck`` matches predicted people against, and the box the pose model is trained to crop from.

Pose datasets label one person per image although others may stand in the background: the detection records are
marked ``exhaustive=False`` (see :class:`~cvcore.datasets.records.DetectionRecord`). People with fewer than
``min_visible`` annotated joints get a box that may miss part of them: it is marked difficult (neither a hit nor a
miss in AP, not a training positive).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .records import DetectionDataset, DetectionRecord, PoseDataset, PoseRecord

__all__ = ["PERSON_BOX_MARGIN", "joints_box", "person_detection_dataset"]

PERSON_BOX_MARGIN = 1.15  # the pose model's test-time crop margin (pose.config.DataConfig.box_margin)


def joints_box(joints: np.ndarray, visible: np.ndarray, margin: float = PERSON_BOX_MARGIN, min_aspect: float = 0.25,
               image_size: tuple[int, int] | None = None) -> np.ndarray | None:
    """The person box (float32[4] xyxy) of one person's annotated joints, or None without any.

    Args:
        joints: Array[K, 2] pixel coordinates; visible: bool Array[K] (only these joints count).
        margin: each side = margin x the joints' extent on that axis.
        min_aspect: each side at least this fraction of the longer side.
        image_size: (width, height) to clip to, or None.
    """
    vis = np.asarray(visible, bool) & np.isfinite(np.asarray(joints, np.float64)).all(axis=1)
    pts = np.asarray(joints, np.float64)[vis]
    if len(pts) == 0:
        return None
    lo, hi = pts.min(0), pts.max(0)
    centre, extent = (lo + hi) / 2, (hi - lo) * margin
    extent = np.maximum(extent, min_aspect * extent.max())
    extent = np.maximum(extent, 1.0)
    box = np.concatenate([centre - extent / 2, centre + extent / 2])
    if image_size is not None:
        w, h = image_size
        box = np.clip(box, 0, [w, h, w, h])
    return box.astype(np.float32)


def _image_size(record: PoseRecord) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(record.image_path) as img:  # the header only
            return img.size
    except OSError:
        return 0, 0


def person_detection_dataset(dataset: PoseDataset | Sequence[PoseRecord], margin: float = PERSON_BOX_MARGIN,
                             min_visible: int = 8, label: str = "person") -> DetectionDataset:
    """One detection record per image of a pose dataset: a ``label`` box per annotated person (:func:`joints_box`),
    ``exhaustive=False``, difficult when the person has fewer than ``min_visible`` annotated joints.

    Images that cannot be opened keep size 0 x 0 and unclipped boxes (training and ``detect`` report them when they
    read the image). Records keep the pose dataset's order (people of one image grouped at its first person).
    """
    by_file: dict[str, list[PoseRecord]] = {}
    for rec in dataset:
        by_file.setdefault(rec.file, []).append(rec)
    records = []
    for file, people in by_file.items():
        w, h = _image_size(people[0])
        boxes, difficult = [], []
        for p in people:
            box = joints_box(p.joints, p.visible, margin, image_size=(w, h) if w and h else None)
            if box is None or not (box[2] - box[0] > 1 and box[3] - box[1] > 1):
                continue
            boxes.append(box)
            difficult.append(int(np.sum(p.visible)) < min_visible)
        records.append(DetectionRecord(image_path=people[0].image_path, width=w, height=h,
                                       boxes=np.asarray(boxes, np.float32).reshape(-1, 4), labels=[label] * len(boxes),
                                       difficult=np.asarray(difficult, bool), file=file, exhaustive=False))
    root = getattr(dataset, "image_root", None)
    return DetectionDataset(classes=[label], records=records, image_root=root)
