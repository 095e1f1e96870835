"""The activations check of ``trainlab doctor``: each layer's output at initialization.

[`initialization_check`][trainlab.diagnose.initialization_check] runs one forward with hooks on
every nonlinearity and every Linear/Conv layer, summarizes each output in a `LayerStats` (mean,
std, saturated fraction, dead units, identical units) and turns the table into the lecture's
verdicts on the initialization: activations that collapse towards 0 or explode with depth, saturated
tanh/sigmoid units, dead ReLUs and units that never break symmetry. It also holds what the
forward checks share: `training_copy`, the deterministic copy of the model they run
(train mode, dropout off), `on_device` and `json_number`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..models.layers import InvertedDropout
from .findings import Finding
from .gradcheck import check_batch, deep_copy, forward, model_device, rng_restored

#: Modules switched off (eval mode) in the copies the checks run: regularization off.
DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    InvertedDropout,
)
#: Layers whose outputs are the pre-activations checked for identical units.
WEIGHTED = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Saturating nonlinearities and where they saturate (gradient σ'(z) ≈ 0).
SATURATION: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.Tanh: lambda h: h.abs() > 0.99,
    nn.Sigmoid: lambda h: (h < 0.01) | (h > 0.99),
}
#: Rectifiers whose gradient is exactly 0 where the output is 0: units can die.
RECTIFIERS = (nn.ReLU, nn.ReLU6)
#: Nonlinearities whose outputs the initialization check reports.
NONLINEARITIES = (
    *SATURATION,
    *RECTIFIERS,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)

# --- thresholds (each with the reason it is where it is) ------------------------------------

#: std of the last reported layer over the first's: below these, the signal collapsed
#: (N(0, 0.01) in a 10-layer tanh net gives ~1e-10; Xavier ~0.4; Xavier on ReLU ~0.03).
COLLAPSE_WARN, COLLAPSE_FAIL = 0.1, 1e-2
#: Growth of the std across layers (or above std 1) beyond which activations explode.
EXPLODE_WARN, EXPLODE_FAIL = 10.0, 100.0
#: Fraction of saturated outputs of a tanh/sigmoid layer (Kaiming-tanh: ~0.1; N(0, 1): ~0.7).
SATURATION_WARN, SATURATION_FAIL = 0.2, 0.5
#: Fraction of ReLU units never active on the batch (Kaiming, 10 layers: ≤ 0.16).
DEAD_WARN, DEAD_FAIL = 0.25, 0.5
#: Units are "identical" when they differ by less than this fraction of the layer's scale.
IDENTICAL_TOLERANCE = 1e-6


# --- copies that run deterministically ------------------------------------------------------


def training_copy(model: nn.Module, *, dropout: bool = False) -> nn.Module:
    """A deep copy in train mode (batch norm uses batch statistics), dropout off by default."""
    work = deep_copy(model).train()
    if not dropout:
        for module in work.modules():
            if isinstance(module, DROPOUTS):
                module.eval()
    return work


def on_device(model: nn.Module, *tensors: Tensor) -> list[Tensor]:
    """The tensors moved to the device of the model's parameters."""
    device = model_device(model)
    return [t.to(device) for t in tensors]


def json_number(value: float | None) -> float | None:
    """A JSON number: None for NaN and ±inf."""
    return value if value is not None and math.isfinite(value) else None


def _count(n: int, noun: str) -> str:
    """``"1 layer"``, ``"3 layers"``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


# --- activations at initialization ----------------------------------------------------------


@dataclass
class LayerStats:
    """What one layer's output looked like on the batch."""

    name: str
    kind: str
    units: int
    mean: float
    std: float
    saturated: float | None = None  # tanh/sigmoid: fraction of outputs in the flat tails
    dead: float | None = None  # ReLU: fraction of units never active on the batch
    identical: bool = False  # every unit outputs the same value on every example

    def to_dict(self) -> dict[str, Any]:
        return {k: json_number(v) if isinstance(v, float) else v for k, v in vars(self).items()}


def layer_stats(name: str, module: nn.Module, output: Tensor) -> LayerStats:
    """Mean, std, saturation, dead units and identical units of one layer's output.

    Units are along dim 1 (features of a Linear, channels of a Conv); a unit is dead when
    its output is 0 for every example and position, and the units are identical when, for
    every example, max − min over units ≤ 1e-6 × the largest |output|.
    """
    h = output.detach().double()
    units = h.shape[1] if h.dim() >= 2 else 1
    per_unit = h.transpose(0, 1).reshape(units, -1) if h.dim() >= 2 else h.reshape(1, -1)
    stats = LayerStats(
        name, type(module).__name__, units, h.mean().item(), h.std(unbiased=False).item()
    )
    for kind, saturates in SATURATION.items():
        if isinstance(module, kind):
            stats.saturated = saturates(h).double().mean().item()
    if isinstance(module, RECTIFIERS):
        stats.dead = 1.0 - (per_unit > 0).any(1).double().mean().item()
    if units > 1:
        gap = (per_unit.max(0).values - per_unit.min(0).values).max().item()
        stats.identical = gap <= IDENTICAL_TOLERANCE * h.abs().max().item()
    return stats


def initialization_check(model: nn.Module, x: Tensor) -> list[Finding]:
    """Activations layer by layer at initialization: collapse, explosion, saturation, symmetry.

    One forward of ``x`` with hooks on every nonlinearity module (and on every Linear/Conv,
    whose outputs are the pre-activations): each layer's output mean, std, saturated
    fraction and dead units. The lecture's picture of a 10-layer tanh net:

    - ``activation_scale``: with N(0, 0.01) weights every layer multiplies the std by about
      √fan_in·0.01 < 1, the activations collapse towards 0 (std ~1e-10 at layer 10) and
      so do the gradients; with weights too large they grow layer after layer. The std of
      the deepest reported layer over the first's below 0.1 warns, below 1e-2 fails
      (Xavier on tanh keeps ~0.4); any layer's over the first's above 10 warns, above
      100 fails. Reported: the outputs of the nonlinearity modules, or of the Linear/Conv
      layers except the last when the model has none (functional activations).
    - ``saturation`` (tanh, sigmoid): the fraction of outputs with |tanh| > 0.99, or
      sigmoid < 0.01 or > 0.99, where σ'(z) ≈ 0 and the gradient vanishes: above 0.2
      warns, above 0.5 fails.
    - ``dead_units`` (ReLU): units whose input is negative for every example of the batch
      get no gradient and never recover: a fraction above 0.25 warns, above 0.5 fails.
    - ``symmetry``: a hidden layer (a Linear/Conv other than the last) whose units all
      output the same value for every example — zero or constant initialization: the
      units get the same gradient and stay copies of each other, "symmetry never breaks".

    Runs on a copy in train mode with dropout off (batch norm normalizes with the batch's
    statistics, as in the first training step), under ``torch.no_grad``.

    Args:
        model: the network, freshly initialized.
        x: a batch of inputs (a few hundred examples; dead units are judged on it).

    Returns:
        ``activation_scale`` and ``symmetry``, plus ``saturation`` when the model has tanh or
        sigmoid modules and ``dead_units`` when it has ReLUs; the per-layer table is in
        ``activation_scale``'s data.
    """
    check_batch(x)
    work = training_copy(model)
    (x,) = on_device(work, x)
    records: list[tuple[str, nn.Module, LayerStats]] = []
    seen: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.is_floating_point() and output.numel():
                seen[name] = seen.get(name, 0) + 1  # a module used twice: name#2
                label = name if seen[name] == 1 else f"{name}#{seen[name]}"
                records.append((label, module, layer_stats(label, module, output)))

        return record

    handles = [
        module.register_forward_hook(hook(name or type(module).__name__))
        for name, module in work.named_modules()
        if isinstance(module, (*NONLINEARITIES, *WEIGHTED))
    ]
    try:
        with rng_restored(), torch.no_grad():
            torch.manual_seed(0)
            forward(work, x)
    finally:
        for handle in handles:
            handle.remove()
    weighted = [s for _, m, s in records if isinstance(m, WEIGHTED)]
    hidden = weighted[:-1]  # the last Linear/Conv gives the logits: units differ by target
    activations = [s for _, m, s in records if isinstance(m, NONLINEARITIES)]
    reported = activations or hidden
    findings = [_activation_scale(reported), _symmetry(hidden or activations)]
    saturating = [s for s in activations if s.saturated is not None]
    if saturating:
        findings.append(_saturation(saturating))
    rectified = [s for s in activations if s.dead is not None]
    if rectified:
        findings.append(_dead_units(rectified))
    return findings


_INIT_FIX = (
    "initialize with the variance the lecture derives: Xavier, Var(W) = 1/fan_in, for "
    "tanh/sigmoid; Kaiming, Var(W) = 2/fan_in, for ReLU (trainlab.models.init_), or add "
    "batch norm"
)


def _activation_scale(layers: list[LayerStats]) -> Finding:
    table = [s.to_dict() for s in layers]
    if not layers:
        return Finding(
            "activation_scale",
            "pass",
            "no nonlinearity or Linear/Conv module found to measure (functional layers only)",
            "",
            {"layers": table},
        )
    first = layers[0]
    data: dict[str, Any] = {"layers": table}
    stds = " → ".join(f"{s.std:.2g}" for s in layers)
    if first.std == 0.0:
        return Finding(
            "activation_scale",
            "fail",
            f"the first reported layer '{first.name}' ({first.kind}) outputs 0 on every example",
            "The signal dies at the first layer (zero weights, or every ReLU dead): " + _INIT_FIX,
            data,
        )
    ratios = [s.std / first.std for s in layers]
    data["std_ratio_to_first"] = [json_number(r) for r in ratios]
    # growth against the first layer, or against std 1 (what Xavier/Kaiming keep for
    # unit-variance inputs) when the first layer is already larger than that
    reference = min(first.std, 1.0)
    where = max(layers, key=lambda s: s.std)
    growth = where.std / reference
    last = ratios[-1]
    if growth > EXPLODE_WARN:
        status = "fail" if growth > EXPLODE_FAIL else "warn"
        against = f"'{first.name}'" if first.std < 1.0 else "std 1"
        evidence = (
            f"activations explode: the std reaches {where.std:.3g} at '{where.name}' "
            f"({where.kind}), {growth:.3g}× {against}, across {_count(len(layers), 'layer')} "
            f"({stds})"
        )
        return Finding(
            "activation_scale",
            status,
            evidence,
            "Weights too large, or inputs not normalized: " + _INIT_FIX,
            data,
        )
    if last < COLLAPSE_WARN:
        status = "fail" if last < COLLAPSE_FAIL else "warn"
        threshold = COLLAPSE_FAIL if status == "fail" else COLLAPSE_WARN
        crossed = layers[next(k for k, r in enumerate(ratios) if r < threshold)]
        evidence = (
            f"activations collapse towards 0 with depth: std {first.std:.2g} at '{first.name}', "
            f"{layers[-1].std:.2g} at '{layers[-1].name}' ({last:.2g}× the first; below "
            f"{threshold:g}× from '{crossed.name}' on)"
        )
        return Finding(
            "activation_scale",
            status,
            evidence,
            "Weights too small (e.g. N(0, 0.01)): the gradients vanish with the activations; "
            + _INIT_FIX,
            data,
        )
    return Finding(
        "activation_scale",
        "pass",
        f"activation std stays in scale across {_count(len(layers), 'layer')} ({stds})",
        "",
        data,
    )


def _symmetry(layers: list[LayerStats]) -> Finding:
    same = [s for s in layers if s.identical]
    data = {"identical_layers": [s.name for s in same], "checked_layers": [s.name for s in layers]}
    if not same:
        return Finding(
            "symmetry",
            "pass",
            f"the units differ from each other in each of {_count(len(layers), 'hidden layer')}",
            "",
            data,
        )
    first = same[0]
    return Finding(
        "symmetry",
        "fail",
        f"in hidden layer '{first.name}' ({first.kind}) all {first.units} units output the same "
        f"value on every example ({len(same)} of {len(layers)} layers are so): identical units "
        "get identical gradients, so the symmetry never breaks",
        "Initialize the weights randomly — small random numbers scaled by fan-in (Xavier, "
        "Kaiming) — never all to zero or to one constant",
        data,
    )


def _saturation(layers: list[LayerStats]) -> Finding:
    worst = max(layers, key=lambda s: s.saturated or 0.0)
    fraction = worst.saturated or 0.0
    status = (
        "fail" if fraction > SATURATION_FAIL else "warn" if fraction > SATURATION_WARN else "pass"
    )
    data = {"saturated": {s.name: s.saturated for s in layers}}
    evidence = (
        f"{fraction:.0%} of the outputs of '{worst.name}' ({worst.kind}), the most saturated "
        "layer, sit in the flat tails (|tanh| > 0.99, sigmoid < 0.01 or > 0.99)"
        + (", where the gradient vanishes" if status != "pass" else "")
    )
    fix = "Weights too large for a saturating nonlinearity: " + _INIT_FIX
    return Finding("saturation", status, evidence, fix if status != "pass" else "", data)


def _dead_units(layers: list[LayerStats]) -> Finding:
    worst = max(layers, key=lambda s: s.dead or 0.0)
    fraction = worst.dead or 0.0
    status = "fail" if fraction > DEAD_FAIL else "warn" if fraction > DEAD_WARN else "pass"
    data = {"dead": {s.name: s.dead for s in layers}}
    evidence = (
        f"{fraction:.0%} of the {worst.units} units of '{worst.name}' ({worst.kind}), the "
        "layer with the most, are never active on the batch"
        + (": a dead ReLU gets no gradient and never recovers" if status != "pass" else "")
    )
    fix = (
        "The ReLU inputs are negative for every example — a large negative bias, weights too "
        "large, or unnormalized inputs: initialize biases to 0 (or slightly positive), use "
        "Kaiming init and normalized inputs, or Leaky ReLU to keep units alive"
    )
    return Finding("dead_units", status, evidence, fix if status != "pass" else "", data)
