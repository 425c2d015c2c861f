"""Region proposals by selective search (Uijlings et al., IJCV 2013), as used by R-CNN.

``selective_search(image, mode="fast")`` runs the full method on an image resized so its longer side is 500 px:
Felzenszwalb segmentations in several colour spaces and values of k, hierarchical grouping of each segmentation by
colour, texture, size and fill similarity (``rcnn/_ss_grouping.py``), then the paper's ranking: in every strategy the
last merged region (the whole image) has position 1 and earlier merges higher positions, a segmentation's initial
regions all have position n (their number, as in Uijlings' code), each position is multiplied by a random number
(fixed seed), all strategies are merged and sorted, duplicate and tiny boxes dropped.

Modes (the paper's Table 5 / R-CNN's ``selective_search_boxes.m``):

* ``single``:  HSV, k = 100, colour+texture+size+fill (1 strategy);
* ``fast``:    {HSV, Lab} x k {50, 100} x {C+T+S+F, T+S+F} (8 strategies, the R-CNN setting);
* ``quality``: {HSV, Lab, rgI, H, I} x k {50, 100, 150, 300} x {C+T+S+F, T+S+F, F, S} (80 strategies).

Backends: ``native`` (this implementation), ``selectivesearch`` (the PyPI package, reference only: see
REFERENCE.md for its defects) and ``opencv`` (``cv2.ximgproc``, its own k values and ranking).

Speed: the Felzenszwalb segmentation is compiled with numba and builds and sorts each colour space's pixel graph once
for both values of k (``rcnn/_felzenszwalb.py``; OpenCV's ``GraphSegmentation`` is the fallback and a reference); the
grouping keeps region features in arrays and merges with a compiled scan over the neighbour-pair list (else a heap
with vectorised similarity updates; both tested against a brute-force reference); the colour spaces can run in threads
(``n_workers``). On this machine fast mode takes about a fifth of the time of OpenCV's C++ fast mode on the same
500 px image (0.18 vs 0.86 s; see BENCHMARKS.md, ``tools/bench_proposals.py``).

``compute_proposals`` adds a per-image on-disk cache (``ProposalCache``) keyed by the image file's bytes and every
parameter, so extraction can be sharded across machines and resumed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from cvcore.io import atomic_write_bytes
from rcnn import _felzenszwalb
from rcnn import _ss_grouping as grouping

if TYPE_CHECKING:
    from cvcore.datasets import DetectionRecord
    from rcnn.config import RCNNConfig

__all__ = [
    "image_proposals",
    "MODES",
    "BACKENDS",
    "selective_search",
    "proposal_best_iou",
    "ProposalCache",
    "compute_proposals",
]

BACKENDS = ("native", "selectivesearch", "opencv")
SIGMA = 0.8  # Gaussian smoothing before Felzenszwalb segmentation; the paper's value; min component size = k.
PROPOSALS_VERSION = 3  # bump when the native algorithm changes so cached proposals are recomputed

CTSF = ("colour", "texture", "size", "fill")
TSF = ("texture", "size", "fill")
MODES: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[tuple[str, ...], ...]]] = {
    # mode: (colour spaces, Felzenszwalb k values, similarity sets)
    "single": (("hsv",), (100,), (CTSF,)),
    "fast": (("hsv", "lab"), (50, 100), (CTSF, TSF)),
    "quality": (("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), (CTSF, TSF, ("fill",), ("size",))),
}


# ----------------------------------------------------------------------------------------------------------------------
# Colour spaces and segmentation


def convert_colour_space(image: np.ndarray, name: str) -> np.ndarray:
    """RGB uint8[H, W, 3] to a colour space of the paper as uint8[H, W, C] (C = 3, or 1 for ``h`` and ``i``).

    hsv: hue over 0..255; lab: OpenCV's 8-bit Lab; rgi: normalised r, g and intensity; h: hue; i: intensity.
    """
    if name == "hsv":
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)
    if name == "lab":
        return cv2.cvtColor(image, cv2.COLOR_RGB2Lab)
    if name == "h":
        return cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)[:, :, :1].copy()
    if name == "i":
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    if name == "rgi":
        rgb = image.astype(np.float32)
        total = np.maximum(rgb.sum(axis=2, keepdims=True), 1.0)
        out = np.concatenate([rgb[:, :, :2] / total * 255.0, rgb.mean(axis=2, keepdims=True)], axis=2)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    raise ValueError(f"selective search: unknown colour space {name!r}")


def _opencv_segmentation_available() -> bool:
    return hasattr(cv2, "ximgproc") and hasattr(cv2.ximgproc, "segmentation")


SEGMENTERS = ("auto", "native", "opencv", "skimage")


def resolve_segmenter(segmenter: str) -> str:
    """``auto`` -> ``native`` when numba is installed (~4x faster than OpenCV's ``GraphSegmentation`` for the two k
    values of a colour space, which share one graph; selective search 2.2x faster), else
    ``opencv`` when ``cv2.ximgproc`` is importable, else ``skimage``."""
    if segmenter == "auto":
        if _felzenszwalb.available():
            return "native"
        return "opencv" if _opencv_segmentation_available() else "skimage"
    if segmenter not in SEGMENTERS:
        raise ValueError(f"selective search: unknown segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    return segmenter


def felzenszwalb(image: np.ndarray, k: float, sigma: float = SIGMA, min_size: int | None = None,
                 segmenter: str = "auto") -> tuple[np.ndarray, int]:
    """Felzenszwalb-Huttenlocher graph segmentation; k in 0..255 intensity units, min_size defaults to k.

    image: uint8[H, W, C]. segmenter: ``native`` (:mod:`rcnn._felzenszwalb`, OpenCV's 4-connected graph),
    ``opencv`` (``cv2.ximgproc``), ``skimage`` or ``auto`` (see :func:`resolve_segmenter`). Returns (labels int32[H, W]
    with values 0..n-1, every one used; n).
    """
    return felzenszwalb_all(image, (k,), sigma, None if min_size is None else (min_size,), segmenter)[0]


def felzenszwalb_all(image: np.ndarray, ks: Sequence[float], sigma: float = SIGMA,
                     min_sizes: Sequence[int] | None = None, segmenter: str = "auto") -> list[tuple[np.ndarray, int]]:
    """:func:`felzenszwalb` for every k of ``ks`` (the native segmenter builds and sorts the pixel graph once)."""
    min_sizes = [int(k) for k in ks] if min_sizes is None else [int(m) for m in min_sizes]
    segmenter = resolve_segmenter(segmenter)
    if segmenter == "native":
        return _felzenszwalb.felzenszwalb_multi(image, ks, sigma, min_sizes)
    out = []
    for k, min_size in zip(ks, min_sizes):
        if segmenter == "opencv":
            seg = cv2.ximgproc.segmentation.createGraphSegmentation(sigma, float(k), min_size)
            labels = seg.processImage(np.ascontiguousarray(image))
        else:
            from skimage.segmentation import felzenszwalb as sk_felzenszwalb

            labels = sk_felzenszwalb(image, scale=float(k), sigma=sigma, min_size=min_size, channel_axis=-1)
        labels = np.asarray(labels, np.int32)
        n = int(labels.max()) + 1
        if np.bincount(labels.ravel(), minlength=n).min() == 0:  # make labels contiguous
            _, inverse = np.unique(labels, return_inverse=True)
            labels = inverse.reshape(labels.shape).astype(np.int32)
            n = int(labels.max()) + 1
        out.append((labels, n))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Native selective search


def _group_colour_space(image: np.ndarray, colour_space: str, ks: tuple[int, ...],
                        similarity_sets: tuple[tuple[str, ...], ...], segmenter: str, loop: str) -> list[np.ndarray]:
    """All strategies of one colour space: per k one segmentation, per similarity set one hierarchy.

    Returns (boxes int64[N, 4], hierarchy positions float64[N]) groups, k-major: per segmentation its n initial
    regions, all at position n, then per similarity set its n - 1 merged regions at positions n - 1 (first merge)
    ... 1 (the whole image), as in Uijlings' ``Image2HierarchicalGrouping.m``.
    """
    converted = convert_colour_space(image, colour_space)
    need_colour = any("colour" in s for s in similarity_sets)
    need_texture = any("texture" in s for s in similarity_sets)
    colour_bins = grouping.colour_bins(converted) if need_colour else None
    texture_levels = grouping.texture_levels(converted) if need_texture else None
    c = converted.shape[2]
    image_area = float(image.shape[0] * image.shape[1])
    out = []
    for labels, n in felzenszwalb_all(converted, ks, segmenter=segmenter):
        sizes = grouping.region_sizes(labels, n)
        boxes = grouping.region_boxes(labels, n)
        edges = grouping.region_adjacency(labels, n)
        hists = {}
        if need_colour:
            hists["colour"] = grouping.region_histograms(colour_bins, labels, n, grouping.COLOUR_BINS * c)
        if need_texture:
            hists["texture"] = grouping.texture_histograms_from_levels(texture_levels, labels, n)
        out.append((boxes, np.full(n, float(n))))
        for sims in similarity_sets:
            parts = [hists[name] for name in ("colour", "texture") if name in sims]
            features = np.hstack(parts) if parts else np.zeros((n, 0))
            _, all_boxes = grouping.hierarchical_grouping(
                features, sizes, boxes, edges,
                use_size="size" in sims, use_fill="fill" in sims, image_area=image_area, loop=loop,
            )
            merged = all_boxes[n:]
            out.append((merged, np.arange(len(merged), 0, -1, dtype=np.float64)))
    return out


def _native(image: np.ndarray, mode: str, seed: int, segmenter: str, n_workers: int, loop: str):
    spaces, ks, sims = MODES[mode]
    if n_workers > 1 and len(spaces) > 1:
        with ThreadPoolExecutor(n_workers) as pool:
            per_space = list(pool.map(lambda c: _group_colour_space(image, c, ks, sims, segmenter, loop), spaces))
    else:
        per_space = [_group_colour_space(image, c, ks, sims, segmenter, loop) for c in spaces]
    boxes, ranks = [], []
    for index, (group_boxes, positions) in enumerate(group for space in per_space for group in space):
        rng = np.random.default_rng([seed, index])  # one stream per group: independent of execution order
        boxes.append(group_boxes)
        ranks.append(positions * rng.random(len(positions)))  # the paper's pseudo-random ranking
    return np.concatenate(boxes), np.concatenate(ranks)


# ----------------------------------------------------------------------------------------------------------------------
# Reference backends


def _selectivesearch_package(image: np.ndarray, mode: str, seed: int):
    """The PyPI ``selectivesearch`` package, once per k of the mode (it has one colour space and one similarity)."""
    try:
        import selectivesearch
    except ImportError as e:  # pragma: no cover - it is a project dependency
        raise ImportError("selective search backend 'selectivesearch' needs `pip install selectivesearch`") from e
    _, ks, _ = MODES[mode]
    boxes, ranks = [], []
    for index, k in enumerate(ks):
        with warnings.catch_warnings():  # its LBP on a float image warns on every call
            warnings.simplefilter("ignore", UserWarning)
            _, regions = selectivesearch.selective_search(image, scale=k, sigma=SIGMA, min_size=k)
        # The package reports width = max_x - min_x (one pixel short): the exclusive-end box adds the pixel back.
        rects = np.array([r["rect"] for r in regions], np.int64).reshape(-1, 4)
        xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:] + 1], axis=1)
        boxes.append(xyxy)
        # Its output is in creation order, segments then merges (not ranked): rank it as the native backend does.
        n_initial = sum(len(r["labels"]) == 1 for r in regions)
        positions = np.r_[np.full(n_initial, float(n_initial)), np.arange(len(xyxy) - n_initial, 0, -1)]
        ranks.append(positions * np.random.default_rng([seed, index]).random(len(xyxy)))
    return np.concatenate(boxes), np.concatenate(ranks)


def _opencv(image: np.ndarray, mode: str):
    """OpenCV's ``ximgproc`` selective search with its own presets (k = 150, 300, 450 in fast mode) and ranking."""
    if not _opencv_segmentation_available():
        raise ImportError("selective search backend 'opencv' needs cv2.ximgproc: "
                          "pip install opencv-contrib-python-headless")
    ss = cv2.ximgproc.segmentation.createSelectiveSearchSegmentation()
    ss.setBaseImage(np.ascontiguousarray(image[:, :, ::-1]))  # OpenCV expects BGR
    {"single": ss.switchToSingleStrategy, "fast": ss.switchToSelectiveSearchFast,
     "quality": ss.switchToSelectiveSearchQuality}[mode]()
    rects = np.asarray(ss.process(), np.int64).reshape(-1, 4)  # x, y, w, h with w = x2 - x1; already ranked
    xyxy = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
    return xyxy, np.arange(len(xyxy), dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------------------
# Public API


def _resize_longer_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    h, w = image.shape[:2]
    if not max_side or max(h, w) == max_side:
        return image
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


def selective_search(
    image: np.ndarray,
    mode: str = "fast",
    backend: str = "native",
    max_side: int | None = 500,
    min_size: int = 10,
    max_boxes: int | None = None,
    *,
    seed: int = 0,
    segmenter: str = "auto",
    n_workers: int = 1,
    loop: str = "auto",
) -> np.ndarray:
    """Selective search proposals for one image, ranked best first.

    Args:
        image: uint8[H, W, 3] RGB.
        mode: ``fast`` (R-CNN), ``quality`` or ``single`` (see module docstring).
        backend: ``native``, ``selectivesearch`` (PyPI package, reference) or ``opencv`` (``cv2.ximgproc``).
        max_side: the image is resized so its longer side is ``max_side`` px before segmentation (None: as is).
        min_size: boxes narrower or shorter than this (in pixels of the resized image) are dropped.
            R-CNN used 20 at 500 px; 10 keeps the smallest BCCD platelets.
        max_boxes: keep at most this many top-ranked boxes (None: all).
        seed: seed of the random part of the ranking (results are deterministic for a given seed).
        segmenter: Felzenszwalb implementation for the native backend: ``auto``, ``native``, ``opencv`` or
            ``skimage`` (:func:`resolve_segmenter`).
        n_workers: threads over colour spaces for the native backend.
        loop: the native merge loop, ``numba``, ``heap`` or ``auto`` (numba when installed); same boxes.

    Returns:
        float32[N, 4] boxes ``x1, y1, x2, y2`` in original-image pixels (width = x2 - x1), unique, ranked.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"selective_search expects a uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}")
    if mode not in MODES:
        raise ValueError(f"selective_search: unknown mode {mode!r}; choose one of {sorted(MODES)}")
    if backend not in BACKENDS:
        raise ValueError(f"selective_search: unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    h, w = image.shape[:2]
    resized = _resize_longer_side(image, max_side)
    if backend == "native":
        boxes, ranks = _native(resized, mode, seed, segmenter, n_workers, loop)
    elif backend == "selectivesearch":
        boxes, ranks = _selectivesearch_package(resized, mode, seed)
    else:
        boxes, ranks = _opencv(resized, mode)

    boxes = boxes[np.argsort(ranks, kind="stable")]
    _, first = np.unique(boxes, axis=0, return_index=True)  # duplicates: keep the best-ranked copy
    boxes = boxes[np.sort(first)]
    keep = ((boxes[:, 2] - boxes[:, 0]) >= min_size) & ((boxes[:, 3] - boxes[:, 1]) >= min_size)
    boxes = boxes[keep][:max_boxes]
    rh, rw = resized.shape[:2]
    scale = np.array([w / rw, h / rh, w / rw, h / rh])
    out = np.clip(boxes * scale, 0, [w, h, w, h]).astype(np.float32)
    return out


def proposal_best_iou(proposals: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Best IoU of every ground-truth box with any proposal (recall at t = mean(best_iou >= t)).

    proposals: float[N, 4] xyxy; gt_boxes: float[G, 4] xyxy. Returns float32[G] (0 where N = 0).
    """
    import torch
    from torchvision.ops import box_iou

    gt = torch.as_tensor(np.asarray(gt_boxes, np.float32)).reshape(-1, 4)
    props = torch.as_tensor(np.asarray(proposals, np.float32)).reshape(-1, 4)
    if len(gt) == 0 or len(props) == 0:
        return np.zeros(len(gt), np.float32)
    return box_iou(gt, props).nan_to_num(0.0).max(dim=1).values.numpy()


# ----------------------------------------------------------------------------------------------------------------------
# Cache


class ProposalCache:
    """Per-image proposal files ``<cache_dir>/<key[:2]>/<key>.npz``, written atomically.

    The key is a SHA-256 of the image file's bytes and every parameter that determines the boxes, so a cache
    directory can be shared by several machines extracting disjoint shards of a data set.
    """

    def __init__(self, cache_dir: str | os.PathLike):
        self.cache_dir = Path(cache_dir)

    @staticmethod
    def key(image_bytes: bytes, params: dict) -> str:
        """Hex digest of the image bytes and the JSON of ``params`` (sorted keys)."""
        digest = hashlib.sha256(image_bytes)
        digest.update(json.dumps(params, sort_keys=True).encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.npz"

    def load(self, key: str) -> np.ndarray | None:
        """Cached boxes float32[N, 4], or None when absent or unreadable (then it is recomputed and overwritten)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data["boxes"].astype(np.float32)
        except Exception as e:  # a truncated or foreign file: treat as a miss
            warnings.warn(f"proposal cache: ignoring unreadable {path}: {e}", stacklevel=2)
            return None

    def save(self, key: str, boxes: np.ndarray) -> Path:
        buffer = io.BytesIO()
        np.savez(buffer, boxes=np.asarray(boxes, np.float32))
        path = self.path(key)
        atomic_write_bytes(path, buffer.getvalue())
        return path


def compute_proposals(
    image_path: str | os.PathLike,
    image: np.ndarray | None = None,
    *,
    mode: str = "fast",
    backend: str = "native",
    max_side: int | None = 500,
    min_size: int = 10,
    max_boxes: int | None = None,
    seed: int = 0,
    segmenter: str = "auto",
    n_workers: int = 1,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """``selective_search`` of an image file, through the on-disk cache when ``cache_dir`` is given.

    image_path: the image file (its bytes key the cache). image: the decoded uint8[H, W, 3] RGB image when the
    caller has it already (else it is read with ``cvcore.io.load_image``). Returns float32[N, 4] xyxy boxes.
    """
    image_path = Path(image_path)
    params = dict(version=PROPOSALS_VERSION, mode=mode, backend=backend, max_side=max_side, min_size=min_size,
                  max_boxes=max_boxes, seed=seed, segmenter=resolve_segmenter(segmenter), sigma=SIGMA)
    cache = key = None
    if cache_dir is not None:
        try:
            image_bytes = image_path.read_bytes()
        except OSError as e:
            raise FileNotFoundError(f"compute_proposals: cannot read {image_path}: {e}") from e
        cache = ProposalCache(cache_dir)
        key = cache.key(image_bytes, params)
        boxes = cache.load(key)
        if boxes is not None:
            return boxes
    if image is None:
        from cvcore.io import load_image

        image = load_image(image_path)
    boxes = selective_search(image, mode, backend, max_side, min_size, max_boxes,
                             seed=seed, segmenter=segmenter, n_workers=n_workers)
    if cache is not None:
        cache.save(key, boxes)
    return boxes


# ------------------------------------------------------------------------------------------------ training runs
def image_proposals(record: DetectionRecord, image: np.ndarray | None, cfg: RCNNConfig) -> np.ndarray:
    """All ranked selective-search boxes of one image (``float32[N, 4]``), through the per-image disk cache.

    The boxes a training run used are also frozen under ``cache_dir/proposals_used`` (keyed by the image and the
    proposal settings), so a resumed run keeps its proposals, and the features cached for them, even when the
    proposal code changes in between.
    """
    p = cfg.proposals
    cache_dir = Path(cfg.train.cache_dir)
    path = Path(record.image_path)
    try:
        stat = path.stat()
        ident = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{p.mode}:{p.backend}:{p.max_side}:{p.min_size}"
        if p.backend == "native" and p.segmenter != "auto":  # "auto" keeps the key of runs from before the option
            ident += f":{p.segmenter}"
    except OSError:
        ident = str(path)
    frozen = cache_dir / "proposals_used" / f"{path.stem}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.npy"
    if frozen.is_file():
        try:
            return np.load(frozen)
        except (OSError, ValueError):
            pass
    boxes = compute_proposals(record.image_path, image, mode=p.mode, backend=p.backend, max_side=p.max_side,
                              min_size=p.min_size, cache_dir=cache_dir / "proposals", segmenter=p.segmenter)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(boxes, np.float32))
    atomic_write_bytes(frozen, buffer.getvalue())
    return boxes
