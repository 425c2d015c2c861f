"""Typed configuration of the pose pipeline (loaded from ``configs/pose/*.yaml`` by :func:`cvcore.config.load_config`).

Every field has a default, so ``PoseConfig()`` is a valid (CPU-sized) configuration. Only the ``build_*`` functions in
``pose/`` read these dataclasses; the modules themselves take explicit arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_DETECTOR = "person"  # the shipped R-CNN person detector that `pose` and `pose.TopDown` run by default


@dataclass
class DataConfig:
    """Where the data is and how person-centric crops are cut."""

    root: str = "../shared/data/lspet"
    format: str = "lspet"  # a format understood by cvcore.datasets.load_pose_dataset
    train_split: str = ""  # reader split for training ("train" for LSP / FLIC); "" = the whole annotation file
    val_split: str = ""  # reader split for validation ("test" for LSP / FLIC)
    train_range: tuple[int, ...] = (1, 8000)  # 1-based, inclusive record numbers within the split (im00001 ... im08000)
    val_range: tuple[int, ...] = (8001, 9000)
    input_size: tuple[int, ...] = (128, 128)  # network input (width, height) in pixels
    margin: float = 1.3  # crop side = margin x extent of the annotated joints
    box_margin: float = 1.15  # test time: crop side = box_margin x the longer side of a given person box
    min_crop: float = 48.0  # smallest crop side in original pixels (people with few annotated joints)
    min_visible: int = 6  # training samples need at least this many annotated joints
    context: float = 1.5  # cached training crops cover context x the crop, so augmentation sees real pixels
    cache_dir: str = "cache/pose"  # decoded, cropped images (uint8 .npy); "" disables the on-disk cache
    num_workers: int = 0


@dataclass
class AugmentConfig:
    """Keypoint-aware augmentation (albumentations) applied to training crops."""

    enabled: bool = True
    rotate: float = 30.0  # degrees, uniform in [-rotate, rotate]
    scale: tuple[float, ...] = (0.75, 1.25)
    translate: float = 0.08  # fraction of the crop size
    flip: float = 0.5  # probability of a horizontal flip (left/right joints swapped)
    color_jitter: float = 0.25  # brightness / contrast / saturation strength; 0 disables
    hue: float = 0.05
    # Box jitter: crops framed as a person detector frames people. The crop's side is multiplied by
    # exp(N(box_scale_mean, box_scale_sd)) and its centre moved by N(0, box_shift_sd) x the crop side on each axis,
    # before the affine above. Measured from the shipped person detector's boxes against the annotated people's:
    # pose/models/README.md. 0 = off (the paper: no detector, crops around the annotation).
    box_scale_mean: float = 0.0
    box_scale_sd: float = 0.0
    box_shift_sd: float = 0.0


@dataclass
class CodecConfig:
    """Gaussian heatmap targets and their decoding."""

    stride: int = 4  # input pixels per heatmap cell
    sigma: float = 1.0  # target Gaussian standard deviation, in heatmap cells
    refine: str = "dark"  # "dark", "quarter" or "none"


@dataclass
class PartDetectorConfig:
    """Multi-resolution convolutional part detector (Tompson et al. 2014, Sec. 3)."""

    banks: int = 2  # 1 = full resolution only, 2 = + half, 3 = + quarter
    channels: tuple[int, ...] = (16, 32, 32)  # output channels of the conv layers of each bank
    kernel_size: int = 5
    activation: str = "relu"  # any cvcore.nn activation name
    pool: str = "max"  # "max" or "avg"; the first log2(stride) conv layers are each followed by a 2x2 pooling
    norm: str = "batch"  # "batch" (batch norm after each bank conv; not in the paper) or "none"
    merge: str = "sum"  # "sum" (the paper) or "concat"
    head_kernel: int = 9  # the large convolution after the merge (9x9 in the paper)
    head_channels: tuple[int, ...] = (64, 64)  # the large conv, then 1x1 convs; a final 1x1 gives the K heatmaps
    init: str = "kaiming_normal"  # any cvcore.nn init scheme
    pretrained: str = "none"  # "none" or "mobilenet_v2": ImageNet weights (offline package) for the whole trunk,
    #                           or, with trunk "none", for the first conv of every bank
    share_banks: bool = False  # one set of bank weights applied at every resolution
    trunk: str = "none"  # "none" = the paper's from-scratch conv banks; "mobilenet_v2" = MobileNetV2 features[:N]
    trunk_blocks: int = 4  # N for the MobileNetV2 trunk: 4 -> stride 4 (24 ch), 7 -> stride 8 (32 ch)


@dataclass
class SpatialModelConfig:
    """One step of MRF belief propagation as convolutions (Tompson et al. 2014, Sec. 4)."""

    enabled: bool = True
    graph: str = "all"  # "all" = every ordered pair of joints (fully connected MRF), "skeleton" = limb neighbours
    self_connection: bool = True  # each joint also sees its own part-detector map
    kernel_size: int = 0  # odd; 0 = 2 x max(heatmap size) - 1, so every displacement is covered
    reduce: str = "mean"  # "sum" (the paper's log-sum) or "mean" (geometric mean: output scale independent of |graph|)
    use_fft: bool = True  # FFT (torch.fft.rfft2) or direct conv2d; equal to float tolerance
    histogram_blur: float = 1.0  # Gaussian blur (cells) of the displacement histograms used to initialise kernels
    bias_init: float = -4.0  # raw bias b; SoftPlus(b) is the floor that keeps log finite for missing evidence
    init: str = "identity"  # "identity": starts as the part detector (own map, weight 1; other messages weight 0);
    #                         "histogram": the paper's (all messages weight 1, output scale calibrated on data)


@dataclass
class ModelConfig:
    part_detector: PartDetectorConfig = field(default_factory=PartDetectorConfig)
    spatial_model: SpatialModelConfig = field(default_factory=SpatialModelConfig)


@dataclass
class StageConfig:
    """One training stage: which parameters learn, for how long, with which optimiser and schedule."""

    epochs: float = 10.0  # 0 skips the stage
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "cosine"
    warmup_steps: int = 100


@dataclass
class TrainConfig:
    out_dir: str = "runs/pose/lspet"
    init_from: str = ""  # a pose model file or shipped name (lspet): its matching weights start the first stage
    device: str = "auto"
    threads: int = 0  # torch.set_num_threads; 0 = leave torch's default
    seed: int = 0  # rank r of a distributed run draws its augmentation from seed + r (the model starts identical)
    batch_size: int = 32  # per process: under torchrun the global batch is batch_size x WORLD_SIZE
    sync_batchnorm: bool = False  # under torchrun on CUDA: BatchNorm statistics over the global batch
    grad_clip: float = 5.0
    log_every: int = 20
    checkpoint_every: int = 200
    eval_every: int = 0  # steps between validation PCK evaluations; 0 = at the end of each stage only
    eval_limit: int = 300  # validation images used for the periodic evaluation (the final report uses all)
    # score each sample against its annotation or its left/right exchange, whichever fits (crowd-sourced labels)
    left_right_tolerant: bool = False
    part_detector: StageConfig = field(default_factory=lambda: StageConfig(epochs=12.0, lr=2e-3))
    spatial_model: StageConfig = field(default_factory=lambda: StageConfig(epochs=2.0, lr=1e-3, warmup_steps=20))
    joint: StageConfig = field(default_factory=lambda: StageConfig(epochs=2.0, lr=2e-4, warmup_steps=20))


@dataclass
class EvalConfig:
    alphas: tuple[float, ...] = (0.05, 0.1, 0.2)
    norm: str = "torso"
    flip_test: bool = False


@dataclass
class PoseConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
