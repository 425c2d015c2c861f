"""The old PASCAL text annotation format ("PASCAL Annotation Version 1.00", VOC 2005), as in Penn-Fudan pedestrians.

Layout (the original Penn-Fudan release): ``<root>/Annotation/<name>.txt`` and ``<root>/PNGImages/<name>.png``
(``PedMasks/`` is not read). One file per image::

    Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
    Image size (X x Y x C) : 559 x 536 x 3
    Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (160, 182) - (302, 431)

Coordinates are 1-based and inclusive, as in VOC XML, and are converted the same way
(``x1 = Xmin - 1, y1 = Ymin - 1, x2 = Xmax, y2 = Ymax``). VOC 2005 labels carry a view suffix
(``PASpersonWalking``, ``PAScarRear``): the class is the VOC 2005 class name the label starts with (``person``), or
the label without its ``PAS`` prefix when it names none of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .records import (
    DatasetError,
    DetectionDataset,
    DetectionRecord,
    check_on_error,
    finish_detection_dataset,
    sanitize_boxes,
    warn,
)

__all__ = ["read_pascal_text", "read_pennfudan", "is_pascal_text_folder", "pascal_text", "PASCAL_TEXT_HEADER"]

PASCAL_TEXT_HEADER = "# Compatible with PASCAL Annotation Version 1.00"
_VOC2005_CLASSES = ("bicycle", "car", "motorbike", "person")
_ANNOTATION_DIRS = ("Annotation", "Annotations", "annotations")
_IMAGE_DIRS = ("PNGImages", "JPEGImages", "images", "Images")
_NUMBER = r"(-?\d+(?:\.\d+)?)"
_FILENAME = re.compile(r'^\s*Image filename\s*:\s*"([^"]*)"')
_SIZE = re.compile(r"^\s*Image size \(X x Y x C\)\s*:\s*(\d+)\s*x\s*(\d+)")
_BOX = re.compile(r'^\s*Bounding box for object (\d+) "([^"]*)"[^:]*:\s*\(\s*' + _NUMBER + r"\s*,\s*" + _NUMBER
                  + r"\s*\)\s*-\s*\(\s*" + _NUMBER + r"\s*,\s*" + _NUMBER + r"\s*\)")


def _class_name(label: str) -> str:
    name = label[3:] if label.startswith("PAS") else label
    return next((c for c in _VOC2005_CLASSES if name.lower().startswith(c)), name)


def _annotation_dir(root: Path) -> Path | None:
    for name in _ANNOTATION_DIRS:
        folder = root / name
        if folder.is_dir():
            first = next(iter(sorted(folder.glob("*.txt"))), None)
            if first is not None and _looks_like_pascal_text(first):
                return folder
    return None


def _looks_like_pascal_text(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return "PASCAL Annotation" in head or "Bounding box for object" in head


def is_pascal_text_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a dataset folder (or its annotation folder) in the PASCAL text format."""
    path = Path(path)
    if not path.is_dir():
        return False
    if _annotation_dir(path) is not None:
        return True
    first = next(iter(sorted(path.glob("*.txt"))), None)
    return first is not None and _looks_like_pascal_text(first)


def read_pascal_text(path: str | os.PathLike, images_dir: str | os.PathLike, classes: Sequence[str] | None = None,
                     on_error: str = "clip") -> DetectionRecord:
    """Read one PASCAL 1.00 text annotation into a :class:`DetectionRecord` (coordinates as in the module docstring).

    Args:
        path: the ``.txt`` file; images_dir: folder of the images (the record's ``file`` is relative to it).
        classes: known class names (objects of others are dropped with a warning, ``"raise"``: error); None: all.
        on_error: ``"clip"`` | ``"drop"`` | ``"raise"`` for boxes outside the image and degenerate boxes.

    Raises:
        DatasetError: unreadable file, no image size, a malformed bounding-box line (always); policy violations under
            ``"raise"``.
    """
    path, images_dir = Path(path), Path(images_dir)
    check_on_error(on_error)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e})") from None
    filename, size = None, None
    boxes, labels, names = [], [], []
    known = set(classes) if classes is not None else None
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _FILENAME.match(line):
            filename = Path(m.group(1).replace("\\", "/")).name
        elif m := _SIZE.match(line):
            size = int(m.group(1)), int(m.group(2))
        elif line.lstrip().startswith("Bounding box for object"):
            m = _BOX.match(line)
            if m is None:
                raise DatasetError(f"{path}: line {number}: malformed bounding box line: {line.strip()!r}")
            label = _class_name(m.group(2))
            what = f"object {m.group(1)} ({m.group(2)})"
            if known is not None and label not in known:
                message = f"{path}: {what}: unknown class {label!r} (known: {', '.join(classes)})"
                if on_error == "raise":
                    raise DatasetError(message)
                warn(message + "; dropped")
                continue
            xmin, ymin, xmax, ymax = (float(m.group(i)) for i in range(3, 7))
            boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
            labels.append(label)
            names.append(f"{what}, box ({xmin:g}, {ymin:g}) - ({xmax:g}, {ymax:g})")
    if size is None:
        raise DatasetError(f"{path}: no 'Image size (X x Y x C) : W x H x C' line (not a PASCAL 1.00 annotation?)")
    width, height = size
    image_path = images_dir / (filename or path.stem + ".png")
    if not image_path.is_file():
        image_path = next((images_dir / (path.stem + e) for e in (".png", ".jpg", ".jpeg", ".PNG", ".JPG")
                           if (images_dir / (path.stem + e)).is_file()), image_path)
    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    keep = sanitize_boxes(boxes_arr, width, height, on_error, str(path), names, min_extent=1.0)
    return DetectionRecord(image_path=image_path, width=width, height=height, boxes=boxes_arr[keep],
                           labels=[lab for lab, k in zip(labels, keep) if k],
                           difficult=np.zeros(int(keep.sum()), dtype=bool),
                           file=image_path.relative_to(images_dir).as_posix())


def read_pennfudan(root: str | os.PathLike, classes: Sequence[str] | None = None, on_error: str = "clip"
                   ) -> DetectionDataset:
    """Read a folder of PASCAL 1.00 text annotations (Penn-Fudan: ``Annotation/*.txt`` + ``PNGImages/``).

    Args:
        root: the dataset folder, or the annotation folder itself (images are then looked for beside it).
        classes: class list (order); None = the sorted names found (Penn-Fudan: ``["person"]``).
        on_error: see :func:`read_pascal_text`.

    Returns:
        a :class:`DetectionDataset`, records in sorted file-name order.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    annotations = _annotation_dir(root)
    if annotations is None:
        if not is_pascal_text_folder(root):
            raise DatasetError(f"{root}: no PASCAL 1.00 text annotations (expected .txt files in one of "
                               f"{', '.join(n + '/' for n in _ANNOTATION_DIRS)})")
        annotations, root = root, root.parent
    images = next((root / n for n in _IMAGE_DIRS if (root / n).is_dir()), root)
    files = sorted(annotations.glob("*.txt"), key=lambda p: p.name)
    records = [read_pascal_text(f, images, classes, on_error) for f in files]
    return finish_detection_dataset(root, records, classes, on_error, images)


def pascal_text(filename: str, width: int, height: int, boxes: np.ndarray | Sequence[Sequence[float]],
                label: str = "PASpersonWalking") -> str:
    """The PASCAL 1.00 text of one image (the inverse of :func:`read_pascal_text` for whole-pixel boxes), e.g. to
    write synthetic Penn-Fudan-style folders."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lines = [PASCAL_TEXT_HEADER, f'Image filename : "PennFudanPed/PNGImages/{filename}"',
             f"Image size (X x Y x C) : {int(width)} x {int(height)} x 3",
             'Database : "The Penn-Fudan-Pedestrian Database"',
             f"Objects with ground truth : {len(boxes)} {{ {' '.join(chr(34) + label + chr(34) for _ in boxes)} }}",
             "# Top left pixel co-ordinates : (1, 1)"]
    for i, (x1, y1, x2, y2) in enumerate(boxes, start=1):
        lines += [f'# Details for pedestrian {i} ("{label}")',
                  f'Original label for object {i} "{label}" : "PennFudanPed"',
                  f'Bounding box for object {i} "{label}" (Xmin, Ymin) - (Xmax, Ymax) : '
                  f"({int(round(x1 + 1))}, {int(round(y1 + 1))}) - ({int(round(x2))}, {int(round(y2))})", ""]
    return "\n".join(lines) + "\n"
