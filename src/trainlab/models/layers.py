"""The pieces the builders stack: activations, inverted dropout, a channel axis for 1-D signals.

``ACTIVATIONS`` is the one table of nonlinearities; ``activation("leaky_relu(0.1)")`` parses a
spec string into a module, and the Kaiming initializer reads its gain from the same table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import fail, unit_half_open

# --------------------------------------------------------------------------- activations


@dataclass(frozen=True)
class ActivationSpec:
    """One nonlinearity: how to build it and what the lecture says about it.

    Calling the spec builds the module, so ``ACTIVATIONS[name](...)`` is a factory.

    Attributes:
        factory: builds the module; takes the parameter when there is one.
        equation: f(x) in one line (docs, CLI).
        parameter: name of the optional parameter in ``"name(value)"`` specs, or None.
        default: the parameter's default (torch's).
        gain: the Kaiming gain g(parameter) with Var(W) = g²/fan, or None where no
            standard gain exists (ELU, GELU).
        note: the lecture's one-line verdict.
    """

    factory: Callable[..., nn.Module]
    equation: str
    parameter: str | None = None
    default: float | None = None
    gain: Callable[[float | None], float] | None = None
    note: str = ""

    def __call__(self, *args: float) -> nn.Module:
        return self.factory(*args)


ACTIVATIONS: dict[str, ActivationSpec] = {
    "sigmoid": ActivationSpec(
        nn.Sigmoid,
        "σ(x) = 1/(1 + e^−x)",
        gain=lambda _: 1.0,
        note="saturates at both ends and is not zero-centred: gradients vanish",
    ),
    "tanh": ActivationSpec(
        nn.Tanh,
        "tanh(x) = (e^x − e^−x)/(e^x + e^−x)",
        gain=lambda _: 5.0 / 3.0,
        note="zero-centred but still saturates: gradients vanish",
    ),
    "relu": ActivationSpec(
        nn.ReLU,
        "ReLU(x) = max(0, x)",
        gain=lambda _: math.sqrt(2.0),
        note="no saturation for x > 0; a unit whose input stays negative dies",
    ),
    "leaky_relu": ActivationSpec(
        nn.LeakyReLU,
        "LeakyReLU(x) = max(αx, x)",
        parameter="negative_slope",
        default=0.01,
        gain=lambda alpha: math.sqrt(2.0 / (1.0 + alpha**2)),
        note="a small slope α for x < 0 keeps units alive",
    ),
    "elu": ActivationSpec(
        nn.ELU,
        "ELU(x) = x if x > 0 else α(e^x − 1)",
        parameter="alpha",
        default=1.0,
        note="smooth, negative outputs push the mean towards zero",
    ),
    "gelu": ActivationSpec(
        nn.GELU,
        "GELU(x) = x·Φ(x)",
        note="a smooth ReLU, used in transformers",
    ),
}
"""The registry of nonlinearities: name → `ActivationSpec` (builder, equation, Kaiming
gain, the lecture's verdict).

`activation` and the model builders look names (``"relu"``, ``"leaky_relu(0.1)"``) up
here; the CLI, the docs and the initialization gains read the same table.
"""

_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\(\s*([^()]*?)\s*\))?\s*$")


def activation_forms() -> str:
    """The accepted spec strings, e.g. ``'relu', 'leaky_relu', 'leaky_relu(<negative_slope>)'``."""
    forms = []
    for name, spec in ACTIVATIONS.items():
        forms.append(repr(name))
        if spec.parameter is not None:
            forms.append(repr(f"{name}(<{spec.parameter}>)"))
    return ", ".join(forms)


def parse_activation(spec: str) -> tuple[str, float | None]:
    """Split ``"leaky_relu(0.1)"`` into ``("leaky_relu", 0.1)``; the parameter defaults.

    Raises:
        ValueError: ``Invalid activation: 'swish' (must be one of ...)``.
    """
    error = fail("activation", spec, f"must be one of {activation_forms()}")
    match = _SPEC.match(spec) if isinstance(spec, str) else None
    if match is None or match.group(1) not in ACTIVATIONS:
        raise error
    name, argument = match.groups()
    entry = ACTIVATIONS[name]
    if argument is None:
        return name, entry.default
    if entry.parameter is None:
        raise error
    try:
        value = float(argument)
    except ValueError:
        raise error from None
    if not math.isfinite(value) or value < 0:
        raise fail("activation", spec, f"{entry.parameter} must be a finite number >= 0")
    return name, value


def activation(spec: str) -> nn.Module:
    """Build the nonlinearity named by ``spec``.

    Args:
        spec: ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"leaky_relu"`` or ``"leaky_relu(α)"``
            (default α = 0.01), ``"elu"`` or ``"elu(α)"`` (default α = 1.0), ``"gelu"``.

    Returns:
        A fresh module, e.g. ``nn.LeakyReLU(0.1)`` for ``"leaky_relu(0.1)"``.
    """
    name, value = parse_activation(spec)
    entry = ACTIVATIONS[name]
    return entry() if entry.parameter is None else entry(value)


# --------------------------------------------------------------------------- dropout


class InvertedDropout(nn.Module):
    """Inverted dropout: drop each unit with probability p, rescale the survivors.

    Train mode::

        m_i ~ Bernoulli(1 − p)        (keep with probability 1 − p)
        y_i = x_i · m_i / (1 − p)     so that E[y_i] = x_i

    Eval mode: y = x. Scaling at train time (not at test time, as in the original paper)
    is what makes the test-time network the plain one.

    This is exactly ``nn.Dropout``'s definition (same mask law, same 1/(1 − p) scale, and on
    CPU the same random draws: under one seed both give identical outputs); it is written
    out here to show the mechanism.

    Args:
        p: probability of dropping a unit, in [0, 1) (default: 0.5). p = 0 is the identity.

    References:
        Srivastava et al., "Dropout: A Simple Way to Prevent Neural Networks from
        Overfitting", JMLR 2014.
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        unit_half_open("dropout probability (p)", p)  # p = 1 would divide by zero
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each unit with probability p and scale the survivors by 1/(1 − p).

        In evaluation mode, or with p = 0, ``x`` is returned unchanged.
        """
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = torch.empty_like(x).bernoulli_(keep)
        return x * (mask / keep)  # scaling the mask first matches nn.Dropout bit for bit

    def extra_repr(self) -> str:
        """``p=...``, shown in the module's ``repr``."""
        return f"p={self.p}"


# --------------------------------------------------------------------------- shapes


class Unsqueeze(nn.Module):
    """Insert an axis of size 1: turns a batch of signals (N, L) into (N, 1, L) for Conv1d."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with an axis of size 1 inserted at ``dim``."""
        return x.unsqueeze(self.dim)

    def extra_repr(self) -> str:
        """``dim=...``, shown in the module's ``repr``."""
        return f"dim={self.dim}"
