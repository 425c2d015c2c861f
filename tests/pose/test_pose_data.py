"""Crops (pixel-centre convention), keypoint-aware augmentation with left/right swap, the crop cache."""

import numpy as np
import pytest

from cvcore.datasets import LSP_FLIP_PAIRS, load_pose_dataset
from pose.codec import flip_permutation
from pose.config import AugmentConfig
from pose.data import (
    Crop,
    CropCache,
    PoseTrainSet,
    build_crop_cache,
    crop_from_box,
    crop_from_image,
    crop_from_joints,
    select_range,
    warp_crop,
)


def _centroid(img: np.ndarray) -> np.ndarray:
    m = img.astype(np.float64)
    ys, xs = np.mgrid[: m.shape[0], : m.shape[1]]
    return np.array([(m * xs).sum(), (m * ys).sum()]) / m.sum()


def test_crop_round_trip_and_matrix():
    c = Crop(50.3, 40.1, 80.0, 60.0, 64, 48)
    pts = np.array([[10.0, 20.0], [50.3, 40.1], [90.0, 70.0]])
    assert np.allclose(c.to_original(c.to_crop(pts)), pts)
    m = c.matrix()
    assert np.allclose(pts @ m[:, :2].T + m[:, 2], c.to_crop(pts))
    # the crop's continuous extent [cx - w/2, cx + w/2] maps onto [-0.5, W - 0.5]
    assert np.allclose(c.to_crop(np.array([[50.3 - 40, 40.1 - 30]])), [[-0.5, -0.5]])


@pytest.mark.parametrize("scale", [2.0, 1.0, 0.7, 0.25])
def test_warp_crop_moves_pixels_like_points(scale):
    img = np.zeros((200, 200, 3), np.uint8)
    img[60:64, 100:104] = 255  # block centred on (101.5, 61.5)
    side = 120.0
    c = Crop(95.0, 70.0, side, side, round(side * scale), round(side * scale))
    out = warp_crop(img, c)
    # mean-pixel padding does not occur here (the crop is inside the image); measure the white block only
    got = _centroid((out[..., 0] > 0) * out[..., 0].astype(float))
    assert np.allclose(got, c.to_crop(np.array([101.5, 61.5])), atol=0.15 + 0.1 / scale)


def test_crops_from_joints_box_and_image():
    joints = np.array([[10.0, 20.0], [30.0, 60.0], [-99.0, -99.0]])
    c = crop_from_joints(joints, np.array([True, True, False]), (32, 32), margin=1.5)
    assert (c.cx, c.cy, c.w, c.h) == (20.0, 40.0, 60.0, 60.0)
    b = crop_from_box([0, 0, 40, 20], (64, 32), margin=1.0)
    assert (b.w, b.h) == (80.0, 40.0) and (b.cx, b.cy) == (20.0, 10.0)  # a square of the longer side, widened to 2:1
    full = crop_from_image(100, 50, (32, 32))
    assert full.w == full.h == 100 and full.cy == 24.5
    with pytest.raises(ValueError):
        crop_from_joints(joints, np.zeros(3, bool), (32, 32))


def _dot_cache(n=6, size=48, k=14, seed=0):
    """Crops with one white dot at joint 0 (right ankle); every joint annotated."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 30, np.uint8)
    joints = rng.uniform(14, size - 15, (n, k, 2)).astype(np.float32)
    joints[:, 0] = np.round(joints[:, 0])
    for i in range(n):
        x, y = joints[i, 0].astype(int)
        images[i, y - 1:y + 2, x - 1:x + 2] = 255
    crops = np.tile([size / 2 - 0.5, size / 2 - 0.5, size, size], (n, 1)).astype(np.float64)
    return CropCache(images, joints, np.ones((n, k), bool), crops, [f"{i}.jpg" for i in range(n)], joints.copy())


def test_augmentation_moves_keypoints_with_the_image_and_swaps_on_flip():
    cache = _dot_cache()
    aug = AugmentConfig(rotate=40, scale=(0.8, 1.2), translate=0.05, flip=0.5, color_jitter=0.0)
    ds = PoseTrainSet(cache, (32, 32), aug, LSP_FLIP_PAIRS)
    np.random.seed(0)
    flipped = 0
    for trial in range(24):
        item = ds[trial % len(cache)]
        img = item["image"].numpy()[0].astype(float)
        joints = item["joints"].numpy()
        # the dot is joint 0 (right ankle) unless the image was mirrored: then it is the *left* ankle (index 5)
        label = 0 if np.linalg.norm(_centroid(img * (img > 180)) - joints[0]) < 1.0 else 5
        flipped += label == 5
        assert np.linalg.norm(_centroid(img * (img > 180)) - joints[label]) < 1.0
    assert 4 <= flipped <= 20  # both branches exercised


def test_flip_only_mirrors_x_and_permutes_joints():
    cache = _dot_cache(n=1)
    aug = AugmentConfig(rotate=0, scale=(1.0, 1.0), translate=0.0, flip=1.0, color_jitter=0.0)
    ds = PoseTrainSet(cache, (48, 48), aug, LSP_FLIP_PAIRS)
    item = ds[0]
    perm = flip_permutation(14, LSP_FLIP_PAIRS)
    expected = cache.joints[0][perm].copy()
    expected[:, 0] = 48 - 1 - expected[:, 0]
    assert np.allclose(item["joints"].numpy(), expected, atol=1e-3)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), cache.images[0][:, ::-1])


def test_no_augmentation_is_the_central_window():
    cache = _dot_cache(n=2, size=40)
    ds = PoseTrainSet(cache, (32, 32), AugmentConfig(enabled=False), LSP_FLIP_PAIRS)
    item = ds[1]
    assert np.allclose(item["joints"].numpy(), cache.joints[1] - 4)
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), cache.images[1][4:36, 4:36])


def test_crop_cache_on_lspet_folder(lspet_root, tmp_path):
    ds = load_pose_dataset(lspet_root, "lspet")
    records = select_range(ds, 1, 9)
    assert [r.file for r in records][:2] == ["im00001.jpg", "im00002.jpg"] and len(records) == 9
    cache = build_crop_cache(records, (32, 32), 1.3, 16.0, context=1.5, cache_dir=tmp_path / "c", progress=False)
    assert cache.images.shape == (9, 48, 48, 3)
    assert not cache.visible[0, 0] and cache.visible[1, 0]  # LSPET flag-0 joint stays missing
    for i in range(len(cache)):
        vis = cache.visible[i]
        back = cache.crop(i).to_original(cache.joints[i][vis])
        assert np.allclose(back, records[i].joints[vis], atol=1e-3)
    again = build_crop_cache(records, (32, 32), 1.3, 16.0, context=1.5, cache_dir=tmp_path / "c", progress=False)
    assert isinstance(again.images, np.memmap) and np.array_equal(np.asarray(again.images), np.asarray(cache.images))
    other = build_crop_cache(records, (32, 32), 1.2, 16.0, context=1.5, cache_dir=tmp_path / "c", progress=False)
    assert not np.allclose(other.crops, cache.crops)  # a changed setting is a new cache, not a stale one


def test_two_builders_of_one_fresh_crop_cache(lspet_root, tmp_path):
    """Two processes building the same cache at once (ranks on a shared file system) both succeed and agree."""
    from concurrent.futures import ProcessPoolExecutor

    records = select_range(load_pose_dataset(lspet_root, "lspet"), 1, 9)
    with ProcessPoolExecutor(2) as pool:
        jobs = [pool.submit(build_crop_cache, records, (32, 32), 1.3, 16.0, context=1.5, cache_dir=tmp_path / "c",
                            progress=False) for _ in range(2)]
        first, second = (np.asarray(j.result().images) for j in jobs)
    assert np.array_equal(first, second)
    folder = next((tmp_path / "c").iterdir())
    assert sorted(p.name for p in folder.iterdir()) == ["done.json", "images.npy", "meta.npz"]  # no temp left
