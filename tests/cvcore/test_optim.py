"""cvcore.nn.optim: every update rule against hand-computed steps, every schedule against its closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvcore.nn import build_optimizer, build_scheduler, parameter_groups

# Objective f(w) = 0.5 * sum(a w^2) + b.w, so grad = a w + b depends on w: two steps test the state update too.
A = np.array([1.0, 2.0, 0.5])
B = np.array([0.3, -1.0, 2.0])
W0 = np.array([1.0, -2.0, 0.5])
LR, WD = 0.1, 0.01


def _grad(w: np.ndarray) -> np.ndarray:
    return A * w + B + WD * w  # weight decay adds wd * w to the gradient


def _run_torch(name: str, steps: int, **kw) -> np.ndarray:
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    opt = build_optimizer([w], name, lr=LR, weight_decay=WD, **kw)
    a, b = torch.tensor(A), torch.tensor(B)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a * w * w).sum() + (b * w).sum()).backward()
        opt.step()
    return w.detach().numpy()


def _sgd(steps):
    w = W0.copy()
    for _ in range(steps):
        w = w - LR * _grad(w)
    return w


def _momentum(steps, mu=0.9, nesterov=False):
    w, buf = W0.copy(), None
    for _ in range(steps):
        g = _grad(w)
        buf = g if buf is None else mu * buf + g
        w = w - LR * (g + mu * buf if nesterov else buf)
    return w


def _adagrad(steps, eps=1e-10):
    w, acc = W0.copy(), np.zeros(3)
    for _ in range(steps):
        g = _grad(w)
        acc = acc + g * g
        w = w - LR * g / (np.sqrt(acc) + eps)
    return w


def _rmsprop(steps, alpha=0.99, eps=1e-8):
    w, v = W0.copy(), np.zeros(3)
    for _ in range(steps):
        g = _grad(w)
        v = alpha * v + (1 - alpha) * g * g
        w = w - LR * g / (np.sqrt(v) + eps)
    return w


def _adam(steps, b1=0.9, b2=0.999, eps=1e-8):
    w, m, v = W0.copy(), np.zeros(3), np.zeros(3)
    for t in range(1, steps + 1):
        g = _grad(w)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - LR * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return w


@pytest.mark.parametrize("name,reference,kw", [
    ("sgd", _sgd, {}),
    ("momentum", _momentum, {}),
    ("nesterov", lambda s: _momentum(s, nesterov=True), {}),
    ("momentum", lambda s: _momentum(s, mu=0.5), {"momentum": 0.5}),
    ("adagrad", _adagrad, {}),
    ("rmsprop", _rmsprop, {}),
    ("adam", _adam, {}),
])
@pytest.mark.parametrize("steps", [1, 3])
def test_update_rule_matches_hand_computed_steps(name, reference, kw, steps):
    np.testing.assert_allclose(_run_torch(name, steps, **kw), reference(steps), rtol=1e-12, atol=1e-12)


def test_update_rules_are_distinct():
    """Guard against a factory that maps several names to the same optimizer."""
    finals = {n: tuple(np.round(_run_torch(n, 3), 10)) for n in ("sgd", "momentum", "nesterov", "adagrad",
                                                                "rmsprop", "adam")}
    assert len(set(finals.values())) == len(finals)


def test_lbfgs_first_step_and_convergence_on_a_quadratic():
    # first iteration of L-BFGS without line search: d = -g, t = lr * min(1, 1 / |g|_1)
    w = torch.tensor(W0, requires_grad=True)
    opt = build_optimizer([w], "lbfgs", lr=0.5, max_iter=1)
    a, b = torch.tensor(A), torch.tensor(B)

    def closure():
        opt.zero_grad()
        loss = 0.5 * (a * w * w).sum() + (b * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    g0 = A * W0 + B
    np.testing.assert_allclose(w.detach().numpy(), W0 - 0.5 * min(1.0, 1.0 / np.abs(g0).sum()) * g0, rtol=1e-12)
    # with a strong-Wolfe line search it reaches the minimiser -b/a of the convex quadratic
    opt = build_optimizer([w], "lbfgs", lr=1.0, max_iter=50, line_search_fn="strong_wolfe",
                          tolerance_grad=1e-12, tolerance_change=1e-15)
    opt.step(closure)
    np.testing.assert_allclose(w.detach().numpy(), -B / A, atol=1e-7)
    with pytest.raises(ValueError, match="penalty"):
        build_optimizer([w], "lbfgs", lr=1.0, weight_decay=0.1)


def test_optimizer_factory_errors_and_param_groups():
    w = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="unknown optimizer 'adadelta'"):
        build_optimizer([w], "adadelta", lr=0.1)
    with pytest.raises(ValueError, match="plain SGD"):
        build_optimizer([w], "sgd", lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="lr must be > 0"):
        build_optimizer([w], "adam", lr=0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    groups = parameter_groups(net, weight_decay=5e-4)
    assert [len(g["params"]) for g in groups] == [1, 3] and [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    opt = build_optimizer(groups, "momentum", lr=0.01)
    assert opt.param_groups[0]["weight_decay"] == 5e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    assert opt.param_groups[0]["momentum"] == 0.9


# ----------------------------------------------------------------------------- schedules
LR0, T = 0.5, 40


def _lrs(name: str, steps: int = T, **kw) -> list[float]:
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=LR0)
    sched = build_scheduler(opt, name, **kw)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def _cos(t, period, eta_min=0.0):
    return eta_min + (LR0 - eta_min) * (1 + math.cos(math.pi * t / period)) / 2


@pytest.mark.parametrize("name,kw,closed_form", [
    ("constant", {}, lambda t: LR0),
    ("step", {"step_size": 7, "gamma": 0.5}, lambda t: LR0 * 0.5 ** (t // 7)),
    ("multistep", {"milestones": [5, 12, 30]}, lambda t: LR0 * 0.1 ** sum(t >= m for m in (5, 12, 30))),
    ("exponential", {"gamma": 0.95}, lambda t: LR0 * 0.95 ** t),
    ("inverse_time", {"k": 0.2}, lambda t: LR0 / (1 + 0.2 * t)),
    ("inverse_time", {"k": 0.2, "power": 0.75}, lambda t: LR0 * (1 + 0.2 * t) ** -0.75),
    ("cosine", {"total_steps": T, "eta_min": 0.01}, lambda t: _cos(t, T, 0.01)),
    ("cyclic_cosine", {"cycle_steps": 10}, lambda t: _cos(t % 10, 10)),
])
def test_schedule_matches_closed_form(name, kw, closed_form):
    np.testing.assert_allclose(_lrs(name, **kw), [closed_form(t) for t in range(T)], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name,kw,closed_form", [
    ("step", {"step_size": 7}, lambda t: LR0 * 0.1 ** (t // 7)),
    ("inverse_time", {"k": 0.2}, lambda t: LR0 / (1 + 0.2 * t)),
    ("cosine", {"total_steps": T}, lambda t: _cos(t, T - 6)),
    ("exponential", {"gamma": 0.9}, lambda t: LR0 * 0.9 ** t),
])
def test_linear_warmup_then_schedule(name, kw, closed_form):
    warm, f = 6, 0.01

    def expected(t):
        return LR0 * (f + (1 - f) * t / warm) if t < warm else closed_form(t - warm)

    np.testing.assert_allclose(_lrs(name, warmup_steps=warm, warmup_factor=f, **kw), [expected(t) for t in range(T)],
                               rtol=1e-9, atol=1e-12)


def test_schedule_state_dict_resumes_the_same_sequence():
    w = torch.zeros(1, requires_grad=True)

    def make():
        opt = torch.optim.SGD([w], lr=LR0)
        return opt, build_scheduler(opt, "inverse_time", warmup_steps=3, k=0.3)

    opt, sched = make()
    for _ in range(8):
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(torch.load(_roundtrip(sched.state_dict()), weights_only=True))
    for _ in range(5):
        opt.step(), sched.step(), opt2.step(), sched2.step()
        assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def _roundtrip(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_schedule_factory_errors():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="needs 'step_size'"):
        build_scheduler(opt, "step")
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(opt, "cosine")
    with pytest.raises(ValueError, match="unexpected arguments"):
        build_scheduler(opt, "exponential", gamma=0.9, step_size=3)
    with pytest.raises(ValueError, match="unknown lr schedule"):
        build_scheduler(opt, "poly")
