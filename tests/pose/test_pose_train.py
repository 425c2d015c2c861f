"""Staged training helpers (pose.train) that run without data."""

import pytest
import torch

from pose.config import StageConfig
from pose.train import build_stage_optimizer


@pytest.mark.parametrize("name,expected_momentum", [("sgd", 0.0), ("momentum", 0.8), ("nesterov", 0.8),
                                                     ("rmsprop", 0.8), ("adam", None), ("adagrad", None)])
def test_stage_optimizer_passes_momentum_only_where_it_exists(name, expected_momentum):
    """Plain SGD with the default stage momentum (0.9) used to raise in cvcore.nn.build_optimizer."""
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = build_stage_optimizer(params, StageConfig(optimizer=name, lr=0.1, momentum=0.8, weight_decay=1e-4))
    group = opt.param_groups[0]
    assert group["lr"] == 0.1 and group["weight_decay"] == 1e-4
    assert group.get("momentum") == expected_momentum
    if name == "nesterov":
        assert group["nesterov"]


def test_sgd_stage_takes_plain_gradient_steps():
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = build_stage_optimizer([w], StageConfig(optimizer="sgd", lr=0.5, momentum=0.9))
    for _ in range(2):
        opt.zero_grad()
        (w ** 2).sum().mul(0.5).backward()  # gradient = w
        opt.step()
    assert torch.allclose(w.detach(), torch.tensor([0.25, -0.5]))  # w <- w (1 - lr) twice, no momentum
