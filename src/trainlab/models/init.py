"""Weight initialization: the lecture's schemes, with the variance math written out.

Every scheme draws W with mean 0 and a chosen variance; they differ only in that variance::

    normal          Var(W) = std²                    (the lecture's "small random numbers")
    xavier          Var(W) = gain² · 2/(fan_in + fan_out)
    kaiming         Var(W) = gain² / fan             (fan = fan_in or fan_out; gain² = 2 for ReLU)

The ``_uniform`` variants draw U(−a, a) with a = √3·std, which has the same variance
(Var of U(−a, a) is a²/3). ``INIT_SCHEMES`` is the registry; ``init_`` applies one to a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._checks import fail, nonnegative, positive
from .layers import ACTIVATIONS, parse_activation

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MODES = ("fan_in", "fan_out")


def fans(weight: torch.Tensor) -> tuple[int, int]:
    """fan_in and fan_out of a Linear (out, in) or Conv (out, in, *kernel) weight.

    fan_in = in · k,  fan_out = out · k,  with k the number of kernel elements (1 for Linear).
    """
    if weight.dim() < 2:
        raise fail("weight shape", tuple(weight.shape), "needs at least 2 dimensions")
    out_channels, in_channels = weight.shape[:2]
    kernel = math.prod(weight.shape[2:])
    return in_channels * kernel, out_channels * kernel


def kaiming_gain(nonlinearity: str = "relu", negative_slope: float | None = None) -> float:
    """Kaiming gain g, so that Var(W) = g²/fan keeps the activations' scale through a layer.

    g = 1 (linear, sigmoid), 5/3 (tanh), √2 (ReLU), √(2/(1 + α²)) (leaky ReLU, slope α).

    Args:
        nonlinearity: ``"linear"`` or an activation spec such as ``"leaky_relu(0.1)"``.
        negative_slope: α for ``"leaky_relu"`` (default: the spec's, else 0.01).
    """
    if nonlinearity == "linear":
        name, value = "linear", None
    else:
        name, value = parse_activation(nonlinearity)
    if negative_slope is not None:
        if name != "leaky_relu":
            raise fail("negative_slope", negative_slope, "only for nonlinearity='leaky_relu'")
        nonnegative("negative_slope", negative_slope)
        value = float(negative_slope)
    if name == "linear":
        return 1.0
    entry = ACTIVATIONS[name]
    if entry.gain is None:
        with_gain = ", ".join(repr(n) for n, e in ACTIVATIONS.items() if e.gain is not None)
        raise fail("nonlinearity", nonlinearity, f"no Kaiming gain; use 'linear', {with_gain}")
    return entry.gain(value)


# --------------------------------------------------------------------------- samplers


@torch.no_grad()
def _fill_normal(weight: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """W ~ N(0, std²)."""
    weight.normal_(0.0, std, generator=generator)


@torch.no_grad()
def _fill_uniform(weight: torch.Tensor, std: float, generator: torch.Generator | None) -> None:
    """W ~ U(−a, a) with a = √3·std, so Var(W) = a²/3 = std²."""
    bound = math.sqrt(3.0) * std
    weight.uniform_(-bound, bound, generator=generator)


def xavier_std(weight: torch.Tensor, gain: float = 1.0) -> float:
    """std = gain · √(2/(fan_in + fan_out))  (Glorot & Bengio, 2010)."""
    positive("gain", gain)
    fan_in, fan_out = fans(weight)
    return float(gain) * math.sqrt(2.0 / (fan_in + fan_out))


def kaiming_std(
    weight: torch.Tensor,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    negative_slope: float | None = None,
) -> float:
    """std = g/√fan, e.g. √(2/fan_in) for ReLU  (He et al., 2015).

    ``mode="fan_in"`` preserves the activations' variance in the forward pass,
    ``"fan_out"`` the gradients' variance in the backward pass.
    """
    if mode not in MODES:
        raise fail("mode", mode, "must be 'fan_in' or 'fan_out'")
    fan_in, fan_out = fans(weight)
    fan = fan_in if mode == "fan_in" else fan_out
    return kaiming_gain(nonlinearity, negative_slope) / math.sqrt(fan)


# --------------------------------------------------------------------------- schemes


def zeros_(weight: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
    """W = 0. Every unit computes the same thing and gets the same gradient: no symmetry
    breaking, which is the lecture's reason not to use it for weights."""
    with torch.no_grad():
        weight.zero_()


def normal_(
    weight: torch.Tensor, *, std: float = 0.01, generator: torch.Generator | None = None
) -> None:
    """W ~ N(0, std²) (default: std = 0.01). In deep nets activations shrink layer by layer."""
    positive("std", std)
    _fill_normal(weight, float(std), generator)


def xavier_normal_(
    weight: torch.Tensor, *, gain: float = 1.0, generator: torch.Generator | None = None
) -> None:
    """W ~ N(0, σ²), σ² = gain² · 2/(fan_in + fan_out) (default: gain = 1)."""
    _fill_normal(weight, xavier_std(weight, gain), generator)


def xavier_uniform_(
    weight: torch.Tensor, *, gain: float = 1.0, generator: torch.Generator | None = None
) -> None:
    """W ~ U(−a, a), a = gain · √(6/(fan_in + fan_out)) (default: gain = 1)."""
    _fill_uniform(weight, xavier_std(weight, gain), generator)


def kaiming_normal_(
    weight: torch.Tensor,
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    negative_slope: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """W ~ N(0, σ²), σ² = g²/fan; g² = 2 for ReLU, 2/(1 + α²) for leaky ReLU."""
    _fill_normal(weight, kaiming_std(weight, mode, nonlinearity, negative_slope), generator)


def kaiming_uniform_(
    weight: torch.Tensor,
    *,
    mode: str = "fan_in",
    nonlinearity: str = "relu",
    negative_slope: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """W ~ U(−a, a), a = g · √(3/fan); g² = 2 for ReLU, 2/(1 + α²) for leaky ReLU."""
    _fill_uniform(weight, kaiming_std(weight, mode, nonlinearity, negative_slope), generator)


@dataclass(frozen=True)
class InitScheme:
    """One initialization scheme (its Var(W) is in the module docstring).

    Attributes:
        fill: fills a weight in place; takes ``generator=`` and the keywords below.
        keywords: the keywords ``init_`` accepts for it, besides ``generator``.
    """

    fill: Callable[..., None]
    keywords: tuple[str, ...] = ()


_KAIMING_KEYWORDS = ("mode", "nonlinearity", "negative_slope")

INIT_SCHEMES: dict[str, InitScheme] = {
    "zeros": InitScheme(zeros_),
    "normal": InitScheme(normal_, ("std",)),
    "xavier_normal": InitScheme(xavier_normal_, ("gain",)),
    "xavier_uniform": InitScheme(xavier_uniform_, ("gain",)),
    "kaiming_normal": InitScheme(kaiming_normal_, _KAIMING_KEYWORDS),
    "kaiming_uniform": InitScheme(kaiming_uniform_, _KAIMING_KEYWORDS),
}
"""The registry of initialization schemes: name → `InitScheme` (its fill function and the
keywords it accepts).

`init_` looks ``scheme`` up here; configs (``model.init``), the CLI and the tests use the
same names.
"""


def init_(
    model: nn.Module, scheme: str, *, generator: torch.Generator | None = None, **kw: Any
) -> nn.Module:
    """Initialize ``model`` in place with ``scheme`` and return it.

    Linear and Conv weights get the scheme, their biases 0; BatchNorm gets γ = 1, β = 0.
    Modules are visited in ``model.modules()`` order, so one seeded ``generator`` makes the
    result reproducible.

    Args:
        model: the network.
        scheme: a key of ``INIT_SCHEMES``.
        generator: random source (default: torch's global one).
        **kw: the scheme's keywords, e.g. ``std=0.01``, ``gain=1.0``,
            ``mode="fan_out"``, ``nonlinearity="leaky_relu"``, ``negative_slope=0.1``.

    Example:
        >>> init_(mlp(64, [128], 10), "kaiming_normal", generator=torch.Generator().manual_seed(0))
    """
    if scheme not in INIT_SCHEMES:
        raise fail("init scheme", scheme, f"must be one of {', '.join(map(repr, INIT_SCHEMES))}")
    entry = INIT_SCHEMES[scheme]
    for key in kw:
        if key not in entry.keywords:
            allowed = ", ".join(entry.keywords) or "none"
            raise fail(f"keyword for {scheme!r}", key, f"allowed: {allowed}")
    for module in model.modules():
        if isinstance(module, WEIGHTED):
            entry.fill(module.weight, generator=generator, **kw)
            if module.bias is not None:
                zeros_(module.bias)
        elif isinstance(module, NORMS) and module.affine:
            with torch.no_grad():
                module.weight.fill_(1.0)
                module.bias.zero_()
    return model
