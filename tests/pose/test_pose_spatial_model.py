"""Spatial model: FFT path == direct conv2d (values and gradients), gradcheck, histogram initialisation."""

import pytest
import torch
import torch.nn.functional as F

from cvcore.nn import check_gradients
from pose.spatial_model import (
    SpatialModel,
    build_graph,
    direct_correlate,
    displacement_histograms,
    fft_correlate,
    inverse_softplus,
)


@pytest.mark.parametrize("h,w,s", [(32, 32, 63), (7, 5, 9), (6, 9, 13), (8, 8, 3), (5, 12, 23)])
def test_fft_correlate_equals_conv2d_values_and_gradients(h, w, s):
    g = torch.Generator().manual_seed(h * 100 + w)
    x = torch.randn(2, 3, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(4, s, s, generator=g, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([0, 2, 1, 2])
    a = fft_correlate(x, k, index=index)
    b = F.conv2d(x[:, index], k[:, None], padding=s // 2, groups=4)  # torch's own cross-correlation
    assert torch.allclose(a, b, atol=1e-10)
    upstream = torch.randn(a.shape, generator=g, dtype=torch.float64)
    ga = torch.autograd.grad(a, (x, k), upstream)
    gb = torch.autograd.grad(b, (x, k), upstream)
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, atol=1e-9)


def test_fft_correlate_float32_tolerance():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 14, 32, 32, generator=g)
    k = torch.rand(14, 63, 63, generator=g) / 63**2
    assert torch.allclose(fft_correlate(x, k), direct_correlate(x, k), atol=1e-5, rtol=1e-4)


def _model(use_fft, k=4, size=9, graph="all"):
    torch.manual_seed(0)
    edges = build_graph(k, graph, skeleton=[(0, 1), (1, 2), (2, 3)], self_connection=True)
    m = SpatialModel(k, edges, size, reduce="mean", use_fft=use_fft, bias_init=-2.0)
    with torch.no_grad():
        m.weight.normal_(-3, 1)
        m.bias.normal_(-2, 0.5)
        m.log_scale.normal_(0, 0.3)
        m.log_temperature.normal_(0, 0.3)
        m.edge_weight.normal_(1, 0.3)
    return m


@pytest.mark.parametrize("graph", ["all", "skeleton"])
def test_spatial_model_fft_equals_direct(graph):
    fft, direct = _model(True, graph=graph), _model(False, graph=graph)
    direct.load_state_dict(fft.state_dict())
    x = torch.rand(3, 4, 6, 7, generator=torch.Generator().manual_seed(3), requires_grad=True)
    a, b = fft(x), direct(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    ga = torch.autograd.grad(a.square().sum(), [x, *fft.parameters()])
    gb = torch.autograd.grad(b.square().sum(), [x, *direct.parameters()])
    for u, v in zip(ga, gb):
        assert torch.allclose(u, v, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("use_fft", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_spatial_model_gradcheck(use_fft):
    m = _model(use_fft, k=2, size=3)
    x = torch.rand(1, 2, 3, 4, generator=torch.Generator().manual_seed(1)) + 0.05  # away from the ReLU kink
    assert check_gradients(m, x)


def test_sum_reduce_is_product_of_pair_beliefs():
    """reduce='sum' is the paper's exp(sum log): the product over neighbours of (belief + floor)."""
    m = _model(True, k=3, size=5)
    m.reduce = "sum"
    with torch.no_grad():
        m.log_temperature.zero_()
        m.edge_weight.fill_(1.0)  # the paper: every message counts once
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    beliefs = direct_correlate(x[:, m.sources], F.softplus(m.weight)) + F.softplus(m.bias)[None, :, None, None]
    expected = torch.ones(1, 3, 4, 4)
    for e, (a, _v) in enumerate(m.edges):
        expected[:, a] *= beliefs[:, e]
    expected = expected * torch.exp(m.log_scale)[None, :, None, None]
    assert torch.allclose(m(x), expected, rtol=1e-4)


def test_displacement_histogram_brute_force():
    g = torch.Generator().manual_seed(4)
    joints = torch.rand(50, 3, 2, generator=g) * 8
    visible = torch.rand(50, 3, generator=g) > 0.2
    edges = [(0, 1), (1, 0), (2, 0), (1, 1)]
    s = 7
    hist = displacement_histograms(joints, visible, edges, s)
    ref = torch.zeros(len(edges), s, s)
    for m in range(50):
        for e, (a, v) in enumerate(edges):
            if visible[m, a] and visible[m, v]:
                d = torch.round(joints[m, v] - joints[m, a]).long().clamp(-3, 3) + 3
                ref[e, d[1], d[0]] += 1
    assert torch.equal(hist, ref)


def test_init_from_displacements_moves_evidence_to_the_expected_place():
    """Joint 1 is always 3 cells right of joint 0: a detection of joint 1 alone votes for joint 0 3 cells left."""
    k, h, w = 2, 12, 12
    joints = torch.tensor([[[4.0, 5.0], [7.0, 5.0]]]).repeat(20, 1, 1)
    visible = torch.ones(20, 2, dtype=torch.bool)
    m = SpatialModel(k, build_graph(k, "all", self_connection=False), 2 * w - 1, reduce="sum", bias_init=-6.0)
    m.init_from_displacements(joints, visible, blur=0.0, floor=1e-6)
    heat = torch.zeros(1, k, h, w)
    heat[0, 1, 6, 9] = 1.0  # joint 1 detected at (x=9, y=6)
    out = m(heat)
    y, x = divmod(int(out[0, 0].argmax()), w)
    assert (x, y) == (6, 6)
    assert torch.allclose(F.softplus(m.weight).sum(dim=(1, 2)), torch.ones(2), atol=1e-4)


def test_calibrate_sets_mean_peak():
    m = _model(True)
    x = torch.rand(5, 4, 6, 6, generator=torch.Generator().manual_seed(5))
    m.calibrate(x, contrast=100.0)
    out = m(x).flatten(2)
    peak = out.amax(-1).log().mean(0).exp()  # geometric mean over images
    median = out.median(-1).values.log().mean(0).exp()
    assert torch.allclose(peak, torch.ones(4), rtol=1e-4)
    assert torch.allclose(median, torch.full((4,), 0.01), rtol=1e-3)


def test_inverse_softplus():
    y = torch.tensor([1e-6, 1e-3, 0.5, 3.0, 30.0], dtype=torch.float64)
    assert torch.allclose(F.softplus(inverse_softplus(y)), y, rtol=1e-9)


def test_graph_and_kernel_validation():
    assert len(build_graph(14, "all")) == 14 * 14
    assert len(build_graph(3, "skeleton", [(0, 1), (1, 2)], self_connection=False)) == 4
    with pytest.raises(ValueError, match="odd"):
        SpatialModel(2, [(0, 1), (1, 0)], 8)
    with pytest.raises(ValueError, match="no neighbour"):
        SpatialModel(3, [(0, 1), (1, 0)], 5)


def test_old_state_dict_without_temperature_loads_as_temperature_one():
    m = _model(True)
    state = {k: v for k, v in m.state_dict().items() if k != "log_temperature"}
    fresh = _model(True)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.log_temperature, torch.zeros(4))
    # files from before the per-edge weights: every message weight 1, exactly the old model
    state = {k: v for k, v in m.state_dict().items() if k != "edge_weight"}
    fresh.load_state_dict(state)
    assert torch.equal(fresh.edge_weight, torch.ones(len(fresh.edges)))


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_identity_init_passes_own_heatmap_through(reduce):
    """init_identity: before training the output is ReLU(h) + floor, whatever the other kernels hold."""
    k, h, w = 3, 6, 7
    joints = torch.rand(30, k, 2, generator=torch.Generator().manual_seed(6)) * 5
    m = SpatialModel(k, build_graph(k, "all"), 2 * w - 1, reduce=reduce)
    m.init_from_displacements(joints, torch.ones(30, k, dtype=torch.bool))
    m.init_identity()
    x = torch.randn(2, k, h, w, generator=torch.Generator().manual_seed(7))
    own = m.targets == m.sources
    floor = F.softplus(m.bias[own])[None, :, None, None]  # edges are sorted, so the self edges are in joint order
    assert torch.allclose(m(x), F.relu(x) + floor, atol=1e-5)
    # the other messages are switched off, not removed: their weights get gradients
    m(x).square().sum().backward()
    assert (m.edge_weight.grad[~own].abs() > 0).all()


def test_identity_init_needs_self_connections():
    m = SpatialModel(2, build_graph(2, "all", self_connection=False), 5)
    with pytest.raises(ValueError, match="self-connections"):
        m.init_identity()


def test_edge_weights_scale_each_message_in_the_log_domain():
    m = _model(True, k=3, size=5)
    m.reduce = "sum"
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        m.log_temperature.zero_()
        m.log_scale.zero_()
        m.edge_weight.copy_(torch.linspace(0.0, 2.0, len(m.edges)))
    beliefs = direct_correlate(x[:, m.sources], F.softplus(m.weight)) + F.softplus(m.bias)[None, :, None, None]
    expected = torch.ones(1, 3, 4, 4)
    for e, (a, _v) in enumerate(m.edges):
        expected[:, a] *= beliefs[:, e] ** m.edge_weight[e]
    assert torch.allclose(m(x), expected, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fft_spatial_model_runs_in_float32_under_autocast(dtype):
    """Under autocast (bfloat16 on a GPU or the CPU) the FFTs run in float32: torch has no bfloat16 FFT, and the
    shipped model's 96-point transforms are no power of two (float16 FFTs need one)."""
    model = _model(True)
    x = torch.rand(2, 4, 6, 7, generator=torch.Generator().manual_seed(5))
    with pytest.raises(RuntimeError):
        torch.fft.rfft2(x.to(dtype), s=(96, 96))  # what the model would hit without the guard
    with torch.autocast("cpu", dtype=dtype):
        beliefs = model.pair_beliefs(x.to(dtype))
    assert beliefs.dtype == torch.float32
    torch.testing.assert_close(beliefs, model.pair_beliefs(x.to(dtype).float()), rtol=0, atol=0)
