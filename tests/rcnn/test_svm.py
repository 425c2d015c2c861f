"""Linear SVM backends agree on separable data; hard-negative mining keeps hard negatives within its bound."""

from __future__ import annotations

import torch

from rcnn.svm import NegativeCache, TrainingImage, fit_linear_svm, hard_negative_mining


def separable(gen: torch.Generator, w: torch.Tensor, n: int, margin: float = 1.0):
    """Points of N(0, 9 I) farther than ``margin`` from the hyperplane ``w . x = 0``, labelled by its side."""
    x = torch.randn(n, len(w), generator=gen) * 3
    s = x @ w
    keep = s.abs() > margin
    x, s = x[keep], s[keep]
    return x, torch.where(s > 0, 1.0, -1.0)


def test_backends_give_same_decisions_on_separable_data():
    gen = torch.Generator().manual_seed(0)
    w_true = torch.randn(8, generator=gen)
    w_true /= w_true.norm()
    x, y = separable(gen, w_true, 400)
    xt, yt = separable(gen, w_true, 400, margin=0.5)
    preds = {}
    for backend in ("sklearn", "torch"):
        w, b = fit_linear_svm(x, y, C=10.0, pos_weight=2.0, bias_multiplier=10.0, backend=backend)
        assert torch.equal(torch.sign(x @ w + b), y), backend  # separates the training set
        preds[backend] = torch.sign(xt @ w + b)
    assert torch.equal(preds["sklearn"], preds["torch"])
    assert torch.equal(preds["sklearn"], yt)


def test_negative_cache_evicts_easy_and_respects_bound():
    cache = NegativeCache(dim=2, max_size=3)
    assert cache.add(torch.zeros(5, 2), [(0, i) for i in range(5)]) == 5
    assert cache.add(torch.zeros(2, 2), [(0, 1), (1, 0)]) == 1  # (0, 1) is cached already
    scores = torch.tensor([-2.0, -1.1, 0.5, -1.3, 0.2, 3.0])
    cache.shrink(scores, evict_threshold=-1.2)
    assert sorted(cache.keys) == [(0, 2), (0, 4), (1, 0)]  # easy ones evicted, then the 3 hardest kept


def test_hard_negative_mining_keeps_only_hard_negatives():
    gen = torch.Generator().manual_seed(0)
    d, images = 6, []
    for _ in range(30):
        pos = torch.randn(2, d, generator=gen) * 0.3 + 2.0
        neg = torch.randn(60, d, generator=gen) * 0.8 - 1.0
        feats = torch.cat([pos, neg])
        positive = torch.zeros(62, 1, dtype=torch.bool)
        positive[:2] = True
        images.append(TrainingImage(feats.half(), positive, ~positive))
    caches = []
    svms, stats = hard_negative_mining(images, 1, C=1.0, retrain_every=200, max_cache=150,
                                       evict_threshold=-1.2, caches_out=caches)
    assert stats["retrains"][0] >= 2
    cache = caches[0]
    assert 0 < len(cache) <= 150
    scores = svms.decision(cache.features.float())[:, 0]
    assert (scores >= -1.2 - 1e-3).all()  # every cached negative is hard under the final model
    all_neg = torch.cat([im.features[2:].float() for im in images])
    assert len(cache) < 0.2 * len(all_neg)  # most negatives are easy and never kept
    all_pos = torch.cat([im.features[:2].float() for im in images])
    assert (svms.decision(all_pos) > 0).float().mean() > 0.95
    assert (svms.decision(all_neg) < 0).float().mean() > 0.95


def test_streamed_features_and_parallel_classes_give_the_same_svms():
    """Features read image by image from a loader (streamed from the cache) give exactly the SVMs of in-memory
    features, each image read at most three times (positives, the seed negatives, the mining pass); classes
    retrained in threads give the same SVMs to the solver's tolerance."""
    gen = torch.Generator().manual_seed(1)
    d, k, images, reads = 5, 3, [], []
    for i in range(24):
        feats = torch.randn(40, d, generator=gen).half()
        positive = torch.zeros(40, k, dtype=torch.bool)
        positive[i % 3, i % k] = True
        positive[3, (i + 1) % k] = True
        feats[:4] += 2.0
        images.append(TrainingImage(feats, positive, ~positive.any(1, keepdim=True).expand(-1, k).clone()))

    def loader(t):
        def read():
            reads.append(1)
            return t.clone()
        return read

    streamed = [TrainingImage(loader(im.features), im.positive, im.negative) for im in images]
    args = dict(C=1.0, retrain_every=30, max_cache=80, first_negatives=20, seed=3)
    a, sa = hard_negative_mining(images, k, workers=1, **args)
    b, sb = hard_negative_mining(streamed, k, workers=1, **args)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias) and sa == sb
    assert len(reads) <= 3 * len(images)
    # threads: liblinear draws its coordinate order from one process-wide C RNG, so concurrent fits agree with the
    # serial ones to the solver's tolerance rather than bit for bit
    c, sc = hard_negative_mining(streamed, k, workers=3, **args)
    torch.testing.assert_close(c.weight, a.weight, rtol=0, atol=1e-4)
    torch.testing.assert_close(c.bias, a.bias, rtol=0, atol=1e-4)
    assert sc["positives"] == sa["positives"]
