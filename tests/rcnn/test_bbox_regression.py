"""BoxCoder round trip and hand-computed targets; ridge regression against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.linear_model import Ridge

from rcnn.bbox_regression import BoxCoder, fit_box_regressor


def random_boxes(gen: torch.Generator, n: int) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 400
    wh = torch.rand(n, 2, generator=gen) * 200 + 10  # size ratios < 1000 / 16 (the decode clamp)
    return torch.cat([xy, xy + wh], 1)


def test_box_coder_round_trip():
    gen = torch.Generator().manual_seed(0)
    coder = BoxCoder()
    props, gts = random_boxes(gen, 500), random_boxes(gen, 500)
    deltas = coder.encode(props, gts)
    torch.testing.assert_close(coder.decode(deltas, props), gts, atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(coder.encode(props, coder.decode(deltas, props)), deltas, atol=1e-4, rtol=1e-4)


def test_box_coder_matches_paper_formula():
    p = torch.tensor([[10.0, 20.0, 50.0, 100.0]])   # centre (30, 60), size 40 x 80
    g = torch.tensor([[20.0, 10.0, 80.0, 90.0]])    # centre (50, 50), size 60 x 80
    t = BoxCoder().encode(p, g)[0]
    expected = [(50 - 30) / 40, (50 - 60) / 80, math.log(60 / 40), math.log(80 / 80)]
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-6)


def test_ridge_matches_sklearn_and_refines_boxes():
    gen = torch.Generator().manual_seed(1)
    n, d = 300, 16
    feats = torch.randn(n, d, generator=gen, dtype=torch.float64)
    props = random_boxes(gen, n)
    true_w = torch.randn(d, 4, generator=gen, dtype=torch.float64) * 0.05
    gts = BoxCoder().decode((feats @ true_w).float(), props)
    labels = torch.zeros(n, dtype=torch.long)
    lam = 5.0
    reg = fit_box_regressor(feats.float(), props, gts, labels, num_classes=2, lam=lam)
    targets = BoxCoder().encode(props, gts).numpy()
    sk = Ridge(alpha=lam).fit(feats.numpy(), targets)
    np.testing.assert_allclose(reg.weight[0].numpy(), sk.coef_.T, atol=1e-4)
    np.testing.assert_allclose(reg.bias[0].numpy(), sk.intercept_, atol=1e-4)
    assert torch.count_nonzero(reg.weight[1]) == 0  # class without examples: no offset
    refined = reg.refine(feats.float(), props)  # [N, C, 4]
    assert refined.shape == (n, 2, 4)
    err_before = (props - gts).abs().mean()
    err_after = (refined[:, 0] - gts).abs().mean()
    assert err_after < 0.2 * err_before
