"""The data side of training: input scale and example order.

Two of the lectures' pitfalls, on MNIST-1D with trainlab's CNN (no batch norm, which would
undo the input scale) and SGD with momentum:

* **Unnormalized inputs** (seed 004, "Normalize Data": x' = (x − μ)/σ). The features in
  the units of some sensor, x·100 + 50, make every first-layer pre-activation 100 times
  larger and its weight gradients 100 times larger, all sharing one large offset: a rate
  that suits normalized inputs blows the net up, and a rate small enough for the raw
  inputs is too small for the layers above. The Normalizer's statistics are fitted on the
  training split only.
* **Example order** (seed 001, "SGD common pitfalls": "What happens if all the cats are
  stored first and then all the dogs? … Best: for each pass over data ('epoch'), use
  different random order"). A training set sorted by label and read in stored order
  (``shuffle="none"``) shows the net one class per stretch of batches: every stretch
  pulls the outputs towards its class, the loss jumps at each change of class, and the
  net ends up predicting (nearly) one class for everything. Shuffling once or every epoch
  avoids it.
"""

from __future__ import annotations

import itertools
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import data, models
from .common import plain_log_labels, sgd_run
from .experiment import Context, Outcome, experiment

CHANNELS, KERNEL = (32, 64), 5  # the demo's CNN on MNIST-1D, without batch norm or dropout
MOMENTUM, BATCH = 0.9, 64
SHARED_LR = 0.1  # the plain CNN's best rate on normalized inputs (the batch_norm sweep)
RAW_SCALE, RAW_SHIFT = 100.0, 50.0  # raw features: x·100 + 50
QUICK_RATES = (1e-4, 1e-3, 1e-2, SHARED_LR)
FULL_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, SHARED_LR, 0.3)
EVERY, ONCE, SORTED = "shuffled every epoch", "shuffled once", "sorted by label, never shuffled"
GAP = 0.10  # "clearly lower": ten points of validation accuracy
WINDOW = 10  # loss curves of the input-scale runs: a running mean over this many batches
ROUGHER = 2.0  # "oscillates": the batch loss moves twice as much from step to step


@dataclass(frozen=True)
class Result:
    """One run: the loss of every step, and where it ended."""

    label: str
    lr: float
    losses: list[float]  # mini-batch loss of every step
    train_loss: float  # on the whole training set at the end; inf when it went non-finite
    val_accuracy: float  # 0 when it went non-finite
    predicted: list[int]  # how often each class is predicted on the validation split

    def roughness(self, steps: int) -> float:
        """Mean |loss_t − loss_{t−1}| over the last ``steps`` mini-batches."""
        tail = self.losses[-steps:]
        return sum(abs(b - a) for a, b in itertools.pairwise(tail)) / max(len(tail) - 1, 1)


def network(seed: int) -> nn.Module:
    """The CNN without batch norm, Kaiming-initialized from ``seed``."""
    model = models.cnn((40,), CHANNELS, 10, kernel_size=KERNEL)
    return models.init_(model, "kaiming_normal", generator=torch.Generator().manual_seed(seed))


def train(
    label: str,
    lr: float,
    train_pair: tuple[Tensor, Tensor],
    val_pair,
    run_dir: Path,
    epochs: int,
    seed: int,
    shuffle: str = "epoch",
) -> Result:
    """``epochs`` of SGD with momentum through ``trainlab.fit``; a non-finite loss ends it."""
    model = network(seed)
    losses, summary = sgd_run(
        model, train_pair, val=val_pair, run_dir=run_dir, lr=lr, momentum=MOMENTUM,
        batch_size=BATCH, seed=seed, raw=True, epochs=epochs, shuffle=shuffle,
    )  # fmt: skip
    if summary is None:
        return Result(label, lr, losses, math.inf, 0.0, [])
    model.eval()
    with torch.no_grad():
        predicted = torch.bincount(model(val_pair[0]).argmax(1), minlength=10).tolist()
    return Result(label, lr, losses, summary["train_loss"], summary["val_accuracy"], predicted)


@experiment(
    "data_order_and_scale",
    claim="Normalized inputs train better than raw ones, and a training set sorted by "
    "label and never shuffled ('all the cats first') trains far worse than a shuffled one, "
    "with a loss that jumps at every change of class.",
    seed="001",
    rule="CNN on MNIST-1D, SGD + momentum 0.9, the same epochs for each run: (1) at lr 0.1 "
    "normalized inputs end ≥ 10 points of validation accuracy above raw ones (x·100 + 50); "
    "(2) the best raw run over a sweep of rates stays ≥ 10 points below the best normalized "
    "one; (3) sorted by label with shuffle 'none' ends ≥ 10 points below shuffling every "
    "epoch; (4) its mini-batch loss moves ≥ 2× as much from step to step over the last epoch",
)
def run(ctx: Context) -> Outcome:
    rates, epochs = (QUICK_RATES, 3) if ctx.quick else (FULL_RATES, 15)
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a rerun starts afresh, not in numbered folders
    ds = data.load("mnist1d")
    (x, y), (x_val, y_val) = data.carve_validation(ds.x, ds.y, 0.2, stratify=True, seed=ctx.seed)
    norm = data.Normalizer("feature").fit(x)
    inputs = {
        "normalized": ((norm(x), y), (norm(x_val), y_val)),
        "raw": ((x * RAW_SCALE + RAW_SHIFT, y), (x_val * RAW_SCALE + RAW_SHIFT, y_val)),
    }
    sweep = {
        (scale, lr): train(scale, lr, *inputs[scale], runs / f"{scale}-lr{lr:g}", epochs, ctx.seed)
        for scale in inputs
        for lr in rates
    }
    (x_norm, _), val = inputs["normalized"]
    by_label = torch.sort(y, stable=True).indices
    order = {
        EVERY: sweep["normalized", SHARED_LR],
        ONCE: train(
            ONCE,
            SHARED_LR,
            (x_norm, y),
            val,
            runs / "shuffle-once",
            epochs,
            ctx.seed,
            shuffle="once",
        ),
        SORTED: train(
            SORTED,
            SHARED_LR,
            (x_norm[by_label], y[by_label]),
            val,
            runs / "sorted-none",
            epochs,
            ctx.seed,
            shuffle="none",
        ),
    }

    normalized, raw = sweep["normalized", SHARED_LR], sweep["raw", SHARED_LR]
    best = {
        scale: max((sweep[scale, lr] for lr in rates), key=lambda r: r.val_accuracy)
        for scale in inputs
    }
    shuffled, sorted_ = order[EVERY], order[SORTED]
    per_epoch = len(shuffled.losses) // epochs
    rough = {name: result.roughness(per_epoch) for name, result in order.items()}
    checks = [
        (
            "normalized inputs train better at the same rate",
            f"val accuracy at lr {SHARED_LR:g}: normalized ≥ raw + {100 * GAP:g} points",
            f"normalized {normalized.val_accuracy:.1%} (loss {normalized.train_loss:.3f}), "
            f"raw {raw.val_accuracy:.1%} ({_loss_text(raw)})",
            normalized.val_accuracy >= raw.val_accuracy + GAP,
        ),
        (
            "raw inputs trail at their own best rate too",
            f"best val accuracy over the sweep: normalized ≥ raw + {100 * GAP:g} points",
            f"normalized {best['normalized'].val_accuracy:.1%} (lr "
            f"{best['normalized'].lr:g}), raw {best['raw'].val_accuracy:.1%} "
            f"(lr {best['raw'].lr:g})",
            best["normalized"].val_accuracy >= best["raw"].val_accuracy + GAP,
        ),
        (
            "sorted by label, never shuffled, ends far worse",
            f"val accuracy: sorted ≤ shuffled every epoch − {100 * GAP:g} points",
            f"sorted {sorted_.val_accuracy:.1%}, every epoch {shuffled.val_accuracy:.1%}, "
            f"once {order[ONCE].val_accuracy:.1%}",
            sorted_.val_accuracy <= shuffled.val_accuracy - GAP,
        ),
        (
            "its loss oscillates",
            f"mean |Δ mini-batch loss| over the last epoch: sorted ≥ {ROUGHER:g} × shuffled",
            f"sorted {rough[SORTED]:.3f}, every epoch {rough[EVERY]:.3f}, once {rough[ONCE]:.3f}",
            rough[SORTED] >= ROUGHER * rough[EVERY],
        ),
    ]
    counts = sorted_.predicted or [0]
    top_class = max(range(len(counts)), key=counts.__getitem__)
    top_share = counts[top_class] / max(sum(counts), 1)
    _plot_curves(ctx, normalized, raw, best["raw"], order, per_epoch)
    _plot_accuracy(ctx, rates, sweep, normalized, raw, best["raw"], order)

    evidence = (
        f"after {epochs} epochs at lr {SHARED_LR:g}: normalized inputs "
        f"{normalized.val_accuracy:.1%} validation accuracy, raw (x·{RAW_SCALE:g} + "
        f"{RAW_SHIFT:g}) {raw.val_accuracy:.1%}; the best raw run of the sweep (lr "
        f"{best['raw'].lr:g}) reaches {best['raw'].val_accuracy:.1%} against "
        f"{best['normalized'].val_accuracy:.1%}; sorted by label with no shuffling "
        f"{sorted_.val_accuracy:.1%} against {shuffled.val_accuracy:.1%} (every epoch) and "
        f"{order[ONCE].val_accuracy:.1%} (once), its mini-batch loss moving "
        f"{rough[SORTED] / rough[EVERY]:.1f}× as much per step; it ends "
        f"predicting class {top_class} for {top_share:.0%} of the validation examples"
    )
    numbers = {
        "epochs": epochs,
        "rates": list(rates),
        "val_accuracy": {
            scale: [sweep[scale, lr].val_accuracy for lr in rates] for scale in inputs
        },
        "train_loss": {scale: [sweep[scale, lr].train_loss for lr in rates] for scale in inputs},
        "order_val_accuracy": {name: r.val_accuracy for name, r in order.items()},
        "order_roughness": rough,
        "sorted_predictions_per_class": sorted_.predicted,
    }
    tables = {
        "claims": [
            {"claim": claim, "rule": rule, "measured": measured, "holds": holds}
            for claim, rule, measured, holds in checks
        ],
        "runs": [
            {
                "run": f"{scale} inputs",
                "lr": lr,
                "shuffle": "epoch",
                "train loss": sweep[scale, lr].train_loss,
                "val accuracy": sweep[scale, lr].val_accuracy,
            }
            for scale in inputs
            for lr in rates
        ]
        + [
            {
                "run": f"normalized, shuffle {name}",
                "lr": SHARED_LR,
                "shuffle": name,
                "train loss": r.train_loss,
                "val accuracy": r.val_accuracy,
            }
            for name, r in order.items()
            if name != EVERY
        ],
    }
    verdict = "holds" if all(check[3] for check in checks) else "fails"
    return Outcome(verdict, evidence, numbers, tables)


def _loss_text(result: Result) -> str:
    if math.isfinite(result.train_loss):
        return f"loss {result.train_loss:.3f}"
    return f"non-finite after {len(result.losses)} steps"


def _plot_curves(
    ctx: Context,
    normalized: Result,
    raw: Result,
    raw_best: Result,
    order: dict[str, Result],
    per_epoch: int,
) -> None:
    figure, axes = ctx.figure("data_loss_curves", width=12, height=4.5, columns=2)
    left, right = axes[0]
    for result, label, color in (
        (normalized, f"normalized, lr {normalized.lr:g}", "tab:blue"),
        (raw, f"raw ×{RAW_SCALE:g} + {RAW_SHIFT:g}, lr {raw.lr:g}", "tab:red"),
        (raw_best, f"raw, lr {raw_best.lr:g} (its best)", "tab:orange"),
    ):
        curve = _running_mean(result.losses, WINDOW)
        left.plot(range(1, len(curve) + 1), curve, color=color, label=label)
    left.set(
        yscale="log",
        xlabel="step",
        ylabel=f"mean of the last {WINDOW} mini-batch losses",
        title="Input scale: normalized vs raw features",
    )
    plain_log_labels(left)
    left.legend(fontsize=8)
    colors = {EVERY: "tab:blue", ONCE: "tab:green", SORTED: "tab:red"}
    for name, result in order.items():
        right.plot(
            range(1, len(result.losses) + 1),
            result.losses,
            color=colors[name],
            linewidth=0.8,
            alpha=0.85,
            label=name,
        )
    for boundary in range(per_epoch, len(order[EVERY].losses), per_epoch):
        right.axvline(boundary + 0.5, color="gray", linewidth=0.6, linestyle=":")
    right.axhline(math.log(10), color="gray", linestyle="--", linewidth=0.8, label="ln 10")
    top = 2.5 * math.log(10)  # the first epoch's spikes would flatten the sawtooth
    highest = max(max(result.losses, default=0.0) for result in order.values())
    right.set(
        ylim=(0, top),
        xlabel="step (dotted: epochs)",
        ylabel="mini-batch loss",
        title=f"Example order (normalized, lr {SHARED_LR:g}): loss of every batch",
    )
    if highest > top:
        right.text(
            0.99,
            0.98,
            f"cut at {top:.1f}; peaks up to {highest:.3g}",
            ha="right",
            va="top",
            fontsize=7,
            transform=right.transAxes,
        )
    right.legend(fontsize=8, loc="lower right", bbox_to_anchor=(1, 0.15))
    ctx.save(figure)


def _plot_accuracy(
    ctx: Context,
    rates,
    sweep: dict,
    normalized: Result,
    raw: Result,
    raw_best: Result,
    order: dict[str, Result],
) -> None:
    figure, axes = ctx.figure("data_accuracy", width=12, height=4.5, columns=2)
    left, right = axes[0]
    raw_label = f"raw ×{RAW_SCALE:g} + {RAW_SHIFT:g}"
    bars = [
        (f"normalized, lr {normalized.lr:g}\n{EVERY}", normalized, "tab:blue"),
        (f"{raw_label}\nlr {raw.lr:g}, {EVERY}", raw, "tab:red"),
        (f"{raw_label}\nlr {raw_best.lr:g} (its best)", raw_best, "tab:orange"),
        (f"normalized, lr {SHARED_LR:g}\n{ONCE}", order[ONCE], "tab:green"),
        (f"normalized, lr {SHARED_LR:g}\nsorted, never shuffled", order[SORTED], "tab:purple"),
    ]
    labels = [label for label, _, _ in bars][::-1]  # top to bottom in the listed order
    widths = [100 * result.val_accuracy for _, result, _ in bars][::-1]
    drawn = left.barh(labels, widths, color=[color for _, _, color in bars][::-1])
    left.bar_label(drawn, fmt="%.1f%%", fontsize=8, padding=2)
    left.axvline(10, color="gray", linestyle=":", label="chance (10%)")
    left.set(
        xlabel="validation accuracy (%)",
        xlim=(0, 108),  # room for the labels
        title="Validation accuracy after the last epoch",
    )
    left.tick_params(axis="y", labelsize=8)
    left.legend(fontsize=8, loc="lower right")
    for scale, color in (("normalized", "tab:blue"), ("raw", "tab:red")):
        right.plot(
            rates,
            [100 * sweep[scale, lr].val_accuracy for lr in rates],
            "-o",
            color=color,
            label=f"{scale} inputs",
        )
    right.set(
        xscale="log",
        xlabel="learning rate",
        ylabel="validation accuracy (%)",
        ylim=(0, 100),
        title="The same rates for both (SGD + momentum 0.9)",
    )
    right.legend(fontsize=8)
    ctx.save(figure)


def _running_mean(values: list[float], window: int) -> list[float]:
    """Mean of the last ``window`` values at each position (fewer at the start).

    Not the trainer's smoothed loss: after a blow-up to 1e13 its exponential average takes
    thousands of steps to forget the spike, while the batches are long back at ln 10.
    """
    sums = [0.0, *itertools.accumulate(values)]
    return [(sums[i] - sums[max(0, i - window)]) / min(i, window) for i in range(1, len(sums))]
