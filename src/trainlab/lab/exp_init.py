"""Weight initialization: what each scheme does to the activations of a deep net.

The lecture's experiment: a 10-layer net, a batch of unit-scale inputs, and the
activations of every layer at initialization. With Var(h_in) the input variance and n the
fan-in, a layer without its nonlinearity gives Var(W x) = n · Var(W) · Var(h_in), so

* W = 0: every unit computes the same value and gets the same gradient — the symmetry
  never breaks, whatever the training;
* N(0, 0.01) (std 0.01, the lecture's ``0.01 * randn``): n · 0.01² = 0.0256 for n = 256,
  the std shrinks ×0.16 a layer and the activations (and the gradients through them)
  collapse towards 0;
* N(0, 1): n · 1 = 256, tanh's input has a std of ~16 and its outputs sit at ±1, where
  its gradient is 0 (saturation);
* Xavier, Var(W) = 2/(fan_in + fan_out) = 1/n between hidden layers: through tanh the
  std keeps its order of magnitude (it drifts down slowly, tanh being contractive);
  through ReLU, which zeroes half of its inputs, it halves the second moment every layer,
  so the std falls by √2 a layer, ×0.04 over nine layers;
* He (Kaiming), Var(W) = 2/n: the factor 2 makes up for ReLU's half, and the std stays.

Seeds 004 ("Problems & Solutions": Xavier for sigmoid/tanh, He for ReLU, with
``W = randn(fan_in, fan_out) / sqrt(fan_in / 2)``) and 001 ("Knob 1: Initialization":
can we initialize all weights to 0? N(0, 0.01); Xavier; Kaiming for ReLUs).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import data, models
from .common import sgd_run
from .experiment import Context, Outcome, experiment

DEPTH, WIDTH = 10, 256  # the lecture's 10 layers (it used 500 units; 256 trains faster)
SATURATED = 0.99  # |tanh(a)| above this: the gradient 1 − tanh² is below 0.02
LR, MOMENTUM, BATCH = 0.01, 0.9, 64  # SGD with momentum, one rate for every scheme
SYMMETRY_LR = 0.5  # the 2-layer sigmoid net started at zero
PROBE_EXAMPLES = 1000  # inputs for the activation statistics


@dataclass(frozen=True)
class Setup:
    """A deep net's nonlinearity and weight initialization (``models.init_`` scheme)."""

    label: str
    activation: str
    scheme: str
    options: dict[str, Any] = field(default_factory=dict)
    color: str = "black"  # the same in every figure

    def build(
        self, in_features: int, classes: int, seed: int, hidden: tuple[int, ...] = (WIDTH,) * DEPTH
    ) -> nn.Module:
        """An MLP with ``hidden`` layers, initialized with a generator seeded by ``seed``."""
        model = models.mlp(in_features, hidden, classes, activation=self.activation)
        generator = torch.Generator().manual_seed(seed)
        return models.init_(model, self.scheme, generator=generator, **self.options)


ZEROS = Setup("zeros, tanh", "tanh", "zeros", color="black")
SETUPS = (
    Setup("N(0, 0.01), tanh", "tanh", "normal", {"std": 0.01}, "tab:blue"),
    Setup("N(0, 1), tanh", "tanh", "normal", {"std": 1.0}, "tab:orange"),
    Setup("Xavier, tanh", "tanh", "xavier_normal", color="tab:green"),
    Setup("Xavier, ReLU", "relu", "xavier_normal", color="tab:red"),
    Setup("He, ReLU", "relu", "kaiming_normal", color="tab:purple"),
)
SMALL, LARGE, XAVIER_TANH, XAVIER_RELU, HE_RELU = SETUPS
SHALLOW_ZEROS = Setup("zeros, sigmoid, 2 × 64", "sigmoid", "zeros", color="tab:gray")
SHALLOW = (64, 64)


def hidden_activations(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The output of every hidden layer's nonlinearity (``blockK.act``) on inputs ``x``."""
    outputs: list[Tensor] = []
    hooks = [
        module.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach()))
        for name, module in model.named_modules()
        if name.startswith("block") and name.endswith(".act")
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return outputs


def unit_spread(model: nn.Module) -> tuple[float, float]:
    """(max difference between two units, largest weight) over the hidden layers.

    A unit is a row of its layer's [W | b]; the difference is max |row_i − row_0|.
    """
    spread = largest = 0.0
    for name, module in model.named_modules():
        if name.startswith("block") and name.endswith(".fc"):
            rows = torch.cat([module.weight, module.bias[:, None]], dim=1).detach()
            spread = max(spread, float((rows - rows[0]).abs().max()))
            largest = max(largest, float(rows.abs().max()))
    return spread, largest


def train(
    model: nn.Module, train_pair, val_pair, run_dir: Path, steps: int, seed: int, lr: float = LR
) -> tuple[list[float], dict[str, Any] | None]:
    """Short SGD-with-momentum run: (smoothed losses, summary or None if non-finite)."""
    return sgd_run(
        model, train_pair, val=val_pair, run_dir=run_dir, lr=lr, momentum=MOMENTUM,
        batch_size=BATCH, seed=seed, settings={"run.steps": steps},
    )  # fmt: skip


@experiment(
    "initialization",
    claim="Zero weights never break the symmetry between units; in a 10-layer tanh net "
    "N(0, 0.01) weights collapse the activations towards 0 and N(0, 1) weights saturate "
    "them, while Xavier keeps their scale; through ReLU Xavier collapses and He keeps it.",
    seed="004",
    rule="all six hold: after training from zeros the units of each hidden layer differ by "
    "≤ 1e-6 × the largest weight (in a net whose weights moved); N(0, 0.01)/tanh last-layer "
    "std < 1e-3 × first; N(0, 1)/tanh > 50% of the activations |h| > 0.99; last/first std "
    "within [0.1, 10] for Xavier/tanh and He/ReLU, below 0.1 for Xavier/ReLU",
)
def run(ctx: Context) -> Outcome:
    steps = 60 if ctx.quick else 800
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a rerun starts afresh, not in numbered folders
    ds = data.load("mnist1d")
    (x, y), val = data.carve_validation(ds.x, ds.y, 0.2, stratify=True, seed=ctx.seed)
    norm = data.Normalizer("feature").fit(x)
    x, val = norm(x), (norm(val[0]), val[1])
    features = x.shape[1]

    stats = {
        setup.label: hidden_activations(
            setup.build(features, ds.classes, ctx.seed), x[:PROBE_EXAMPLES]
        )
        for setup in SETUPS
    }
    curves, summaries, spreads = {}, {}, {}
    for number, setup in enumerate((ZEROS, *SETUPS)):
        model = setup.build(features, ds.classes, ctx.seed)
        run_dir = runs / f"{number}-{setup.scheme}-{setup.activation}"
        curves[setup.label], summaries[setup.label] = train(
            model, (x, y), val, run_dir, steps, ctx.seed
        )
        if setup is ZEROS:
            spreads[setup.label] = unit_spread(model)
    # the 10-layer zero net cannot move at all (a zero layer passes no gradient back),
    # so the symmetry is also shown where the weights do move: sigmoid(0) = 0.5 ≠ 0;
    # at a higher rate, as sigmoid passes back at most 1/4 of the gradient per layer
    model = SHALLOW_ZEROS.build(features, ds.classes, ctx.seed, hidden=SHALLOW)
    curves[SHALLOW_ZEROS.label], summaries[SHALLOW_ZEROS.label] = train(
        model, (x, y), val, runs / "7-zeros-sigmoid-shallow", steps, ctx.seed, SYMMETRY_LR
    )
    spreads[SHALLOW_ZEROS.label] = unit_spread(model)

    std = {label: [float(h.std()) for h in acts] for label, acts in stats.items()}
    saturated = {
        label: [float((h.abs() > SATURATED).float().mean()) for h in acts]
        for label, acts in stats.items()
    }
    _plot_std(ctx, std, saturated)
    _plot_histograms(ctx, stats)
    _plot_training(ctx, curves, steps)

    def ratio(setup: Setup) -> float:
        return std[setup.label][-1] / std[setup.label][0]

    large_saturated = sum(saturated[LARGE.label]) / DEPTH
    (deep_spread, deep_largest), (shallow_spread, shallow_largest) = spreads.values()
    checks = [
        (
            "zero init leaves the units identical",
            "max |unit_i − unit_0| ≤ 1e-6 × the largest weight after training, in a net "
            "whose weights moved (largest > 1e-3)",
            f"10-layer tanh: spread {deep_spread:.3g} (weights still {deep_largest:.3g}); "
            f"2-layer sigmoid: spread {shallow_spread:.3g}, largest weight "
            f"{shallow_largest:.3g}",
            all(spread <= 1e-6 * largest for spread, largest in spreads.values())
            and shallow_largest > 1e-3,
        ),
        (
            "N(0, 0.01) collapses the tanh activations",
            "std(layer 10) < 1e-3 × std(layer 1)",
            f"ratio {ratio(SMALL):.2g}",
            ratio(SMALL) < 1e-3,
        ),
        (
            "N(0, 1) saturates tanh",
            f"fraction of |h| > {SATURATED} over the 10 layers > 50%",
            f"{large_saturated:.0%}",
            large_saturated > 0.5,
        ),
        (
            "Xavier keeps the tanh activations' scale",
            "std(layer 10) / std(layer 1) within [0.1, 10]",
            f"ratio {ratio(XAVIER_TANH):.3g}",
            0.1 <= ratio(XAVIER_TANH) <= 10,
        ),
        (
            "Xavier collapses the ReLU activations",
            "std(layer 10) / std(layer 1) < 0.1",
            f"ratio {ratio(XAVIER_RELU):.3g}",
            ratio(XAVIER_RELU) < 0.1,
        ),
        (
            "He keeps the ReLU activations' scale",
            "std(layer 10) / std(layer 1) within [0.1, 10]",
            f"ratio {ratio(HE_RELU):.3g}",
            0.1 <= ratio(HE_RELU) <= 10,
        ),
    ]
    final = {
        label: (math.inf, math.nan) if s is None else (s["train_loss"], s["val_accuracy"])
        for label, s in summaries.items()
    }
    evidence = (
        f"std of layer 10 / layer 1 at init: N(0, 0.01) {ratio(SMALL):.1e}, Xavier/tanh "
        f"{ratio(XAVIER_TANH):.2f}, Xavier/ReLU {ratio(XAVIER_RELU):.3f}, He/ReLU "
        f"{ratio(HE_RELU):.2f}; N(0, 1) saturates {large_saturated:.0%} of the tanh outputs; "
        f"zero-initialized units stay identical after {steps} steps (spread "
        f"{max(deep_spread, shallow_spread):.2g}, sigmoid weights up to {shallow_largest:.2g}); "
        "training loss: " + ", ".join(f"{label} {loss:.2f}" for label, (loss, _) in final.items())
    )
    numbers = {
        "steps": steps,
        "std_per_layer": std,
        "saturated_per_layer": saturated,
        "std_ratio_last_first": {setup.label: ratio(setup) for setup in SETUPS},
        "zeros_unit_spread": {label: spread for label, (spread, _) in spreads.items()},
        "zeros_largest_weight": {label: largest for label, (_, largest) in spreads.items()},
        "final_train_loss": {label: loss for label, (loss, _) in final.items()},
        "final_val_accuracy": {label: accuracy for label, (_, accuracy) in final.items()},
    }
    tables = {
        "claims": [
            {"claim": claim, "rule": rule, "measured": measured, "holds": holds}
            for claim, rule, measured, holds in checks
        ],
        "training": [
            {"init": label, "train loss": loss, "val accuracy": accuracy, "steps": steps}
            for label, (loss, accuracy) in final.items()
        ],
    }
    verdict = "holds" if all(check[3] for check in checks) else "fails"
    return Outcome(verdict, evidence, numbers, tables)


def _plot_std(ctx: Context, std: dict, saturated: dict) -> None:
    figure, axes = ctx.figure("init_activation_std", width=11, height=4.2, columns=2)
    left, right = axes[0]
    layers = range(1, DEPTH + 1)
    for setup in SETUPS:
        style = "-o" if setup.activation == "tanh" else "--s"
        kw = {"color": setup.color, "markersize": 4, "label": setup.label}
        left.plot(layers, std[setup.label], style, **kw)
        if setup.activation == "tanh":
            right.plot(layers, saturated[setup.label], style, **kw)
    left.set(
        yscale="log",
        xlabel="layer",
        ylabel="std of the activations",
        title=f"Activation std at initialization ({DEPTH} layers × {WIDTH})",
    )
    left.legend(fontsize=8)
    right.set(
        xlabel="layer",
        ylabel=f"fraction with |tanh| > {SATURATED}",
        ylim=(-0.03, 1.03),
        title="Saturated tanh units",
    )
    right.legend(fontsize=8)
    ctx.save(figure)


def _plot_histograms(ctx: Context, stats: dict) -> None:
    figure, axes = ctx.figure(
        "init_activation_histograms", width=15, height=8, rows=len(SETUPS), columns=DEPTH
    )
    # 50 small panels on a fixed grid: constrained layout would measure every tick label
    # of every panel, seconds of the quick mode's budget
    figure.set_layout_engine("none")
    axes[0][0].get_gridspec().update(
        left=0.07, right=0.99, bottom=0.04, top=0.9, hspace=0.3, wspace=0.1
    )
    for axis in axes.flat:
        axis.set_position(axis.get_subplotspec().get_position(figure))
    for row, setup in zip(axes, SETUPS):
        acts = stats[setup.label]
        if setup.activation == "tanh":
            low, top, name = -1.0, 1.0, setup.label
        else:  # ReLU: half of the outputs are exactly 0; the histogram shows the rest
            low, top = 0.0, max(float(acts[0].max()), 1e-6)
            name = f"{setup.label}\n(outputs > 0)"
            acts = [h[h > 0] for h in acts]
        edges = torch.linspace(low, top, 41)
        for axis, h, all_h in zip(row, acts, stats[setup.label]):
            counts = torch.histc(h.flatten().clamp(low, top), bins=40, min=low, max=top)
            axis.stairs(counts.numpy(), edges.numpy(), fill=True)
            axis.set_xlim(low, top)
            axis.set_xticks([low, top], [f"{low:.2g}", f"{top:.2g}"], fontsize=6)
            axis.set_yticks([])
            axis.text(
                0.97,
                0.95,
                f"σ {float(all_h.std()):.2g}",
                transform=axis.transAxes,
                ha="right",
                va="top",
                fontsize=7,
                bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1},
            )
        row[0].set_ylabel(name, fontsize=8)
    for layer, axis in enumerate(axes[0], start=1):
        axis.set_title(f"layer {layer}", fontsize=9)
    figure.suptitle(
        f"Activations of each of the {DEPTH} hidden layers at initialization "
        f"({WIDTH} units, {PROBE_EXAMPLES} inputs)"
    )
    ctx.save(figure)


def _plot_training(ctx: Context, curves: dict, steps: int) -> None:
    figure, axes = ctx.figure("init_training_loss", width=8, height=4.8)
    axis = axes[0][0]
    for setup in (ZEROS, *SETUPS, SHALLOW_ZEROS):
        losses = curves[setup.label]
        label = setup.label
        if setup is SHALLOW_ZEROS:
            label = f"{label} (lr {SYMMETRY_LR})"
        style = ":" if setup is SHALLOW_ZEROS else "-"
        axis.plot(range(1, len(losses) + 1), losses, style, color=setup.color, label=label)
    axis.axhline(math.log(10), color="gray", linestyle="--", linewidth=0.8, label="ln 10")
    lowest = min((min(c) for c in curves.values() if c), default=1.0)
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 30) if t >= 0.8 * lowest]
    axis.set(
        yscale="log",
        xlabel="step",
        ylabel="smoothed training loss",
        title=f"Training from each init: {DEPTH} layers × {WIDTH}, SGD + momentum, lr {LR}",
    )
    axis.set_yticks(ticks, [f"{t:g}" for t in ticks])
    axis.minorticks_off()
    axis.legend(fontsize=8, loc="upper right")
    ctx.save(figure)
