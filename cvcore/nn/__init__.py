"""Building blocks selectable by name from a config, shared by the detection and pose pipelines."""

from cvcore.nn.activations import ACTIVATIONS, Maxout, build_activation, out_channels
from cvcore.nn.gradcheck import check_gradients
from cvcore.nn.init import INIT_SCHEMES, init_weights
from cvcore.nn.losses import (
    LOSSES,
    BinaryHingeLoss,
    HeatmapMSELoss,
    MultiClassHingeLoss,
    SquaredHingeLoss,
    build_loss,
)
from cvcore.nn.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler, parameter_groups
from cvcore.nn.regularization import PENALTIES, penalty, weight_parameters

__all__ = [
    "ACTIVATIONS", "INIT_SCHEMES", "LOSSES", "OPTIMIZERS", "PENALTIES", "SCHEDULERS",
    "BinaryHingeLoss", "HeatmapMSELoss", "Maxout", "MultiClassHingeLoss", "SquaredHingeLoss",
    "build_activation", "build_loss", "build_optimizer", "build_scheduler", "check_gradients", "init_weights",
    "out_channels", "parameter_groups", "penalty", "weight_parameters",
]
