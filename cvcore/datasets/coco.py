"""COCO JSON annotations: boxes (any categories) and person keypoints.

Conversions: ``bbox`` ``[x, y, w, h]`` (continuous, image spanning ``[0, W]``) becomes ``[x, y, x + w, y + h]``;
keypoints ``[x1, y1, v1, ...]`` are used as they are (COCO keypoints are 0-based pixel positions, integers at pixel
centres, as here) and ``v > 0`` (labelled, visible or not) counts as annotated. ``iscrowd`` boxes become
``difficult`` (ignored by mAP, like VOC's difficult objects).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .records import (
    COCO,
    DatasetError,
    DetectionDataset,
    DetectionRecord,
    PoseDataset,
    PoseRecord,
    Skeleton,
    check_on_error,
    left_right_pairs,
    sanitize_boxes,
    warn,
)

__all__ = ["read_coco_detection", "read_coco_keypoints", "load_coco_json"]


def load_coco_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load and shape-check a COCO annotation file (``images``, ``annotations``, ``categories``).

    Raises:
        DatasetError: unreadable JSON or missing / mistyped top-level fields, naming the file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a COCO object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing or non-list '{key}' (not a COCO annotation file?)")
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not {"id", "file_name", "width", "height"} <= img.keys():
            raise DatasetError(f"{path}: images[{i}] needs id, file_name, width, height")
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not {"id", "name"} <= cat.keys():
            raise DatasetError(f"{path}: categories[{i}] needs id and name")
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not {"image_id", "category_id"} <= ann.keys():
            raise DatasetError(f"{path}: annotations[{i}] needs image_id and category_id")
    return data


def _default_image_root(path: Path) -> Path:
    split = path.stem.rsplit("_", 1)[-1]  # annotations/instances_val2017.json -> val2017/
    for candidate in (path.parent / "images", path.parent.parent / "images", path.parent.parent / split, path.parent):
        if candidate.is_dir():
            return candidate
    return path.parent


def _images_by_id(data: dict, path: Path) -> dict[Any, dict]:
    images = {}
    for img in data["images"]:
        if img["id"] in images:
            raise DatasetError(f"{path}: image id {img['id']} appears twice in 'images'")
        images[img["id"]] = img
    return images


def _xywh_to_xyxy(bbox: Any, path: Path, where: str) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: {where}: bbox must be 4 numbers [x, y, w, h], got {bbox!r}") from None
    return x, y, x + w, y + h


def read_coco_detection(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, classes: Sequence[str] | None = None,
    on_error: str = "clip",
) -> DetectionDataset:
    """Read COCO boxes: one :class:`DetectionRecord` per entry of ``images`` (also those without objects).

    Args:
        path: the annotation JSON.
        image_root: folder the ``file_name`` entries are relative to (default: ``images/`` next to the JSON or one
            level up, else ``../<split>/`` for ``annotations/instances_<split>.json``, else the JSON's folder).
        classes: class list; None = category names in category-id order. Annotations of other categories are
            dropped with a warning (``"raise"``: error).
        on_error: ``"clip"`` | ``"drop"`` | ``"raise"``, see :func:`cvcore.datasets.records.sanitize_boxes`.
    """
    path = Path(path)
    check_on_error(on_error)
    data = load_coco_json(path)
    image_root = Path(image_root) if image_root is not None else _default_image_root(path)
    categories = {c["id"]: str(c["name"]) for c in sorted(data["categories"], key=lambda c: c["id"])}
    if classes is None:
        classes = list(categories.values())
    known = set(classes)
    images = _images_by_id(data, path)
    objects: dict[Any, list[tuple[int, dict]]] = {image_id: [] for image_id in images}
    for i, ann in enumerate(data["annotations"]):
        if ann["image_id"] not in images:
            raise DatasetError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
        objects[ann["image_id"]].append((i, ann))

    records = []
    for image_id, img in images.items():
        width, height = int(img["width"]), int(img["height"])
        boxes, labels, difficult, names = [], [], [], []
        for i, ann in objects[image_id]:
            label = categories.get(ann["category_id"])
            where = f"annotations[{i}] (image {img['file_name']}, {label or ann['category_id']})"
            if label is None or label not in known:
                message = f"{path}: {where}: unknown class {label or ann['category_id']!r}"
                if on_error == "raise":
                    raise DatasetError(message)
                warn(message + "; dropped")
                continue
            if "bbox" not in ann:
                raise DatasetError(f"{path}: {where}: missing 'bbox'")
            boxes.append(_xywh_to_xyxy(ann["bbox"], path, where))
            labels.append(label)
            difficult.append(bool(ann.get("iscrowd", 0)))
            names.append(where)
        boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        keep = sanitize_boxes(boxes_arr, width, height, on_error, str(path), names, min_extent=0.0)
        records.append(DetectionRecord(
            image_path=image_root / img["file_name"], width=width, height=height, boxes=boxes_arr[keep],
            labels=[lab for lab, k in zip(labels, keep) if k], difficult=np.asarray(difficult, dtype=bool)[keep],
            file=Path(img["file_name"]).as_posix(),
        ))
    return DetectionDataset(classes=list(classes), records=records, image_root=image_root)


def read_coco_keypoints(
    path: str | os.PathLike, image_root: str | os.PathLike | None = None, min_keypoints: int = 1,
    include_crowd: bool = False, category: str | None = None,
) -> PoseDataset:
    """Read COCO keypoints: one :class:`PoseRecord` per annotated person.

    Args:
        path: the annotation JSON (``person_keypoints_*.json`` or any file whose category has ``keypoints``).
        image_root: folder the ``file_name`` entries are relative to (default as in :func:`read_coco_detection`).
        min_keypoints: skip annotations with fewer labelled keypoints (``v > 0``).
        include_crowd: keep ``iscrowd`` annotations (skipped by default, as in COCO keypoint evaluation).
        category: name of the keypoint category (default: the only category with a ``keypoints`` list).

    Returns:
        a :class:`PoseDataset`; its skeleton is :data:`COCO` when the file's joint names are COCO's, else one built
        from the file's ``keypoints`` and ``skeleton`` fields (left/right pairs found by name).
    """
    path = Path(path)
    data = load_coco_json(path)
    image_root = Path(image_root) if image_root is not None else _default_image_root(path)
    keypoint_cats = [c for c in data["categories"] if isinstance(c.get("keypoints"), list)
                     and (category is None or c["name"] == category)]
    if len(keypoint_cats) != 1:
        names = [c["name"] for c in data["categories"] if isinstance(c.get("keypoints"), list)]
        raise DatasetError(f"{path}: expected one category with 'keypoints' (pass category=), found {names}")
    cat = keypoint_cats[0]
    joint_names = tuple(str(n) for n in cat["keypoints"])
    if joint_names == COCO.joints:
        skeleton = COCO
    else:
        edges = tuple((a - 1, b - 1) for a, b in cat.get("skeleton", []))
        skeleton = Skeleton(str(cat["name"]), joint_names, left_right_pairs(joint_names), edges)
    k = len(joint_names)
    images = _images_by_id(data, path)

    records = []
    for i, ann in enumerate(data["annotations"]):
        if ann["category_id"] != cat["id"] or (ann.get("iscrowd", 0) and not include_crowd):
            continue
        if ann["image_id"] not in images:
            raise DatasetError(f"{path}: annotations[{i}] refers to unknown image_id {ann['image_id']}")
        img = images[ann["image_id"]]
        where = f"annotations[{i}] (image {img['file_name']})"
        try:
            kps = np.asarray(ann["keypoints"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{path}: {where}: missing or non-numeric 'keypoints'") from None
        if kps.shape != (3 * k,):
            raise DatasetError(f"{path}: {where}: 'keypoints' has {kps.size} values, expected 3 x {k} = {3 * k}")
        kps = kps.reshape(k, 3)
        visible = kps[:, 2] > 0
        if visible.sum() < min_keypoints:
            continue
        box = _xywh_to_xyxy(ann["bbox"], path, where) if "bbox" in ann else None
        if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
            warn(f"{path}: {where}: degenerate person box {list(box)}; box set to None")
            box = None
        records.append(PoseRecord(image_path=image_root / img["file_name"], joints=kps[:, :2], visible=visible,
                                  box=box, file=Path(img["file_name"]).as_posix()))
    return PoseDataset(skeleton=skeleton, records=records, image_root=image_root)
