"""Experiment "optimizers_on_networks": the Adam paper's comparison, at laptop scale.

Kingma & Ba (2015, seed 002) train logistic regression, multilayer networks and CNNs with
SGD + momentum, AdaGrad, RMSProp, AdaDelta and Adam, and find Adam as good as the best of
them with its betas left at (0.9, 0.999). Here every first-order optimizer of
``trainlab.optim.OPTIMIZERS`` (SGD with momentum 0.9; the others at their defaults but the
learning rate) trains the same models on MNIST-1D: softmax regression (an MLP with no
hidden layer), a 64-64 MLP and, in full mode, a small 1-D CNN.

The protocol is DeepOBS's (Schneider et al., 2019): each optimizer gets the same tuning
budget, one run per rate of one shared log-spaced grid of learning rates (4 rates in quick
mode, 7 in full), the rate with the lowest final validation loss wins, and that rate is
rerun over more seeds (3 in full mode, the tuning seed alone in quick mode) to report the
test accuracy as mean ± std. The grid's top rate, 1, is AdaDelta's default: its rate
multiplies an update already scaled to the parameters' size.

Besides the verdict: the training loss per epoch (mean of its mini-batch losses) at each
optimizer's best rate, the final validation loss against the learning rate (how forgiving
each optimizer is to a wrong rate), and the steps each needs to reach a target validation
accuracy, 90% of the best optimizer's final one on that model (measured four times an
epoch).
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import data, models
from ..optim import OPTIMIZERS
from ..train import Callback, NonFiniteError, fit
from ..train.checkpoint import CHECKPOINTS_DIR
from .common import mean_std
from .experiment import Context, Outcome, experiment

FIRST_ORDER = [name for name, spec in OPTIMIZERS.items() if not spec.closure]
"""The contestants: every registered optimizer that steps on mini-batch gradients alone."""
OPTIONS: dict[str, dict[str, Any]] = {"sgd": {"momentum": 0.9}}  # all else at its defaults
GRID = [10 ** (k / 2) for k in range(-6, 1)]  # 1e-3, 3.2e-3, ..., 1: half-decade steps
QUICK_GRID = GRID[::2]  # 1e-3, 1e-2, 1e-1, 1: the same span, coarser
MODELS: dict[str, Callable[[], nn.Module]] = {
    "logistic regression": lambda: models.mlp((40,), (), 10),
    "MLP": lambda: models.mlp((40,), (64, 64), 10),
    "CNN": lambda: models.cnn((40,), (16, 32), 10),
}
QUICK_MODELS = ("logistic regression", "MLP")
EPOCHS = {"logistic regression": 15, "MLP": 15, "CNN": 8}
QUICK_EPOCHS = 4
SEEDS, QUICK_SEEDS = 3, 1
BATCH_SIZE = 64
EVALUATIONS_PER_EPOCH = 4  # how finely "steps to the target accuracy" is measured
TARGET_SHARE = 0.9  # target: 90% of the best optimizer's final validation accuracy
TOLERANCE, QUICK_TOLERANCE = 0.015, 0.03  # "the top group": within 1.5 (quick: 3) points
COLORS = dict(zip(FIRST_ORDER, [f"C{i}" for i in range(len(FIRST_ORDER))], strict=True))


class Curves(Callback):
    """The mini-batch losses of each epoch and the validation accuracy at each evaluation."""

    def __init__(self) -> None:
        self.batch_losses: dict[int, list[float]] = {}
        self.val_accuracy: list[tuple[int, float]] = []

    def on_step_end(self, trainer: Any, step: Any) -> None:
        self.batch_losses.setdefault(step.epoch, []).append(step.loss)

    def on_record(self, trainer: Any, record: dict[str, Any]) -> None:
        if "val_accuracy" in record:
            self.val_accuracy.append((record["step"], record["val_accuracy"]))


@dataclass
class Run:
    """One training run: an optimizer at one rate, on one model, from one seed."""

    model: str
    optimizer: str
    lr: float
    seed: int
    epoch_losses: list[float]  # training loss per epoch: the mean of its mini-batch losses
    val_accuracy: list[tuple[int, float]] = field(default_factory=list)  # (step, accuracy)
    val_loss: float = math.inf  # final; inf once the loss went non-finite
    test_accuracy: float = math.nan

    def steps_to(self, target: float) -> int | None:
        """The first evaluated step with validation accuracy ≥ ``target``; None: never."""
        return next((step for step, acc in self.val_accuracy if acc >= target), None)


def train(
    model_name: str,
    optimizer: str,
    lr: float,
    seed: int,
    splits: dict[str, tuple[Tensor, Tensor]],
    epochs: int,
    run_dir: Path,
) -> Run:
    """``epochs`` of ``optimizer`` at ``lr`` through ``trainlab.fit``; a non-finite loss ends it."""
    torch.manual_seed(seed)  # the initialization: the same for every optimizer of a seed
    model, curves = MODELS[model_name](), Curves()
    steps_per_epoch = math.ceil(len(splits["train"][1]) / BATCH_SIZE)
    try:
        summary = fit(
            model,
            splits["train"],
            val=splits["val"],
            test=splits["test"],
            run_dir=run_dir,
            callbacks=[curves],
            epochs=epochs,
            optimizer=optimizer,
            lr=lr,
            batch_size=BATCH_SIZE,
            seed=seed,
            eval_every=max(1, steps_per_epoch // EVALUATIONS_PER_EPOCH),
            keep_best_by=None,
            settings={"optimizer.options": OPTIONS.get(optimizer, {})},
            progress=False,  # one of many runs inside an experiment: no bar of its own
        )
    except NonFiniteError:
        summary = {}
    finally:
        # a finished lab run is never resumed: its resume state is most of the folder's size
        shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
    losses = [statistics.fmean(v) for _, v in sorted(curves.batch_losses.items())]
    val_loss = summary.get("val_loss", math.inf)
    return Run(
        model_name,
        optimizer,
        lr,
        seed,
        losses,
        curves.val_accuracy,
        val_loss if math.isfinite(val_loss) else math.inf,
        summary.get("test_accuracy", math.nan),
    )


@experiment(
    "optimizers_on_networks",
    claim="Adam is within the top group without tuning its betas: with the same "
    "learning-rate tuning budget as SGD + momentum, AdaGrad, RMSProp, AdaDelta, AdamW, "
    "Adamax and NAdam, it trains networks as well as the best of them.",
    seed="002",
    rule="MNIST-1D; logistic regression and a 64-64 MLP (full mode: and a 1-D CNN); every "
    "first-order optimizer of OPTIMIZERS (SGD with momentum 0.9, the rest at their defaults) "
    "tuned over the same log grid of learning rates (quick: 1e-3…1 in decades, 4 epochs; "
    "full: 1e-3…1 in half decades, 15 epochs, CNN 8), best rate by final validation loss, "
    "rerun over 3 seeds (quick: 1): on each model Adam's mean test accuracy at its best rate "
    "is within 1.5 points (quick: 3 points) of the best optimizer's",
)
def run(ctx: Context) -> Outcome:
    quick = ctx.quick
    grid = QUICK_GRID if quick else GRID
    model_names = QUICK_MODELS if quick else tuple(MODELS)
    seeds = [ctx.seed + k for k in range(QUICK_SEEDS if quick else SEEDS)]
    tolerance = QUICK_TOLERANCE if quick else TOLERANCE
    runs_dir = ctx.out / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)  # a rerun starts afresh, not in numbered folders
    ds = data.load("mnist1d")
    (x, y), (x_val, y_val) = data.carve_validation(ds.x, ds.y, 0.2, stratify=True, seed=ctx.seed)
    norm = data.Normalizer("feature").fit(x)  # statistics of the training split only
    splits = {
        "train": (norm(x), y),
        "val": (norm(x_val), y_val),
        "test": (norm(ds.x_test), ds.y_test),
    }

    tuning: dict[str, dict[str, dict[float, Run]]] = {}
    best: dict[str, dict[str, list[Run]]] = {}
    for m in model_names:
        epochs = QUICK_EPOCHS if quick else EPOCHS[m]
        tag = m.replace(" ", "-")
        tuning[m], best[m] = {}, {}
        for opt in FIRST_ORDER:
            tuning[m][opt] = {
                lr: train(m, opt, lr, seeds[0], splits, epochs, runs_dir / f"{tag}-{opt}-{lr:.3g}")
                for lr in grid
            }
            lr = min(grid, key=lambda r: tuning[m][opt][r].val_loss)
            best[m][opt] = [tuning[m][opt][lr]] + [
                train(m, opt, lr, s, splits, epochs, runs_dir / f"{tag}-{opt}-{lr:.3g}-seed{s}")
                for s in seeds[1:]
            ]

    rows, sensitivity, per_model, verdicts, parts = [], [], {}, [], []
    for m in model_names:
        accuracy = {opt: mean_std([r.test_accuracy for r in best[m][opt]]) for opt in FIRST_ORDER}
        final_val = {
            opt: statistics.fmean(r.val_accuracy[-1][1] if r.val_accuracy else 0.0 for r in rs)
            for opt, rs in best[m].items()
        }
        target = TARGET_SHARE * max(final_val.values())
        leader = max(FIRST_ORDER, key=lambda opt: accuracy[opt][0])
        gap = accuracy[leader][0] - accuracy["adam"][0]
        holds = gap <= tolerance  # NaN (Adam diverged at its best rate) fails
        verdicts.append(holds)
        for opt in FIRST_ORDER:
            steps = [r.steps_to(target) for r in best[m][opt]]
            reached = [s for s in steps if s is not None]
            rows.append(
                {
                    "model": m,
                    "optimizer": opt,
                    "best lr": best[m][opt][0].lr,
                    "test accuracy mean": accuracy[opt][0],
                    "test accuracy std": accuracy[opt][1],
                    "seeds": len(best[m][opt]),
                    "steps to target (mean)": statistics.fmean(reached) if reached else None,
                    "seeds reaching target": len(reached),
                }
            )
            sensitivity += [
                {"model": m, "optimizer": opt, "lr": lr, "final val loss": r.val_loss}
                for lr, r in tuning[m][opt].items()
            ]
        per_model[m] = {
            "best_lr": {opt: best[m][opt][0].lr for opt in FIRST_ORDER},
            "test_accuracy": {opt: accuracy[opt][0] for opt in FIRST_ORDER},
            "test_accuracy_std": {opt: accuracy[opt][1] for opt in FIRST_ORDER},
            "leader": leader,
            "adam_gap_points": 100 * gap,
            "target_val_accuracy": target,
            "holds": holds,
        }
        parts.append(
            f"{m}: Adam {100 * accuracy['adam'][0]:.1f}% at η={best[m]['adam'][0].lr:.3g}, "
            f"best {leader} {100 * accuracy[leader][0]:.1f}% — gap {100 * gap:.1f} points "
            f"({'≤' if holds else '>'} {100 * tolerance:g})"
        )

    _draw_losses(ctx, best, model_names)
    _draw_sensitivity(ctx, tuning, best, model_names, grid)
    evidence = f"mean test accuracy over {len(seeds)} seed(s) at each best rate; " + "; ".join(
        parts
    )
    numbers = {
        "models": list(model_names),
        "optimizers": FIRST_ORDER,
        "grid": grid,
        "seeds": seeds,
        "epochs": {m: QUICK_EPOCHS if quick else EPOCHS[m] for m in model_names},
        "tolerance_points": 100 * tolerance,
        "per_model": per_model,
    }
    tables = {"best rates": rows, "learning-rate sensitivity": sensitivity}
    return Outcome("holds" if all(verdicts) else "fails", evidence, numbers, tables)


def _draw_losses(ctx: Context, best: dict[str, dict[str, list[Run]]], model_names: Any) -> None:
    figure, axes = ctx.figure(
        "optimizers_training_loss",
        width=5.0 * len(model_names),
        height=4.2,
        columns=len(model_names),
    )
    for ax, m in zip(axes[0], model_names, strict=True):
        for opt, rs in best[m].items():
            length = min(len(r.epoch_losses) for r in rs)
            if length == 0:
                continue
            curves = torch.tensor([r.epoch_losses[:length] for r in rs], dtype=torch.float64)
            epochs = range(1, length + 1)
            ax.plot(
                epochs,
                curves.mean(0),
                color=COLORS[opt],
                linewidth=2.4 if opt == "adam" else 1.2,
                label=f"{opt} (η = {rs[0].lr:.3g})",
            )
            if len(rs) > 1:  # the band: the lowest to the highest seed
                ax.fill_between(
                    epochs, curves.min(0).values, curves.max(0).values, color=COLORS[opt], alpha=0.2
                )
        ax.set(xlabel="epoch", ylabel="training loss (mean over the epoch)", title=m)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    ctx.save(figure)


def _draw_sensitivity(
    ctx: Context,
    tuning: dict[str, dict[str, dict[float, Run]]],
    best: dict[str, dict[str, list[Run]]],
    model_names: Any,
    grid: list[float],
) -> None:
    figure, axes = ctx.figure(
        "optimizers_lr_sensitivity",
        width=5.0 * len(model_names),
        height=4.2,
        columns=len(model_names),
    )
    for ax, m in zip(axes[0], model_names, strict=True):
        lowest = min(r.val_loss for by_lr in tuning[m].values() for r in by_lr.values())
        for opt, by_lr in tuning[m].items():
            losses = [
                by_lr[lr].val_loss if math.isfinite(by_lr[lr].val_loss) else math.nan for lr in grid
            ]
            ax.plot(
                grid,
                losses,
                "o-",
                color=COLORS[opt],
                markersize=3,
                linewidth=2.4 if opt == "adam" else 1.2,
                label=opt,
            )
            chosen = best[m][opt][0]
            ax.plot(chosen.lr, chosen.val_loss, "*", color=COLORS[opt], markersize=11)
        ax.axhline(math.log(10), color="0.6", linestyle=":", label="chance (ln 10)")
        ax.set(
            xscale="log",
            ylim=(lowest - 0.1, 3.0),
            xlabel="learning rate η",
            ylabel="final validation loss",
            title=f"{m} (★: the chosen rate; off the top: diverged)",
        )
        ax.legend(fontsize=7)
    ctx.save(figure)
