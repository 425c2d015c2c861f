"""PASCAL VOC XML annotations (VOC 2007/2012, BCCD, Raccoon and other LabelImg exports).

Layouts found under ``root`` (first match wins; or pass ``annotations_dir`` / ``images_dir``):

* ``Annotations/`` + ``JPEGImages/`` (+ optional ``ImageSets/Main/<split>.txt``): VOC, BCCD.
* ``annotations/`` + ``images/``: Raccoon.

Coordinate conversion: VOC pixel coordinates are 1-based and inclusive (``xmin = 1`` is the first column,
``xmax = W`` the last). This project's boxes have the image spanning ``[0, W]``, so

    x1 = xmin - 1,  y1 = ymin - 1,  x2 = xmax,  y2 = ymax

(as detectron2's VOC loader). A box covering the whole image becomes ``[0, 0, W, H]``; width = xmax - xmin + 1.
A box with ``xmax <= xmin`` or ``ymax <= ymin`` (a click without a drag; BCCD has two) is degenerate.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
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

__all__ = ["read_voc", "read_voc_xml", "voc_xml", "find_voc_layout", "VOC_CLASSES"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_ANNOTATION_DIRS = ("Annotations", "annotations")
_IMAGE_DIRS = ("JPEGImages", "images", "Images")
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG", ".bmp")


def find_voc_layout(root: str | os.PathLike) -> tuple[Path, Path]:
    """``(annotations_dir, images_dir)`` of a VOC-style dataset folder.

    Raises:
        DatasetError: no annotation folder of a known name holds XML files.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    for name in _ANNOTATION_DIRS:
        ann = root / name
        if ann.is_dir() and any(ann.glob("*.xml")):
            break
    else:
        raise DatasetError(f"{root}: no VOC annotations found (expected XML files in one of "
                           f"{', '.join(n + '/' for n in _ANNOTATION_DIRS)})")
    images = next((root / n for n in _IMAGE_DIRS if (root / n).is_dir()), root)
    return ann, images


def _text(node: ET.Element, tag: str, xml: Path, what: str) -> str:
    child = node.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{xml}: {what}: missing <{tag}>")
    return child.text.strip()


def _number(node: ET.Element, tag: str, xml: Path, what: str) -> float:
    text = _text(node, tag, xml, what)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{xml}: {what}: <{tag}> is not a number: {text!r}") from None
    if not math.isfinite(value):
        raise DatasetError(f"{xml}: {what}: <{tag}> is not a finite number: {text!r}")
    return value


def _image_size(image_path: Path, xml: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(image_path) as img:  # reads the header only
            return img.size
    except OSError as e:
        raise DatasetError(f"{xml}: no usable <size> and the image {image_path} cannot be opened ({e})") from None


def _resolve_image(images_dir: Path, filename: str | None, stem: str) -> Path:
    """The image file for an annotation: ``<filename>`` if it exists, else ``<stem>`` with a known extension."""
    if filename:
        candidate = images_dir / filename
        if candidate.is_file():
            return candidate
    for ext in _IMAGE_EXTS:
        candidate = images_dir / (stem + ext)
        if candidate.is_file():
            return candidate
    return images_dir / (filename or stem + ".jpg")


def read_voc_xml(
    xml: str | os.PathLike, images_dir: str | os.PathLike, classes: Sequence[str] | None = None,
    on_error: str = "clip",
) -> DetectionRecord:
    """Read one VOC XML file into a :class:`DetectionRecord` (boxes converted as in the module docstring).

    Args:
        xml: the annotation file.
        images_dir: folder of the images; the record's ``file`` is relative to it.
        classes: known class names; objects of other classes are dropped with a warning (``"raise"``: error).
            None accepts every name.
        on_error: ``"clip"`` | ``"drop"`` | ``"raise"``, see :func:`cvcore.datasets.records.sanitize_boxes`.

    Raises:
        DatasetError: unparseable XML, missing or non-numeric fields (always), and policy violations under ``"raise"``.
    """
    xml, images_dir = Path(xml), Path(images_dir)
    check_on_error(on_error)
    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as e:
        raise DatasetError(f"{xml}: not a readable XML file ({e})") from None
    if root.tag != "annotation":
        raise DatasetError(f"{xml}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip() or None
    if filename is not None and Path(filename).is_absolute():  # some exporters write the full path
        filename = Path(filename).name
    image_path = _resolve_image(images_dir, filename, xml.stem)

    size = root.find("size")
    width = height = 0
    if size is not None and size.findtext("width") and size.findtext("height"):
        width = int(_number(size, "width", xml, "<size>"))
        height = int(_number(size, "height", xml, "<size>"))
    if width <= 0 or height <= 0:  # some exporters write 0 x 0: ask the image
        width, height = _image_size(image_path, xml)

    boxes, labels, difficult, names = [], [], [], []
    known = set(classes) if classes is not None else None
    for i, obj in enumerate(root.findall("object")):
        label = _text(obj, "name", xml, f"object {i}")
        what = f"object {i} ({label})"
        if known is not None and label not in known:
            message = f"{xml}: {what}: unknown class {label!r} (known: {', '.join(classes)})"
            if on_error == "raise":
                raise DatasetError(message)
            warn(message + "; dropped")
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{xml}: {what}: missing <bndbox>")
        xmin, ymin, xmax, ymax = (_number(bndbox, t, xml, what) for t in ("xmin", "ymin", "xmax", "ymax"))
        what = f"object {i} ({label}, bndbox {xmin:g} {ymin:g} {xmax:g} {ymax:g})"
        boxes.append((xmin - 1.0, ymin - 1.0, xmax, ymax))
        labels.append(label)
        flag = obj.findtext("difficult")
        difficult.append(flag is not None and flag.strip() not in ("", "0"))
        names.append(what)

    boxes_arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    # min_extent 1: in VOC's inclusive convention xmax <= xmin is zero width, i.e. x2 - x1 <= 1 here.
    keep = sanitize_boxes(boxes_arr, width, height, on_error, str(xml), names, min_extent=1.0)
    return DetectionRecord(
        image_path=image_path, width=width, height=height, boxes=boxes_arr[keep],
        labels=[lab for lab, k in zip(labels, keep) if k], difficult=np.asarray(difficult, dtype=bool)[keep],
        file=image_path.relative_to(images_dir).as_posix(),
    )


def voc_xml(filename: str, width: int, height: int, boxes: np.ndarray | Sequence[Sequence[float]],
            labels: Sequence[str], difficult: Sequence[bool] | None = None, decimals: int = 0) -> str:
    """The VOC XML text of one image: the inverse of :func:`read_voc_xml` (``xmin = x1 + 1``, ``xmax = x2``).

    Coordinates are rounded to whole pixels (VOC files hold integers), so boxes on integer coordinates round-trip
    exactly; ``decimals > 0`` keeps that many decimals (the reader accepts them; not every VOC tool does). Useful for
    writing other formats (COCO, synthetic data) as VOC folders for ``rcnn-train``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) != len(labels):
        raise ValueError(f"{filename}: {len(boxes)} boxes but {len(labels)} labels")
    flags = list(difficult) if difficult is not None else [False] * len(labels)
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    for (x1, y1, x2, y2), label, flag in zip(boxes, labels, flags):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = label
        ET.SubElement(obj, "difficult").text = "1" if flag else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, tag).text = f"{value:.{decimals}f}" if decimals > 0 else str(int(round(value)))
    return ET.tostring(root, encoding="unicode")


def _split_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt") if "_" not in p.stem)
        hint = (f" (available: {', '.join(available)})" if available
                else " (this dataset has no ImageSets: use split=None)")
        raise DatasetError(f"{path}: split file not found{hint}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{path}: split file is empty")
    return ids


def read_voc(
    root: str | os.PathLike, split: str | None = None, classes: Sequence[str] | None = None, on_error: str = "clip",
    annotations_dir: str | os.PathLike | None = None, images_dir: str | os.PathLike | None = None,
) -> DetectionDataset:
    """Read a VOC-style dataset folder.

    Args:
        root: dataset folder (see the module docstring for the layouts).
        split: name of ``ImageSets/Main/<split>.txt`` (one image id per line), or None for every XML file in
            sorted file-name order.
        classes: class list (fixes the order); None = the sorted set of names found.
        on_error: ``"clip"`` (default) | ``"drop"`` | ``"raise"`` for boxes outside the image, degenerate boxes and
            unknown classes; every clip/drop is reported with a :class:`DatasetWarning` naming the file and object.
        annotations_dir, images_dir: override the layout detection.

    Returns:
        a :class:`DetectionDataset` (a list of :class:`DetectionRecord` with ``.classes``).
    """
    root = Path(root)
    check_on_error(on_error)
    if annotations_dir is None or images_dir is None:
        found_ann, found_img = find_voc_layout(root)
        annotations_dir = Path(annotations_dir) if annotations_dir is not None else found_ann
        images_dir = Path(images_dir) if images_dir is not None else found_img
    annotations_dir, images_dir = Path(annotations_dir), Path(images_dir)

    if split is None:
        xmls = sorted(annotations_dir.glob("*.xml"), key=lambda p: p.name)
    else:
        xmls = [annotations_dir / f"{image_id}.xml" for image_id in _split_ids(root, split)]
        missing = [p for p in xmls if not p.is_file()]
        if missing:
            raise DatasetError(f"{root}: split {split!r} lists {len(missing)} ids without annotation file, "
                               f"e.g. {missing[0]}")
    if not xmls:
        raise DatasetError(f"{annotations_dir}: no XML annotation files")

    records = [read_voc_xml(xml, images_dir, classes, on_error) for xml in xmls]
    return finish_detection_dataset(root, records, classes, on_error, images_dir)
