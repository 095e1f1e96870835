"""The learning rate, read off the loss curve: very high, high, low, good — and step decay.

cs231n's loss-curve sketch (lecture 7: "SGD, SGD+Momentum, Adagrad, RMSProp, Adam all have
learning rate as a hyperparameter", with step decay beside it; seed 000) and the Chicago
notes (seed 001: "learning rate/step size η_t is the most important parameter to tune …
drop η_t (typically 1/10) when learning appears stuck"), from real runs: plain SGD,
θ ← θ − η·g, mini-batches of 64, on softmax regression over MNIST-1D's 4,000 training
examples. The model is linear on purpose: its loss is convex, so each curve's shape is the
learning rate's doing alone.

- A **very high** rate overshoots the valley: the loss rises above where it started (or
  becomes NaN) and stays there.
- A **high** rate drops fastest at first, then stalls on a plateau: each mini-batch
  gradient moves θ by η·g, so SGD's noise keeps θ rattling at a loss floor that grows with
  η.
- A **low** rate takes tiny steps: an almost straight, slow decrease.
- A **good** rate ends lowest. Dividing it by 10 halfway (step decay) lowers the noise
  floor, so the decayed run ends below the constant one.

Each curve is the loss on the whole training set, measured at every step up to step 10
and then every 25 steps.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch

from .. import data, models
from ..train import Callback, NonFiniteError, StepDecay, fit
from .experiment import Context, Outcome, experiment

#: The four regimes of the sketch, as SGD learning rates for this problem.
RATES = {"very high": 10.0, "high": 1.0, "low": 1e-3, "good": 0.3}
COLORS = {"very high": "tab:olive", "high": "tab:green", "low": "tab:blue", "good": "tab:red"}
BATCH_SIZE = 64
EARLY_STEP = 10  # where "drops fastest at first" is read off
EVERY = 25  # steps between two measurements after EARLY_STEP
FINAL_SHARE = 0.1  # the final loss: the mean over the last 10% of the measurements
STRAIGHT_R2 = 0.9  # "almost linear": a straight line explains ≥ 90% of the curve's variance


class LossCurve(Callback):
    """The loss on the whole training set at step 0, every step up to ``early``, then every
    ``every`` steps: the curve of the lecture's sketch, free of mini-batch noise."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], early: int, every: int) -> None:
        self.train, self.early, self.every = train, early, every
        self.points: list[tuple[int, float]] = []

    def on_fit_start(self, trainer: Any) -> None:
        self.points.append((0, trainer.evaluate(self.train)["loss"]))

    def on_step_end(self, trainer: Any, step: Any) -> None:
        if step.step <= self.early or step.step % self.every == 0:
            self.points.append((step.step, trainer.evaluate(self.train)["loss"]))


def loss_curve(
    train: tuple[torch.Tensor, torch.Tensor],
    classes: int,
    lr: float,
    steps: int,
    seed: int,
    run_dir: Path,
    schedule: Any = None,
) -> list[tuple[int, float]]:
    """Train softmax regression with SGD at ``lr`` for ``steps`` steps; its loss curve.

    A run whose loss or gradients overflow stops there (``run.nonfinite = "raise"``); its
    curve ends with a NaN at that step.
    """
    torch.manual_seed(seed)
    model = models.mlp(train[0].shape[1:], (), classes)  # no hidden layer: softmax regression
    curve = LossCurve(train, EARLY_STEP, EVERY)
    try:
        fit(
            model,
            train,
            optimizer="sgd",
            lr=lr,
            schedule=schedule,
            steps=steps,
            batch_size=BATCH_SIZE,
            seed=seed,
            run_dir=run_dir,
            callbacks=[curve],
            progress=False,  # one of many runs inside an experiment: no bar of its own
        )
    except NonFiniteError:
        last = curve.points[-1][0]
        curve.points.append((last + 1, math.nan))
    return curve.points


def shape_numbers(points: list[tuple[int, float]]) -> dict[str, float]:
    """What the rules read off a curve: initial, early and final loss, and its straightness."""
    steps = [float(s) for s, _ in points]
    losses = [loss for _, loss in points]
    count = max(1, round(FINAL_SHARE * len(losses)))
    early = dict(points).get(EARLY_STEP, math.nan)
    return {
        "initial": losses[0],
        "early": early,
        "final": sum(losses[-count:]) / count,  # NaN once the run diverged
        "straight_r2": straight_line_r2(steps, losses),
    }


def straight_line_r2(steps: list[float], losses: list[float]) -> float:
    """R² of the least-squares line through (step, loss): 1 for a straight decrease."""
    if len(steps) < 3 or not all(math.isfinite(v) for v in losses):
        return math.nan
    t, v = torch.tensor(steps, dtype=torch.float64), torch.tensor(losses, dtype=torch.float64)
    r = torch.corrcoef(torch.stack([t, v]))[0, 1]
    return float(r * r)


@experiment(
    "learning_rate",
    claim="Read off the loss curve: a very high learning rate makes the loss explode, a high "
    "one drops fast and then plateaus high, a low one decreases slowly and almost linearly, "
    "a good one ends lowest; dropping the good rate by 10× (step decay) ends lower still.",
    seed="001",
    rule="SGD on softmax regression over MNIST-1D, each seed: very high (η = 10): final loss "
    "≥ initial, or NaN; high (η = 1): lower than good after 10 steps, higher at the end; low "
    "(η = 1e-3): higher than good at the end, and a straight line fits its curve with "
    "R² ≥ 0.9; step decay at the good rate (÷10 halfway): final loss below the constant "
    "rate's (final = mean of the last 10% of the measurements)",
)
def run(ctx: Context) -> Outcome:
    steps = 1500 if ctx.quick else 3000
    seeds = [ctx.seed] if ctx.quick else [ctx.seed + k for k in range(3)]
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a new run needs new or empty folders
    ds = data.load("mnist1d")
    train = (data.Normalizer("feature").fit(ds.x)(ds.x), ds.y)
    curves: dict[int, dict[str, list[tuple[int, float]]]] = {}
    for seed in seeds:
        curves[seed] = {
            name: loss_curve(
                train, ds.classes, lr, steps, seed, runs / f"{name.replace(' ', '-')}-{seed}"
            )
            for name, lr in RATES.items()
        }
        decay = StepDecay(every=steps // 2, gamma=0.1)
        curves[seed]["good, step decay"] = loss_curve(
            train, ds.classes, RATES["good"], steps, seed, runs / f"decay-{seed}", decay
        )

    rows, holds, failed = [], True, []
    for seed in seeds:
        n = {name: shape_numbers(points) for name, points in curves[seed].items()}
        good, high, low, very = n["good"], n["high"], n["low"], n["very high"]
        checks = {
            "very high explodes": not math.isfinite(very["final"])
            or very["final"] >= very["initial"],
            "high drops faster": high["early"] < good["early"],
            "high plateaus above good": high["final"] > good["final"],
            "low ends above good": low["final"] > good["final"],
            "low is almost linear": low["straight_r2"] >= STRAIGHT_R2,
            "step decay ends lower": n["good, step decay"]["final"] < good["final"],
        }
        holds &= all(checks.values())
        failed += [f"{check} (seed {seed})" for check, ok in checks.items() if not ok]
        for name, numbers in n.items():
            rows.append(
                {
                    "seed": seed,
                    "run": name,
                    "lr": RATES.get(name, RATES["good"]),
                    "initial loss": numbers["initial"],
                    f"loss at step {EARLY_STEP}": numbers["early"],
                    "final loss": numbers["final"],
                    "straight-line R²": numbers["straight_r2"],
                }
            )

    first = curves[seeds[0]]
    _draw(ctx, first, steps)
    n = {name: shape_numbers(points) for name, points in first.items()}
    very = n["very high"]
    exploded = (
        "NaN"
        if not math.isfinite(very["final"])
        else f"{very['initial']:.2f} → {very['final']:.2f}"
    )
    evidence = (
        f"seed {seeds[0]}, {steps} SGD steps: very high η=10 {exploded}; high η=1 "
        f"{n['high']['early']:.2f} after {EARLY_STEP} steps (good {n['good']['early']:.2f}) "
        f"but ends at {n['high']['final']:.3f}; low η=1e-3 ends at {n['low']['final']:.3f} "
        f"(straight line R² {n['low']['straight_r2']:.3f}); good η=0.3 ends at "
        f"{n['good']['final']:.3f}, with step decay {n['good, step decay']['final']:.3f}"
    )
    if len(seeds) > 1:
        evidence += f"; every rule checked on seeds {seeds[0]}–{seeds[-1]}"
    if failed:
        evidence += "; not observed: " + ", ".join(failed)
    numbers = {
        "steps": steps,
        "seeds": seeds,
        "rates": RATES,
        "curves": {name: [list(p) for p in points] for name, points in first.items()},
    }
    return Outcome("holds" if holds else "fails", evidence, numbers, {"loss curves": rows})


def _draw(ctx: Context, curves: dict[str, list[tuple[int, float]]], steps: int) -> None:
    figure, axes = ctx.figure("learning_rate", width=11, height=4.4, columns=2)
    left, right = axes[0]
    for name, lr in RATES.items():
        points = [(s, v) for s, v in curves[name] if math.isfinite(v)]
        left.plot(*zip(*points), color=COLORS[name], label=f"{name} (η = {lr:g})")
        if len(points) < len(curves[name]):  # diverged: mark where the loss became NaN
            left.plot(*points[-1], "x", color=COLORS[name], markersize=9)
    ticks = [1.6, 2, 3, 5, 10]
    left.set(
        yscale="log",
        yticks=ticks,
        yticklabels=[f"{t:g}" for t in ticks],
        xlabel="SGD step",
        ylabel="training loss (whole training set)",
        title="Four learning rates: the lecture's loss curves",
    )
    left.minorticks_off()
    left.legend(loc="center right", bbox_to_anchor=(1.0, 0.52))
    start = left.inset_axes((0.1, 0.36, 0.42, 0.3))  # the first steps, where high leads
    for name in ("high", "good", "low"):
        start.plot(*zip(*[(s, v) for s, v in curves[name] if s <= 2 * EVERY]), color=COLORS[name])
    start.set_title(f"the first {2 * EVERY} steps", fontsize=8)
    start.tick_params(labelsize=7)
    for name, color in (("good", "tab:red"), ("good, step decay", "tab:purple")):
        label = "constant η = 0.3" if name == "good" else "η = 0.3, ÷10 at the halfway step"
        right.plot(*zip(*curves[name]), color=color, label=label)
    right.axvline(steps // 2, color="0.6", linestyle=":", label="the drop")
    tail = [v for s, v in curves["good"] + curves["good, step decay"] if s >= steps // 4]
    right.set(
        xlim=(steps // 4, steps),
        ylim=(min(tail) - 0.01, max(tail) + 0.01),
        xlabel="SGD step",
        ylabel="training loss (whole training set)",
        title="Step decay at the good rate",
    )
    right.legend()
    ctx.save(figure)
