"""Typed configuration of the R-CNN pipeline (loaded from ``configs/rcnn/*.yaml`` by :func:`cvcore.config.load_config`).

Each section maps to one stage. Defaults are the CPU settings used for the shipped detectors; the paper's settings
are in ``configs/rcnn/voc07_alexnet.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DataSource:
    """One dataset of a run and its split (rules in :mod:`rcnn.data`)."""

    root: str = ""                      # VOC / Penn-Fudan / pose dataset folder, VOC split file or COCO .json
    format: str = "auto"                # auto | voc | coco | pennfudan | poses (person boxes from annotated joints)
    train_split: str | None = "train"   # ImageSets/Main/<split>.txt; None with val_every > 0 splits the sorted list
    val_split: str | None = "val"
    val_every: int = 0                  # > 0: every val_every-th image of the sorted list is validation (Raccoon)
    train_range: list[int] = field(default_factory=list)  # [first, last], 1-based: training images by position
    val_range: list[int] = field(default_factory=list)    # ... validation images (LSPET: [8001, 9000])
    train_every: int = 1                # > 1: every train_every-th training image only (CPU budget)
    val_stride: int = 1                 # > 1: every val_stride-th validation image only


@dataclass
class DataConfig(DataSource):
    """The run's data: the fields inherited from :class:`DataSource` describe its one dataset, or ``sources`` lists
    several (then the inherited split fields are unused)."""

    sources: list[DataSource] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)  # empty: every class found in the annotations, sorted
    use_difficult: bool = False         # difficult boxes as SVM positives (the paper: no)
    max_images: int = 0                 # > 0: only the first images of each split (quick runs)


@dataclass
class ProposalConfig:
    mode: str = "fast"                  # selective search strategy set: fast | quality | single
    backend: str = "native"
    max_side: int = 500                 # longer image side before selective search (the original code: 500)
    train_per_image: int = 500          # top-ranked proposals kept per training image (paper: all, ~2,000)
    test_per_image: int = 1000          # ... per test image
    min_size: int = 10                  # boxes narrower or shorter than this (px of the resized image) are dropped
    segmenter: str = "auto"             # Felzenszwalb implementation (native backend): auto | native | opencv |
                                        # skimage; the resolved name is stored in the detector and used at test time


@dataclass
class FeatureConfig:
    mode: Literal["warp", "shared"] = "warp"   # warp: CNN per warped crop (R-CNN); shared: CNN once per image (SPPnet)
    backbone: str = "mobilenet_v2"
    layer: str = "pool"                 # mobilenet_v2/resnet: pool; alexnet/vgg16: pool5 | fc6 | fc7
    weights: str = "default"            # default | none | a .pth file | a torchvision weights enum name
    input_size: int = 128               # warp: side of the warped crop (paper: 227)
    context_padding: int = 16           # warp: context at the warped scale (paper: 16)
    sampling_ratio: int = 2             # warp: bilinear samples per output pixel and axis (roi_align)
    scales: list[int] = field(default_factory=lambda: [600])  # shared: shorter image side(s) in px
    max_image_side: int = 1400          # shared: cap on the longer side
    pool_size: int = 2                  # shared: roi_align grid per proposal on the conv map of ``layer``
    roi_hidden: int = 0                 # shared: > 0 adds a fully connected layer (+ ReLU) of this size on the grid
                                        # (Fast R-CNN fc6); its output is the feature. Trained by fine-tuning.
    batch_size: int = 0                 # warp: crops per forward pass; 0 = auto (rcnn.features.auto_batch_size:
                                        # ~200k input pixels on the CPU, e.g. 16 crops of 112 px; 128 on CUDA)
    target_norm: float = 20.0           # features rescaled to this mean L2 norm (paper: 20)
    channels_last: bool = True


@dataclass
class FinetuneConfig:
    enabled: bool = False
    steps: int = 300
    lr: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 0.0005
    fg_per_batch: int = 32
    bg_per_batch: int = 96
    fg_iou: float = 0.5
    bg_iou: float = 0.5                 # background: max IoU < bg_iou with every ground-truth box
    freeze_blocks: int = 0              # leading backbone blocks kept frozen (saves CPU time)
    bg_iou_min: float = 0.0             # background: max IoU >= this (Fast R-CNN: 0.1; R-CNN: 0)
    images_per_batch: int = 4           # images sampled per batch (shared mode: each one runs through the trunk)
    box_loss_weight: float = 1.0        # shared mode: weight of the smooth-L1 box regression loss (Fast R-CNN)
    lr_step_at: float = 0.0             # lr x 0.1 after this fraction of the steps (R-CNN: 0.5, Fast R-CNN: 0.75);
    #                                     0: constant
    checkpoint_every: int = 50
    log_every: int = 10


@dataclass
class SVMConfig:
    backend: Literal["sklearn", "torch"] = "sklearn"
    C: float = 0.001
    bias_multiplier: float = 10.0
    pos_weight: float = 2.0
    neg_iou: float = 0.3                # negatives: IoU < neg_iou with every ground-truth box of the class
    hard_threshold: float = -1.0001     # a negative is hard when its score is above this
    evict_threshold: float = -1.2       # cached negatives scoring below this are dropped at each retrain
    retrain_every: int = 2000           # retrain once this many new hard negatives were added
    max_cache: int = 20000              # bound on cached negatives per class (hardest kept)
    first_negatives: int = 2000         # random negatives that seed the first model
    workers: int = 0                    # classes retrained at once in threads (0: one per core, at most one per class)


@dataclass
class RegressionConfig:
    enabled: bool = True
    min_iou: float = 0.6
    lam: float = 1000.0


@dataclass
class TestConfig:
    nms_iou: float = 0.3
    score_thr: float = -1.5             # SVM margin; low so that VOC AP sees the whole ranking
    max_per_image: int = 100


@dataclass
class TrainConfig:
    out_dir: str = "runs/rcnn/default"
    cache_dir: str = "runs/cache"       # proposals and features, shared between runs (keys are content hashes)
    seed: int = 0
    device: str = "auto"
    num_threads: int = 0                # 0: torch default
    metric: Literal["voc07", "voc12"] = "voc07"
    workers: int = 1                    # threads preparing the next images while the CNN runs
    stream_features: bool = False       # SVMs / regression / evaluation read each image's features from the cache
    #                                     when needed instead of holding all of them in memory


@dataclass
class RCNNConfig:
    data: DataConfig = field(default_factory=DataConfig)
    proposals: ProposalConfig = field(default_factory=ProposalConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    svm: SVMConfig = field(default_factory=SVMConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    test: TestConfig = field(default_factory=TestConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
