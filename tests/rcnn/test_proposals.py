"""Selective search: recovery of known objects, box invariants, determinism, the grouping against a brute-force
reference, the cache, and the reference backends."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from rcnn import _ss_grouping as grouping
from rcnn import proposals
from rcnn.proposals import ProposalCache, compute_proposals, proposal_best_iou, selective_search

LOOPS = ["heap"] + (["numba"] if grouping._merge_loop_compiled is not None else [])  # merge-loop implementations


def synthetic_scene(seed: int = 0, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey background with rectangles and ellipses of distinct colours. Returns (image, gt xyxy boxes)."""
    rng = np.random.default_rng(seed)
    h, w = 160 * scale, 220 * scale
    image = np.clip(rng.normal(128, 6, (h, w, 3)), 0, 255)
    yy, xx = np.mgrid[:h, :w]
    objects = [  # (x1, y1, x2, y2, colour, shape)
        (10, 12, 70, 60, (220, 30, 30), "rect"),
        (120, 20, 200, 70, (30, 200, 40), "ellipse"),
        (20, 90, 90, 150, (40, 40, 210), "ellipse"),
        (130, 95, 170, 145, (240, 220, 20), "rect"),
        (180, 110, 212, 150, (20, 20, 20), "rect"),
    ]
    boxes = []
    for x1, y1, x2, y2, colour, shape in objects:
        x1, y1, x2, y2 = (v * scale for v in (x1, y1, x2, y2))
        if shape == "rect":
            mask = (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
        else:
            cx, cy, rx, ry = (x1 + x2 - 1) / 2, (y1 + y2 - 1) / 2, (x2 - x1) / 2, (y2 - y1) / 2
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        image[mask] = colour
        ys, xs = np.nonzero(mask)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return image.astype(np.uint8), np.array(boxes, np.float32)


@pytest.mark.parametrize("mode", ["single", "fast"])
def test_recovers_every_object(mode):
    image, gt = synthetic_scene()
    boxes = selective_search(image, mode=mode, max_side=None)
    assert (proposal_best_iou(boxes, gt) > 0.9).all()


def test_recovers_objects_in_original_pixels_after_resizing():
    image, gt = synthetic_scene(scale=3)  # 660 x 480, resized to 500 px and mapped back
    boxes = selective_search(image, mode="single", max_side=500)
    assert (proposal_best_iou(boxes, gt) > 0.9).all()


def test_box_invariants():
    image, _ = synthetic_scene(seed=1)
    h, w = image.shape[:2]
    boxes = selective_search(image, mode="fast", max_side=None, min_size=8)
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and len(boxes) > 20
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert ((boxes[:, 2] - boxes[:, 0]) >= 8).all() and ((boxes[:, 3] - boxes[:, 1]) >= 8).all()
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert any((b == [0, 0, w, h]).all() for b in boxes)  # the last merge is the whole image, exclusive end
    top = selective_search(image, mode="fast", max_side=None, min_size=8, max_boxes=15)
    np.testing.assert_array_equal(top, boxes[:15])


def test_deterministic_and_seed_only_reorders():
    image, _ = synthetic_scene(seed=2)
    a = selective_search(image, mode="fast", max_side=None, seed=0)
    b = selective_search(image, mode="fast", max_side=None, seed=0, n_workers=2, loop=LOOPS[-1])
    c = selective_search(image, mode="fast", max_side=None, seed=1, loop="heap")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # The ranking is random, the set of regions is not.
    np.testing.assert_array_equal(np.unique(a, axis=0), np.unique(c, axis=0))


def test_modes_are_nested():
    # single's strategy is one of fast's, and fast's 8 strategies are among quality's 80: the box sets nest.
    image, gt = synthetic_scene(seed=8)
    found = {}
    for mode in ("single", "fast", "quality"):
        boxes = selective_search(image, mode=mode, max_side=None)
        found[mode] = set(map(tuple, boxes.tolist()))
        assert (proposal_best_iou(boxes, gt) > 0.9).all(), mode
    assert found["single"] < found["fast"] < found["quality"]


def test_uniform_image_gives_the_whole_image():
    image = np.full((40, 60, 3), 90, np.uint8)
    np.testing.assert_array_equal(selective_search(image, mode="fast", max_side=None), [[0, 0, 60, 40]])


def test_segmenters_agree_on_clean_objects():
    image, gt = synthetic_scene(seed=3)
    for segmenter in ("native", "opencv", "skimage"):
        boxes = selective_search(image, mode="single", max_side=None, segmenter=segmenter)
        assert (proposal_best_iou(boxes, gt) > 0.9).all(), segmenter


def test_texture_orientations_on_a_ramp():
    # Brightness rising along x: only the orientations with a positive x component respond inside the image.
    ramp = np.tile(np.arange(40, dtype=np.uint8) * 4, (30, 1))[:, :, None]
    bins = grouping.texture_bins(ramp).reshape(8, 30, 40)[:, 5:-5, 5:-5] % grouping.TEXTURE_BINS
    # orientations: 0, 45, 90, 135, 180, 225, 270, 315 degrees
    assert (bins[0] == 9).all()  # the strongest response is the derivative along x
    assert (bins[[2, 3, 4, 5, 6]] == 0).all()
    assert (bins[[1, 7]] > 0).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_packed_texture_histograms_equal_the_direct_ones(channels):
    rng = np.random.default_rng(channels)
    image = cv2.GaussianBlur(rng.integers(0, 256, (37, 41, channels), dtype=np.uint8), (5, 5), 1.5)
    image = image.reshape(37, 41, channels)
    labels = (rng.integers(0, 6, (37, 41)) + 6 * (np.arange(41) >= 20)).astype(np.int32)
    n = labels.max() + 1
    n_features = grouping.TEXTURE_BINS * grouping.TEXTURE_ORIENTATIONS * channels
    direct = grouping.region_histograms(grouping.texture_bins(image), labels, n, n_features)
    np.testing.assert_array_equal(grouping.texture_histograms(image, labels, n), direct)
    np.testing.assert_allclose(direct.sum(axis=1), 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# Hierarchical grouping against a brute-force reference that recomputes everything from the pixels at every step.


def _reference_grouping(image, labels, similarities):
    """Greedy grouping recomputing regions' histograms, boxes and adjacency from their pixel sets at every step."""
    h, w = labels.shape
    colour = grouping.colour_bins(image).T  # [HW, C] bins already offset
    texture = grouping.texture_bins(image).T
    n_colour = grouping.COLOUR_BINS * image.shape[2]
    n_texture = grouping.TEXTURE_BINS * grouping.TEXTURE_ORIENTATIONS * image.shape[2]
    regions = {r: set(np.flatnonzero(labels.ravel() == r).tolist()) for r in range(labels.max() + 1)}

    def features(pixels):
        idx = np.fromiter(pixels, int)
        feats = []
        if "colour" in similarities:
            feats.append(np.bincount(colour[idx].ravel(), minlength=n_colour) / colour[idx].size)
        if "texture" in similarities:
            feats.append(np.bincount(texture[idx].ravel(), minlength=n_texture) / texture[idx].size)
        ys, xs = np.divmod(idx, w)
        box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        return (np.concatenate(feats) if feats else np.zeros(0)), len(idx), box

    def similarity(a, b):
        fa, sa, ba = features(regions[a])
        fb, sb, bb = features(regions[b])
        s = np.minimum(fa, fb).sum()
        if "size" in similarities:
            s += 1 - (sa + sb) / (h * w)
        if "fill" in similarities:
            area = (max(ba[2], bb[2]) - min(ba[0], bb[0])) * (max(ba[3], bb[3]) - min(ba[1], bb[1]))
            s += 1 - (area - sa - sb) / (h * w)
        return s

    def adjacent_pairs():
        owner = np.empty(h * w, int)
        for r, pixels in regions.items():
            owner[list(pixels)] = r
        owner = owner.reshape(h, w)
        pairs = set()
        for y in range(h):
            for x in range(w):
                for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w and owner[y, x] != owner[yy, xx]:
                        pairs.add((min(owner[y, x], owner[yy, xx]), max(owner[y, x], owner[yy, xx])))
        return sorted(pairs)

    merges, boxes = [], [features(regions[r])[2] for r in sorted(regions)]
    new_id = len(regions)
    while len(regions) > 1:
        scored = [(-similarity(a, b), a, b) for a, b in adjacent_pairs()]
        _, a, b = min(scored)
        regions[new_id] = regions.pop(a) | regions.pop(b)
        merges.append((a, b))
        boxes.append(features(regions[new_id])[2])
        new_id += 1
    return np.array(merges), np.array(boxes)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("similarities", [proposals.CTSF, proposals.TSF, ("colour", "fill")])
def test_grouping_matches_brute_force(similarities, loop):
    rng = np.random.default_rng(7)
    # A tiny segmentation: 8-connected components of randomly coloured 3 x 3 blocks, so that regions are irregular
    # and some touch only at a corner (true adjacency, as the Felzenszwalb graph defines it).
    blocks = rng.integers(0, 5, (6, 7))
    coarse = np.kron(blocks, np.ones((3, 3), int))
    labels = np.zeros(coarse.shape, np.int32)
    for value in range(5):
        components, count = ndimage.label(coarse == value, structure=np.ones((3, 3)))
        labels[components > 0] = components[components > 0] + labels.max() + 1
    _, labels = np.unique(labels, return_inverse=True)
    h, w = coarse.shape
    labels = labels.reshape(h, w).astype(np.int32)
    diagonal_only = set(map(tuple, grouping.region_adjacency(labels, labels.max() + 1).tolist())) - set(
        (min(a, b), max(a, b)) for a, b in zip(np.r_[labels[:, :-1].ravel(), labels[:-1].ravel()],
                                             np.r_[labels[:, 1:].ravel(), labels[1:].ravel()]) if a != b)
    assert diagonal_only, "the test segmentation should contain corner-only neighbours"
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    n = labels.max() + 1

    hists = []
    if "colour" in similarities:
        hists.append(grouping.colour_histograms(image, labels, n))
    if "texture" in similarities:
        hists.append(grouping.texture_histograms(image, labels, n))
    merges, boxes = grouping.hierarchical_grouping(
        np.hstack(hists), grouping.region_sizes(labels, n), grouping.region_boxes(labels, n),
        grouping.region_adjacency(labels, n), use_size="size" in similarities, use_fill="fill" in similarities,
        image_area=h * w, loop=loop,
    )
    ref_merges, ref_boxes = _reference_grouping(image, labels, similarities)
    assert len(merges) == n - 1
    np.testing.assert_array_equal(merges, ref_merges)
    np.testing.assert_array_equal(boxes, ref_boxes)


# ----------------------------------------------------------------------------------------------------------------------
# Cache


def test_cache_hit_is_identical_and_parameters_miss(tmp_path, monkeypatch):
    image, _ = synthetic_scene(seed=4)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), image[:, :, ::-1])
    cache_dir = tmp_path / "cache"
    first = compute_proposals(path, image, mode="single", max_side=None, cache_dir=cache_dir)
    assert len(list(cache_dir.rglob("*.npz"))) == 1

    def fail(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(proposals, "selective_search", fail)
    again = compute_proposals(path, mode="single", max_side=None, cache_dir=cache_dir)
    np.testing.assert_array_equal(first, again)
    with pytest.raises(AssertionError, match="cache miss"):
        compute_proposals(path, image, mode="single", max_side=None, min_size=12, cache_dir=cache_dir)
    monkeypatch.undo()

    other = compute_proposals(path, image, mode="single", max_side=None, min_size=12, cache_dir=cache_dir)
    assert len(list(cache_dir.rglob("*.npz"))) == 2 and len(other) <= len(first)
    # A corrupt file is a miss, recomputed and rewritten.
    cached = next(p for p in cache_dir.rglob("*.npz"))
    cached.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable"):
        ProposalCache(cache_dir).load(cached.stem)


# ----------------------------------------------------------------------------------------------------------------------
# Reference backends


def test_selectivesearch_package_backend_runs():
    image, gt = synthetic_scene(seed=5)
    small = image[::2, ::2].copy()  # the package loops over pixels in Python: keep it small
    h, w = small.shape[:2]
    boxes = selective_search(small, mode="single", backend="selectivesearch", max_side=None, min_size=4)
    assert boxes.dtype == np.float32 and len(boxes) > 5
    assert len(np.unique(boxes, axis=0)) == len(boxes)
    assert any((b == [0, 0, w, h]).all() for b in boxes)  # its off-by-one width/height is corrected


def test_opencv_backend_runs():
    pytest.importorskip("cv2.ximgproc")
    image, gt = synthetic_scene(seed=6)
    boxes = selective_search(image, mode="fast", backend="opencv", max_side=None)
    h, w = image.shape[:2]
    assert len(boxes) > 5 and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    assert (proposal_best_iou(boxes, gt) > 0.5).all()


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="uint8"):
        selective_search(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="mode"):
        selective_search(np.zeros((10, 10, 3), np.uint8), mode="slow")
    with pytest.raises(ValueError, match="backend"):
        selective_search(np.zeros((10, 10, 3), np.uint8), backend="matlab")


@pytest.mark.data
def test_bccd_recall_at_least_opencv_at_the_same_budget(shared_data):
    pytest.importorskip("cv2.ximgproc")
    import warnings

    from cvcore.datasets import read_voc
    from cvcore.io import load_image

    with warnings.catch_warnings():  # BCCD has a few degenerate boxes; the reader warns about them
        warnings.simplefilter("ignore")
        records = list(read_voc(shared_data / "bccd", split="val"))[:3]
    native_iou, opencv_iou = [], []
    for record in records:
        image = load_image(record.image_path)
        opencv = selective_search(image, mode="fast", backend="opencv")
        native = selective_search(image, mode="fast")[: len(opencv)]  # the same number of boxes
        native_iou.append(proposal_best_iou(native, record.boxes))
        opencv_iou.append(proposal_best_iou(opencv, record.boxes))
    native_iou, opencv_iou = np.concatenate(native_iou), np.concatenate(opencv_iou)
    assert (native_iou >= 0.5).mean() >= max((opencv_iou >= 0.5).mean(), 0.85)
    assert (native_iou >= 0.7).mean() >= (opencv_iou >= 0.7).mean() - 0.05


def test_unreadable_image_names_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        compute_proposals(missing, cache_dir=tmp_path / "cache")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(Exception, match="broken.jpg"):
        compute_proposals(broken)
