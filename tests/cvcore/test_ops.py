import numpy as np
import pytest
import torch

from cvcore.ops import (
    box_convert,
    box_iou,
    clip_boxes,
    decode_heatmaps,
    heatmap_to_input,
    input_to_heatmap,
    nms,
    render_gaussian_heatmaps,
)


def _iou_ref(a, b):
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            iw = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
            ih = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
            inter = iw * ih
            union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - inter
            out[i, j] = inter / union
    return out


def _random_boxes(rng, n):
    xy = rng.uniform(0, 100, (n, 2))
    wh = rng.uniform(1, 50, (n, 2))
    return np.hstack([xy, xy + wh]).astype(np.float32)


def test_box_iou_against_brute_force():
    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 17), _random_boxes(rng, 9)
    np.testing.assert_allclose(box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), _iou_ref(a, b), atol=1e-6)
    # No "+1": a 10x10 box overlapping half of another 10x10 box has IoU 50/150.
    assert box_iou(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[5.0, 0, 15, 10]])).item() == pytest.approx(1 / 3)


def test_nms_against_greedy_reference():
    rng = np.random.default_rng(1)
    boxes = _random_boxes(rng, 60)
    scores = rng.uniform(size=60).astype(np.float32)
    order = list(np.argsort(-scores))
    keep_ref = []
    while order:
        i = order.pop(0)
        keep_ref.append(i)
        order = [j for j in order if _iou_ref(boxes[[i]], boxes[[j]])[0, 0] <= 0.3]
    keep = nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.3).tolist()
    assert keep == keep_ref


def test_convert_and_clip():
    xywh = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert box_convert(xywh, "xywh", "xyxy").tolist() == [[10.0, 20.0, 40.0, 60.0]]
    assert clip_boxes(torch.tensor([[-5.0, -1.0, 700.0, 30.0]]), (480, 640)).tolist() == [[0.0, 0.0, 640.0, 30.0]]


def test_pixel_centre_convention():
    # stride 4: cell 0 covers input pixels 0..3, centred at 1.5
    assert heatmap_to_input(torch.tensor(0.0), 4).item() == 1.5
    x = torch.tensor([0.0, 7.3, 100.0])
    torch.testing.assert_close(heatmap_to_input(input_to_heatmap(x, 4), 4), x)


@pytest.mark.parametrize("refine, tol", [("dark", 0.05), ("quarter", 1.1), (None, 2.9)])
def test_render_decode_round_trip_subpixel(refine, tol):
    stride, hw = 4, (32, 24)
    rng = np.random.default_rng(2)
    joints = torch.from_numpy(rng.uniform(12, 80, (5, 2))).float()
    maps = render_gaussian_heatmaps(joints, torch.ones(5, dtype=torch.bool), hw, stride, sigma=2.0)
    assert maps.shape == (5, 32, 24)
    coords, scores = decode_heatmaps(maps[None], stride, refine=refine)
    err = (coords[0] - joints).norm(dim=-1)
    assert err.max().item() < tol
    assert (scores > 0.8).all()


def test_render_peak_at_cell_centre_and_invisible_zero():
    maps = render_gaussian_heatmaps(torch.tensor([[4.5, 8.5], [0.0, 0.0]]), torch.tensor([True, False]), (8, 8), 2, 1.0)
    v, u = divmod(int(maps[0].argmax()), 8)
    assert (u, v) == (2, 4) and maps[0, 4, 2].item() == pytest.approx(1.0)
    assert maps[1].abs().sum() == 0


def test_dark_with_blur_still_accurate():
    joints = torch.tensor([[30.3, 41.7]])
    maps = render_gaussian_heatmaps(joints, torch.tensor([True]), (32, 32), 4, 1.5)
    coords, _ = decode_heatmaps(maps[None], 4, refine="dark", blur_sigma=1.0)
    assert (coords[0, 0] - joints[0]).norm() < 0.5
