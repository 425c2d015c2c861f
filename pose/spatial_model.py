"""Convolutional spatial model: one step of MRF belief propagation over the joints (Tompson et al. 2014, Sec. 4).

For every ordered pair (target joint ``a``, source joint ``v``) of the graph a large kernel ``w_{a|v}`` maps the
part-detector heatmap of ``v`` to evidence for ``a``; the beliefs are combined in the log domain::

    e_{a|v}   = SoftPlus(w_{a|v}) (*) ReLU(h_v) + SoftPlus(b_{a|v})       (*) = 'same' cross-correlation
    h'_a      = exp( t_a * reduce_{v in N(a)} g_{a|v} log e_{a|v} + s_a )  reduce = sum (paper) or mean

SoftPlus keeps the pairwise potentials and the bias positive, so the log is defined; the bias is the floor of
evidence from a source joint with no detection (occluded limbs do not veto). The per-joint temperature ``t_a`` and
log-scale ``s_a`` (learnt; set once from data by :meth:`SpatialModel.calibrate`) put the output on the scale of the
Gaussian targets: with the mean (a geometric mean of 14 broad beliefs) the raw output is nearly flat, with the paper's
sum its amplitude spans many orders of magnitude between images; ``t`` = number of neighbours turns the mean back
into the sum, so both are the same family. The per-edge weights ``g_{a|v}`` (1 in the paper: every message counts
the same) make the combination a learnt log-linear pool of the messages.

Two initialisations (``init``):

* ``"identity"`` (default): the self-connection kernel is a delta with weight 1 and every other edge has weight 0,
  so before training the output is the part detector's own heatmap (``ReLU(h_a) + floor``) and the validation PCK
  of the combined model starts at the part detector's; training then raises the weights of the messages that lower
  the loss. The pairwise kernels still start from the displacement histograms.
* ``"histogram"``: the paper's: every message with weight 1 from the histograms, output scale set by
  :meth:`SpatialModel.calibrate`. On LSPET this started far below the part detector (pose/models/README.md).

Kernel ``w_{a|v}`` at offset ``d`` answers "if ``v`` is at ``p + d``, how likely is ``a`` at ``p``": it is initialised
from the training set's histogram of displacements ``p_v - p_a`` (in heatmap cells). The kernel is ``S x S`` with
``S = 2 max(h, w) - 1`` by default, so every displacement within the map is covered. Large kernels are applied with
FFTs (``torch.fft.rfft2``); :func:`fft_correlate` equals ``F.conv2d(..., groups=E)`` to float tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SpatialModel", "build_spatial_model", "build_graph", "fft_correlate", "direct_correlate",
           "displacement_histograms", "inverse_softplus"]


def inverse_softplus(y: Tensor) -> Tensor:
    """x such that ``softplus(x) = y`` (y > 0), stable for small and large y."""
    return y + torch.log(-torch.expm1(-y))


def _fft_size(n: int) -> int:
    """Smallest integer >= n whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def direct_correlate(x: Tensor, kernels: Tensor) -> Tensor:
    """Reference 'same' cross-correlation of each map with its own kernel, with ``F.conv2d``.

    Args:
        x: Tensor[N, E, H, W]; kernels: Tensor[E, S, S], S odd.
    Returns:
        Tensor[N, E, H, W], ``y[n, e, p] = sum_d kernels[e, d + c] x[n, e, p + d]`` with c = S // 2, zero outside.
    """
    s = kernels.shape[-1]
    return F.conv2d(x, kernels[:, None], padding=s // 2, groups=kernels.shape[0])


def fft_correlate(x: Tensor, kernels: Tensor, index: Tensor | None = None) -> Tensor:
    """The same result as :func:`direct_correlate`, computed with real FFTs (O(P^2 log P) instead of O(H W S^2)).

    Cross-correlation with ``k`` is convolution with the flipped kernel; a circular convolution of period ``P``
    equals the linear one on the kept window when ``P >= H + S // 2`` (no wrap-around reaches it).

    Args:
        x: Tensor[N, C, H, W] source maps.
        kernels: Tensor[E, S, S], S odd.
        index: optional Tensor[E] int64: kernel ``e`` applies to map ``index[e]`` (default: C == E, one each).
    Returns:
        Tensor[N, E, H, W], float32 (or float64 for float64 inputs): the transforms run in full precision, also under
        autocast (torch has no bfloat16 FFT, and float16 ones only at power-of-two sizes).
    """
    n, c, h, w = x.shape
    e, s, s2 = kernels.shape
    if s != s2 or s % 2 == 0:
        raise ValueError(f"kernels must be square with an odd size, got {s}x{s2}")
    half = s // 2
    ph, pw = _fft_size(h + half), _fft_size(w + half)
    dtype = torch.float64 if torch.float64 in (x.dtype, kernels.dtype) else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        spec = torch.fft.rfft2(x.to(dtype), s=(ph, pw))  # one transform per source map, shared by all its edges
        if index is not None:
            spec = spec[:, index]
        kspec = torch.fft.rfft2(kernels.to(dtype).flip(-2, -1), s=(ph, pw))
        full = torch.fft.irfft2(spec * kspec, s=(ph, pw))
    return full[..., half:half + h, half:half + w]


def build_graph(num_joints: int, graph: str, skeleton: Sequence[tuple[int, int]] = (),
                self_connection: bool = True) -> list[tuple[int, int]]:
    """Ordered (target, source) pairs of the MRF.

    Args:
        graph: "all" (fully connected, as in the paper) or "skeleton" (limb neighbours, both directions).
        skeleton: undirected limbs (i, j) used by "skeleton".
        self_connection: include (a, a) so each joint also keeps its own part-detector evidence.
    """
    if graph == "all":
        pairs = [(a, v) for a in range(num_joints) for v in range(num_joints) if a != v]
    elif graph == "skeleton":
        if not skeleton:
            raise ValueError("graph='skeleton' needs the skeleton's limbs")
        pairs = sorted({(int(a), int(v)) for i, j in skeleton for a, v in ((i, j), (j, i))})
    else:
        raise ValueError(f"unknown spatial-model graph '{graph}' (all, skeleton)")
    if self_connection:
        pairs += [(a, a) for a in range(num_joints)]
    return sorted(pairs)


def displacement_histograms(joints: Tensor, visible: Tensor, edges: Sequence[tuple[int, int]],
                            kernel_size: int) -> Tensor:
    """Count displacements ``p_source - p_target`` (rounded heatmap cells) over a training set.

    Args:
        joints: Tensor[M, K, 2] joint positions in heatmap cells; visible: Tensor[M, K] bool.
        edges: E (target, source) pairs; kernel_size: odd S (displacements beyond +-S//2 are clipped to the border).
    Returns:
        Tensor[E, S, S] float32 counts; entry [e, c + dy, c + dx] counts displacement (dx, dy).
    """
    c = kernel_size // 2
    joints = torch.as_tensor(joints, dtype=torch.float32)
    visible = torch.as_tensor(visible).bool()
    tgt = torch.tensor([a for a, _ in edges])
    src = torch.tensor([v for _, v in edges])
    d = torch.round(joints[:, src] - joints[:, tgt]).long().clamp(-c, c) + c  # [M, E, 2]
    ok = visible[:, src] & visible[:, tgt]  # [M, E]
    e_idx = torch.arange(len(edges)).expand_as(ok)
    hist = torch.zeros(len(edges), kernel_size, kernel_size)
    hist.index_put_((e_idx[ok], d[..., 1][ok], d[..., 0][ok]), torch.ones(int(ok.sum())), accumulate=True)
    return hist


class SpatialModel(nn.Module):
    """One belief-propagation step written as convolutions.

    Args:
        num_joints: K.
        edges: ordered (target, source) pairs, see :func:`build_graph`.
        kernel_size: odd S.
        reduce: "sum" (the paper: product of beliefs) or "mean" (their geometric mean).
        use_fft: FFT or direct convolution (same values).
        bias_init: initial raw bias (SoftPlus(bias_init) is the evidence floor).
    Shapes: heatmaps Tensor[N, K, h, w] -> Tensor[N, K, h, w].
    """

    def __init__(self, num_joints: int, edges: Sequence[tuple[int, int]], kernel_size: int, reduce: str = "mean",
                 use_fft: bool = True, bias_init: float = -4.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"spatial-model kernel size must be odd, got {kernel_size}")
        if reduce not in ("sum", "mean"):
            raise ValueError(f"unknown reduce '{reduce}' (sum, mean)")
        self.num_joints, self.kernel_size, self.reduce, self.use_fft = num_joints, kernel_size, reduce, use_fft
        self.edges = [tuple(map(int, e)) for e in edges]
        self.register_buffer("targets", torch.tensor([a for a, _ in self.edges], dtype=torch.long))
        self.register_buffer("sources", torch.tensor([v for _, v in self.edges], dtype=torch.long))
        counts = torch.bincount(self.targets, minlength=num_joints).float()
        if (counts == 0).any():
            raise ValueError(f"joints {torch.nonzero(counts == 0).flatten().tolist()} have no neighbour in the graph")
        self.register_buffer("neighbour_counts", counts)
        e = len(self.edges)
        # raw weights: SoftPlus(weight) is a flat, small positive potential until init_from_displacements is called
        self.weight = nn.Parameter(torch.full((e, kernel_size, kernel_size), -8.0))
        self.bias = nn.Parameter(torch.full((e,), float(bias_init)))
        self.log_scale = nn.Parameter(torch.zeros(num_joints))
        self.log_temperature = nn.Parameter(torch.zeros(num_joints))
        self.edge_weight = nn.Parameter(torch.ones(e))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # files written before the temperature / edge weights existed: t = 1 and g = 1 are exactly the old model
        state_dict.setdefault(prefix + "log_temperature", torch.zeros(self.num_joints))
        state_dict.setdefault(prefix + "edge_weight", torch.ones(len(self.edges)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def potentials(self) -> Tensor:
        """Positive pairwise kernels SoftPlus(w): Tensor[E, S, S]."""
        return F.softplus(self.weight)

    def pair_beliefs(self, heatmaps: Tensor) -> Tensor:
        """e_{a|v} for every edge: Tensor[N, K, h, w] -> Tensor[N, E, h, w] (before the bias)."""
        x = F.relu(heatmaps)
        if self.use_fft:  # in float32 whatever the autocast dtype (fft_correlate)
            return fft_correlate(x, self.potentials(), index=self.sources)
        return direct_correlate(x[:, self.sources], self.potentials().to(x.dtype))

    def forward(self, heatmaps: Tensor) -> Tensor:
        """Part-detector heatmaps Tensor[N, K, h, w] -> spatial-model heatmaps Tensor[N, K, h, w]."""
        t = torch.exp(self.log_temperature).to(heatmaps.dtype)[None, :, None, None]
        s = self.log_scale.to(heatmaps.dtype)[None, :, None, None]
        return torch.exp(t * self.log_beliefs(heatmaps) + s)

    def log_beliefs(self, heatmaps: Tensor) -> Tensor:
        """reduce_v g_{a|v} log e_{a|v}: Tensor[N, K, h, w] -> Tensor[N, K, h, w] (before temperature and scale)."""
        beliefs = self.pair_beliefs(heatmaps).clamp_min(0.0)  # FFT round-off can dip below 0 by ~1e-7
        floor = F.softplus(self.bias).to(beliefs.dtype)[None, :, None, None]
        logs = torch.log(beliefs + floor) * self.edge_weight.to(beliefs.dtype)[None, :, None, None]
        n, _, h, w = heatmaps.shape
        total = logs.new_zeros(n, self.num_joints, h, w).index_add(1, self.targets, logs)
        if self.reduce == "mean":
            total = total / self.neighbour_counts.to(total.dtype)[None, :, None, None]
        return total

    @torch.no_grad()
    def init_from_displacements(self, joints: Tensor, visible: Tensor, blur: float = 1.0,
                                floor: float = 1e-3) -> None:
        """Set the kernels from the training set's joint-to-joint displacement histograms.

        Each histogram is blurred by a Gaussian of ``blur`` cells, mixed with a uniform floor (``floor`` of the
        mass, so unseen displacements stay learnable) and normalised to sum 1; ``SoftPlus(w)`` then equals it.

        Args:
            joints: Tensor[M, K, 2] training joints in heatmap cells; visible: Tensor[M, K] bool.
        """
        hist = displacement_histograms(joints, visible, self.edges, self.kernel_size)
        if blur > 0:
            r = max(1, int(3 * blur + 0.5))
            t = torch.arange(-r, r + 1, dtype=torch.float32)
            g = torch.exp(-(t**2) / (2 * blur**2))
            g = (g[:, None] * g[None, :]) / g.sum() ** 2
            hist = F.conv2d(hist[:, None], g[None, None], padding=r)[:, 0]
        total = hist.sum(dim=(1, 2), keepdim=True)
        uniform = torch.full_like(hist, 1.0 / hist[0].numel())
        prob = torch.where(total > 0, hist / total.clamp_min(1e-12), uniform)
        prob = (1 - floor) * prob + floor * uniform
        self.weight.copy_(inverse_softplus(prob))

    @torch.no_grad()
    def init_identity(self) -> None:
        """Make the model pass each joint's own heatmap through: self-connection kernels become deltas with edge
        weight 1 (after the reduce), every other edge weight 0, temperature and scale 1. The output is then
        ``ReLU(h_a) + SoftPlus(b_{a|a})`` (up to FFT round-off); the other kernels keep their values (call
        :meth:`init_from_displacements` first). Needs the self-connections. The self kernels' off-centre entries
        sit where SoftPlus is flat (raw -30), so training leaves each self-connection a delta; the learning happens
        in the edge weights and the other kernels."""
        own = self.targets == self.sources
        missing = sorted(set(range(self.num_joints)) - set(self.targets[own].tolist()))
        if missing:
            raise ValueError(f"identity initialisation needs self-connections (joints {missing} have none)")
        c = self.kernel_size // 2
        self.weight[own] = -30.0  # SoftPlus(-30) ~ 1e-13
        self.weight[own, c, c] = float(inverse_softplus(torch.tensor(1.0)))
        # weight 1 after the reduce: the mean divides by the number of neighbours
        per_self = self.neighbour_counts[self.targets] if self.reduce == "mean" else 1.0
        self.edge_weight.copy_(own * per_self)
        self.log_temperature.zero_()
        self.log_scale.zero_()

    @torch.no_grad()
    def calibrate(self, heatmaps: Tensor, contrast: float = 100.0) -> None:
        """Set temperature and log-scale from part-detector output ``heatmaps`` Tensor[N, K, h, w]: per joint, the
        output's peak is 1 and its median ``1 / contrast`` (geometric means over the images), like the targets'."""
        logs = self.log_beliefs(heatmaps).flatten(2)  # [N, K, h*w]
        peak = logs.amax(-1).mean(0)
        median = logs.median(-1).values.mean(0)
        t = torch.log(torch.tensor(contrast)) / (peak - median).clamp_min(1e-6)
        self.log_temperature.copy_(torch.log(t))
        self.log_scale.copy_(-t * peak)


def build_spatial_model(cfg, num_joints: int, heatmap_size: tuple[int, int],
                        skeleton: Sequence[tuple[int, int]] = ()) -> SpatialModel:
    """Build a :class:`SpatialModel` from a ``SpatialModelConfig``; ``heatmap_size`` is (width, height)."""
    size = cfg.kernel_size or 2 * max(heatmap_size) - 1
    edges = build_graph(num_joints, cfg.graph, skeleton, cfg.self_connection)
    return SpatialModel(num_joints, edges, size, reduce=cfg.reduce, use_fft=cfg.use_fft, bias_init=cfg.bias_init)
