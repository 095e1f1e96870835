"""Regularization against overfitting: give the model capacity, then shrink the gap.

The "Problems & Solutions" notes (seed 004): a model with too little capacity never
reaches the optimum, so give it capacity generously and close the *generalization gap*
with regularization — dropout, an L2 penalty (λ‖W‖² added to the loss), weight decay
(decoupled, θ ← θ − η·λ·θ outside the gradient, as AdamW does), data augmentation — and
early stopping (seed 001 lists the same toolbox: "weight decay, dropout, data augmentation").

Here a 256-256 ReLU MLP trains on 400 MNIST-1D examples (400 more are its validation
split) with AdamW (η = 1e-3) for 60 epochs: it memorizes them, 100% training accuracy,
while fewer than a third of the held-out examples come out right. Each regularizer is one
setting of the trainer's config changed from that baseline. The gap is measured as
trainlab's summary does, training minus test accuracy, on MNIST-1D's 1,000 test examples:
no run sees them, while early stopping picks its weights by the validation loss, which
would flatter its train − validation gap.

A smaller gap is not always a better model. Early stopping on the validation loss, which
starts rising after about 5 epochs here, keeps the weights of that epoch: 83% training
accuracy, and no more test accuracy than the baseline's (29% against 31%, mean of 3
seeds) — the gap shrinks because the training accuracy falls. Augmentation shrinks it
most and raises the test accuracy most (46%).
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
import torch

from .. import data
from ..train import Callback, Config, Trainer
from .experiment import Context, Outcome, experiment

TRAIN_EXAMPLES = 400  # the training split; as many again are held out for validation

#: The baseline: capacity to spare, no regularization of any kind.
BASELINE: dict[str, dict[str, Any]] = {
    "data": {"val_fraction": 0.5, "batch_size": 32},
    "model": {"kind": "mlp", "hidden": [256, 256], "batch_norm": False, "dropout": 0.0},
    "optimizer": {"name": "adamw", "lr": 1e-3, "options": {"weight_decay": 0.0}},
    "run": {"keep_best_by": "val_loss"},  # what early stopping watches
}

#: Each regularizer: the config settings it changes from the baseline.
REGULARIZERS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    "dropout 0.5": {"model": {"dropout": 0.5}},
    "L2 penalty λ=0.01": {"penalty": {"l2": 1e-2}},
    "weight decay λ=2": {"optimizer": {"options": {"weight_decay": 2.0}}},
    "augmentation": {
        "data": {
            "augment": [
                {"name": "shift1d", "p": 1.0, "max_shift": 4},
                {"name": "noise1d", "p": 0.5, "std": 0.1},
            ]
        }
    },
    "early stopping": {"run": {"early_stopping": {"patience": 5, "restore_best": True}}},
}
COLORS = dict(
    zip(REGULARIZERS, ("0.35", "tab:blue", "tab:orange", "tab:red", "tab:green", "tab:purple"))
)


class Curves(Callback):
    """Training and validation loss and accuracy after every epoch.

    The training numbers are measured on the whole training split in eval mode — without
    dropout, without augmentation — so they compare with the validation numbers.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_record(self, trainer: Any, record: dict[str, Any]) -> None:
        if "val_loss" in record:
            train = trainer.evaluate((trainer.batches.x, trainer.batches.y))
            self.rows.append(
                {
                    "epoch": record["step"] / len(trainer.batches),
                    "train_loss": train["loss"],
                    "train_accuracy": train["accuracy"],
                    "val_loss": record["val_loss"],
                    "val_accuracy": record["val_accuracy"],
                }
            )


def merged(base: dict[str, dict[str, Any]], change: dict[str, dict[str, Any]]) -> dict:
    """The config tree ``base`` with ``change``'s keys set (one level of nesting below the
    sections, so that ``optimizer.options`` keeps its other keys)."""
    tree = {section: dict(table) for section, table in base.items()}
    for section, table in change.items():
        for key, value in table.items():
            old = tree.setdefault(section, {}).get(key)
            tree[section][key] = {**old, **value} if isinstance(old, dict) else value
    return tree


def subset_file(path: Any, seed: int) -> None:
    """Write 2 × TRAIN_EXAMPLES random MNIST-1D training examples (and the test split) as
    the .npz the runs read; the trainer cuts it into training and validation halves."""
    ds = data.load("mnist1d")
    pick = torch.randperm(len(ds.y), generator=torch.Generator().manual_seed(seed))
    pick = pick[: 2 * TRAIN_EXAMPLES]
    np.savez(
        path,
        x=ds.x[pick].numpy(),
        y=ds.y[pick].numpy(),
        x_test=ds.x_test.numpy(),
        y_test=ds.y_test.numpy(),
    )


@experiment(
    "regularization",
    claim="A model with capacity to spare overfits a small training set; dropout, an L2 "
    "penalty, weight decay, data augmentation and early stopping each shrink its "
    "generalization gap.",
    seed="004",
    rule="a 256-256 MLP on 400 MNIST-1D examples, 60 epochs: for each regularizer, the gap "
    "(training − test accuracy, mean over seeds) is smaller than the unregularized "
    "baseline's; the ones that do not shrink it are named",
)
def run(ctx: Context) -> Outcome:
    epochs = 60
    seeds = [ctx.seed] if ctx.quick else [ctx.seed + k for k in range(3)]
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a new run needs new or empty folders
    runs.mkdir(parents=True)
    subset = runs / "mnist1d-subset.npz"
    subset_file(subset, ctx.seed)
    base = merged(BASELINE, {"data": {"name": "npz", "options": {"path": str(subset)}}})
    summaries: dict[str, list[dict[str, Any]]] = {name: [] for name in REGULARIZERS}
    curves: dict[str, list[dict[str, float]]] = {}
    for seed in seeds:
        for index, (name, change) in enumerate(REGULARIZERS.items()):
            tree = merged(merged(base, change), {"run": {"epochs": epochs, "seed": seed}})
            curve = Curves()
            trainer = Trainer(
                Config.from_dict(tree), runs / f"{index}-seed{seed}", callbacks=[curve]
            )
            summaries[name].append(trainer.fit())
            curves.setdefault(name, curve.rows)  # the first seed's, for the figure

    rows = []
    for name, runs_of in summaries.items():
        mean = {
            key: sum(s[key] for s in runs_of) / len(runs_of)
            for key in ("train_accuracy", "val_accuracy", "test_accuracy", "val_loss", "test_loss")
        }
        rows.append(
            {
                "regularizer": name,
                **mean,
                "gap (train − test accuracy)": mean["train_accuracy"] - mean["test_accuracy"],
                "train − val accuracy": mean["train_accuracy"] - mean["val_accuracy"],
                "epochs trained": sum(s["epochs"] for s in runs_of) / len(runs_of),
            }
        )
    gap = {row["regularizer"]: row["gap (train − test accuracy)"] for row in rows}
    baseline = gap["none"]
    shrink = {name: value < baseline for name, value in gap.items() if name != "none"}
    _draw_curves(ctx, curves)
    seeds_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {seeds[0]}–{seeds[-1]}"
    _draw_gaps(ctx, rows, seeds_text)
    none = rows[0]
    evidence = (
        f"{seeds_text}: no regularization gives {none['train_accuracy']:.0%} training vs "
        f"{none['test_accuracy']:.0%} test accuracy, a gap of {baseline:.3f}; "
        + ", ".join(
            f"{row['regularizer']} {gap[row['regularizer']]:.3f} (test {row['test_accuracy']:.0%})"
            for row in rows[1:]
        )
    )
    missed = [name for name, ok in shrink.items() if not ok]
    evidence += f"; {'all shrink' if not missed else 'not shrunk by ' + ', '.join(missed)} the gap"
    numbers = {
        "seeds": seeds,
        "epochs": epochs,
        "gaps": gap,
        "curves": curves,
    }
    return Outcome("holds" if not missed else "fails", evidence, numbers, {"gaps": rows})


def _draw_curves(ctx: Context, curves: dict[str, list[dict[str, float]]]) -> None:
    figure, axes = ctx.figure("regularization_curves", width=12, height=7, rows=2, columns=3)
    panels = [a for row in axes for a in row]
    widths = "-".join(map(str, BASELINE["model"]["hidden"]))
    figure.suptitle(
        f"Training (dashed) and validation (solid) accuracy: {widths} MLP on "
        f"{TRAIN_EXAMPLES} MNIST-1D examples, first seed"
    )
    base = curves["none"]
    for ax, name in zip(panels, [n for n in REGULARIZERS if n != "none"]):
        rows = curves[name]
        for key, style in (("train_accuracy", "--"), ("val_accuracy", "-")):
            ax.plot([r["epoch"] for r in base], [r[key] for r in base], style, color="0.6")
            ax.plot([r["epoch"] for r in rows], [r[key] for r in rows], style, color=COLORS[name])
        ax.set(title=name, xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02))
        if "early_stopping" in REGULARIZERS[name].get("run", {}):
            best = min(rows, key=lambda r: r["val_loss"])  # the weights restore_best keeps
            for key in ("train_accuracy", "val_accuracy"):
                ax.plot(best["epoch"], best[key], "*", color=COLORS[name], markersize=12)
            ax.annotate(
                "restored: lowest validation loss",
                (best["epoch"], best["train_accuracy"]),
                xytext=(best["epoch"] + 8, 0.62),
                arrowprops={"arrowstyle": "->", "color": "0.3"},
                fontsize=8,
            )
    panels[0].plot([], [], "--", color="0.6", label="train, no regularization")
    panels[0].plot([], [], "-", color="0.6", label="validation, no regularization")
    panels[0].plot([], [], "--", color="tab:blue", label="train, with the regularizer")
    panels[0].plot([], [], "-", color="tab:blue", label="validation, with the regularizer")
    panels[0].legend(fontsize=7, loc="lower right")
    last = panels[-1]
    for name, rows in curves.items():
        last.plot(
            [r["epoch"] for r in rows],
            [r["val_loss"] for r in rows],
            color=COLORS[name],
            label=name,
        )
    last.set(title="validation loss", xlabel="epoch", ylabel="cross-entropy")
    last.legend(fontsize=7)
    ctx.save(figure)


def _draw_gaps(ctx: Context, rows: list[dict[str, Any]], seeds_text: str) -> None:
    figure, axes = ctx.figure("regularization_gaps", width=11, height=4.2, columns=2)
    left, right = axes[0]
    names = [row["regularizer"] for row in rows]
    colors = [COLORS[name] for name in names]
    for ax, key, label in (
        (left, "gap (train − test accuracy)", "training − test accuracy"),
        (right, "test_loss", "test loss (cross-entropy)"),
    ):
        values = [row[key] for row in rows]
        bars = ax.bar(range(len(rows)), values, color=colors)
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
        ax.axhline(values[0], color="0.35", linestyle=":", linewidth=1)
        ax.set_xticks(range(len(rows)), names, rotation=25, ha="right")
        ax.set(ylabel=label)
    left.set_title(f"Generalization gap ({seeds_text})")
    right.set_title(f"Held-out loss ({seeds_text})")
    ctx.save(figure)
