"""Inference API: ``PoseEstimator.load(path_or_name).predict(image, box=None) -> joints[K, 3] (x, y, score)``.

A model file is one ``torch.save`` of a plain dict, readable with ``torch.load(path, weights_only=True)``::

    {"format": "pose-model", "version": 1, "config": {...resolved PoseConfig...}, "joint_names": [...],
     "skeleton": [[i, j], ...], "flip_pairs": [[l, r], ...], "stage": "joint", "state_dict": {name: fp16/fp32 tensor},
     "metrics": {...validation PCK...}}

Shipped models live in ``pose/models/<name>.pt`` and are loaded by name (``lspet``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvcore.config import load_config
from cvcore.device import resolve_device
from cvcore.io import atomic_torch_save, load_image_bounded
from cvcore.models import float_state_dict, half_state_dict, read_model_file
from cvcore.models import resolve_model_path as resolve_model
from pose.codec import HeatmapCodec
from pose.config import PoseConfig
from pose.data import Crop, crop_from_box, crop_from_image, warp_crop
from pose.model import PoseModel

__all__ = ["PoseEstimator", "save_model_file", "load_model_file", "init_from_model_file", "build_pose_model",
           "build_codec", "MODELS_DIR", "resolve_model_path"]

MODELS_DIR = Path(__file__).resolve().parent / "models"
FORMAT, VERSION = "pose-model", 1


def build_codec(cfg: PoseConfig) -> HeatmapCodec:
    """The heatmap codec of a config (input size, stride, sigma, refinement)."""
    return HeatmapCodec(tuple(cfg.data.input_size), cfg.codec.stride, cfg.codec.sigma, cfg.codec.refine)


def build_pose_model(cfg: PoseConfig, num_joints: int, skeleton: Sequence[tuple[int, int]] = (),
                     flip_pairs: Sequence[tuple[int, int]] = (), stage: str = "part_detector",
                     pretrained: bool = True, left_right_tolerant: bool = False) -> PoseModel:
    """Part detector (+ spatial model when enabled) + codec, freshly initialised from the config
    (``pretrained=False``: without loading ImageNet weights, for a state dict loaded next;
    ``left_right_tolerant``: see :class:`pose.model.PoseModel`)."""
    from pose.part_detector import build_part_detector
    from pose.spatial_model import build_spatial_model

    codec = build_codec(cfg)
    part_detector = build_part_detector(cfg.model.part_detector, num_joints, cfg.codec.stride, pretrained)
    spatial = (build_spatial_model(cfg.model.spatial_model, num_joints, codec.heatmap_size, skeleton)
               if cfg.model.spatial_model.enabled else None)
    return PoseModel(part_detector, spatial, codec, flip_pairs, stage=stage, left_right_tolerant=left_right_tolerant)


def save_model_file(path: str | Path, model: PoseModel, cfg: PoseConfig, joint_names: Sequence[str],
                    skeleton: Sequence[tuple[int, int]], metrics: dict | None = None, half: bool = True,
                    extra: dict | None = None) -> Path:
    """Write a self-contained model file (atomically); floating-point weights in fp16 when ``half``; ``extra``:
    more plain entries (e.g. ``init_from``: the file the training started from, with its SHA-256)."""
    from cvcore.config import config_to_dict

    state = model.state_dict()
    state = half_state_dict(state) if half else {k: v.detach().cpu() for k, v in state.items()}
    obj = {"format": FORMAT, "version": VERSION, "config": config_to_dict(cfg), "joint_names": list(joint_names),
           "skeleton": [list(map(int, e)) for e in skeleton],
           "flip_pairs": [list(map(int, p)) for p in model.flip_pairs],
           "stage": model.stage, "state_dict": state, "metrics": metrics or {}, **(extra or {})}
    return atomic_torch_save(obj, path)


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A file path, or the name of a shipped model (``lspet`` -> ``pose/models/lspet.pt``)."""
    return resolve_model(path_or_name, MODELS_DIR, "pose model")


def init_from_model_file(model: PoseModel, path_or_name: str | Path) -> list[str]:
    """Copy into ``model`` the weights of a pose model file (a path or a shipped name) whose names and shapes match,
    e.g. to fine-tune the shipped ``lspet`` model on other data or to continue its training with a new schedule.
    Returns the names of the entries left at their fresh values (e.g. the last layer when the joints differ).

    The spatial model's weights are copied only when the file's spatial model was trained (its stage is
    ``spatial_model`` or ``joint``) over the same graph (same edges); otherwise they all stay fresh and the spatial
    stage initialises them as configured."""
    path = resolve_model_path(path_or_name)
    obj = read_model_file(path, lambda d: d.get("format") == FORMAT, "a pose model file")
    own = model.state_dict()
    state = dict(obj["state_dict"])
    same_graph = all(k in state and torch.equal(state[k], own[k])
                     for k in ("spatial_model.targets", "spatial_model.sources") if k in own)
    if obj.get("stage") not in ("spatial_model", "joint") or not same_graph:
        state = {k: v for k, v in state.items() if not k.startswith("spatial_model.")}
    take = {k: v.to(own[k].dtype) for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("part_detector.") and v.dim() >= 2 for k, v in take.items()):
        raise ValueError(f"{path}: none of its part-detector convolutions fits this model (another trunk or widths?)")
    model.load_state_dict(take, strict=False)
    return sorted(set(own) - set(take))


def load_model_file(path_or_name: str | Path) -> tuple[PoseModel, PoseConfig, dict[str, Any]]:
    """Read a model file written by :func:`save_model_file` -> (model in eval mode on CPU, config, the raw dict)."""
    path = resolve_model_path(path_or_name)
    obj = read_model_file(path, lambda d: d.get("format") == FORMAT, "a pose model file")
    cfg = load_config(PoseConfig, data=obj["config"])
    skeleton = [tuple(e) for e in obj["skeleton"]]
    model = build_pose_model(cfg, len(obj["joint_names"]), skeleton, [tuple(p) for p in obj["flip_pairs"]],
                             stage=obj["stage"], pretrained=False)  # all weights come from the file
    state = float_state_dict(obj["state_dict"])
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the stored config ({str(e).splitlines()[0]})") from None
    return model.eval(), cfg, obj


class PoseEstimator:
    """Single-person pose estimation on whole images or person boxes.

    Args:
        model: a trained :class:`PoseModel`; cfg: its config; joint_names, skeleton: for outputs and drawing.
        device: "auto", "cpu", "cuda", ...; flip_test: average with the mirrored image's heatmaps.
    """

    def __init__(self, model: PoseModel, cfg: PoseConfig, joint_names: Sequence[str],
                 skeleton: Sequence[tuple[int, int]], device: str = "auto", flip_test: bool | None = None,
                 metrics: dict | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.model.part_detector.to(memory_format=torch.channels_last)  # faster convolutions on CPU (oneDNN)
        self.cfg = cfg
        self.joint_names = list(joint_names)
        self.skeleton = [tuple(e) for e in skeleton]
        self.flip_test = cfg.eval.flip_test if flip_test is None else flip_test
        self.input_size = tuple(cfg.data.input_size)
        self.metrics = metrics or {}

    @classmethod
    def load(cls, path_or_name: str | Path = "lspet", device: str = "auto", flip_test: bool | None = None
             ) -> PoseEstimator:
        """Load a model file, or a shipped model by name (``"lspet"``)."""
        model, cfg, obj = load_model_file(path_or_name)
        return cls(model, cfg, obj["joint_names"], obj["skeleton"], device=device, flip_test=flip_test,
                   metrics=obj.get("metrics"))

    def crop_for(self, image: np.ndarray, box: Sequence[float] | None = None) -> Crop:
        """The crop the network sees: around ``box`` (xyxy) if given, else the whole image letterboxed."""
        h, w = image.shape[:2]
        if box is None:
            return crop_from_image(w, h, self.input_size)
        return crop_from_box(box, self.input_size, margin=self.cfg.data.box_margin)

    @torch.inference_mode()
    def predict_batch(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None] | None = None
                      ) -> np.ndarray:
        """Several (image, box) pairs in one forward pass -> float32 Array[N, K, 3] (x, y, score), original px."""
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        crops = [self.crop_for(img, b) for img, b in zip(images, boxes)]
        batch = np.stack([warp_crop(img, c) for img, c in zip(images, crops)])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)  # NHWC memory = channels-last already
        out = self.model.predict(x, flip_test=self.flip_test)
        joints, scores = out["joints"].cpu().numpy(), out["scores"].cpu().numpy()
        result = np.zeros((len(images), joints.shape[1], 3), np.float32)
        for i, c in enumerate(crops):
            result[i, :, :2] = c.to_original(joints[i])
            result[i, :, 2] = scores[i]
        return result

    def predict(self, image: np.ndarray | str | Path, box: Sequence[float] | None = None) -> np.ndarray:
        """One person's joints.

        Args:
            image: H x W x 3 RGB uint8 array, or an image path.
            box: optional xyxy person box in image pixels (e.g. from ``detect``); default: the whole image.
        Returns:
            float32 Array[K, 3]: (x, y, score) per joint in original image pixels (integer = pixel centre).
        """
        if not isinstance(image, np.ndarray):  # a file over cvcore.io.WORKING_PIXELS: decoded reduced, mapped back
            decoded = load_image_bounded(image)
            sx, sy = decoded.scale
            small = None if box is None else np.asarray(box, np.float32).reshape(4) / [sx, sy, sx, sy]
            joints = self.predict(decoded.image, small).copy()
            joints[:, :2] = (joints[:, :2] + 0.5) * [sx, sy] - 0.5
            return joints.astype(np.float32)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an H x W x 3 uint8 RGB array, got {image.dtype} {image.shape}")
        return self.predict_batch([image], [box])[0]
