"""Dataset readers into canonical records, joint definitions, and the prediction-file formats.

Every annotation format is converted here and nowhere else (conventions in :mod:`cvcore.datasets.records`):

* detection: PASCAL VOC XML (:func:`read_voc`), COCO boxes (:func:`read_coco_detection`), PASCAL 1.00 text
  (Penn-Fudan, :func:`read_pennfudan`), person boxes of a pose dataset (:func:`person_detection_dataset`)
  -> :class:`DetectionRecord`;
* pose: LSP / LSPET ``joints.mat`` (:func:`read_lsp`, :func:`read_lspet`), FLIC ``examples.mat`` (:func:`read_flic`),
  MPII JSON (:func:`read_mpii`), COCO keypoints (:func:`read_coco_keypoints`) -> :class:`PoseRecord`;
* any of them from a path: :func:`load_detection_dataset`, :func:`load_pose_dataset`;
* predictions: :func:`write_detections` / :func:`read_detections`, :func:`write_poses` / :func:`read_poses`,
  :func:`detections_to_coco`.
"""

from .auto import (
    DETECTION_FORMATS,
    POSE_FORMATS,
    detect_detection_format,
    detect_pose_format,
    load_detection_dataset,
    load_pose_dataset,
)
from .coco import read_coco_detection, read_coco_keypoints
from .flic import read_flic
from .lsp import read_lsp, read_lspet
from .mpii import read_mpii
from .pennfudan import pascal_text, read_pennfudan
from .person_boxes import PERSON_BOX_MARGIN, joints_box, person_detection_dataset
from .predictions import (
    ImageDetections,
    ImagePoses,
    PersonPose,
    PredictionFileError,
    detection_entry,
    detections_to_coco,
    poses_entry,
    read_detections,
    read_poses,
    write_coco_results,
    write_detections,
    write_poses,
)
from .records import (
    COCO,
    COCO_FLIP_PAIRS,
    COCO_JOINTS,
    COCO_SKELETON,
    FLIC,
    FLIC_FLIP_PAIRS,
    FLIC_JOINTS,
    FLIC_SKELETON,
    LSP,
    LSP_FLIP_PAIRS,
    LSP_JOINTS,
    LSP_SKELETON,
    MPII,
    MPII_FLIP_PAIRS,
    MPII_JOINTS,
    MPII_SKELETON,
    SKELETONS,
    DatasetError,
    DatasetWarning,
    DetectionDataset,
    DetectionRecord,
    PoseDataset,
    PoseRecord,
    Skeleton,
    flip_permutation,
)
from .voc import VOC_CLASSES, read_voc, voc_xml

__all__ = [
    "DetectionRecord", "PoseRecord", "DetectionDataset", "PoseDataset", "Skeleton", "DatasetError", "DatasetWarning",
    "read_voc", "voc_xml", "read_coco_detection", "read_coco_keypoints", "read_lsp", "read_lspet", "read_flic",
    "read_mpii", "read_pennfudan", "pascal_text", "joints_box", "person_detection_dataset", "PERSON_BOX_MARGIN",
    "load_detection_dataset", "load_pose_dataset", "detect_detection_format", "detect_pose_format",
    "POSE_FORMATS", "DETECTION_FORMATS", "VOC_CLASSES",
    "write_detections", "read_detections", "detections_to_coco", "write_coco_results", "write_poses", "read_poses",
    "detection_entry", "poses_entry",
    "ImageDetections", "ImagePoses", "PersonPose", "PredictionFileError",
    "LSP", "LSP_JOINTS", "LSP_FLIP_PAIRS", "LSP_SKELETON", "FLIC", "FLIC_JOINTS", "FLIC_FLIP_PAIRS", "FLIC_SKELETON",
    "MPII", "MPII_JOINTS", "MPII_FLIP_PAIRS", "MPII_SKELETON", "COCO", "COCO_JOINTS", "COCO_FLIP_PAIRS",
    "COCO_SKELETON", "SKELETONS", "flip_permutation",
]
