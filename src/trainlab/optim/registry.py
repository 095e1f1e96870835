"""The one table of optimizers: it drives the tests, the demo, the CLI and the docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .lbfgs import LBFGS
from .nadam import NAdam
from .newton import Newton
from .rmsprop import RMSprop
from .sgd import SGD


@dataclass(frozen=True)
class OptimizerSpec:
    """What trainlab knows about one optimizer.

    Attributes:
        name: registry key (also the CLI name).
        cls: the class.
        equation: the update rule in one line (README, ``trainlab optimizers``).
        torch_name: the ``torch.optim`` class with the same math, or None.
        closure: True for full-batch methods whose ``step`` needs a closure.
        variants: hyperparameter sets the parity tests run against torch.optim.
        extra_variants: trainlab-only settings (no torch counterpart) for generic tests.
    """

    name: str
    cls: type
    equation: str
    torch_name: str | None
    closure: bool = False
    variants: tuple[dict[str, Any], ...] = field(default_factory=lambda: ({},))
    extra_variants: tuple[dict[str, Any], ...] = ()


_SPECS = (
    OptimizerSpec(
        "sgd",
        SGD,
        "θ ← θ − η·g   (momentum: v ← μ·v + g; θ ← θ − η·v)",
        "SGD",
        variants=(
            {"lr": 0.05},
            {"lr": 0.05, "momentum": 0.9},
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 0.01},
            {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
            {"lr": 0.05, "momentum": 0.5, "maximize": True},
        ),
        extra_variants=(
            {"lr": 0.05, "momentum": 0.9, "momentum_form": "cs231n", "nesterov": True},
            {"lr": 0.05, "momentum": 0.9, "momentum_form": "ema"},
            {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.1, "decoupled_weight_decay": True},
        ),
    ),
    OptimizerSpec(
        "adagrad",
        Adagrad,
        "G ← G + g²;  θ ← θ − η·g/(√G + ε)",
        "Adagrad",
        variants=(
            {"lr": 0.1},
            {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.01, "initial_accumulator_value": 0.1},
            {"lr": 0.1, "eps": 1e-6, "maximize": True},
        ),
        extra_variants=({"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True},),
    ),
    OptimizerSpec(
        "rmsprop",
        RMSprop,
        "v ← α·v + (1−α)·g²;  θ ← θ − η·g/(√v + ε)",
        "RMSprop",
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01},
            {"lr": 0.01, "centered": True, "alpha": 0.9},
            {"lr": 0.01, "centered": True, "momentum": 0.5, "maximize": True},
        ),
        extra_variants=({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},),
    ),
    OptimizerSpec(
        "adadelta",
        Adadelta,
        "Δθ = −√(E[Δθ²]+ε)/√(E[g²]+ε)·g;  θ ← θ + η·Δθ",
        "Adadelta",
        variants=(
            {},
            {"lr": 0.5, "rho": 0.95, "eps": 1e-5, "weight_decay": 0.01},
            {"maximize": True},
        ),
        extra_variants=({"weight_decay": 0.1, "decoupled_weight_decay": True},),
    ),
    OptimizerSpec(
        "adam",
        Adam,
        "m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;  θ ← θ − η·m̂/(√v̂ + ε)",
        "Adam",
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01, "amsgrad": True},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": 0.01, "eps": 1e-4, "maximize": True},
        ),
        extra_variants=({"lr": 0.01, "bias_correction": False},),
    ),
    OptimizerSpec(
        "adamw",
        AdamW,
        "Adam on g, then θ ← θ·(1 − η·λ) (decoupled weight decay)",
        "AdamW",
        variants=({"lr": 0.01}, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
        extra_variants=({"lr": 0.01, "bias_correction": False},),
    ),
    OptimizerSpec(
        "adamax",
        Adamax,
        "u ← max(β2·u, |g| + ε);  θ ← θ − η/(1−β1ᵗ)·m/u",
        "Adamax",
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.01},
            {"lr": 0.01, "maximize": True},
        ),
        extra_variants=({"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},),
    ),
    OptimizerSpec(
        "nadam",
        NAdam,
        "Adam with Nesterov momentum: θ ← θ − η·(μₜ₊₁·m̂ + (1−μₜ)·ĝ)/(√v̂ + ε)",
        "NAdam",
        variants=(
            {"lr": 0.01},
            {"lr": 0.01, "weight_decay": 0.01, "momentum_decay": 0.01},
            {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True},
        ),
    ),
    OptimizerSpec(
        "lbfgs",
        LBFGS,
        "θ ← θ − t·H̃·g, H̃ from the last m (s, y) pairs; t by strong-Wolfe search",
        "LBFGS",
        closure=True,
        variants=(
            {},
            {"line_search_fn": "strong_wolfe"},
            {"history_size": 3, "max_iter": 5, "lr": 0.5},
        ),
    ),
    OptimizerSpec(
        "newton",
        Newton,
        "θ ← θ − t·(H + λI)⁻¹·g, exact Hessian (small problems only)",
        None,
        closure=True,
        variants=({}, {"line_search_fn": "backtracking"}, {"damping": 0.1}),
    ),
)

OPTIMIZERS: dict[str, OptimizerSpec] = {spec.name: spec for spec in _SPECS}
"""The registry of optimizers: registry name → `OptimizerSpec`, in the lectures' order.

One table drives the CLI and config lookup (``optimizer.name``, through `get`), the generic
tests (each spec's ``variants`` run against torch.optim), the README's list and the plots:
adding an optimizer means adding an entry here.
"""


def get(name: str) -> OptimizerSpec:
    """Look an optimizer up by registry name or class name (case-insensitive)."""
    key = name.lower()
    for spec in _SPECS:
        if key in (spec.name, spec.cls.__name__.lower()):
            return spec
    allowed = ", ".join(OPTIMIZERS)
    raise ValueError(f"Invalid optimizer: {name!r} (unknown; choose one of {allowed})")
