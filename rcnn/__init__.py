"""R-CNN (Girshick et al. 2014): selective search, context-padded warps, CNN features, per-class SVMs with
hard-negative mining, bounding-box regression, per-class NMS. ``from rcnn import Detector``."""

from rcnn.detector import Detections, Detector

__all__ = ["Detector", "Detections"]
