"""Top-down pose on photos: an R-CNN person detector finds the people, the pose model estimates each one's joints.

    from pose import TopDown
    people = TopDown.load("person", "lspet").predict(image)    # list of Person(box, box_score, joints[K, 3])

The detector's boxes are kept when they score at least ``min_score``: by default the threshold stored with the
detector for pose (:func:`person_threshold`: ``pose_thr``, chosen for top-down pose on images its training skipped,
else ``vis_thr``, the score that maximised F1 on its validation split, :mod:`rcnn.train`). The pose model crops
each box as it does a given box (:meth:`pose.estimator.PoseEstimator.crop_for`); with ``detector=None`` it sees the
whole image and returns one person without a box, the single-person behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvcore.io import load_image_bounded
from pose.config import DEFAULT_DETECTOR
from pose.estimator import PoseEstimator

__all__ = ["Person", "TopDown", "DEFAULT_DETECTOR", "person_boxes", "person_threshold", "framing_errors"]


@dataclass
class Person:
    """One person found in an image.

    Attributes:
        box: float32[4] xyxy person box in image pixels, or None (whole image).
        box_score: the detector's score of the box (SVM margin), or None when the box was not detected.
        joints: float32[K, 3] (x, y, score) in image pixels.
    """

    box: np.ndarray | None
    box_score: float | None
    joints: np.ndarray

    def rescaled(self, scale: tuple[float, float]) -> Person:
        """The same person in pixels ``scale = (sx, sy)`` times larger (a reduced decode mapped back to the
        original image): box edges scale, joints (integer = pixel centre) map centre to centre."""
        if scale == (1.0, 1.0):
            return self
        s = np.array(scale, np.float32)
        joints = self.joints.copy()
        joints[:, :2] = (joints[:, :2] + 0.5) * s - 0.5
        box = None if self.box is None else (self.box * np.tile(s, 2)).astype(np.float32)
        return Person(box, self.box_score, joints)


def person_threshold(detector) -> float:
    """The person score threshold stored with a detector: ``pose_thr`` (for top-down pose) when set, else
    ``vis_thr`` (F1-optimal on its validation split), else 0."""
    meta = detector.meta
    return float(meta["pose_thr"] if meta.get("pose_thr") is not None else meta.get("vis_thr", 0.0))


def person_boxes(detections, label: str, min_score: float, max_people: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``label`` boxes of :class:`rcnn.Detections` scoring at least ``min_score``, best first, at most
    ``max_people`` -> (float32[P, 4], float32[P])."""
    keep = [i for i, (lab, s) in enumerate(zip(detections.labels, detections.scores))
            if lab == label and s >= min_score]
    keep = sorted(keep, key=lambda i: -float(detections.scores[i]))[:max_people]
    return (np.asarray(detections.boxes, np.float32)[keep].reshape(-1, 4),
            np.asarray(detections.scores, np.float32)[keep].reshape(-1))


def framing_errors(detected: np.ndarray, annotated: np.ndarray) -> np.ndarray:
    """How detected person boxes frame people, against the annotated people's boxes they were matched to: per pair
    ``(log(side_detected / side_annotated), dx / side_annotated, dy / side_annotated)``, where ``side`` is the longer
    box side (the crop side is proportional to it) and ``(dx, dy)`` the offset of the centres. ``detected`` and
    ``annotated``: float[N, 4] xyxy, row i matched to row i. Returns float64[N, 3] (the ``augment.box_*`` statistics
    are its mean and standard deviations)."""
    d = np.asarray(detected, np.float64).reshape(-1, 4)
    a = np.asarray(annotated, np.float64).reshape(-1, 4)
    side_d = np.maximum(d[:, 2] - d[:, 0], d[:, 3] - d[:, 1])
    side_a = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    shift = ((d[:, :2] + d[:, 2:]) - (a[:, :2] + a[:, 2:])) / 2 / side_a[:, None]
    return np.column_stack([np.log(side_d / side_a), shift])


class TopDown:
    """Person detector + pose estimator.

    Args:
        detector: an :class:`rcnn.Detector` with a ``label`` class, or None (whole image, one person).
        estimator: the :class:`pose.estimator.PoseEstimator`.
        min_score: detector score threshold (None: :func:`person_threshold` of the detector, else 0).
        label: the detector's class for people.
        max_people: at most this many people per image (the best-scoring ones).
    """

    def __init__(self, detector, estimator: PoseEstimator, min_score: float | None = None, label: str = "person",
                 max_people: int = 20) -> None:
        if detector is not None and label not in detector.class_names:
            raise ValueError(f"the person detector has no class {label!r} (classes: "
                             f"{', '.join(detector.class_names)}); use a person detector such as 'person'")
        self.detector, self.estimator, self.label, self.max_people = detector, estimator, label, int(max_people)
        if min_score is None:
            min_score = person_threshold(detector) if detector is not None else 0.0
        self.min_score = float(min_score)

    @classmethod
    def load(cls, detector: str | Path | None = DEFAULT_DETECTOR, pose: str | Path = "lspet", device: str = "auto",
             flip_test: bool | None = None, min_score: float | None = None, label: str = "person",
             max_people: int = 20) -> TopDown:
        """Load a detector (shipped name or file; None or ``"none"``: whole images) and a pose model (name or file)."""
        estimator = PoseEstimator.load(pose, device=device, flip_test=flip_test)
        det = None
        if detector is not None and str(detector).lower() != "none":
            from rcnn import Detector

            det = Detector.load(detector, device=estimator.device)
        return cls(det, estimator, min_score=min_score, label=label, max_people=max_people)

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        return self.estimator.skeleton

    @property
    def joint_names(self) -> list[str]:
        return self.estimator.joint_names

    def propose(self, image: np.ndarray) -> np.ndarray | None:
        """The detector's region proposals for an image (None without a detector): the part of
        :meth:`find_people` that can run ahead in another thread."""
        return None if self.detector is None else self.detector.propose(image)

    def find_people(self, image: np.ndarray, proposals: np.ndarray | None = None
                    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Person boxes float32[P, 4] and scores float32[P] of an RGB image (None, None without a detector);
        ``proposals``: the image's :meth:`propose` boxes, if already made."""
        if self.detector is None:
            return None, None
        det = self.detector.detect(image) if proposals is None else self.detector.detect_proposals(image, proposals)
        return person_boxes(det, self.label, self.min_score, self.max_people)

    def estimate(self, images: Sequence[np.ndarray], boxes: Sequence[np.ndarray | None],
                 scores: Sequence[np.ndarray | None], batch_size: int = 16) -> list[list[Person]]:
        """Poses of given people: per image, boxes float32[P, 4] (None: the whole image as one person) and their
        detector scores (None: not detected) -> per image a list of :class:`Person`, in box order."""
        pairs = []
        for i, bs in enumerate(boxes):
            pairs += [(i, None)] if bs is None else [(i, j) for j in range(len(bs))]
        joints = []
        for k in range(0, len(pairs), max(1, batch_size)):
            chunk = pairs[k:k + batch_size]
            joints.extend(self.estimator.predict_batch([images[i] for i, _ in chunk],
                                                       [None if j is None else boxes[i][j] for i, j in chunk]))
        out: list[list[Person]] = [[] for _ in images]
        for (i, j), pose in zip(pairs, joints):
            box = None if j is None else np.asarray(boxes[i][j], np.float32)
            score = None if j is None or scores[i] is None else float(scores[i][j])
            out[i].append(Person(box, score, pose))
        return out

    def predict(self, image: np.ndarray | str | Path) -> list[Person]:
        """Every person in an image (RGB uint8 ``[H, W, 3]`` or a path): detected boxes, then one pose per box."""
        if not isinstance(image, np.ndarray):  # a file over cvcore.io.WORKING_PIXELS: decoded reduced, mapped back
            decoded = load_image_bounded(image)
            return [p.rescaled(decoded.scale) for p in self.predict(decoded.image)]
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be an H x W x 3 uint8 RGB array, got {image.dtype} {image.shape}")
        boxes, scores = self.find_people(image)
        return self.estimate([image], [boxes], [scores])[0]
