"""Per-class linear SVMs with hard-negative mining (R-CNN section 2.3, "Object category classifiers").

For class c, positives are the ground-truth boxes of c; negatives are proposals whose IoU with every ground-truth
box of c is below 0.3; boxes in between are ignored. The training set has far too many negatives to fit at once,
so negatives are mined: a pass over every training image adds the negatives that the current model scores above
``hard_threshold`` (-1.0001, i.e. inside the margin) to a bounded cache, the SVM is retrained whenever enough new
ones arrived, and cached negatives scoring below ``evict_threshold`` (-1.2) are dropped (the original's liblinear
settings: C = 1e-3, bias multiplier 10, positive weight 2).

Two solvers fit one binary SVM: ``sklearn`` (LinearSVC = liblinear, L1-loss hinge as the original) and ``torch``
(squared hinge from :mod:`cvcore.nn.losses`, full-batch L-BFGS, runs on a GPU).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from cvcore.nn.losses import SquaredHingeLoss

log = logging.getLogger(__name__)

__all__ = ["LinearSVMs", "fit_linear_svm", "TrainingImage", "NegativeCache", "hard_negative_mining"]


@dataclass
class LinearSVMs:
    """One linear SVM per class: ``score = features @ weight.T + bias``.

    Attributes:
        weight: ``Tensor[C, D]``; bias: ``Tensor[C]``.
    """

    weight: Tensor
    bias: Tensor

    def decision(self, features: Tensor) -> Tensor:
        """SVM scores ``Tensor[N, C]`` of (scaled) ``features`` ``[N, D]``."""
        return features.float() @ self.weight.T.float() + self.bias.float()

    def state_dict(self) -> dict[str, Tensor]:
        return {"weight": self.weight.float().contiguous(), "bias": self.bias.float().contiguous()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> LinearSVMs:
        return cls(state["weight"].float(), state["bias"].float())


def fit_linear_svm(x: Tensor, y: Tensor, *, C: float = 1e-3, pos_weight: float = 2.0, bias_multiplier: float = 10.0,
                   backend: str = "sklearn", device: torch.device | str = "cpu", max_iter: int | None = None
                   ) -> tuple[Tensor, float]:
    """Fit one binary linear SVM.

    Minimises ``0.5 * (|w|^2 + b'^2) + C * sum_i c_i * loss(y_i * (w . x_i + B * b'))`` with ``b = B * b'`` (the bias
    is a regularised constant feature of value B = ``bias_multiplier``, as liblinear's ``-B``), ``c_i = pos_weight``
    for positives (liblinear's ``-w1``) and 1 for negatives. ``sklearn``: L1-loss (hinge), liblinear dual solver;
    ``torch``: L2-loss (squared hinge), L-BFGS.

    Args:
        x: ``Tensor[N, D]`` features; y: ``Tensor[N]`` labels in {-1, +1} (both present).
    Returns:
        (w ``Tensor[D]``, b) float32 on the CPU.
    """
    y = torch.as_tensor(y).float()
    if not ((y == 1).any() and (y == -1).any()):
        raise ValueError("fit_linear_svm needs positive (+1) and negative (-1) examples")
    if backend == "sklearn":
        from sklearn.svm import LinearSVC

        svc = LinearSVC(C=C, loss="hinge", dual=True, class_weight={1: pos_weight, -1: 1.0},
                        intercept_scaling=bias_multiplier, max_iter=max_iter or 2000, tol=1e-4,
                        random_state=0)  # liblinear's coordinate order: seeded per fit
        import warnings

        from sklearn.exceptions import ConvergenceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            svc.fit(x.float().cpu().numpy(), y.cpu().numpy().astype(np.int64))
        sign = 1.0 if svc.classes_[1] == 1 else -1.0
        return torch.from_numpy(svc.coef_[0]).float() * sign, float(svc.intercept_[0]) * sign
    if backend == "torch":
        dev = torch.device(device)
        xd = torch.cat([x.to(dev, torch.float32), torch.full((x.shape[0], 1), bias_multiplier, device=dev)], 1)
        yd = y.to(dev)
        loss_fn = SquaredHingeLoss(pos_weight=pos_weight, reduction="sum")
        w = torch.zeros(xd.shape[1], device=dev, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter or 300, tolerance_grad=1e-6,
                                tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            loss = 0.5 * w.pow(2).sum() + C * loss_fn(xd @ w, yd)
            loss.backward()
            return loss

        opt.step(closure)
        w = w.detach().cpu()
        return w[:-1].clone(), float(w[-1]) * bias_multiplier
    raise ValueError(f"unknown SVM backend {backend!r} (sklearn or torch)")


@dataclass
class TrainingImage:
    """Features of one training image with its SVM roles.

    Attributes:
        features: ``Tensor[N, D]`` (e.g. fp16 from the cache), or a callable returning it: then the features are
            read each time they are needed (streamed from the feature cache) and never all held in memory; rows are
            ground-truth boxes and proposals.
        positive: ``bool[N, C]``: row is a ground-truth box of class c.
        negative: ``bool[N, C]``: row is a proposal with IoU < 0.3 to every ground-truth box of class c.
        scale: the SVMs see ``features * scale`` (mean L2 norm 20), applied on the fly to save memory.
    """

    features: Tensor | Callable[[], Tensor]
    positive: Tensor
    negative: Tensor
    scale: float = 1.0

    def rows(self) -> Tensor:
        """The unscaled features (read now when streamed)."""
        return self.features() if callable(self.features) else self.features

    def scaled(self, rows: Tensor | list[int] | None = None) -> Tensor:
        """``float32`` scaled features of ``rows`` (all rows when None)."""
        x = self.rows()
        x = x if rows is None else x[rows]
        return x.float() * self.scale


class NegativeCache:
    """Hard negatives of one class: features and (image, row) keys, at most ``max_size`` (hardest kept)."""

    def __init__(self, dim: int, max_size: int) -> None:
        self._features = torch.zeros((0, dim), dtype=torch.float16)
        self._pending: list[Tensor] = []  # rows added since the last access, concatenated lazily
        self.keys: list[tuple[int, int]] = []
        self.key_set: set[tuple[int, int]] = set()
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def features(self) -> Tensor:
        """``Tensor[len, D]`` fp16 cached features, in the order of ``keys``."""
        if self._pending:
            self._features = torch.cat([self._features, *self._pending])
            self._pending = []
        return self._features

    def add(self, features: Tensor, keys: list[tuple[int, int]]) -> int:
        """Add rows not cached yet; returns how many were new."""
        new = [i for i, k in enumerate(keys) if k not in self.key_set]
        if new:
            self._pending.append(features[new].to(torch.float16))
            for i in new:
                self.keys.append(keys[i])
                self.key_set.add(keys[i])
        return len(new)

    def keep(self, mask: Tensor) -> None:
        idx = torch.nonzero(mask).flatten()
        self._features = self.features[idx]
        self.keys = [self.keys[i] for i in idx.tolist()]
        self.key_set = set(self.keys)

    def shrink(self, scores: Tensor, evict_threshold: float) -> None:
        """Drop easy negatives (score < ``evict_threshold``), then keep at most ``max_size``, the highest-scoring."""
        mask = scores >= evict_threshold
        if int(mask.sum()) > self.max_size:
            kth = torch.topk(scores[mask], self.max_size).values[-1]
            mask &= scores >= kth
            if int(mask.sum()) > self.max_size:  # ties
                idx = torch.nonzero(mask).flatten()[self.max_size:]
                mask[idx] = False
        self.keep(mask)


def hard_negative_mining(images: Sequence[TrainingImage], num_classes: int, *, C: float = 1e-3,
                         pos_weight: float = 2.0, bias_multiplier: float = 10.0, hard_threshold: float = -1.0001,
                         evict_threshold: float = -1.2, retrain_every: int = 2000, max_cache: int = 20000,
                         first_negatives: int = 0, backend: str = "sklearn", device: torch.device | str = "cpu",
                         seed: int = 0, progress: bool = False, caches_out: list | None = None, workers: int = 1
                         ) -> tuple[LinearSVMs, dict]:
    """Train one SVM per class with one pass of hard-negative mining over ``images`` (see the module docstring).

    The model starts at zero, so the first images contribute all their negatives until the first retrain; with
    ``first_negatives > 0`` the first model is instead fitted on that many random negatives of the whole set.
    Each image's features are read once per pass (streamed when ``TrainingImage.features`` is a loader); the
    classes due for a retrain at the same time are fitted in ``workers`` threads (liblinear and torch release the
    GIL; the classes are independent: liblinear's coordinate order comes from one process-wide C RNG, so threaded
    fits agree with serial ones to the solver's tolerance, not bit for bit).

    Returns:
        (:class:`LinearSVMs`, stats ``{"retrains": [C], "cache": [C], "positives": [C]}``). The final
        :class:`NegativeCache` of every class is appended to ``caches_out`` when given.
    """
    if len(images) == 0:
        raise ValueError("hard_negative_mining: no training images")
    dim = images[0].rows().shape[1]
    positives = [[] for _ in range(num_classes)]
    for im in images:
        if im.positive.any():
            feats = im.scaled()
            for c in range(num_classes):
                if im.positive[:, c].any():
                    positives[c].append(feats[im.positive[:, c]])
    pos = [torch.cat(p) if p else torch.zeros((0, dim)) for p in positives]
    for c in range(num_classes):
        if len(pos[c]) == 0:
            raise ValueError(f"hard_negative_mining: class {c} has no positive (ground-truth) box in the training set")
    weight = torch.zeros((num_classes, dim))
    bias = torch.zeros(num_classes)
    caches = [NegativeCache(dim, max_cache) for _ in range(num_classes)]
    added = [0] * num_classes
    retrains = [0] * num_classes

    def retrain(c: int) -> None:
        neg = caches[c].features.float()
        if len(neg) == 0:
            return
        x = torch.cat([pos[c], neg])
        y = torch.cat([torch.ones(len(pos[c])), -torch.ones(len(neg))])
        w, b = fit_linear_svm(x, y, C=C, pos_weight=pos_weight, bias_multiplier=bias_multiplier,
                              backend=backend, device=device)
        weight[c], bias[c] = w, b
        caches[c].shrink(neg @ w + b, evict_threshold)
        added[c] = 0
        retrains[c] += 1

    pool = ThreadPoolExecutor(max(1, workers))

    def retrain_all(due: list[int]) -> None:
        list(pool.map(retrain, due)) if len(due) > 1 and workers > 1 else [retrain(c) for c in due]

    if first_negatives > 0:
        gen = torch.Generator().manual_seed(seed)
        picks: list[dict[int, list[int]]] = []  # per class: image -> rows, in the order drawn
        for c in range(num_classes):
            cand = [(i, j) for i, im in enumerate(images) for j in torch.nonzero(im.negative[:, c]).flatten().tolist()]
            by_image: dict[int, list[int]] = {}
            for p in torch.randperm(len(cand), generator=gen)[:first_negatives].tolist():
                by_image.setdefault(cand[p][0], []).append(cand[p][1])
            picks.append(by_image)
        rows_of: dict[tuple[int, int], Tensor] = {}  # (class, image) -> the picked rows' features
        for i in sorted({i for by_image in picks for i in by_image}):  # each image read once
            feats = images[i].scaled()
            for c, by_image in enumerate(picks):
                if i in by_image:
                    rows_of[c, i] = feats[by_image[i]]
        for c, by_image in enumerate(picks):
            for i, rows in by_image.items():
                caches[c].add(rows_of.pop((c, i)), [(i, r) for r in rows])
        retrain_all(list(range(num_classes)))

    iterator = range(len(images))
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="hard negatives", leave=False)
    for i in iterator:
        im = images[i]
        feats = im.scaled()
        scores = feats @ weight.T + bias
        for c in range(num_classes):
            hard = im.negative[:, c] & (scores[:, c] > hard_threshold)
            rows = torch.nonzero(hard).flatten().tolist()
            if rows:
                added[c] += caches[c].add(feats[rows], [(i, r) for r in rows])
        retrain_all([c for c in range(num_classes) if added[c] >= retrain_every])
    retrain_all([c for c in range(num_classes) if added[c] > 0 or retrains[c] == 0])
    pool.shutdown()
    if caches_out is not None:
        caches_out.extend(caches)
    stats = {"retrains": retrains, "cache": [len(cc) for cc in caches], "positives": [len(p) for p in pos]}
    log.info("SVMs: %s", stats)
    return LinearSVMs(weight, bias), stats
