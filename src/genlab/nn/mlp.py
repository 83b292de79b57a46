"""MLP stacks shared by the GAN, VAE and autoencoder."""

from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def mlp(
    sizes: list[int] | tuple[int, ...],
    activation: str = "leaky_relu",
    leaky_slope: float = 0.2,
    dropout: float = 0.0,
    batch_norm: bool = False,
    spectral_norm: bool = False,
    final_activation: str | None = None,
) -> nn.Sequential:
    """Linear layers sizes[0] -> ... -> sizes[-1]; hidden layers get [BN] + activation + [dropout]."""
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(fan_in, fan_out)
        layers.append(_spectral_norm(linear) if spectral_norm else linear)
        is_last = index == len(sizes) - 2
        if not is_last:
            if batch_norm:
                layers.append(nn.BatchNorm1d(fan_out))
            layers.append(_activation(activation, leaky_slope))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        elif final_activation:
            layers.append(_activation(final_activation, leaky_slope))
    return nn.Sequential(*layers)


_ACTIVATION_LAYERS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "silu": nn.SiLU, "elu": nn.ELU}
ACTIVATIONS = ("leaky_relu", *_ACTIVATION_LAYERS)


def _activation(name: str, leaky_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    if name not in _ACTIVATION_LAYERS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return _ACTIVATION_LAYERS[name]()
