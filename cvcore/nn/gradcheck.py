"""Gradient check for custom modules and losses, on ``torch.autograd.gradcheck`` in float64."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["check_gradients"]


def check_gradients(module: nn.Module, *inputs: Tensor, check_params: bool = True, eps: float = 1e-6,
                    atol: float = 1e-5, rtol: float = 1e-3) -> bool:
    """Compare the analytic gradients of ``module(*inputs)`` with finite differences, in float64.

    Every floating-point input is checked (cast to float64, ``requires_grad=True``); integer inputs (class indices)
    are passed through. With ``check_params`` the module's floating-point parameters are checked too, through
    ``torch.func.functional_call``. The module is deep-copied, so the caller's module is left untouched; put it in
    ``eval()`` first if it has dropout. Inputs at a kink (ReLU at 0, a hinge exactly at its margin, a Maxout tie)
    make any gradient check fail: use random inputs.

    Returns:
        True; raises ``torch.autograd.gradcheck.GradcheckError`` naming the mismatching input otherwise.
    """
    module = copy.deepcopy(module).double()
    args = tuple(x.detach().double().requires_grad_(True) if torch.is_tensor(x) and x.is_floating_point() else x
                 for x in inputs)
    names, params = [], []
    if check_params:
        for name, p in module.named_parameters():
            if p.is_floating_point():
                names.append(name)
                params.append(p.detach().clone().requires_grad_(True))

    def fn(*flat: Tensor) -> Tensor | tuple[Tensor, ...]:
        out = functional_call(module, dict(zip(names, flat[:len(names)])), flat[len(names):])
        if isinstance(out, dict):
            out = tuple(out.values())
        return out

    return torch.autograd.gradcheck(fn, (*params, *args), eps=eps, atol=atol, rtol=rtol)
