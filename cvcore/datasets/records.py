"""Canonical records every dataset reader produces, joint definitions, and the bad-annotation policy.

Conventions (docs/ARCHITECTURE.md), converted in the readers and nowhere else:

* Boxes are float32 ``xyxy`` in original-image pixels with the image spanning ``[0, W] x [0, H]``;
  width = ``x2 - x1``, no "+1".
* Joints are float32 ``(x, y)`` pixel coordinates, 0-based, integer coordinates at pixel centres.
  Formats annotated in MATLAB (LSP, LSPET, FLIC, MPII) are 1-based and get ``- 1`` on both axes.
* ``visible[k]`` means "joint k is annotated and counts" (in the loss and in PCK), not "is unoccluded":
  every LSP joint counts, LSPET / MPII joints with flag 0 do not, FLIC joints without coordinates do not.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

__all__ = [
    "DatasetError", "DatasetWarning", "OnError", "DetectionRecord", "PoseRecord", "DetectionDataset", "PoseDataset",
    "Skeleton", "LSP_JOINTS", "LSP_FLIP_PAIRS", "LSP_SKELETON", "LSP", "FLIC_JOINTS", "FLIC_FLIP_PAIRS",
    "FLIC_SKELETON", "FLIC", "MPII_JOINTS", "MPII_FLIP_PAIRS", "MPII_SKELETON", "MPII", "COCO_JOINTS",
    "COCO_FLIP_PAIRS", "COCO_SKELETON", "COCO", "SKELETONS", "flip_permutation", "left_right_pairs",
]

OnError = Literal["clip", "drop", "raise"]
ON_ERROR_CHOICES = ("clip", "drop", "raise")


class DatasetError(ValueError):
    """An annotation file is malformed or violates the chosen policy; the message names the file (and object)."""


class DatasetWarning(UserWarning):
    """A bad annotation was clipped or dropped (``on_error="clip"`` or ``"drop"``); the message names it."""


def _as_path(p: str | Path) -> Path:
    return p if isinstance(p, Path) else Path(p)


def _optional_box(box: object, name: str) -> np.ndarray | None:
    if box is None:
        return None
    arr = np.asarray(box, dtype=np.float32).reshape(-1)
    if arr.shape != (4,):
        raise ValueError(f"{name} must have 4 values (x1, y1, x2, y2), got shape {np.shape(box)}")
    return arr


@dataclass
class DetectionRecord:
    """Ground truth of one image for detection.

    Attributes:
        image_path: the image file.
        width, height: image size in pixels.
        boxes: float32[N, 4] xyxy, inside ``[0, width] x [0, height]`` after the reader's checks.
        labels: N class names.
        difficult: bool[N]; VOC ``difficult`` (COCO ``iscrowd``): neither a hit nor a miss in mAP.
        file: the image's name relative to the dataset's image folder (posix); the key that prediction files use.
        exhaustive: every object of the dataset's classes in the image is labelled (VOC, COCO, Penn-Fudan). False
            when only some are (LSPET person boxes: one annotated person, others in the crowd unlabelled): training
            then takes negatives only from windows that overlap a labelled box (rcnn.svm's rule).
    """

    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: list[str]
    difficult: np.ndarray
    file: str = ""
    exhaustive: bool = True

    def __post_init__(self) -> None:
        self.image_path = _as_path(self.image_path)
        self.width, self.height = int(self.width), int(self.height)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = [str(label) for label in self.labels]
        self.difficult = np.asarray(self.difficult, dtype=bool).reshape(-1)
        if not (len(self.boxes) == len(self.labels) == len(self.difficult)):
            raise ValueError(f"{self.image_path}: {len(self.boxes)} boxes, {len(self.labels)} labels and "
                             f"{len(self.difficult)} difficult flags; they must match")
        if not self.file:
            self.file = self.image_path.name

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass
class PoseRecord:
    """Ground truth of one person for pose estimation.

    Attributes:
        image_path: the image file.
        joints: float32[K, 2] (x, y), 0-based pixel coordinates (integers at pixel centres).
        visible: bool[K]; False = not annotated / missing: no loss, left out of PCK. Coordinates of such
            joints are meaningless (may be 0, negative or NaN).
        box: float32[4] xyxy person box, or None.
        head_box: float32[4] xyxy head box (MPII, for PCKh), or None.
        torso_box: float32[4] xyxy torso box (FLIC), or None.
        file: the image's name relative to the dataset's image folder (posix); the key that prediction files use.
    """

    image_path: Path
    joints: np.ndarray
    visible: np.ndarray
    box: np.ndarray | None = None
    head_box: np.ndarray | None = None
    torso_box: np.ndarray | None = None
    file: str = ""

    def __post_init__(self) -> None:
        self.image_path = _as_path(self.image_path)
        self.joints = np.asarray(self.joints, dtype=np.float32).reshape(-1, 2)
        self.visible = np.asarray(self.visible, dtype=bool).reshape(-1)
        if len(self.joints) != len(self.visible):
            raise ValueError(f"{self.image_path}: {len(self.joints)} joints but {len(self.visible)} visibility flags")
        self.box = _optional_box(self.box, "box")
        self.head_box = _optional_box(self.head_box, "head_box")
        self.torso_box = _optional_box(self.torso_box, "torso_box")
        if not self.file:
            self.file = self.image_path.name


@dataclass(frozen=True)
class Skeleton:
    """Joint names of a format, the left/right pairs swapped by a horizontal flip, and the limbs to draw.

    ``flip_pairs`` and ``edges`` are tuples of 0-based joint indices.
    """

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    edges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        k = len(self.joints)
        for a, b in (*self.flip_pairs, *self.edges):
            if not (0 <= a < k and 0 <= b < k):
                raise ValueError(f"{self.name}: joint index out of range in ({a}, {b})")

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        """Index of joint ``name`` (raises ``KeyError`` naming the known joints)."""
        try:
            return self.joints.index(name)
        except ValueError:
            raise KeyError(f"{self.name} has no joint {name!r}; joints: {', '.join(self.joints)}") from None


def flip_permutation(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """int64[K] permutation: ``joints_of_mirrored_image = mirrored_joints[perm]`` swaps left and right."""
    perm = np.arange(num_joints)
    for a, b in flip_pairs:
        perm[a], perm[b] = b, a
    return perm


def _pairs(joints: Sequence[str], pairs: Sequence[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((joints.index(a), joints.index(b)) for a, b in pairs)


def left_right_pairs(joints: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """Every ``left_X`` joint paired with ``right_X``."""
    return tuple((i, joints.index("right_" + n[5:])) for i, n in enumerate(joints)
                 if n.startswith("left_") and "right_" + n[5:] in joints)


# LSP / LSPET (Johnson & Everingham): the order of joints.mat (../shared/data/README.md).
LSP_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
    "neck", "head_top",
)
LSP_FLIP_PAIRS = left_right_pairs(LSP_JOINTS)
LSP_SKELETON = _pairs(LSP_JOINTS, [
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("left_ankle", "left_knee"), ("left_knee", "left_hip"),
    ("right_hip", "left_hip"), ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"),
    ("left_wrist", "left_elbow"), ("left_elbow", "left_shoulder"), ("right_shoulder", "neck"),
    ("left_shoulder", "neck"), ("right_hip", "right_shoulder"), ("left_hip", "left_shoulder"), ("neck", "head_top"),
])
LSP = Skeleton("lsp", LSP_JOINTS, LSP_FLIP_PAIRS, LSP_SKELETON)

# FLIC (Sapp & Taskar, MODEC): the 11 annotated of the 29 slots of examples.mat's `coords`, in slot order.
FLIC_JOINTS = (
    "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow", "right_wrist",
    "left_hip", "right_hip", "left_eye", "right_eye", "nose",
)
# 0-based rows of `coords` (MATLAB 1, 2, 3, 4, 5, 6, 7, 10, 13, 14, 17)
FLIC_SLOTS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)
FLIC_FLIP_PAIRS = left_right_pairs(FLIC_JOINTS)
FLIC_SKELETON = _pairs(FLIC_JOINTS, [
    ("left_wrist", "left_elbow"), ("left_elbow", "left_shoulder"), ("right_wrist", "right_elbow"),
    ("right_elbow", "right_shoulder"), ("left_shoulder", "right_shoulder"), ("left_shoulder", "left_hip"),
    ("right_shoulder", "right_hip"), ("left_hip", "right_hip"), ("left_eye", "nose"), ("right_eye", "nose"),
])
FLIC = Skeleton("flic", FLIC_JOINTS, FLIC_FLIP_PAIRS, FLIC_SKELETON)

# MPII Human Pose (Andriluka et al. 2014), the order of its annotations and of mmpose's mpii_*.json.
MPII_JOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII_FLIP_PAIRS = left_right_pairs(MPII_JOINTS)
MPII_SKELETON = _pairs(MPII_JOINTS, [
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"), ("left_hip", "pelvis"),
    ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("pelvis", "thorax"), ("thorax", "upper_neck"),
    ("upper_neck", "head_top"), ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"),
    ("right_shoulder", "thorax"), ("left_shoulder", "thorax"), ("left_shoulder", "left_elbow"),
    ("left_elbow", "left_wrist"),
])
MPII = Skeleton("mpii", MPII_JOINTS, MPII_FLIP_PAIRS, MPII_SKELETON)

# COCO person keypoints (the order of `categories[].keypoints`), skeleton from the COCO annotation file (0-based).
COCO_JOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
COCO_FLIP_PAIRS = left_right_pairs(COCO_JOINTS)
COCO_SKELETON = tuple((a - 1, b - 1) for a, b in [
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10), (9, 11),
    (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
])
COCO = Skeleton("coco", COCO_JOINTS, COCO_FLIP_PAIRS, COCO_SKELETON)

SKELETONS: dict[str, Skeleton] = {"lsp": LSP, "lspet": LSP, "flic": FLIC, "mpii": MPII, "coco": COCO}


@dataclass
class DetectionDataset(Sequence[DetectionRecord]):
    """Detection records plus the class list; behaves as a list of :class:`DetectionRecord`."""

    classes: list[str]
    records: list[DetectionRecord] = field(default_factory=list)
    image_root: Path | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"DetectionDataset({len(self.records)} images, classes={self.classes}, image_root={self.image_root})"

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return DetectionDataset(list(self.classes), self.records[i], self.image_root)
        return self.records[i]

    def __iter__(self) -> Iterator[DetectionRecord]:
        return iter(self.records)


@dataclass
class PoseDataset(Sequence[PoseRecord]):
    """Pose records (one per person) plus the format's :class:`Skeleton`; behaves as a list of :class:`PoseRecord`."""

    skeleton: Skeleton
    records: list[PoseRecord] = field(default_factory=list)
    image_root: Path | None = None

    @property
    def joint_names(self) -> list[str]:
        return list(self.skeleton.joints)

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"PoseDataset({len(self.records)} people, skeleton={self.skeleton.name}, image_root={self.image_root})"

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return PoseDataset(self.skeleton, self.records[i], self.image_root)
        return self.records[i]

    def __iter__(self) -> Iterator[PoseRecord]:
        return iter(self.records)


def check_on_error(on_error: str) -> str:
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}")
    return on_error


def warn(message: str) -> None:
    warnings.warn(message, DatasetWarning, stacklevel=3)


def finish_detection_dataset(root: Path, records: list[DetectionRecord], classes: Sequence[str] | None,
                             on_error: str, images_dir: Path) -> DetectionDataset:
    """The end every detection reader shares: report annotated images that are missing (an error under
    ``"raise"``, else a warning), take the class list (None: the sorted names found), wrap the records."""
    missing = [r.image_path for r in records if not r.image_path.is_file()]
    if missing:
        message = f"{root}: {len(missing)} annotated images not found, e.g. {missing[0]}"
        if on_error == "raise":
            raise DatasetError(message)
        warn(message)
    if classes is None:
        classes = sorted({label for r in records for label in r.labels})
    return DetectionDataset(classes=list(classes), records=records, image_root=images_dir)


def sanitize_boxes(
    boxes: np.ndarray, width: int, height: int, on_error: str, where: str, names: Sequence[str],
    min_extent: float = 0.0,
) -> np.ndarray:
    """Apply the bad-box policy; return bool[N], the boxes to keep. ``boxes`` (float32[N, 4] xyxy) is clipped in place.

    A box is *degenerate* when its width or height is ``<= min_extent`` (readers pass the extent that means "zero
    size" in the file's own convention) or when a coordinate is not finite; it is *outside* when it leaves
    ``[0, width] x [0, height]``. ``"raise"`` fails on either; ``"drop"`` drops both with a warning; ``"clip"`` clips
    outside boxes into the image with a warning and drops those that are then degenerate, with a warning.
    ``where`` (the file) and ``names[i]`` (e.g. "object 3 (RBC)") go into every message.
    """
    keep = np.ones(len(boxes), dtype=bool)
    for i, box in enumerate(boxes):
        x1, y1, x2, y2 = (float(v) for v in box)
        text = f"[{x1:g}, {y1:g}, {x2:g}, {y2:g}]"
        if not np.all(np.isfinite(box)) or x2 - x1 <= min_extent or y2 - y1 <= min_extent:
            if on_error == "raise":
                raise DatasetError(f"{where}: {names[i]}: degenerate box, zero or negative width or height "
                                   f"(xyxy {text})")
            warn(f"{where}: {names[i]}: degenerate box, zero or negative width or height (xyxy {text}); dropped")
            keep[i] = False
            continue
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
            message = f"{where}: {names[i]}: box {text} (xyxy) extends outside the {width}x{height} image"
            if on_error == "raise":
                raise DatasetError(message)
            if on_error == "drop":
                warn(message + "; dropped")
                keep[i] = False
                continue
            box[[0, 2]] = np.clip(box[[0, 2]], 0, width)
            box[[1, 3]] = np.clip(box[[1, 3]], 0, height)
            if box[2] - box[0] <= min_extent or box[3] - box[1] <= min_extent:
                warn(message + " and has no area inside it; dropped")
                keep[i] = False
            else:
                warn(message + f"; clipped to [{box[0]:g}, {box[1]:g}, {box[2]:g}, {box[3]:g}]")
    return keep
