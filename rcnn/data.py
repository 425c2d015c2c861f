"""The training and validation images of an R-CNN run: one definition of every split, used by training, the bench,
the demo and the baseline alike.

A run reads one dataset (``data.root`` and its split fields) or several (``data.sources``, a list of the same
fields per dataset; their records are concatenated, training with training and validation with validation, and the
class lists merged). Each dataset is read by :func:`cvcore.datasets.load_detection_dataset` (VOC, COCO, Penn-Fudan,
person boxes of a pose dataset), and split by the first rule that applies:

1. ``train_range`` / ``val_range``: 1-based inclusive positions in the dataset's order (LSPET: ``[1, 8000]`` and
   ``[8001, 9000]``);
2. ``val_every > 0``: every ``val_every``-th image of the sorted list is validation (Raccoon, Penn-Fudan);
3. ``train_split`` / ``val_split``: VOC ``ImageSets/Main/<split>.txt``.

Then every ``train_every``-th training image and every ``val_stride``-th validation image are kept (CPU budgets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cvcore.datasets import DetectionRecord, load_detection_dataset

__all__ = ["load_splits", "select_records", "source_records"]


def _range(records: list, span: Sequence[int], what: str) -> list:
    if len(span) != 2 or not 1 <= span[0] <= span[1]:
        raise ValueError(f"{what} must be [first, last] (1-based, inclusive), got {list(span)}")
    return records[span[0] - 1: span[1]]


def load_splits(root: str, train_split: str | None, val_split: str | None, val_every: int = 0,
                classes: Sequence[str] = (), train_range: Sequence[int] = (), val_range: Sequence[int] = (),
                format: str = "auto") -> tuple[list[DetectionRecord], list[DetectionRecord], list[str]]:
    """Training and validation records of one dataset (split rules in the module docstring).

    Returns (train, val, class names).
    """
    if not root:
        raise ValueError("data.root is empty: set it in the config or with data.root=/path/to/voc_folder")
    cls = list(classes) or None
    fmt = None if format == "auto" else format
    if train_range or val_range or val_every > 0:
        ds = load_detection_dataset(root, classes=cls, format=fmt)
        records, names = list(ds), list(ds.classes)
        if train_range or val_range:
            train = _range(records, train_range, "train_range") if train_range else []
            val = _range(records, val_range, "val_range") if val_range else []
        else:
            val = [r for i, r in enumerate(records) if i % val_every == val_every - 1]
            train = [r for i, r in enumerate(records) if i % val_every != val_every - 1]
    else:
        tr = load_detection_dataset(root, split=train_split, classes=cls, format=fmt)
        train, names = list(tr), list(tr.classes)
        val = list(load_detection_dataset(root, split=val_split, classes=names, format=fmt)) if val_split else []
    return train, val, names


def source_records(source: Any, classes: Sequence[str] = ()) -> tuple[list[DetectionRecord], list[DetectionRecord],
                                                                        list[str]]:
    """Training and validation records of one data section or source (``rcnn.config.DataSource`` fields)."""
    train, val, names = load_splits(source.root, source.train_split, source.val_split, source.val_every,
                                    classes, source.train_range, source.val_range, source.format)
    return train[:: max(1, source.train_every)], val[:: max(1, source.val_stride)], names


def select_records(cfg: Any) -> tuple[list[DetectionRecord], list[DetectionRecord], list[str]]:
    """The training and validation records a run uses: ``data.sources`` (or ``data`` itself as the one source),
    ``data.max_images``. Returns (train, val, class names)."""
    d = cfg.data
    sources = list(d.sources) or [d]
    train: list[DetectionRecord] = []
    val: list[DetectionRecord] = []
    classes: list[str] = list(d.classes)
    for source in sources:
        t, v, names = source_records(source, d.classes)
        train += t
        val += v
        classes += [c for c in names if c not in classes]
    if d.max_images > 0:
        train, val = train[: d.max_images], val[: d.max_images]
    return train, val, classes


def validation_records(config: str | Path, root: str | Path | None = None, limit: int = 0) -> list[DetectionRecord]:
    """The validation split of a training config (``configs/rcnn/<name>.yaml``), with ``data.root`` replaced by
    ``root`` when given (a single-source config), first ``limit`` images: the images the shipped model was
    validated on, for benchmarks and demos."""
    from cvcore.config import load_config
    from rcnn.config import RCNNConfig

    cfg = load_config(RCNNConfig, config, [f"data.root={root}"] if root is not None else [])
    _, val, _ = select_records(cfg)
    return val[:limit] if limit else val
