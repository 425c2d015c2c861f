"""Selective search internals: initial regions, region features and hierarchical grouping (Uijlings et al. 2013).

Everything here works on one colour-space image (H x W x C, uint8) and one Felzenszwalb segmentation of it:

* ``region_adjacency``   - true adjacency of the segmentation (8-connected pixels with different labels);
* ``region_boxes``       - tight pixel boxes ``[x1, y1, x2, y2)`` of every region (exclusive end, no "+1");
* ``colour_histograms``  - 25 bins per channel, L1-normalised over the whole vector;
* ``texture_histograms`` - Gaussian derivatives (sigma = 1) in 8 orientations, 10 bins per orientation and channel;
* ``hierarchical_grouping`` - greedy merging of the most similar neighbouring pair until one region is left, with
  merged histograms as size-weighted averages, similarity = sum of the chosen colour / texture / size / fill terms.

Region features live in arrays (rows 0..n-1 the initial regions, n.. the merged ones, in merge order) and are
computed per segmentation with one ``np.bincount`` over per-pixel bins that depend only on the colour-space image.
Two interchangeable merge loops give the same merges (tested against a brute-force reference):

* ``numba``: a compiled scan over a flat list of neighbouring pairs, as OpenCV's C++ does (2-5 ms per strategy on a
  500 px image);
* ``heap``: neighbour sets and a heap of candidate pairs with lazy deletion, one vectorised similarity update over
  the new region's neighbours per merge (the fallback without numba, 15-50 ms per strategy).
"""

from __future__ import annotations

import heapq

import cv2
import numpy as np
from scipy import ndimage

COLOUR_BINS = 25
TEXTURE_BINS = 10
TEXTURE_ORIENTATIONS = 8
TEXTURE_SIGMA = 1.0


def region_sizes(labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Pixel count of every region. labels: int[H, W] in [0, n_regions). Returns float64[n_regions]."""
    return np.bincount(labels.ravel(), minlength=n_regions).astype(np.float64)


def region_boxes(labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Tight box of every region: int64[n_regions, 4] ``x1, y1, x2, y2``, exclusive ends (x2 = last column + 1)."""
    slices = ndimage.find_objects(labels + 1, max_label=n_regions)
    if any(sl is None for sl in slices):
        raise ValueError("region_boxes: labels must cover every region 0..n_regions-1")
    return np.array([(sx.start, sy.start, sx.stop, sy.stop) for sy, sx in slices], np.int64).reshape(-1, 4)


def region_adjacency(labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Pairs of regions that touch (8-connectivity, as the graph of the segmentation).

    Returns int64[E, 2] with ``a < b`` in each row, rows sorted and unique.
    """
    pairs = (
        (labels[:, :-1], labels[:, 1:]),  # horizontal
        (labels[:-1, :], labels[1:, :]),  # vertical
        (labels[:-1, :-1], labels[1:, 1:]),  # diagonal
        (labels[:-1, 1:], labels[1:, :-1]),  # anti-diagonal
    )
    keys = []
    for a, b in pairs:
        differ = a != b
        a = a[differ].astype(np.int64)
        b = b[differ].astype(np.int64)
        keys.append(np.minimum(a, b) * n_regions + np.maximum(a, b))
    keys = np.unique(np.concatenate(keys))
    return np.stack([keys // n_regions, keys % n_regions], axis=1)


def region_histograms(bin_index: np.ndarray, labels: np.ndarray, n_regions: int, n_features: int,
                normalise: bool = True) -> np.ndarray:
    """Histogram per region from per-pixel feature bins.

    bin_index: int[M, H*W], row m holds feature map m's bin of every pixel (offset into [0, n_features)).
    Returns float64[n_regions, n_features], each row L1-normalised (sums to 1) unless ``normalise`` is False.
    """
    flat = labels.ravel().astype(np.int64) * n_features
    counts = np.bincount((flat[None, :] + bin_index).ravel(), minlength=n_regions * n_features)
    hist = counts.reshape(n_regions, n_features).astype(np.float64)
    if normalise:
        hist /= np.maximum(hist.sum(axis=1, keepdims=True), 1.0)
    return hist


def colour_bins(image: np.ndarray) -> np.ndarray:
    """Per-pixel colour-histogram bin of every channel. image: uint8[H, W, C]. Returns int32[C, H*W] in [0, 25*C)."""
    c = image.shape[2]
    values = image.reshape(-1, c).T.astype(np.int32)
    return (values * COLOUR_BINS >> 8) + (np.arange(c, dtype=np.int32) * COLOUR_BINS)[:, None]


def _orientation_bins(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture bins of the positive and negative halves of the Gaussian derivative in 4 directions.

    The derivative at angle theta is steered from the x and y derivatives of the Gaussian-smoothed image (sigma = 1):
    cos(theta) Gx + sin(theta) Gy, theta = 0, 45, 90, 135 degrees. Its positive part is the response at theta and
    its negative part the response at theta + 180, giving the paper's 8 orientations. Each (orientation, channel)
    response is divided by its maximum over the image and cut into 10 equal bins.
    image: uint8[H, W, C]. Returns (positive, negative) bins, each int32[4, C, H*W] in [0, 10).
    """
    c = image.shape[2]
    radius = int(np.ceil(3 * TEXTURE_SIGMA))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gauss = np.exp(-(x**2) / (2 * TEXTURE_SIGMA**2))
    gauss /= gauss.sum()
    dgauss = x / TEXTURE_SIGMA**2 * gauss  # sepFilter2D correlates: this kernel gives +d/dx of the smoothed image
    img = image.astype(np.float32)
    gx = cv2.sepFilter2D(img, cv2.CV_32F, dgauss, gauss, borderType=cv2.BORDER_REFLECT).reshape(-1, c)
    gy = cv2.sepFilter2D(img, cv2.CV_32F, gauss, dgauss, borderType=cv2.BORDER_REFLECT).reshape(-1, c)
    gx, gy = np.ascontiguousarray(gx.T), np.ascontiguousarray(gy.T)  # [C, HW]: reductions over contiguous pixels
    diagonal = np.float32(np.sqrt(0.5))
    directional = np.stack([gx, (gx + gy) * diagonal, gy, (gy - gx) * diagonal])  # [4, C, HW]

    def quantise(response: np.ndarray) -> np.ndarray:
        peak = response.max(axis=2, keepdims=True)
        scale = (TEXTURE_BINS / np.where(peak > 0, peak, np.inf)).astype(np.float32)
        return np.minimum((response * scale).astype(np.int32), TEXTURE_BINS - 1)

    return quantise(np.maximum(directional, 0)), quantise(np.maximum(-directional, 0))


def texture_bins(image: np.ndarray) -> np.ndarray:
    """Per-pixel texture bins: Gaussian derivatives (sigma = 1) in 8 orientations per channel, 10 bins each.

    Row ``channel * 8 + orientation`` holds that map's bin offset into the histogram, orientations 0, 45, ...,
    315 degrees (see ``_orientation_bins``). image: uint8[H, W, C]. Returns int32[C * 8, H*W] in [0, C * 80).
    """
    positive, negative = _orientation_bins(image)
    c = image.shape[2]
    bins = np.concatenate([positive, negative]).transpose(1, 0, 2).reshape(c * TEXTURE_ORIENTATIONS, -1)
    return bins + (np.arange(c * TEXTURE_ORIENTATIONS, dtype=np.int32) * TEXTURE_BINS)[:, None]


_LEVELS = 2 * TEXTURE_BINS - 1  # signed level of one direction: 9 + positive bin - negative bin


def texture_levels(image: np.ndarray) -> np.ndarray:
    """The texture bins of ``texture_bins`` packed 2:1, for a cheaper region histogram.

    A direction's positive and negative halves are never both non-zero, so one signed level
    ``9 + positive bin - negative bin`` (19 values) holds both bins. image: uint8[H, W, C].
    Returns int32[C * 4, H*W], row ``channel * 4 + direction`` (0, 45, 90, 135 degrees) offset by ``row * 19``.
    """
    positive, negative = _orientation_bins(image)
    c = image.shape[2]
    levels = ((TEXTURE_BINS - 1) + positive - negative).transpose(1, 0, 2).reshape(4 * c, -1)
    return levels + (np.arange(4 * c, dtype=np.int32) * _LEVELS)[:, None]


def _level_to_bins() -> np.ndarray:
    """0/1 matrix float64[19, 20] from a signed level to its (positive bin, negative bin) histogram entries."""
    matrix = np.zeros((_LEVELS, 2 * TEXTURE_BINS))
    for level in range(_LEVELS):
        signed = level - (TEXTURE_BINS - 1)
        matrix[level, max(signed, 0)] = 1  # positive half
        matrix[level, TEXTURE_BINS + max(-signed, 0)] = 1  # negative half
    return matrix


_LEVEL_TO_BINS = _level_to_bins()


def texture_histograms_from_levels(levels: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Region texture histograms from ``texture_levels``: equal to ``region_histograms(texture_bins(...))``.

    Returns float64[n_regions, C * 80], layout (channel, orientation, bin), L1-normalised.
    """
    c = levels.shape[0] // 4
    counts = region_histograms(levels, labels, n_regions, 4 * c * _LEVELS, normalise=False)
    bins = counts.reshape(n_regions, c, 4, _LEVELS) @ _LEVEL_TO_BINS  # [n, C, 4, 20]: positive then negative bins
    hist = np.concatenate([bins[..., :TEXTURE_BINS], bins[..., TEXTURE_BINS:]], axis=2).reshape(n_regions, -1)
    return hist / np.maximum(hist.sum(axis=1, keepdims=True), 1.0)


def colour_histograms(image: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Colour histogram of every region: float64[n_regions, 25 * C], L1-normalised. image: uint8[H, W, C]."""
    return region_histograms(colour_bins(image), labels, n_regions, COLOUR_BINS * image.shape[2])


def texture_histograms(image: np.ndarray, labels: np.ndarray, n_regions: int) -> np.ndarray:
    """Texture histogram of every region: float64[n_regions, 80 * C], L1-normalised. image: uint8[H, W, C]."""
    return texture_histograms_from_levels(texture_levels(image), labels, n_regions)


def hierarchical_grouping(
    histograms: np.ndarray,
    sizes: np.ndarray,
    boxes: np.ndarray,
    edges: np.ndarray,
    *,
    use_size: bool,
    use_fill: bool,
    image_area: float,
    loop: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy hierarchical grouping of an initial segmentation (Uijlings et al. 2013, Algorithm 1).

    The similarity of two neighbouring regions is the sum of the chosen terms: histogram intersection of
    ``histograms`` (the colour and / or texture histograms, concatenated, each L1-normalised), size
    ``1 - (|a| + |b|) / |image|`` and fill ``1 - (|box(a, b)| - |a| - |b|) / |image|``. The most similar pair is
    merged (ties: smallest (a, b)); the new region gets index n, n+1, ... in merge order, the size-weighted average
    of the two histograms, the union of the boxes and the union of the neighbours.

    histograms: float64[n, D] (D may be 0); sizes: float64[n]; boxes: int[n, 4] xyxy (exclusive ends);
    edges: int[E, 2] adjacent pairs. loop: ``numba`` (compiled scan over the pair list), ``heap`` (Python heap with
    vectorised similarity updates) or ``auto`` (numba when installed); both give the same merges.
    Returns ``merges`` int64[m, 2] (the pair merged at each step; m = n - 1 when the adjacency graph is connected)
    and ``all_boxes`` int64[n + m, 4], the boxes of all regions in creation order.
    """
    n, dim = histograms.shape
    total = max(2 * n - 1, 1)
    hist = np.empty((total, dim), np.float64)
    hist[:n] = histograms
    size = np.empty(total, np.float64)
    size[:n] = sizes
    box = np.empty((total, 4), np.int64)
    box[:n] = boxes
    edges = np.asarray(edges, np.int64).reshape(-1, 2)
    if loop == "auto":
        loop = "numba" if _merge_loop_compiled is not None else "heap"
    if loop == "numba":
        if _merge_loop_compiled is None:
            raise ImportError("hierarchical_grouping(loop='numba') needs numba: pip install numba")
        merges = _merge_loop_compiled(hist, size, box, edges[:, 0].copy(), edges[:, 1].copy(), n,
                                      use_size, use_fill, float(image_area))
    elif loop == "heap":
        merges = _merge_loop_heap(hist, size, box, edges, n, use_size, use_fill, float(image_area))
    else:
        raise ValueError(f"hierarchical_grouping: unknown loop {loop!r}; use 'auto', 'numba' or 'heap'")
    return merges, box[: n + len(merges)].copy()


def _merge_loop_heap(hist, size, box, edges, n, use_size, use_fill, image_area) -> np.ndarray:
    """The merge loop with neighbour sets and a heap of candidate pairs (lazy deletion). Fills rows n.. in place."""
    dim = hist.shape[1]
    alive = np.zeros(len(size), bool)
    alive[:n] = True

    def similarity(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
        s = np.zeros(len(a), np.float64)
        if dim:
            s += np.minimum(hist[a], hist[b]).sum(axis=1)
        if use_size:
            s += 1.0 - (size[a] + size[b]) / image_area
        if use_fill:
            lo = np.minimum(box[a, :2], box[b, :2])
            hi = np.maximum(box[a, 2:], box[b, 2:])
            box_area = np.prod(hi - lo, axis=1)
            s += 1.0 - (box_area - size[a] - size[b]) / image_area
        return s

    neighbours: list[set[int] | None] = [set() for _ in range(n)]
    for a, b in edges.tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)
    heap = list(zip((-similarity(edges[:, 0], edges[:, 1])).tolist(), edges[:, 0].tolist(), edges[:, 1].tolist()))
    heapq.heapify(heap)

    merges = []
    t = n
    while heap:
        _, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue  # a stale pair: one side was merged already
        alive[i] = alive[j] = False
        alive[t] = True
        size[t] = size[i] + size[j]
        if dim:
            hist[t] = (hist[i] * size[i] + hist[j] * size[j]) / size[t]
        box[t, :2] = np.minimum(box[i, :2], box[j, :2])
        box[t, 2:] = np.maximum(box[i, 2:], box[j, 2:])
        joined = (neighbours[i] | neighbours[j]) - {i, j}
        for k in joined:
            nk = neighbours[k]
            nk.discard(i)
            nk.discard(j)
            nk.add(t)
        neighbours[i] = neighbours[j] = None
        neighbours.append(joined)
        if joined:
            others = np.fromiter(sorted(joined), np.int64, len(joined))
            for s, k in zip((-similarity(others, t)).tolist(), others.tolist()):
                heapq.heappush(heap, (s, k, t))
        merges.append((i, j))
        t += 1
    return np.asarray(merges, np.int64).reshape(-1, 2)


def _pair_similarity(hist, size, box, a, b, use_size, use_fill, image_area):
    s = 0.0
    for f in range(hist.shape[1]):
        s += min(hist[a, f], hist[b, f])
    if use_size:
        s += 1.0 - (size[a] + size[b]) / image_area
    if use_fill:
        width = max(box[a, 2], box[b, 2]) - min(box[a, 0], box[b, 0])
        height = max(box[a, 3], box[b, 3]) - min(box[a, 1], box[b, 1])
        s += 1.0 - (width * height - size[a] - size[b]) / image_area
    return s


def _merge_loop_scan(hist, size, box, pair_a, pair_b, n, use_size, use_fill, image_area):
    """The merge loop over a flat list of neighbouring pairs (a < b), as OpenCV's C++ does; compiled by numba.

    Each merge scans the live pairs once: picks the most similar (ties: smallest (a, b)), then rewrites the pairs
    touching i or j to (k, t) with a new similarity, dropping the merged pair and duplicates. Fills rows n.. of
    hist, size and box in place; returns the merges int64[m, 2].
    """
    m = len(pair_a)
    sim = np.empty(m, np.float64)
    for p in range(m):
        sim[p] = _pair_similarity(hist, size, box, pair_a[p], pair_b[p], use_size, use_fill, image_area)
    linked_to = np.full(len(size), -1, np.int64)  # linked_to[k] == t: pair (k, t) already exists
    merges = np.empty((max(n - 1, 0), 2), np.int64)
    steps = 0
    t = n
    while m > 0:
        best = 0
        for p in range(1, m):
            if sim[p] > sim[best] or (sim[p] == sim[best] and (
                    pair_a[p] < pair_a[best] or (pair_a[p] == pair_a[best] and pair_b[p] < pair_b[best]))):
                best = p
        i, j = pair_a[best], pair_b[best]
        size[t] = size[i] + size[j]
        for f in range(hist.shape[1]):
            hist[t, f] = (hist[i, f] * size[i] + hist[j, f] * size[j]) / size[t]
        box[t, 0] = min(box[i, 0], box[j, 0])
        box[t, 1] = min(box[i, 1], box[j, 1])
        box[t, 2] = max(box[i, 2], box[j, 2])
        box[t, 3] = max(box[i, 3], box[j, 3])
        merges[steps, 0] = i
        merges[steps, 1] = j
        steps += 1
        kept = 0
        for p in range(m):  # compact in place: kept <= p
            a, b = pair_a[p], pair_b[p]
            if a == i or a == j or b == i or b == j:
                k = b if (a == i or a == j) else a
                if k == i or k == j or linked_to[k] == t:
                    continue
                linked_to[k] = t
                pair_a[kept], pair_b[kept] = k, t
                sim[kept] = _pair_similarity(hist, size, box, k, t, use_size, use_fill, image_area)
            else:
                pair_a[kept], pair_b[kept], sim[kept] = a, b, sim[p]
            kept += 1
        m = kept
        t += 1
    return merges[:steps]


try:
    import numba
except ImportError:  # numba is optional: the heap loop is the fallback
    _merge_loop_compiled = None
else:
    _pair_similarity = numba.njit(cache=True, inline="always")(_pair_similarity)
    _merge_loop_compiled = numba.njit(cache=True, nogil=True)(_merge_loop_scan)
