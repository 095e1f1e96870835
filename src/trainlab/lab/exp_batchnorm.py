"""Batch normalization: the same CNN with and without it, over a range of learning rates.

Batch norm normalizes each unit over the mini-batch and then scales and shifts it with
learned γ, β (seed 004, "Problems & Solutions": "Input이 normalize되었어도 layer를 거치는
과정에서 또 shift가 일어남" — even with normalized inputs the layers shift the
activations — so normalize them too)::

    μ_B = 1/m Σ x_i,   σ²_B = 1/m Σ (x_i − μ_B)²,   x̂_i = (x_i − μ_B)/√(σ²_B + ε),
    y_i = γ x̂_i + β

The notes' verdict — faster and more accurate ("속도, 정확도면에서 향상이 있음"), so use it
by default — is tested here on MNIST-1D with trainlab's CNN, SGD with momentum, at each
rate of a sweep. A layer followed by batch norm cannot blow its outputs up by growing its
weights (BN divides the scale back out), so the normalized net should also survive rates
at which the plain one diverges.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import data, models
from .common import plain_log_labels, sgd_run
from .experiment import Context, Outcome, experiment

CHANNELS, KERNEL = (32, 64), 5  # the demo's CNN on MNIST-1D, without dropout
MOMENTUM, BATCH = 0.9, 64
QUICK_RATES = (0.03, 0.1, 0.3, 1.0, 1.5, 2.0)
FULL_RATES = (0.003, 0.01, 0.03, 0.06, 0.1, 0.2, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0)
LEVELS = (1.0, 0.5, 0.2, 0.1, 0.05)  # smoothed training losses: "converged to this level"
TRAINS = 0.5  # "still trains": validation accuracy at least 50% (chance: 10%)
DEAD = 0.2  # "diverged" if it ends at most at twice chance: the net has learned nothing


@dataclass(frozen=True)
class Result:
    """One run: the smoothed loss of every step, and where it ended."""

    lr: float
    batch_norm: bool
    curve: list[float]
    train_loss: float  # on the whole training set at the end; inf when it went non-finite
    val_accuracy: float  # nan when it went non-finite

    @property
    def diverged(self) -> bool:
        """A non-finite loss, or a net that ends at chance (a blown-up ReLU net dies there:
        its loss settles near ln C, below the Kaiming net's initial loss, so the loss alone
        does not tell a dead net from a slow one, the accuracy does)."""
        return not math.isfinite(self.train_loss) or self.val_accuracy <= DEAD

    @property
    def trains(self) -> bool:
        """It ends at 50% validation accuracy or more (nan, from a non-finite loss, is not)."""
        return self.val_accuracy >= TRAINS


def network(batch_norm: bool, seed: int) -> nn.Module:
    """The CNN, Kaiming-initialized from ``seed``: BN between each conv and its ReLU."""
    model = models.cnn((40,), CHANNELS, 10, kernel_size=KERNEL, batch_norm=batch_norm)
    return models.init_(model, "kaiming_normal", generator=torch.Generator().manual_seed(seed))


def train(
    batch_norm: bool, lr: float, train_pair, val_pair, run_dir: Path, steps: int, seed: int
) -> Result:
    """``steps`` of SGD with momentum through ``trainlab.fit``; a non-finite loss ends it."""
    curve, summary = sgd_run(
        network(batch_norm, seed), train_pair, val=val_pair, run_dir=run_dir, lr=lr,
        momentum=MOMENTUM, batch_size=BATCH, seed=seed, settings={"run.steps": steps},
    )  # fmt: skip
    if summary is None:
        return Result(lr, batch_norm, curve, math.inf, math.nan)
    return Result(lr, batch_norm, curve, summary["train_loss"], summary["val_accuracy"])


def steps_to(curve: list[float], level: float) -> int | None:
    """The first step whose smoothed loss is at or below ``level`` (None: never)."""
    return next((step for step, loss in enumerate(curve, start=1) if loss <= level), None)


def fastest(results: list[Result], level: float) -> tuple[int, float] | None:
    """(steps, lr) of the run that first brings the smoothed loss to ``level`` (None: none)."""
    reached = [(steps_to(r.curve, level), r.lr) for r in results]
    return min(((s, lr) for s, lr in reached if s is not None), default=None)


@experiment(
    "batch_norm",
    claim="With batch norm the same CNN converges faster, and it still trains at learning "
    "rates where the plain network diverges.",
    seed="004",
    rule="SGD + momentum 0.9 over a sweep of rates, the same steps for each: (1) every "
    "smoothed training loss of 1, 0.5, 0.2, 0.1, 0.05 that the plain net reaches, BN reaches "
    "in fewer steps (each at its fastest rate for that level); (2) at some rate the plain "
    "net diverges (a non-finite loss, or it ends at ≤ 20% validation accuracy, twice "
    "chance) while the BN net trains (≥ 50% validation accuracy)",
)
def run(ctx: Context) -> Outcome:
    rates, steps = (QUICK_RATES, 150) if ctx.quick else (FULL_RATES, 1000)
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a rerun starts afresh, not in numbered folders
    ds = data.load("mnist1d")
    (x, y), val = data.carve_validation(ds.x, ds.y, 0.2, stratify=True, seed=ctx.seed)
    norm = data.Normalizer("feature").fit(x)
    train_pair, val = (norm(x), y), (norm(val[0]), val[1])
    results = {}
    for batch_norm in (False, True):
        for lr in rates:
            run_dir = runs / f"{'bn' if batch_norm else 'plain'}-lr{lr:g}"
            results[batch_norm, lr] = train(
                batch_norm, lr, train_pair, val, run_dir, steps, ctx.seed
            )
    plain = [results[False, lr] for lr in rates]
    normed = [results[True, lr] for lr in rates]
    best_plain = min(plain, key=lambda r: r.train_loss)
    best_bn = min(normed, key=lambda r: r.train_loss)
    rescued = [lr for lr in rates if results[False, lr].diverged and results[True, lr].trains]
    levels = [(level, fastest(plain, level), fastest(normed, level)) for level in LEVELS]
    compared = [(level, p, b) for level, p, b in levels if p is not None]
    checks = [
        (
            "BN converges faster",
            "each loss level the plain net reaches, BN reaches in fewer steps (fastest rates)",
            "; ".join(f"≤ {level:g}: BN {_reach(b)}, plain {_reach(p)}" for level, p, b in compared)
            + f" (lowest final loss after {steps} steps: BN {best_bn.train_loss:.3f}, plain "
            f"{best_plain.train_loss:.3f})",
            bool(compared) and all(b is not None and b[0] < p[0] for _, p, b in compared),
        ),
        (
            "BN trains where the plain net diverges",
            "some rate: plain non-finite or ≤ 20% val accuracy, BN ≥ 50% val accuracy",
            f"rates {_rates(rescued)}; plain diverges at "
            f"{_rates(r.lr for r in plain if r.diverged)}, BN at "
            f"{_rates(r.lr for r in normed if r.diverged)}",
            bool(rescued),
        ),
    ]
    shown = rescued[0] if rescued else rates[-1]  # the first rate the plain net does not survive
    uniform = math.log(ds.classes)
    _plot_sweep(ctx, rates, plain, normed, uniform, steps, levels)
    _plot_curves(
        ctx,
        results,
        uniform,
        {
            best_plain.lr: "the plain net's best rate",
            shown: "a rate where the plain net diverges" if rescued else "the largest rate",
        },
    )

    deepest, deepest_plain, deepest_bn = compared[-1] if compared else (None, None, None)
    evidence = (
        (
            f"at the fastest rate of each, batch norm brings the smoothed training loss to "
            f"{deepest:g} in {_reach(deepest_bn)}, the plain net in {_reach(deepest_plain)}"
            if compared
            else "the plain net reaches none of the loss levels"
        )
        + f"; after {steps} steps the lowest training loss is {best_bn.train_loss:.3f} with "
        f"BN (lr {best_bn.lr:g}, val accuracy {best_bn.val_accuracy:.1%}) and "
        f"{best_plain.train_loss:.3f} without (lr {best_plain.lr:g}, "
        f"{best_plain.val_accuracy:.1%}); the plain net diverges at lr "
        f"{_rates(r.lr for r in plain if r.diverged)}, where BN still trains at lr "
        f"{_rates(rescued)}"
        + (
            f" (at lr {shown:g}: {results[True, shown].val_accuracy:.1%} val accuracy with BN, "
            f"{_end_text(results[False, shown])} without)"
            if rescued
            else ""
        )
    )
    numbers = {
        "steps": steps,
        "rates": list(rates),
        "train_loss": {
            "plain": [r.train_loss for r in plain],
            "bn": [r.train_loss for r in normed],
        },
        "val_accuracy": {
            "plain": [r.val_accuracy for r in plain],
            "bn": [r.val_accuracy for r in normed],
        },
        "best_lr": {"plain": best_plain.lr, "bn": best_bn.lr},
        "rescued_rates": rescued,
        "steps_to_level": {
            f"{level:g}": {"plain": _steps(p), "bn": _steps(b)} for level, p, b in levels
        },
    }
    tables = {
        "claims": [
            {"claim": claim, "rule": rule, "measured": measured, "holds": holds}
            for claim, rule, measured, holds in checks
        ],
        "sweep": [
            {
                "lr": lr,
                "plain train loss": results[False, lr].train_loss,
                "plain val accuracy": results[False, lr].val_accuracy,
                "plain diverged": results[False, lr].diverged,
                "BN train loss": results[True, lr].train_loss,
                "BN val accuracy": results[True, lr].val_accuracy,
                "BN diverged": results[True, lr].diverged,
            }
            for lr in rates
        ],
        "convergence": [
            {
                "smoothed loss ≤": level,
                "plain steps": _steps(p),
                "plain lr": p[1] if p else None,
                "BN steps": _steps(b),
                "BN lr": b[1] if b else None,
            }
            for level, p, b in levels
        ],
    }
    verdict = "holds" if all(check[3] for check in checks) else "fails"
    return Outcome(verdict, evidence, numbers, tables)


def _steps(fastest: tuple[int, float] | None) -> int | None:
    return fastest[0] if fastest else None


def _reach(fastest: tuple[int, float] | None) -> str:
    return "never" if fastest is None else f"{fastest[0]} steps (lr {fastest[1]:g})"


def _rates(rates: Iterable[float]) -> str:
    return ", ".join(f"{lr:g}" for lr in rates) or "none"


def _end_text(result: Result) -> str:
    if math.isfinite(result.train_loss):
        return f"{result.val_accuracy:.1%} (loss {result.train_loss:.3f})"
    return f"a non-finite loss after {len(result.curve)} steps"


def _plot_sweep(ctx: Context, rates, plain, normed, uniform: float, steps: int, levels) -> None:
    figure, axes = ctx.figure("batch_norm_lr_sweep", width=15, height=4.2, columns=3)
    left, right, speed = axes[0]
    for label, results, color in (("plain", plain, "tab:red"), ("batch norm", normed, "tab:blue")):
        losses = [r.train_loss if math.isfinite(r.train_loss) else math.nan for r in results]
        left.plot(rates, losses, "-o", color=color, label=label)
        lost = [r.lr for r in results if not math.isfinite(r.train_loss)]
        if lost:  # non-finite: marked along the top of the panel
            left.plot(
                lost,
                [0.97] * len(lost),
                "x",
                color=color,
                markersize=9,
                mew=2,
                transform=left.get_xaxis_transform(),
                label=f"{label}: non-finite",
            )
        right.plot(rates, [100 * r.val_accuracy for r in results], "-o", color=color, label=label)
    left.axhline(uniform, color="gray", linestyle=":", label="ln 10 (uniform guess)")
    left.set(
        xscale="log",
        yscale="log",
        xlabel="learning rate",
        ylabel=f"training loss after {steps} steps",
        title="Final training loss (SGD + momentum 0.9)",
    )
    plain_log_labels(left)
    left.legend(fontsize=8)
    right.axhline(100 * TRAINS, color="gray", linestyle=":", label="trains (≥ 50%)")
    right.axhline(100 * DEAD, color="gray", linestyle="--", label="diverged (≤ 20%)")
    right.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="validation accuracy (%)",
        ylim=(0, 100),
        title="Validation accuracy",
    )
    right.legend(fontsize=8)
    for index, label, color in ((1, "plain", "tab:red"), (2, "batch norm", "tab:blue")):
        reached = [(entry[0], entry[index][0]) for entry in levels if entry[index] is not None]
        if reached:
            speed.plot(*zip(*reached), "-o", color=color, label=label)
    speed.set(
        xscale="log",
        xlabel="smoothed training loss reached",
        ylabel="steps (at the fastest rate for that loss)",
        title="Steps to reach a loss",
    )
    speed.set_xticks(LEVELS, [f"{level:g}" for level in LEVELS])
    speed.minorticks_off()
    speed.invert_xaxis()
    speed.legend(fontsize=8)
    ctx.save(figure)


def _plot_curves(ctx: Context, results: dict, uniform: float, shown: dict[float, str]) -> None:
    figure, axes = ctx.figure("batch_norm_curves", width=11, height=4.2, columns=len(shown))
    for axis, (lr, why) in zip(axes[0], shown.items()):
        for batch_norm, label, color in (
            (False, "plain", "tab:red"),
            (True, "batch norm", "tab:blue"),
        ):
            result = results[batch_norm, lr]
            steps = range(1, len(result.curve) + 1)
            axis.plot(steps, result.curve, color=color, label=label)
            if result.curve and not math.isfinite(result.train_loss):
                axis.plot(
                    len(result.curve),
                    result.curve[-1],
                    "x",
                    color=color,
                    markersize=9,
                    mew=2,
                    label=f"{label}: non-finite here",
                )
        axis.axhline(uniform, color="gray", linestyle=":", label="ln 10")
        axis.set(
            yscale="log", xlabel="step", ylabel="smoothed training loss", title=f"lr {lr:g}: {why}"
        )
        plain_log_labels(axis)
        axis.legend(fontsize=8)
    ctx.save(figure)
