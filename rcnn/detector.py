"""The trained R-CNN detector: proposals -> features -> SVM scores -> box regression -> per-class NMS.

    from rcnn import Detector
    det = Detector.load("bccd")             # a shipped model name or a file written by ``rcnn-train``
    boxes, scores, labels = det.detect("image.jpg")

A detector is one file, readable with ``torch.load(path, weights_only=True)``: a dict with the format version, the
config, class names, the backbone spec (weights by reference to the offline package / torchvision; the weights
themselves only when fine-tuned, in fp16), the feature mode, the SVMs, the box regressors and the feature scale.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from cvcore.io import atomic_torch_save, load_image_bounded
from cvcore.models import read_model_file
from cvcore.models import resolve_model_path as resolve_model
from rcnn.bbox_regression import BoxRegressor
from rcnn.features import FeatureExtractor, build_feature_net
from rcnn.svm import LinearSVMs

__all__ = ["Detector", "Detections", "FORMAT_VERSION", "MODELS_DIR", "SHIPPED_MODELS", "resolve_model_path"]

FORMAT_VERSION = 2  # 2: backbone["roi_hidden"] (a fully connected RoI head in the shared mode)
READABLE_VERSIONS = (1, 2)
MODELS_DIR = Path(__file__).resolve().parent / "models"
SHIPPED_MODELS = ("bccd", "raccoon", "bccd-fast", "raccoon-fast", "person")


class Detections(NamedTuple):
    """Detections of one image: ``boxes`` float32[N, 4] xyxy (original pixels), ``scores`` float32[N] (SVM margins,
    descending), ``labels`` N class names."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]

    def rescaled(self, scale: tuple[float, float]) -> Detections:
        """The same detections with boxes in pixels ``scale = (sx, sy)`` times larger (a reduced decode mapped back
        to the original image, :class:`cvcore.io.DecodedImage`)."""
        if scale == (1.0, 1.0):
            return self
        factor = np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
        return Detections((self.boxes * factor).astype(np.float32), self.scores, self.labels)


def resolve_model_path(path_or_name: str | Path) -> Path:
    """A detector file path, or a shipped model's name (``bccd``, ``raccoon``, ``bccd-fast``, ``raccoon-fast``,
    ``person``)."""
    return resolve_model(path_or_name, MODELS_DIR, "detector", SHIPPED_MODELS)


def selective_search_proposals(mode: str = "fast", backend: str = "native", max_side: int = 500,
                               top_k: int = 1000, min_size: int = 10, segmenter: str = "auto"
                               ) -> Callable[[np.ndarray], np.ndarray]:
    """Proposal function ``image -> float32[N, 4]``: the ``top_k`` highest-ranked selective-search boxes (sides of
    at least ``min_size`` pixels at the ``max_side`` working size; Felzenszwalb by ``segmenter``)."""

    def propose(image: np.ndarray) -> np.ndarray:
        from rcnn.proposals import selective_search

        return selective_search(image, mode=mode, backend=backend, max_side=max_side, min_size=min_size,
                                max_boxes=top_k, segmenter=segmenter)

    return propose


def training_segmenter(props: dict[str, Any]) -> str:
    """The Felzenszwalb segmenter for a detector's test-time proposals: the one its training proposals came from
    (``segmenter`` in the file), else ``auto``. Detectors without the record were trained with OpenCV's, which the
    native segmenter reproduces (the shipped ones score the same mAP with either; rcnn/models/README.md)."""
    from rcnn import _felzenszwalb

    recorded = props.get("segmenter") or "auto"
    if recorded == "native" and not _felzenszwalb.available():
        warnings.warn("this detector's proposals came from the native Felzenszwalb segmenter, which needs numba "
                      "(pip install numba); using OpenCV's or scikit-image's instead", stacklevel=2)
        return "auto"
    return recorded


def proposal_meta(p: Any) -> dict[str, Any]:
    """What a detector file stores of a :class:`rcnn.config.ProposalConfig`: enough to propose at test time as in
    training (the segmenter resolved, so ``auto`` records the implementation that ran)."""
    from rcnn.proposals import resolve_segmenter

    return {"mode": p.mode, "backend": p.backend, "max_side": p.max_side, "test_per_image": p.test_per_image,
            "min_size": p.min_size, "segmenter": resolve_segmenter(p.segmenter)}


def meta_proposer(props: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The test-time proposal function of a detector's stored proposal settings (:func:`proposal_meta`)."""
    return selective_search_proposals(props["mode"], props["backend"], props["max_side"], props["test_per_image"],
                                      props["min_size"], training_segmenter(props))


class Detector:
    """R-CNN detector (see the module docstring). Build it with :func:`rcnn.train.train` or :meth:`load`.

    Args:
        class_names: C class names.
        extractor: feature extractor (warp or shared mode).
        svms: per-class SVMs on features multiplied by ``feature_scale``.
        regressor: per-class box regressors, or None.
        feature_scale: factor that gave the training features a mean L2 norm of 20.
        propose: ``image -> float32[N, 4]`` ranked proposals.
        nms_iou, score_thr, max_per_image: post-processing (per-class NMS at 0.3 as the paper).
        meta: everything else saved with the model (config, backbone spec, fine-tuned weights, measured mAP).
    """

    def __init__(self, class_names: list[str], extractor: FeatureExtractor, svms: LinearSVMs,
                 regressor: BoxRegressor | None, feature_scale: float, propose: Callable[[np.ndarray], np.ndarray],
                 *, nms_iou: float = 0.3, score_thr: float = -1.5, max_per_image: int = 100,
                 meta: dict[str, Any] | None = None) -> None:
        self.class_names = list(class_names)
        self.extractor, self.svms, self.regressor = extractor, svms, regressor
        self.feature_scale, self.propose = float(feature_scale), propose
        self.nms_iou, self.score_thr, self.max_per_image = nms_iou, score_thr, max_per_image
        self.meta = dict(meta or {})
        self.timings: dict[str, float] = {}  # seconds spent per stage since construction (benchmarks)

    def detect(self, image: np.ndarray | str | Path) -> Detections:
        """Detect objects in an RGB uint8 image ``[H, W, 3]`` or an image file -> :class:`Detections`, in the image's
        pixels (a file over :data:`cvcore.io.WORKING_PIXELS` is decoded reduced and its boxes mapped back)."""
        if isinstance(image, (str, Path)):
            decoded = load_image_bounded(image)
            return self.detect(decoded.image).rescaled(decoded.scale)
        image = np.asarray(image)
        with self._timed("proposals"):
            proposals = self.propose(image)                                        # selective search, ranked
        return self.detect_proposals(image, proposals)

    def detect_proposals(self, image: np.ndarray, proposals: np.ndarray) -> Detections:
        """:meth:`detect` with given proposals (``float32[N, 4]`` xyxy, e.g. computed ahead in another thread)."""
        with self._timed("features"):
            features = self.extractor(image, proposals) * self.feature_scale       # CNN (warp or shared), [N, D]
        with self._timed("svm_nms"):
            return self.detect_from_features(features, proposals, image.shape[:2])

    def detect_from_features(self, features: Tensor, proposals: np.ndarray | Tensor,
                             image_hw: tuple[int, int], regression: bool = True) -> Detections:
        """The part after the CNN: scaled ``features[N, D]`` of ``proposals[N, 4]`` -> detections (``regression``
        False: the proposals' own boxes, for the ablation)."""
        proposals = torch.as_tensor(np.asarray(proposals, np.float32)).reshape(-1, 4)
        scores = self.svms.decision(features)                                      # [N, C] SVM margins
        if self.regressor is not None and regression:
            boxes = self.regressor.refine(features, proposals)                     # [N, C, 4], applied once
        else:
            boxes = proposals[:, None, :].expand(-1, len(self.class_names), 4)
        return self.postprocess(boxes, scores, image_hw)                           # threshold, NMS, top-k

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start

    def postprocess(self, boxes: Tensor, scores: Tensor, image_hw: tuple[int, int],
                    score_thr: float | None = None) -> Detections:
        """Per-class boxes ``[N, C, 4]`` and scores ``[N, C]`` -> threshold (``score_thr``, default the detector's),
        per-class NMS, top ``max_per_image``."""
        num_classes = scores.shape[1]
        labels = torch.arange(num_classes).expand_as(scores).reshape(-1)
        boxes = clip_boxes_to_image(boxes.reshape(-1, 4), tuple(image_hw))
        scores = scores.reshape(-1)
        keep = torch.nonzero(scores >= (self.score_thr if score_thr is None else score_thr)).flatten()
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, self.nms_iou)[: self.max_per_image]
        return Detections(boxes[keep].numpy().astype(np.float32), scores[keep].numpy().astype(np.float32),
                          [self.class_names[i] for i in labels[keep].tolist()])

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        """The plain dict that :meth:`save` writes (weights_only-loadable)."""
        return {
            "format_version": FORMAT_VERSION,
            "class_names": self.class_names,
            "feature_scale": self.feature_scale,
            "svm": self.svms.state_dict(),
            "regressor": None if self.regressor is None else self.regressor.state_dict(),
            "test": {"nms_iou": self.nms_iou, "score_thr": self.score_thr, "max_per_image": self.max_per_image},
            **self.meta,
        }

    def save(self, path: str | Path) -> Path:
        """Write the detector to one file, atomically."""
        return atomic_torch_save(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any], device: str | torch.device = "cpu",
                  propose: Callable[[np.ndarray], np.ndarray] | None = None, where: str = "detector",
                  batch_size: int = 0, proposals: int = 0) -> Detector:
        """Rebuild a detector from :meth:`to_dict` output. ``batch_size``: warp-mode crops per forward pass on this
        machine (0: :func:`rcnn.features.auto_batch_size`); the value the training run used is not a property of the
        model and is not reused. ``proposals``: test-time proposals per image (0: the stored ``test_per_image``; the
        paper: 2000; more boxes cost warp-mode time linearly). An override shows in ``meta["proposals"]`` (and in a
        file saved from this detector); ``meta["config"]`` and ``meta["metrics"]`` stay those of training."""
        version = d.get("format_version")
        if version not in READABLE_VERSIONS:
            raise ValueError(f"{where}: detector format version {version!r}, this code reads "
                             f"{', '.join(map(str, READABLE_VERSIONS))}")
        if proposals < 0:
            raise ValueError(f"proposals per image must be >= 0 (0: the detector's own), got {proposals}")
        if proposals and propose is not None:
            raise ValueError("give either propose (a proposal function) or proposals (a count), not both")
        backbone, feats, props = d["backbone"], d["features"], d["proposals"]
        if proposals:
            props = {**props, "test_per_image": int(proposals)}
        state = backbone.get("state_dict")
        net = build_feature_net(backbone["name"], backbone["layer"], backbone.get("weights", "default"), state,
                                roi_hidden=backbone.get("roi_hidden", 0), pool_size=feats["pool_size"])
        extractor = FeatureExtractor(
            net, feats["mode"], input_size=feats["input_size"], context_padding=feats["context_padding"],
            sampling_ratio=feats["sampling_ratio"], batch_size=batch_size, scales=feats["scales"],
            max_image_side=feats["max_image_side"], pool_size=feats["pool_size"], device=device,
            channels_last=feats.get("channels_last", True), weights_id=backbone.get("weights_id", ""))
        if propose is None:
            propose = meta_proposer(props)
        regressor = BoxRegressor.from_state_dict(d["regressor"]) if d.get("regressor") else None
        meta = {k: v for k, v in d.items()
                if k not in ("format_version", "class_names", "feature_scale", "svm", "regressor", "test")}
        meta["proposals"] = props
        return cls(d["class_names"], extractor, LinearSVMs.from_state_dict(d["svm"]), regressor,
                   d["feature_scale"], propose, meta=meta, **d["test"])

    @classmethod
    def load(cls, path_or_name: str | Path, device: str | torch.device = "cpu",
             propose: Callable[[np.ndarray], np.ndarray] | None = None, batch_size: int = 0,
             proposals: int = 0) -> Detector:
        """Load a detector file (``weights_only=True``) or a shipped model by name (``bccd``, ``raccoon``, ...);
        ``batch_size`` and ``proposals`` as in :meth:`from_dict`."""
        path = resolve_model_path(path_or_name)
        d = read_model_file(path, lambda obj: "svm" in obj, "an R-CNN detector file")
        return cls.from_dict(d, device=device, propose=propose, where=str(path), batch_size=batch_size,
                             proposals=proposals)
