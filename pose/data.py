"""Person-centric crops, keypoint-aware augmentation and cached LSPET-style datasets.

Crops are similarity transforms (scale + shift, no rotation) from the original image to the network input; a crop is
``(centre_x, centre_y, side)`` in original pixels with the input's aspect ratio. Integer coordinates are pixel
centres on both sides (as in OpenCV), so the crop's continuous extent ``[cx - w/2, cx + w/2]`` maps onto
``[-0.5, W - 0.5]``: ``x' = (x - cx) * W / w + (W - 1) / 2``.

* Training: a crop around the annotated joints (``margin`` x their extent), cached with extra ``context`` so that
  rotation / scale / translation (albumentations, keypoints moved with the image) show real pixels; horizontal flips
  swap left and right joints. Missing joints (``visible = False``) carry no loss.
* Test: the whole image (letterboxed), a given box, or a crop centre/scale (:func:`crop_from_box`,
  :func:`crop_from_image`, :func:`crop_from_joints`).

Decoding ~9,000 JPEGs every epoch would dominate training on 2 CPU cores, so the cropped images are cached once as
uint8 arrays in ``cache_dir`` (``.npy``, memory-mapped) and reused by every stage and run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from cvcore.io import atomic_write_bytes, atomic_write_text, load_image
from pose.codec import flip_permutation

__all__ = [
    "MEAN_PIXEL", "Crop", "crop_from_joints", "crop_from_box", "crop_from_image", "warp_crop", "CropCache",
    "build_crop_cache", "PoseTrainSet", "PoseEvalSet", "build_augmentation", "select_range", "box_jitter",
]

MEAN_PIXEL = (124, 116, 104)  # ImageNet mean in uint8 RGB: padding that normalises to ~0


@dataclass(frozen=True)
class Crop:
    """A crop of the original image: centre (cx, cy) and size (w, h) in original pixels, output ``(W, H)`` pixels."""

    cx: float
    cy: float
    w: float
    h: float
    out_w: int
    out_h: int

    @property
    def scale(self) -> float:
        """Output pixels per original pixel."""
        return self.out_w / self.w

    def matrix(self) -> np.ndarray:
        """Affine Array[2, 3] original -> crop pixels (for ``cv2.warpAffine``)."""
        s = self.scale
        return np.array([[s, 0.0, (self.out_w - 1) / 2 - self.cx * s],
                         [0.0, s, (self.out_h - 1) / 2 - self.cy * s]], dtype=np.float64)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Array[..., 2] original pixels -> crop pixels."""
        p = np.asarray(points, dtype=np.float64)
        c = np.array([(self.out_w - 1) / 2, (self.out_h - 1) / 2])
        return (p - np.array([self.cx, self.cy])) * self.scale + c

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """Array[..., 2] crop pixels -> original pixels (inverse of :meth:`to_crop`)."""
        p = np.asarray(points, dtype=np.float64)
        c = np.array([(self.out_w - 1) / 2, (self.out_h - 1) / 2])
        return (p - c) / self.scale + np.array([self.cx, self.cy])

    def enlarged(self, factor: float, out_w: int, out_h: int) -> Crop:
        """The same centre and scale-per-pixel, ``factor`` times larger, rendered at ``(out_w, out_h)``."""
        return Crop(self.cx, self.cy, self.w * factor, self.h * factor, out_w, out_h)


def _crop_with_aspect(cx: float, cy: float, w: float, h: float, out_size: tuple[int, int]) -> Crop:
    """Smallest crop of the output aspect ratio containing a w x h region centred on (cx, cy)."""
    ow, oh = out_size
    aspect = ow / oh
    if w / max(h, 1e-6) > aspect:
        h = w / aspect
    else:
        w = h * aspect
    return Crop(float(cx), float(cy), float(w), float(h), int(ow), int(oh))


def crop_from_joints(joints: np.ndarray, visible: np.ndarray, out_size: tuple[int, int], margin: float = 1.3,
                     min_side: float = 48.0) -> Crop:
    """Person-centric crop around the annotated joints: ``margin`` x their bounding extent (at least ``min_side``).

    Args:
        joints: Array[K, 2] original pixels; visible: bool Array[K]; out_size: (W, H).
    """
    pts = np.asarray(joints, dtype=np.float64)[np.asarray(visible, dtype=bool)]
    if len(pts) == 0:
        raise ValueError("cannot build a person-centric crop without any annotated joint")
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    side = max(float((hi - lo).max()) * margin, min_side)
    return _crop_with_aspect(centre[0], centre[1], side, side, out_size)


def crop_from_box(box: Sequence[float], out_size: tuple[int, int], margin: float = 1.15) -> Crop:
    """Crop around an xyxy person box (e.g. a detection), enlarged by ``margin``, with the output aspect ratio."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"degenerate box {list(box)}")
    side = max(x2 - x1, y2 - y1) * margin
    return _crop_with_aspect((x1 + x2) / 2, (y1 + y2) / 2, side, side, out_size)


def crop_from_image(width: int, height: int, out_size: tuple[int, int]) -> Crop:
    """The whole image, letterboxed into the output aspect ratio (centre of the image, nothing cut)."""
    return _crop_with_aspect((width - 1) / 2, (height - 1) / 2, float(width), float(height), out_size)


def warp_crop(image: np.ndarray, crop: Crop) -> np.ndarray:
    """Cut ``crop`` out of an HxWx3 uint8 image (bilinear; outside pixels = mean pixel) -> Array[out_h, out_w, 3]."""
    interp = cv2.INTER_AREA if crop.scale < 0.5 else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:  # warpAffine has no area filter: pre-shrink, then warp the rest
        f = 1.0 / (2.0 * crop.scale)
        small = cv2.resize(image, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        crop = Crop((crop.cx + 0.5) * sx - 0.5, (crop.cy + 0.5) * sy - 0.5, crop.w * sx, crop.h * sy,
                    crop.out_w, crop.out_h)
        image = small
    return cv2.warpAffine(image, crop.matrix(), (crop.out_w, crop.out_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=MEAN_PIXEL)


def select_range(records: Sequence, first: int, last: int) -> list:
    """Records whose image is number ``first`` ... ``last`` (1-based, inclusive) in dataset order."""
    return list(records[first - 1:last])


# ------------------------------------------------------------------------------------------------ cache
@dataclass
class CropCache:
    """Cropped images of a list of pose records, and their joints in crop pixels.

    Attributes:
        images: uint8 Array[N, h, w, 3] (memory-mapped when loaded from disk).
        joints: float32 Array[N, K, 2] in crop pixels (0 where missing); visible: bool Array[N, K].
        crops: float64 Array[N, 4] (cx, cy, w, h) of each cached crop in original pixels.
        files: N image names (the prediction-file key).
        original_joints: float32 Array[N, K, 2] in original pixels (for PCK on image coordinates).
    """

    images: np.ndarray
    joints: np.ndarray
    visible: np.ndarray
    crops: np.ndarray
    files: list[str]
    original_joints: np.ndarray

    def crop(self, i: int) -> Crop:
        cx, cy, w, h = self.crops[i]
        return Crop(cx, cy, w, h, self.images.shape[2], self.images.shape[1])

    def __len__(self) -> int:
        return len(self.files)


def build_crop_cache(records: Sequence, out_size: tuple[int, int], margin: float, min_side: float,
                     context: float = 1.0, cache_dir: str | Path | None = None, min_visible: int = 1,
                     progress: bool = True, tag: str = "") -> CropCache:
    """Crop every record around its annotated joints (x ``context``) once; cache on disk if ``cache_dir`` is set.

    Records with fewer than ``min_visible`` annotated joints are skipped. The cache key hashes the file list, the
    annotations and the crop settings, so a changed setting builds a new cache instead of reading a stale one.
    """
    kept = [r for r in records if int(np.sum(r.visible)) >= max(min_visible, 1)]
    out_w, out_h = round(out_size[0] * context), round(out_size[1] * context)
    key = hashlib.sha1(json.dumps({
        "files": [str(r.image_path) for r in kept], "joints": float(sum(np.nansum(r.joints) for r in kept)),
        "size": [out_w, out_h], "margin": margin, "min_side": min_side, "context": context, "v": 1,
    }).encode()).hexdigest()[:12]
    folder = Path(cache_dir) / f"{tag}{key}" if cache_dir else None
    if folder is not None and (folder / "done.json").is_file():
        meta = np.load(folder / "meta.npz")
        return CropCache(np.load(folder / "images.npy", mmap_mode="r"), meta["joints"], meta["visible"],
                         meta["crops"], json.loads((folder / "done.json").read_text())["files"],
                         meta["original_joints"])
    n, k = len(kept), len(kept[0].joints) if kept else 0
    if folder is not None:  # several builders of one fresh cache (ranks, machines) each write their own temp files
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"images.npy.tmp.{os.getpid()}.{secrets.token_hex(4)}"
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, out_h, out_w, 3))
    else:
        images = np.empty((n, out_h, out_w, 3), np.uint8)
    joints = np.zeros((n, k, 2), np.float32)
    visible = np.zeros((n, k), bool)
    crops = np.zeros((n, 4), np.float64)
    original = np.zeros((n, k, 2), np.float32)
    for i, rec in enumerate(tqdm(kept, desc=f"caching {tag or 'crops'}", disable=not progress, dynamic_ncols=True)):
        base = crop_from_joints(rec.joints, rec.visible, out_size, margin, min_side)
        crop = base.enlarged(context, out_w, out_h)
        images[i] = warp_crop(load_image(rec.image_path), crop)
        vis = np.asarray(rec.visible, bool)
        xy = np.where(vis[:, None], np.nan_to_num(rec.joints), 0.0)
        joints[i] = np.where(vis[:, None], crop.to_crop(xy), 0.0)
        visible[i] = vis
        crops[i] = (crop.cx, crop.cy, crop.w, crop.h)
        original[i] = xy
    files = [r.file for r in kept]
    if folder is not None:
        images.flush()
        del images
        if (folder / "done.json").is_file():  # another builder finished first: its identical cache stands
            tmp.unlink()
        else:
            tmp.replace(folder / "images.npy")
            meta = io.BytesIO()
            np.savez(meta, joints=joints, visible=visible, crops=crops, original_joints=original)
            atomic_write_bytes(folder / "meta.npz", meta.getvalue())
            atomic_write_text(folder / "done.json", json.dumps({"files": files}))  # last: marks the cache complete
        images = np.load(folder / "images.npy", mmap_mode="r")
    return CropCache(images, joints, visible, crops, files, original)


# ------------------------------------------------------------------------------------------- datasets
def build_augmentation(cfg, out_size: tuple[int, int]) -> A.Compose:
    """Albumentations pipeline on a cached crop: rotation / scale / translation about the centre (keypoints moved
    with the image), optional horizontal flip, colour jitter, then the central ``out_size`` (W, H) window."""
    transforms: list = [
        A.Affine(scale=tuple(cfg.scale), rotate=(-cfg.rotate, cfg.rotate), keep_ratio=True,
                 translate_percent=(-cfg.translate, cfg.translate), border_mode=cv2.BORDER_CONSTANT,
                 fill=MEAN_PIXEL, p=1.0),
    ]
    if cfg.flip > 0:
        transforms.append(A.HorizontalFlip(p=cfg.flip))
    if cfg.color_jitter > 0:
        j = cfg.color_jitter
        transforms.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=cfg.hue, p=1.0))
    transforms.append(A.CenterCrop(height=out_size[1], width=out_size[0]))
    return A.Compose(transforms, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False),
                     save_applied_params=True)


def box_jitter(image: np.ndarray, joints: np.ndarray, scale: float, shift: tuple[float, float]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Re-frame a crop as a detector box ``scale`` times as large and ``shift`` pixels (x, y) off-centre would: the
    same output size, content zoomed by 1 / ``scale`` about the moved centre (outside pixels = mean pixel).
    ``image``: H x W x 3 uint8; ``joints``: Array[K, 2] pixels, moved the same way."""
    h, w = image.shape[:2]
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    centre = c + np.asarray(shift, np.float64)
    m = np.array([[1 / scale, 0, c[0] - centre[0] / scale], [0, 1 / scale, c[1] - centre[1] / scale]])
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=MEAN_PIXEL)
    return out, ((np.asarray(joints, np.float64) - centre) / scale + c).astype(np.float32)


class PoseTrainSet(Dataset):
    """Augmented training samples from a :class:`CropCache` with context.

    Each item: ``{"image": uint8 Tensor[3, H, W], "joints": float32 Tensor[K, 2] (input px), "visible": bool
    Tensor[K]}``. Randomness comes from numpy's global RNG (one seed per item handed to albumentations), so the
    engine's RNG capture makes epochs reproducible and resumable. With the ``augment.box_*`` settings each crop is
    first re-framed by :func:`box_jitter` (random scale and shift, as a person detector's boxes differ from the
    annotated person's).
    """

    def __init__(self, cache: CropCache, out_size: tuple[int, int], augment, flip_pairs: Sequence[tuple[int, int]]):
        self.cache = cache
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.transform = build_augmentation(augment, self.out_size) if augment.enabled else None
        self.perm = flip_permutation(cache.joints.shape[1], flip_pairs)
        on = augment.enabled and (augment.box_scale_sd > 0 or augment.box_shift_sd > 0 or augment.box_scale_mean)
        self.jitter = (augment.box_scale_mean, augment.box_scale_sd, augment.box_shift_sd) if on else None

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = np.asarray(self.cache.images[i])
        joints = self.cache.joints[i].astype(np.float32)
        visible = self.cache.visible[i].copy()
        if self.transform is None:
            h, w = image.shape[:2]
            ow, oh = self.out_size
            x0, y0 = (w - ow) // 2, (h - oh) // 2
            image = image[y0:y0 + oh, x0:x0 + ow]
            joints = joints - np.array([x0, y0], np.float32)
        else:
            if self.jitter is not None:
                mean, scale_sd, shift_sd = self.jitter
                scale = float(np.exp(mean + scale_sd * np.random.randn()))
                shift = shift_sd * np.random.randn(2) * np.array(self.out_size)  # fraction of the crop side -> px
                image, joints = box_jitter(image, joints, scale, tuple(shift))
            self.transform.set_random_seed(int(np.random.randint(2**31 - 1)))
            out = self.transform(image=image, keypoints=joints)
            image, joints = out["image"], np.asarray(out["keypoints"], np.float32)[:, :2]
            if any(name == "HorizontalFlip" for name, _ in out["applied_transforms"]):
                joints, visible = joints[self.perm], visible[self.perm]
        return {"image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                "joints": torch.from_numpy(np.ascontiguousarray(joints)),
                "visible": torch.from_numpy(np.ascontiguousarray(visible))}


class PoseEvalSet(Dataset):
    """Unaugmented crops (cached at the input size) with the index of each sample, for evaluation."""

    def __init__(self, cache: CropCache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"image": torch.from_numpy(np.array(self.cache.images[i])).permute(2, 0, 1),  # copy: cache is read-only
                "index": torch.tensor(i)}
