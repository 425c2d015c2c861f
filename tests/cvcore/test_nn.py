"""cvcore.nn: activations, Maxout, initialisation, penalties, losses, gradient checks."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.autograd.gradcheck import GradcheckError

from cvcore.nn import (
    HeatmapMSELoss,
    Maxout,
    MultiClassHingeLoss,
    build_activation,
    build_loss,
    check_gradients,
    init_weights,
    out_channels,
    penalty,
)


# ----------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name,ref", [("relu", torch.relu), ("tanh", torch.tanh), ("sigmoid", torch.sigmoid),
                                      ("leaky_relu", lambda x: nn.functional.leaky_relu(x, 0.2)),
                                      ("elu", lambda x: nn.functional.elu(x, 0.5))])
def test_build_activation_matches_torch(name, ref):
    torch.manual_seed(0)
    x = torch.randn(4, 7)
    kw = {"leaky_relu": {"negative_slope": 0.2}, "elu": {"alpha": 0.5}}.get(name, {})
    assert torch.equal(build_activation(name, **kw)(x), ref(x))


def test_build_activation_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        build_activation("swishy")
    with pytest.raises(ValueError, match="tanh"):
        build_activation("tanh", pieces=3)


def _maxout_reference(x: torch.Tensor, pieces: int) -> torch.Tensor:
    """Brute force: output channel g = elementwise max over input channels g*pieces ... g*pieces + pieces - 1."""
    groups = [x[:, g * pieces:(g + 1) * pieces] for g in range(x.shape[1] // pieces)]
    out = []
    for grp in groups:
        m = grp[:, 0]
        for j in range(1, pieces):
            m = torch.maximum(m, grp[:, j])
        out.append(m)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("shape,pieces", [((5, 12), 3), ((2, 8, 5, 4), 2), ((2, 6, 3, 3), 6), ((3, 4), 1)])
def test_maxout_matches_brute_force_for_linear_and_conv(shape, pieces):
    torch.manual_seed(1)
    x = torch.randn(shape)
    m = build_activation("maxout", pieces=pieces)
    y = m(x)
    assert y.shape == (shape[0], shape[1] // pieces, *shape[2:])
    assert torch.equal(y, _maxout_reference(x, pieces))
    assert out_channels(m, shape[1]) == shape[1] // pieces
    assert out_channels(nn.ReLU(), shape[1]) == shape[1]


def test_maxout_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="not divisible"):
        Maxout(pieces=4)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="expected 8 channels"):
        Maxout(pieces=2, in_features=8)(torch.randn(2, 6))
    with pytest.raises(ValueError, match="not divisible"):
        Maxout(pieces=4, in_features=6)


def test_maxout_gradcheck_linear_and_conv():
    torch.manual_seed(2)
    assert check_gradients(Maxout(3), torch.randn(4, 9))
    assert check_gradients(Maxout(2), torch.randn(2, 6, 3, 3))
    # with a layer in front, parameters are checked too
    assert check_gradients(nn.Sequential(nn.Linear(5, 8), Maxout(4)), torch.randn(3, 5))


def test_gradcheck_catches_a_wrong_backward():
    class WrongGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * x

        @staticmethod
        def backward(ctx, g):
            return g  # should be 2 x g

    class Bad(nn.Module):
        def forward(self, x):
            return WrongGrad.apply(x)

    with pytest.raises(GradcheckError):
        check_gradients(Bad(), torch.randn(3))


# ----------------------------------------------------------------------------- init
def _net():
    return nn.Sequential(nn.Conv2d(3, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10),
                         nn.ConvTranspose2d(4, 4, 3))


@pytest.mark.parametrize("scheme,torch_fn", [
    ("xavier_uniform", lambda w: nn.init.xavier_uniform_(w, gain=math.sqrt(2))),
    ("glorot_normal", lambda w: nn.init.xavier_normal_(w, gain=math.sqrt(2))),
    ("kaiming_uniform", lambda w: nn.init.kaiming_uniform_(w, a=0, nonlinearity="relu")),
    ("he_normal", lambda w: nn.init.kaiming_normal_(w, a=0, nonlinearity="relu")),
    ("small_normal", lambda w: nn.init.normal_(w, 0.0, 0.01)),
])
def test_init_weights_matches_torch_init_and_zeroes_biases(scheme, torch_fn):
    torch.manual_seed(3)
    net = _net()
    bn_before = [t.clone() for t in net[1].parameters()]
    torch.manual_seed(4)
    init_weights(net, scheme)
    torch.manual_seed(3)
    ref = _net()
    torch.manual_seed(4)
    for layer in (ref[0], ref[4], ref[5]):
        torch_fn(layer.weight)
    for i in (0, 4, 5):
        assert torch.equal(net[i].weight, ref[i].weight)
        assert torch.count_nonzero(net[i].bias) == 0
    assert all(torch.equal(a, b) for a, b in zip(bn_before, net[1].parameters()))


@pytest.mark.parametrize("scheme,expected_std", [  # relu gain sqrt(2); std of U(-a, a) is a / sqrt(3)
    ("xavier_normal", lambda fi, fo: math.sqrt(2) * math.sqrt(2.0 / (fi + fo))),
    ("xavier_uniform", lambda fi, fo: math.sqrt(2) * math.sqrt(6.0 / (fi + fo)) / math.sqrt(3)),
    ("kaiming_normal", lambda fi, fo: math.sqrt(2.0 / fi)),
    ("kaiming_uniform", lambda fi, fo: math.sqrt(6.0 / fi) / math.sqrt(3)),
    ("small_normal", lambda fi, fo: 0.01),
])
def test_init_weights_statistics_follow_the_papers(scheme, expected_std):
    torch.manual_seed(5)
    conv = nn.Conv2d(64, 128, 3)  # fan_in = 576, fan_out = 1152
    init_weights(conv, scheme, nonlinearity="relu")
    std = conv.weight.std().item()
    assert abs(conv.weight.mean().item()) < 0.05 * expected_std(576, 1152) + 1e-4
    assert std == pytest.approx(expected_std(576, 1152), rel=0.03)


def test_init_rejects_unknown_scheme():
    with pytest.raises(ValueError, match="unknown init scheme 'lecun'"):
        init_weights(nn.Linear(2, 2), "lecun")


# ----------------------------------------------------------------------------- penalties
def test_penalties_values_and_l2_gradient_equals_weight_decay():
    torch.manual_seed(6)
    net = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    w = [net[0].weight, net[1].weight]  # biases are not penalised
    l1 = sum(p.abs().sum() for p in w).item()
    l2 = sum((p ** 2).sum() for p in w).item()
    assert penalty(net, "l1", l1=0.3).item() == pytest.approx(0.3 * l1)
    assert penalty(net, "l2", l2=0.2).item() == pytest.approx(0.1 * l2)
    assert penalty(net, "elastic_net", l1=0.3, l2=0.2).item() == pytest.approx(0.3 * l1 + 0.1 * l2)
    assert penalty(net, "none", l1=1, l2=1).item() == 0
    assert penalty(net, "l1", l2=5.0).item() == 0  # only the coefficient of the chosen kind counts

    # d/dw (l2/2 ||w||^2) = l2 w: one SGD step on the penalty == one SGD step with weight_decay=l2 on a zero loss
    net2 = nn.Linear(4, 3, bias=False)
    w0 = net2.weight.detach().clone()
    penalty([net2.weight], "l2", l2=0.1).backward()
    assert torch.allclose(net2.weight.grad, 0.1 * w0)


def test_penalty_rejects_bad_kind_and_negative_coefficients():
    with pytest.raises(ValueError, match="unknown penalty"):
        penalty([torch.ones(2)], "l3", l1=1)
    with pytest.raises(ValueError, match=">= 0"):
        penalty([torch.ones(2)], "l1", l1=-1)


# ----------------------------------------------------------------------------- losses
def _multiclass_hinge_reference(scores, target, variant, margin=1.0, squared=False):
    losses = []
    for s, y in zip(scores.tolist(), target.tolist()):
        terms = [max(0.0, margin - s[y] + s[j]) for j in range(len(s)) if j != y]
        if squared:
            terms = [t * t for t in terms]
        losses.append(sum(terms) if variant == "weston_watkins" else max(terms))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("variant,squared",
                         list(itertools.product(["weston_watkins", "crammer_singer"], [False, True])))
def test_multiclass_hinge_matches_brute_force(variant, squared):
    torch.manual_seed(7)
    scores, target = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 5, (20,))
    loss = build_loss("multiclass_hinge", variant=variant, squared=squared, margin=0.7)(scores, target)
    assert loss.item() == pytest.approx(_multiclass_hinge_reference(scores, target, variant, 0.7, squared))


def test_weston_watkins_equals_torch_multimargin_times_classes():
    torch.manual_seed(8)
    scores, target = torch.randn(16, 6), torch.randint(0, 6, (16,))
    ours = MultiClassHingeLoss("weston_watkins")(scores, target)
    assert torch.allclose(ours, nn.MultiMarginLoss()(scores, target) * 6)


def test_binary_and_squared_hinge_match_formulas():
    torch.manual_seed(9)
    s = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (30, 3)).double() * 2 - 1
    sq = build_loss("squared_hinge", pos_weight=2.0)(s, y)
    ref = sum((2.0 if yi > 0 else 1.0) * max(0.0, 1 - yi * si) ** 2 for si, yi in zip(s.flatten().tolist(),
                                                                                       y.flatten().tolist())) / 90
    assert sq.item() == pytest.approx(ref)
    bh = build_loss("binary_hinge", margin=0.5)(s, y)
    assert bh.item() == pytest.approx(sum(max(0.0, 0.5 - a * b) for a, b in zip(s.flatten().tolist(),
                                                                              y.flatten().tolist())) / 90)
    with pytest.raises(ValueError, match="-1 or \\+1"):
        build_loss("squared_hinge")(s, (y > 0).double())


def test_squared_hinge_is_liblinear_objective():
    """Minimising 0.5||w||^2 + C sum squared_hinge reaches sklearn LinearSVC(loss='squared_hinge') (liblinear)."""
    from sklearn.svm import LinearSVC

    g = torch.Generator().manual_seed(10)
    x = torch.randn(60, 3, generator=g, dtype=torch.float64)
    y = torch.sign(x[:, 0] - 0.5 * x[:, 1] + 0.3 * torch.randn(60, generator=g, dtype=torch.float64))
    c = 0.5
    svc = LinearSVC(C=c, loss="squared_hinge", fit_intercept=False, tol=1e-10,
                    max_iter=100000).fit(x.numpy(), y.numpy())
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    loss_fn = build_loss("squared_hinge", reduction="sum")
    opt = torch.optim.LBFGS([w], lr=1, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = 0.5 * w.pow(2).sum() + c * loss_fn(x @ w, y)
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(w.detach(), torch.from_numpy(svc.coef_[0]), atol=1e-5)


def test_bce_and_cross_entropy_are_torch():
    torch.manual_seed(11)
    s, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    assert torch.equal(build_loss("cross_entropy")(s, y), nn.functional.cross_entropy(s, y))
    t = torch.rand(8, 4).round()
    assert torch.equal(build_loss("bce")(s, t), nn.functional.binary_cross_entropy_with_logits(s, t))
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("focal")


def test_heatmap_mse_masks_missing_joints():
    torch.manual_seed(12)
    pred, target = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    vis = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    target_nan = target.clone()
    target_nan[vis == 0] = float("nan")  # a missing joint may have garbage targets: it must not matter
    pred.requires_grad_(True)
    loss = HeatmapMSELoss()(pred, target_nan, vis)
    keep = vis.bool()
    ref = ((pred - target)[keep] ** 2).mean()
    assert torch.allclose(loss, ref)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.count_nonzero(pred.grad[~keep]) == 0
    # mmpose convention: divide by all N*K*h*w elements
    all_norm = HeatmapMSELoss("all")(pred, target, vis)
    assert torch.allclose(all_norm, ((pred - target) ** 2 * vis[:, :, None, None]).sum() / pred.numel())
    # unweighted == plain MSE; all joints missing -> 0 loss (and a zero gradient, not NaN)
    assert torch.allclose(HeatmapMSELoss()(pred, target), nn.functional.mse_loss(pred, target))
    zero = HeatmapMSELoss()(pred, target, torch.zeros(2, 3))
    assert zero.item() == 0.0
    with pytest.raises(ValueError, match="weight must be"):
        HeatmapMSELoss()(pred, target, torch.ones(3, 2))


@pytest.mark.parametrize("name,kw", [("multiclass_hinge", {}), ("multiclass_hinge", {"variant": "crammer_singer"}),
                                     ("multiclass_hinge", {"squared": True})])
def test_gradcheck_multiclass_hinge(name, kw):
    torch.manual_seed(13)
    assert check_gradients(build_loss(name, **kw), torch.randn(6, 4), torch.randint(0, 4, (6,)))


@pytest.mark.parametrize("name", ["squared_hinge", "binary_hinge"])
def test_gradcheck_binary_hinges(name):
    torch.manual_seed(14)
    y = torch.randint(0, 2, (10,)).double() * 2 - 1
    scores = torch.randn(10)

    class Fixed(nn.Module):  # labels are not differentiable: close over them
        def __init__(self):
            super().__init__()
            self.loss = build_loss(name, pos_weight=1.5)

        def forward(self, s):
            return self.loss(s, y)

    assert check_gradients(Fixed(), scores)


def test_gradcheck_heatmap_mse_with_weights():
    torch.manual_seed(15)
    pred, target = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    w = torch.tensor([[1.0, 0.0, 0.5], [1.0, 1.0, 0.0]])

    class Fixed(nn.Module):
        def forward(self, p, t):
            return HeatmapMSELoss()(p, t, w.double())

    assert check_gradients(Fixed(), pred, target)
