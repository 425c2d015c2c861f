"""Ground truth from a path in any supported format, detected from the files (what ``eval-map`` / ``eval-pck`` use).

Detection (:func:`load_detection_dataset`):

* a VOC-style folder (``Annotations/`` or ``annotations/`` with XML files), or that annotation folder itself;
* a VOC split file ``<root>/ImageSets/Main/<split>.txt`` (= the folder with ``split``);
* a COCO ``.json`` file;
* a folder of old PASCAL 1.00 text annotations (Penn-Fudan: ``Annotation/*.txt``): ``pennfudan``;
* a pose dataset (``joints.mat`` of LSP / LSPET, FLIC, ...): one ``person`` box per annotated person from its
  joints (:mod:`cvcore.datasets.person_boxes`; records not exhaustive): ``poses``.

Pose (:func:`load_pose_dataset`), ``format`` one of :data:`POSE_FORMATS` or None to detect:

* a folder (or file) with ``joints.mat``: ``lsp`` when it is 3 x 14 x N, ``lspet`` when 14 x 3 x N;
* a folder (or file) with ``examples.mat``: ``flic``;
* a ``.json`` file: ``mpii`` when it is a list of person entries, ``coco`` when it is a COCO object with keypoints.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from .coco import read_coco_detection, read_coco_keypoints
from .flic import read_flic
from .lsp import load_joints_mat, read_lsp, read_lspet
from .mpii import read_mpii
from .pennfudan import is_pascal_text_folder, read_pennfudan
from .person_boxes import person_detection_dataset
from .records import DatasetError, DetectionDataset, PoseDataset
from .voc import read_voc

__all__ = ["POSE_FORMATS", "DETECTION_FORMATS", "detect_pose_format", "detect_detection_format",
           "load_pose_dataset", "load_detection_dataset"]

POSE_FORMATS = ("lsp", "lspet", "flic", "mpii", "coco")
DETECTION_FORMATS = ("voc", "coco", "pennfudan", "poses")


def _json_kind(path: Path) -> str:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read as JSON ({e})") from None
    if isinstance(data, list):
        return "mpii"
    if isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys():
        has_keypoints = any(isinstance(c, dict) and c.get("keypoints") for c in data["categories"])
        return "coco-keypoints" if has_keypoints else "coco"
    raise DatasetError(f"{path}: JSON is neither an MPII entry list nor a COCO annotation object")


def detect_pose_format(path: str | os.PathLike) -> str:
    """The pose format of ``path`` (one of :data:`POSE_FORMATS`), from its files; raises DatasetError if unknown."""
    path = Path(path)
    if path.is_dir():
        if (path / "joints.mat").is_file():
            path = path / "joints.mat"
        elif (path / "examples.mat").is_file():
            return "flic"
        else:
            raise DatasetError(f"{path}: no joints.mat (LSP / LSPET) or examples.mat (FLIC) in this folder; "
                               "for MPII or COCO pass the .json file")
    if not path.is_file():
        raise DatasetError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".json":
        kind = _json_kind(path)
        if kind == "coco":
            raise DatasetError(f"{path}: COCO file without keypoint categories (a detection file?)")
        return "coco" if kind == "coco-keypoints" else kind
    if path.name == "examples.mat":
        return "flic"
    if path.suffix.lower() == ".mat":
        shape = load_joints_mat(path).shape
        if shape[:2] == (3, 14):
            return "lsp"
        if shape[:2] == (14, 3):
            return "lspet"
        raise DatasetError(f"{path}: 'joints' is {' x '.join(map(str, shape))}; expected 3 x 14 x N (LSP) "
                           "or 14 x 3 x N (LSPET)")
    raise DatasetError(f"{path}: unknown pose annotation format (expected joints.mat, examples.mat or .json)")


def load_pose_dataset(
    path: str | os.PathLike, format: str | None = None, split: str | None = None,
    image_root: str | os.PathLike | None = None, **kwargs,
) -> PoseDataset:
    """Read pose ground truth in any supported format.

    Args:
        path: folder or annotation file (see the module docstring).
        format: one of :data:`POSE_FORMATS`, or None to detect it.
        split: ``"train"`` / ``"test"`` for LSP and FLIC; must be None for the others.
        image_root: image folder for MPII / COCO (the folder formats know theirs).
        kwargs: passed to the reader (e.g. ``head_boxes=`` for MPII, ``min_keypoints=`` for COCO).

    Returns:
        a :class:`PoseDataset` (records + skeleton).
    """
    fmt = format or detect_pose_format(path)
    if fmt not in POSE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(POSE_FORMATS)}, got {fmt!r}")
    if split is not None and fmt not in ("lsp", "flic"):
        raise ValueError(f"format {fmt!r} has no built-in splits (got split={split!r})")
    if fmt == "lsp":
        return read_lsp(path, split=split, **kwargs)
    if fmt == "lspet":
        return read_lspet(path, **kwargs)
    if fmt == "flic":
        return read_flic(path, split=split, **kwargs)
    if fmt == "mpii":
        return read_mpii(path, image_root=image_root, **kwargs)
    return read_coco_keypoints(path, image_root=image_root, **kwargs)


def detect_detection_format(path: str | os.PathLike) -> str:
    """One of :data:`DETECTION_FORMATS` from the files at ``path``; raises DatasetError if none fits."""
    path = Path(path)
    if path.is_dir() and is_pascal_text_folder(path):
        return "pennfudan"
    if path.is_dir() and ((path / "joints.mat").is_file() or (path / "examples.mat").is_file()):
        return "poses"
    if path.is_file() and path.suffix.lower() == ".json":
        if _json_kind(path) not in ("coco", "coco-keypoints"):
            raise DatasetError(f"{path}: JSON is not a COCO annotation object")
        return "coco"
    if path.is_file() and path.suffix == ".txt" and path.parent.name == "Main":
        return "voc"
    if path.is_dir():
        if any(path.glob("*.xml")) or any((path / d).is_dir() for d in ("Annotations", "annotations")):
            return "voc"
    raise DatasetError(f"{path}: not a VOC folder (Annotations/ or annotations/ with XML files), "
                       "a VOC split file (ImageSets/Main/<split>.txt), a COCO .json file, a Penn-Fudan folder "
                       "(Annotation/*.txt) or a pose dataset folder (joints.mat)")


def load_detection_dataset(
    path: str | os.PathLike, split: str | None = None, classes: Sequence[str] | None = None, on_error: str = "clip",
    image_root: str | os.PathLike | None = None, format: str | None = None,
) -> DetectionDataset:
    """Read detection ground truth: VOC folder / split file / annotation folder, COCO JSON, a Penn-Fudan folder or
    a pose dataset's person boxes (format detected unless given).

    Args:
        path: see the module docstring. A split file ``<root>/ImageSets/Main/val.txt`` means ``root`` with
            ``split="val"``; an annotation folder holding the XML files means its parent folder.
        split: VOC split name (``ImageSets/Main/<split>.txt``); None = every annotation file.
        classes: class list (order); None = as found (VOC: sorted names; COCO: category-id order).
        on_error: ``"clip"`` | ``"drop"`` | ``"raise"`` for bad boxes and unknown classes.
        image_root: COCO image folder (VOC finds its own).
        format: one of :data:`DETECTION_FORMATS`, or None to detect it.
    """
    path = Path(path)
    fmt = format or detect_detection_format(path)
    if fmt not in DETECTION_FORMATS:
        raise ValueError(f"format must be one of {', '.join(DETECTION_FORMATS)}, got {fmt!r}")
    if fmt in ("pennfudan", "poses") and split is not None:
        raise ValueError(f"format {fmt!r} has no built-in splits (got split={split!r})")
    if fmt == "pennfudan":
        return read_pennfudan(path, classes=classes, on_error=on_error)
    if fmt == "poses":
        if classes is not None and list(classes) != ["person"]:
            raise ValueError(f"{path}: a pose dataset gives 'person' boxes only, not classes {list(classes)}")
        return person_detection_dataset(load_pose_dataset(path))
    if fmt == "coco":
        if split is not None:
            raise ValueError(f"COCO splits are separate files; pass the split's .json (got split={split!r})")
        return read_coco_detection(path, image_root=image_root, classes=classes, on_error=on_error)
    if path.is_file():  # <root>/ImageSets/Main/<split>.txt
        if split is not None and split != path.stem:
            raise ValueError(f"{path} is split {path.stem!r} but split={split!r} was given")
        return read_voc(path.parents[2], split=path.stem, classes=classes, on_error=on_error)
    if any(path.glob("*.xml")):  # the annotation folder itself
        root = path.parent
        images = next((root / n for n in ("JPEGImages", "images", "Images") if (root / n).is_dir()), root)
        return read_voc(root, split=split, classes=classes, on_error=on_error, annotations_dir=path,
                        images_dir=image_root or images)
    return read_voc(path, split=split, classes=classes, on_error=on_error,
                    images_dir=image_root if image_root is not None else None)
