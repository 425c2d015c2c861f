"""Prediction files: the interface between ``detect`` / ``pose`` and ``eval-map`` / ``eval-pck``.

Detections, one JSON file::

    {"classes": ["RBC", "WBC", ...],
     "images": [{"file": "BloodImage_00001.jpg", "width": 640, "height": 480,
                 "detections": [{"label": "RBC", "score": 0.93, "box": [x1, y1, x2, y2]}, ...]}, ...]}

Poses, one JSON file::

    {"joint_names": ["right_ankle", ...],
     "images": [{"file": "im08001.jpg",
                 "people": [{"box": [x1, y1, x2, y2] or null, "box_score": s (optional),
                             "joints": [[x, y, score], ...]}, ...]}, ...]}

``file`` is the image's path relative to the input folder (posix separators) and must be unique; boxes are xyxy and
joints 0-based (x, y) in original-image pixels, as everywhere in the project. Numbers are written as the shortest
decimal that reads back to the same float32, so a write -> read round trip is exact. Files are written atomically;
reading validates everything and names the file and the entry (``images[3].detections[5].box``) on error.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvcore.io import atomic_write_json, atomic_write_text

__all__ = [
    "PredictionFileError", "ImageDetections", "PersonPose", "ImagePoses", "write_detections", "read_detections",
    "detections_to_coco", "write_coco_results", "write_poses", "read_poses", "detection_entry", "poses_entry",
]


class PredictionFileError(ValueError):
    """A prediction file (or the data given to a writer) is malformed; the message names the file and the entry."""


@dataclass
class ImageDetections:
    """Detections of one image: boxes float32[N, 4] xyxy, scores float32[N], N labels (class names)."""

    file: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.labels = [str(label) for label in self.labels]
        if not (len(self.boxes) == len(self.scores) == len(self.labels)):
            raise ValueError(f"{self.file}: {len(self.boxes)} boxes, {len(self.scores)} scores, "
                             f"{len(self.labels)} labels; they must match")

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class PersonPose:
    """One predicted person: joints float32[K, 2] (x, y), scores float32[K], box float32[4] xyxy or None, and the
    person detector's score of the box (``box_score``, None when the box was given or there is none)."""

    joints: np.ndarray
    scores: np.ndarray
    box: np.ndarray | None = None
    box_score: float | None = None

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float32).reshape(-1, 2)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        if len(self.joints) != len(self.scores):
            raise ValueError(f"{len(self.joints)} joints but {len(self.scores)} scores")
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float32).reshape(4)
        if self.box_score is not None:
            self.box_score = float(self.box_score)


@dataclass
class ImagePoses:
    """Predicted people of one image; ``width`` / ``height`` (optional) are written when known."""

    file: str
    people: list[PersonPose] = field(default_factory=list)
    width: int | None = None
    height: int | None = None


# --------------------------------------------------------------------------------------------------- validation


class _Checker:
    """Builds error messages of the form ``<file>: <entry path>: <problem>``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> PredictionFileError:
        return PredictionFileError(f"{self.source}: {where}: {problem}" if where else f"{self.source}: {problem}")

    def obj(self, value: Any, where: str, keys: Sequence[str]) -> Mapping:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected an object with {', '.join(keys)}, got {type(value).__name__}")
        missing = [k for k in keys if k not in value]
        if missing:
            raise self.fail(where, f"missing {', '.join(repr(k) for k in missing)}")
        return value

    def list(self, value: Any, where: str) -> list:
        if not isinstance(value, (list, tuple)):
            raise self.fail(where, f"expected a list, got {type(value).__name__}")
        return list(value)

    def names(self, value: Any, where: str) -> list[str]:
        names = self.list(value, where)
        if not all(isinstance(n, str) and n for n in names):
            raise self.fail(where, "expected a list of non-empty strings")
        if len(set(names)) != len(names):
            raise self.fail(where, f"duplicate names in {names}")
        return names

    def number(self, value: Any, where: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        return float(value)

    def size(self, value: Any, where: str) -> int:
        number = self.number(value, where)
        if number != int(number) or number <= 0:
            raise self.fail(where, f"expected a positive integer, got {value!r}")
        return int(number)

    def box(self, value: Any, where: str) -> list[float]:
        values = self.list(value, where)
        if len(values) != 4:
            raise self.fail(where, f"expected 4 numbers [x1, y1, x2, y2], got {len(values)}")
        x1, y1, x2, y2 = (self.number(v, f"{where}[{i}]") for i, v in enumerate(values))
        if x2 < x1 or y2 < y1:
            raise self.fail(where, f"box {values} has x2 < x1 or y2 < y1 (expected xyxy)")
        return [x1, y1, x2, y2]

    def file(self, value: Any, where: str, seen: set[str]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty file name, got {value!r}")
        if value in seen:
            raise self.fail(where, f"file {value!r} appears twice")
        seen.add(value)
        return value


def _f32(value: float) -> float:
    """The shortest decimal that reads back to the same float32 (``0.1`` rather than ``0.10000000149011612``)."""
    return float(str(np.float32(value)))


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PredictionFileError(f"{path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictionFileError(f"{path}: not valid JSON ({e})") from None


# --------------------------------------------------------------------------------------------------- detections


def _parse_detection_image(check: _Checker, entry: Any, where: str, classes: set[str],
                           seen: set[str]) -> ImageDetections:
    entry = check.obj(entry, where, ("file", "width", "height", "detections"))
    file = check.file(entry["file"], f"{where}.file", seen)
    width, height = check.size(entry["width"], f"{where}.width"), check.size(entry["height"], f"{where}.height")
    boxes, scores, labels = [], [], []
    for j, det in enumerate(check.list(entry["detections"], f"{where}.detections")):
        w = f"{where}.detections[{j}]"
        det = check.obj(det, w, ("label", "score", "box"))
        if det["label"] not in classes:
            raise check.fail(f"{w}.label", f"{det['label']!r} is not one of the file's classes {sorted(classes)}")
        labels.append(det["label"])
        scores.append(check.number(det["score"], f"{w}.score"))
        boxes.append(check.box(det["box"], f"{w}.box"))
    return ImageDetections(file, width, height, np.asarray(boxes, np.float32), np.asarray(scores, np.float32), labels)


def detection_entry(image: ImageDetections) -> dict:
    """One image's entry in a detections file's own form (``{"file", "width", "height", "detections"}``)."""
    return {
        "file": image.file, "width": int(image.width), "height": int(image.height),
        "detections": [{"label": label, "score": _f32(score), "box": [_f32(v) for v in box]}
                       for label, score, box in zip(image.labels, image.scores, image.boxes)],
    }


def write_detections(
    path: str | os.PathLike, classes: Sequence[str],
    images: Iterable[ImageDetections | Mapping] | Mapping[str, ImageDetections],
) -> Path:
    """Write a detections file atomically.

    Args:
        path: output ``.json``.
        classes: the class names (``label`` values must be among them).
        images: :class:`ImageDetections` or dicts in the file's own form (``{"file", "width", "height",
            "detections": [...]}``), one per image, unique ``file``; or a ``{file: ImageDetections}`` dict.

    Raises:
        PredictionFileError: invalid content (unknown label, non-finite score, bad box, duplicate file, ...),
            named as on reading.
    """
    path = Path(path)
    check = _Checker(f"{path} (writing)")
    classes = check.names(list(classes), "classes")
    known, seen = set(classes), set()
    entries = []
    if isinstance(images, Mapping):  # e.g. the {file: ImageDetections} of read_detections
        images = images.values()
    for i, item in enumerate(images):
        entry = detection_entry(item) if isinstance(item, ImageDetections) else item
        parsed = _parse_detection_image(check, entry, f"images[{i}]", known, seen)
        entries.append(detection_entry(parsed))
    # One detection per line: a readable file that stays compact with thousands of boxes.
    lines = ['{"classes": ' + json.dumps(classes) + ',', ' "images": [']
    for i, entry in enumerate(entries):
        head = {k: entry[k] for k in ("file", "width", "height")}
        dets = entry["detections"]
        text = "  " + json.dumps(head)[:-1] + ', "detections": ['
        if dets:
            text += "\n" + ",\n".join("    " + json.dumps(d, allow_nan=False) for d in dets) + "]}"
        else:
            text += "]}"
        lines.append(text + ("," if i < len(entries) - 1 else ""))
    lines.append(" ]}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_detections(path: str | os.PathLike) -> tuple[list[str], dict[str, ImageDetections]]:
    """Read and validate a detections file.

    Returns:
        ``(classes, images)`` with ``images`` mapping ``file`` -> :class:`ImageDetections`, in file order.

    Raises:
        PredictionFileError: unreadable JSON or any invalid entry; the message names the file and the entry.
    """
    path = Path(path)
    check = _Checker(str(path))
    data = check.obj(_load_json(path), "", ("classes", "images"))
    classes = check.names(data["classes"], "classes")
    known, seen = set(classes), set()
    images = {}
    for i, entry in enumerate(check.list(data["images"], "images")):
        image = _parse_detection_image(check, entry, f"images[{i}]", known, seen)
        images[image.file] = image
    return classes, images


def _coco_ids(coco_gt: str | os.PathLike | Mapping) -> tuple[dict[str, Any], dict[str, Any], str]:
    if isinstance(coco_gt, Mapping):
        data, source = coco_gt, "COCO ground truth"
    else:
        data, source = _load_json(Path(coco_gt)), str(coco_gt)
    try:
        image_ids = {Path(img["file_name"]).as_posix(): img["id"] for img in data["images"]}
        category_ids = {c["name"]: c["id"] for c in data["categories"]}
    except (KeyError, TypeError):
        raise PredictionFileError(f"{source}: not a COCO annotation file (needs images[].file_name/id, "
                                  "categories[].name/id)") from None
    return image_ids, category_ids, source


def detections_to_coco(
    images: Mapping[str, ImageDetections] | Iterable[ImageDetections], classes: Sequence[str] | None = None,
    coco_gt: str | os.PathLike | Mapping | None = None,
) -> list[dict]:
    """Convert detections to the COCO results format ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.

    Args:
        images: :class:`ImageDetections` (a list, or the dict :func:`read_detections` returns).
        classes: class names; without ``coco_gt`` category ids are ``classes.index(label) + 1``.
        coco_gt: a COCO annotation file (path or loaded dict): image ids by ``file_name`` and category ids by name
            come from it, so the result scores with ``pycocotools`` against that file. Without it image ids are
            1, 2, ... in the order given.

    Raises:
        PredictionFileError: an image or class that ``coco_gt`` does not know.
    """
    images = list(images.values()) if isinstance(images, Mapping) else list(images)
    if coco_gt is not None:
        image_ids, category_ids, source = _coco_ids(coco_gt)
    else:
        if classes is None:
            raise ValueError("detections_to_coco needs classes or coco_gt")
        image_ids = {image.file: i + 1 for i, image in enumerate(images)}
        category_ids = {name: i + 1 for i, name in enumerate(classes)}
        source = "classes"
    results = []
    for image in images:
        if image.file not in image_ids:
            raise PredictionFileError(f"{source}: no image with file_name {image.file!r}")
        for label, score, (x1, y1, x2, y2) in zip(image.labels, image.scores, image.boxes):
            if label not in category_ids:
                raise PredictionFileError(f"{source}: no category named {label!r} (image {image.file})")
            results.append({
                "image_id": image_ids[image.file], "category_id": category_ids[label],
                "bbox": [_f32(x1), _f32(y1), _f32(x2 - x1), _f32(y2 - y1)], "score": _f32(score),
            })
    return results


def write_coco_results(
    path: str | os.PathLike, images: Mapping[str, ImageDetections] | Iterable[ImageDetections],
    classes: Sequence[str] | None = None, coco_gt: str | os.PathLike | Mapping | None = None,
) -> Path:
    """Write :func:`detections_to_coco` output atomically to ``path``."""
    return atomic_write_json(path, detections_to_coco(images, classes, coco_gt), indent=None)


# --------------------------------------------------------------------------------------------------------- poses


def _parse_pose_image(check: _Checker, entry: Any, where: str, num_joints: int, seen: set[str]) -> ImagePoses:
    entry = check.obj(entry, where, ("file", "people"))
    file = check.file(entry["file"], f"{where}.file", seen)
    people = []
    for j, person in enumerate(check.list(entry["people"], f"{where}.people")):
        w = f"{where}.people[{j}]"
        person = check.obj(person, w, ("joints",))
        box = person.get("box")
        box = None if box is None else check.box(box, f"{w}.box")
        box_score = person.get("box_score")
        box_score = None if box_score is None else check.number(box_score, f"{w}.box_score")
        joints = check.list(person["joints"], f"{w}.joints")
        if len(joints) != num_joints:
            raise check.fail(f"{w}.joints", f"{len(joints)} joints, expected {num_joints} (one per joint name)")
        values = []
        for k, joint in enumerate(joints):
            triple = check.list(joint, f"{w}.joints[{k}]")
            if len(triple) != 3:
                raise check.fail(f"{w}.joints[{k}]", f"expected [x, y, score], got {joint!r}")
            values.append([check.number(v, f"{w}.joints[{k}]") for v in triple])
        arr = np.asarray(values, dtype=np.float32).reshape(-1, 3)
        people.append(PersonPose(arr[:, :2], arr[:, 2], box, box_score))
    width = check.size(entry["width"], f"{where}.width") if entry.get("width") is not None else None
    height = check.size(entry["height"], f"{where}.height") if entry.get("height") is not None else None
    return ImagePoses(file, people, width, height)


def poses_entry(image: ImagePoses) -> dict:
    """One image's entry in a poses file's own form (``{"file", "width", "height", "people"}``)."""
    size = ({} if image.width is None or image.height is None
            else {"width": int(image.width), "height": int(image.height)})
    return {"file": image.file, **size, "people": [
        {"box": None if p.box is None else [_f32(v) for v in p.box],
         **({} if p.box_score is None else {"box_score": _f32(p.box_score)}),
         "joints": [[_f32(x), _f32(y), _f32(s)] for (x, y), s in zip(p.joints, p.scores)]}
        for p in image.people
    ]}


def write_poses(
    path: str | os.PathLike, joint_names: Sequence[str],
    images: Iterable[ImagePoses | Mapping] | Mapping[str, ImagePoses],
) -> Path:
    """Write a poses file atomically.

    Args:
        path: output ``.json``.
        joint_names: K joint names; every person has K joints.
        images: :class:`ImagePoses` or dicts in the file's own form (``{"file", "people": [...]}``, optional
            ``"width"``, ``"height"``), unique ``file``; or a ``{file: ImagePoses}`` dict.

    Raises:
        PredictionFileError: invalid content, named as on reading.
    """
    path = Path(path)
    check = _Checker(f"{path} (writing)")
    joint_names = check.names(list(joint_names), "joint_names")
    seen: set[str] = set()
    entries = []
    if isinstance(images, Mapping):  # e.g. the {file: ImagePoses} of read_poses
        images = images.values()
    for i, item in enumerate(images):
        entry = poses_entry(item) if isinstance(item, ImagePoses) else item
        entries.append(poses_entry(_parse_pose_image(check, entry, f"images[{i}]", len(joint_names), seen)))
    lines = ['{"joint_names": ' + json.dumps(joint_names) + ',', ' "images": [']
    lines += ["  " + json.dumps(e, allow_nan=False) + ("," if i < len(entries) - 1 else "")
              for i, e in enumerate(entries)]
    lines.append(" ]}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def read_poses(path: str | os.PathLike) -> tuple[list[str], dict[str, ImagePoses]]:
    """Read and validate a poses file.

    Returns:
        ``(joint_names, images)`` with ``images`` mapping ``file`` -> :class:`ImagePoses`, in file order.

    Raises:
        PredictionFileError: unreadable JSON or any invalid entry; the message names the file and the entry.
    """
    path = Path(path)
    check = _Checker(str(path))
    data = check.obj(_load_json(path), "", ("joint_names", "images"))
    joint_names = check.names(data["joint_names"], "joint_names")
    seen: set[str] = set()
    images = {}
    for i, entry in enumerate(check.list(data["images"], "images")):
        image = _parse_pose_image(check, entry, f"images[{i}]", len(joint_names), seen)
        images[image.file] = image
    return joint_names, images
