"""Weight initialisation by scheme name, applied to every conv / linear layer of a module (biases set to zero)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "init_weights"]

_ALIASES = {
    "glorot_uniform": "xavier_uniform",
    "glorot_normal": "xavier_normal",
    "he_uniform": "kaiming_uniform",
    "he_normal": "kaiming_normal",
}
INIT_SCHEMES = ("xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "small_normal",
                *_ALIASES)

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str, *, nonlinearity: str = "relu", negative_slope: float = 0.0,
                 std: float = 0.01) -> nn.Module:
    """Initialise the weights of every ``nn.Linear`` / ``nn.Conv*`` / ``nn.ConvTranspose*`` in ``module``; zero biases.

    Schemes (fan computed by ``torch.nn.init`` from the weight shape, receptive field included):

    * ``xavier_uniform`` / ``glorot_uniform``: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out));
    * ``xavier_normal`` / ``glorot_normal``: N(0, gain^2 * 2 / (fan_in + fan_out));
    * ``kaiming_uniform`` / ``he_uniform``: U(-b, b), b = gain * sqrt(3 / fan_in);
    * ``kaiming_normal`` / ``he_normal``: N(0, gain^2 / fan_in);
    * ``small_normal``: N(0, std^2), std = 0.01 by default (AlexNet / R-CNN fine-tuning layers).

    ``gain = torch.nn.init.calculate_gain(nonlinearity, negative_slope)`` (sqrt(2) for relu); Xavier uses it too.
    Other layers (batch norm, ...) keep torch's defaults. Returns ``module`` for chaining.
    """
    key = _ALIASES.get(scheme.lower(), scheme.lower())
    if key not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme '{scheme}' (choose from {', '.join(INIT_SCHEMES)})")
    gain = nn.init.calculate_gain(nonlinearity, negative_slope if nonlinearity == "leaky_relu" else None)
    for layer in module.modules():
        if not isinstance(layer, _LAYERS):
            continue
        w = layer.weight
        if key == "xavier_uniform":
            nn.init.xavier_uniform_(w, gain=gain)
        elif key == "xavier_normal":
            nn.init.xavier_normal_(w, gain=gain)
        elif key == "kaiming_uniform":
            nn.init.kaiming_uniform_(w, a=negative_slope, mode="fan_in", nonlinearity=nonlinearity)
        elif key == "kaiming_normal":
            nn.init.kaiming_normal_(w, a=negative_slope, mode="fan_in", nonlinearity=nonlinearity)
        else:
            nn.init.normal_(w, mean=0.0, std=std)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    return module
