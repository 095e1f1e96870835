"""Model ensembles and weight averaging: what each buys over a single model.

Seed 000 ("02_Model Ensembling"): train multiple independent models and average their
results at test time — "enjoy 2% extra performance" — or, more cheaply, average several
checkpoints of one model, or keep a running average of the parameters and test with it
(``x_test = 0.995*x_test + 0.005*x``). The later literature gives the cheap variants
names: snapshot ensembles (Huang et al. 2017: a cyclic cosine schedule, one snapshot per
cycle, at the cost of one run) and stochastic weight averaging (Izmailov et al. 2018:
equal averaging of the weights late in training, BatchNorm statistics recomputed).

Two MNIST-1D models, the demo's CNN (≈ 98%: little room left) and an MLP (≈ 60%: room
to spare), each trained with trainlab's trainer in groups: K members with different seeds
(EMA kept beside the raw weights, the last checkpoints kept), one SWA run and one
snapshot run (5 cycles), each as long as one member. For every group: a single model's
raw and EMA weights (mean over the members), SWA, the snapshot ensemble, the ensemble of
the last 3 checkpoints of one member, and the K-seed ensemble — accuracy and test NLL,
mean ± std over groups.
"""

from __future__ import annotations

import math
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..cli import DEMO_SETTINGS
from ..ensembles import ensemble, member_log_probs, score
from ..train.config import load_config
from ..train.trainer import Trainer
from .common import mean_std
from .experiment import Context, Outcome, experiment

CHECKPOINTS = 3  # the checkpoint ensemble: the last 3 (one per epoch)
CYCLES = 5  # the snapshot ensemble's cycles
STEPS_PER_EPOCH = math.ceil(3600 / 128)  # MNIST-1D's 4000 less 10% validation, batches of 128


@dataclass(frozen=True)
class Model:
    """A model and its recipe as config overrides; ``epochs`` sets the cost of one run."""

    name: str
    settings: tuple[str, ...]
    epochs: int
    schedule: str  # the members' schedule: "one_cycle" or "constant"
    swa_lr: float  # SWA's constant rate: about the schedule's rate where SWA starts
    snapshot_lr: float  # the cycles' peak: their mean rate (half the peak) = the recipe's

    def steps(self) -> int:
        return self.epochs * STEPS_PER_EPOCH

    def common(self, seed: int, threads: int) -> list[str]:
        return [
            *self.settings,
            f"run.epochs={self.epochs}",
            f"run.seed={seed}",
            f"run.threads={threads}",
            f"run.keep_last={CHECKPOINTS}",
            "run.checkpoint_seconds=0",  # one checkpoint per epoch, however fast
            "run.keep_best_by=none",
        ]


CNN = Model(
    "CNN",
    tuple(s for s in DEMO_SETTINGS if not s.startswith(("run.", "schedule."))),
    epochs=20,
    schedule="one_cycle",
    swa_lr=0.002,  # one-cycle at 75% of the run: 0.28 × 0.01
    snapshot_lr=0.01,  # one-cycle's mean rate is about half its peak, as a cosine cycle's
)
MLP = Model(
    "MLP",
    (
        "data.val_fraction=0.1",
        "model.kind=mlp",
        "model.hidden=[256, 256]",
        "model.batch_norm=false",
        "optimizer.name=adamw",
        "optimizer.lr=0.001",
    ),
    epochs=30,
    schedule="constant",
    swa_lr=0.001,  # the recipe's constant rate: SWA's raw weights are a member's
    snapshot_lr=0.002,  # mean rate 0.001, the recipe's
)
METHODS = (
    "single model",
    "EMA",
    "SWA",
    "snapshot ensemble",
    f"last {CHECKPOINTS} checkpoints",
    "seed ensemble",
)


def member_settings(model: Model, seed: int, threads: int) -> list[str]:
    """A member: the recipe (one-cycle for the CNN) with an EMA kept beside it."""
    settings = [*model.common(seed, threads), "averaging.ema=true", "averaging.decay=0.99"]
    if model.schedule == "one_cycle":
        settings.append(f'schedule.phases=[{{name="one_cycle", total={model.steps()}}}]')
    return settings


def swa_settings(model: Model, seed: int, threads: int) -> list[str]:
    """SWA from 75% of the run, one average per epoch, at a constant rate from there."""
    start = model.steps() * 3 // 4
    return [
        *member_settings(model, seed, threads),
        f"averaging.swa_start={start}",
        f"averaging.swa_lr={model.swa_lr}",
        f"averaging.swa_every={STEPS_PER_EPOCH}",
    ]


def snapshot_settings(model: Model, seed: int, threads: int) -> list[str]:
    """The same steps as one member, as CYCLES cosine cycles with a snapshot after each."""
    phases = f'[{{name="cyclic_cosine", total={model.steps()}, cycles={CYCLES}}}]'
    return [
        *model.common(seed, threads),
        f"optimizer.lr={model.snapshot_lr}",
        f"schedule.phases={phases}",
        "averaging.snapshots=true",
    ]


def train(settings: list[str], run_dir: Path) -> dict[str, Any]:
    return Trainer(load_config(None, settings), run_dir).fit()


def group(model: Model, index: int, members: int, runs: Path, threads: int) -> dict[str, Any]:
    """One group: ``members`` seeds, an SWA run and a snapshot run; every method's scores."""
    seeds = [1000 * index + k for k in range(members)]
    folders = [runs / f"{model.name}-g{index}-seed{seed}" for seed in seeds]
    summaries = [
        train(member_settings(model, s, threads), f) for s, f in zip(seeds, folders, strict=True)
    ]
    swa = train(swa_settings(model, seeds[0], threads), runs / f"{model.name}-g{index}-swa")
    snapshot_dir = runs / f"{model.name}-g{index}-snapshots"
    train(snapshot_settings(model, seeds[0], threads), snapshot_dir)
    log_probs, y, _ = member_log_probs(folders)  # each member's predictions, once
    growth = [score(log_probs[:k], y) for k in range(1, members + 1)]  # the first k averaged
    snapshots = ensemble(snapshot_dir, snapshots=True)["ensemble"]
    checkpoints = ensemble(folders[0], last=CHECKPOINTS)["ensemble"]

    def mean(key: str) -> float:
        return statistics.mean(s[key] for s in summaries)

    scores = {
        "single model": (mean("test_accuracy"), mean("test_loss")),
        "EMA": (mean("ema_test_accuracy"), mean("ema_test_loss")),
        "SWA": (swa["swa_test_accuracy"], swa["swa_test_loss"]),
        "snapshot ensemble": (snapshots["test_accuracy"], snapshots["test_loss"]),
        f"last {CHECKPOINTS} checkpoints": (checkpoints["test_accuracy"], checkpoints["test_loss"]),
        "seed ensemble": (growth[-1]["test_accuracy"], growth[-1]["test_loss"]),
    }
    return {
        "seeds": seeds,
        "scores": {k: {"accuracy": a, "loss": loss} for k, (a, loss) in scores.items()},
        "members": [score(member[None], y)["test_accuracy"] for member in log_probs],
        "growth": [(g["test_accuracy"], g["test_loss"]) for g in growth],
        "swa_raw": (swa["test_accuracy"], swa["test_loss"]),
    }


@experiment(
    "ensembles",
    claim="Averaging the predictions of independently trained models beats a single model "
    "(the lecture: about 2% more); cheaper averages — snapshots of one cyclic run, the last "
    "checkpoints, the running average of the weights (EMA, SWA) — get part of the gain at "
    "the cost of one run.",
    seed="000",
    rule="mean over groups, on both the CNN and the MLP: (1) the seed ensemble's test "
    "accuracy is above the single models' and its test NLL below; (2) the snapshot "
    "ensemble, trained for the steps of one model, is more accurate than the single models; "
    "(3) SWA and EMA are each at least as accurate as the raw weights (a single model's mean)",
)
def run(ctx: Context) -> Outcome:
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a new run needs new or empty folders
    groups, members = (1, 3) if ctx.quick else (3, 5)
    models = [_quick(m) for m in (CNN, MLP)] if ctx.quick else [CNN, MLP]
    found: dict[str, list[dict[str, Any]]] = {
        m.name: [group(m, g, members, runs, ctx.threads) for g in range(groups)] for m in models
    }
    shutil.rmtree(runs, ignore_errors=True)  # weights and checkpoints: most of the size

    rows, claims, pieces = [], [], []
    for name, results in found.items():
        table = {
            method: {
                key: mean_std([r["scores"][method][key] for r in results])
                for key in ("accuracy", "loss")
            }
            for method in METHODS
        }
        for method, values in table.items():
            (acc, acc_sd), (loss, loss_sd) = values["accuracy"], values["loss"]
            rows.append(
                {
                    "model": name,
                    "method": method,
                    "test_accuracy": acc,
                    "accuracy_std": acc_sd,
                    "test_nll": loss,
                    "nll_std": loss_sd,
                }
            )
        single = table["single model"]["accuracy"][0]
        gain = table["seed ensemble"]["accuracy"][0] - single
        parts = {
            "seed ensemble more accurate, lower NLL": gain > 0
            and table["seed ensemble"]["loss"][0] < table["single model"]["loss"][0],
            "snapshot ensemble more accurate": table["snapshot ensemble"]["accuracy"][0] > single,
            "SWA at least as accurate": table["SWA"]["accuracy"][0] >= single,
            "EMA at least as accurate": table["EMA"]["accuracy"][0] >= single,
        }
        claims += [{"model": name, "claim": claim, "holds": ok} for claim, ok in parts.items()]
        pieces.append(
            f"{name}: single {single:.1%}, seed ensemble of {members} {gain * 100:+.1f} points, "
            f"snapshots {(table['snapshot ensemble']['accuracy'][0] - single) * 100:+.1f}, "
            f"last {CHECKPOINTS} checkpoints "
            f"{(table[f'last {CHECKPOINTS} checkpoints']['accuracy'][0] - single) * 100:+.1f}, "
            f"EMA {(table['EMA']['accuracy'][0] - single) * 100:+.1f}, "
            f"SWA {(table['SWA']['accuracy'][0] - single) * 100:+.1f}"
        )
    figures(ctx, found, rows, members)
    evidence = f"mean over {groups} group(s): " + "; ".join(pieces)
    return Outcome(
        "holds" if all(c["holds"] for c in claims) else "fails",
        evidence,
        {"groups": groups, "members": members, "results": found},
        {"methods": rows, "claims": claims},
    )


def _quick(model: Model) -> Model:
    return replace(model, epochs=max(4, model.epochs // 2))


def figures(
    ctx: Context, found: dict[str, list[dict[str, Any]]], rows: list[dict[str, Any]], k: int
) -> None:
    """Accuracy and NLL of every method per model; the seed ensemble's growth with K."""
    names = list(found)
    panels = (
        ("test_accuracy", "accuracy_std", "accuracy", "test accuracy"),
        ("test_nll", "nll_std", "loss", "test NLL (lower is better)"),
    )
    colors = ["tab:gray", "tab:cyan", "tab:purple", "tab:orange", "tab:olive", "tab:green"]
    figure, axes = ctx.figure("ensembles", 10, 3.4 * len(names), rows=len(names), columns=2)
    for row, name in enumerate(names):
        mine = [r for r in rows if r["model"] == name]
        where = range(len(mine))
        for column, (key, std, measure, label) in enumerate(panels):
            axis = axes[row][column]
            values = [r[key] for r in mine]
            errors = [r[std] for r in mine]
            axis.barh(where, values, xerr=errors, alpha=0.75, color=colors)
            for index, result in enumerate(found[name]):
                points = [result["scores"][r["method"]][measure] for r in mine]
                axis.plot(points, where, "k.", markersize=4, label="groups" if not index else None)
            axis.set_yticks(where, [r["method"] for r in mine] if column == 0 else [])
            axis.invert_yaxis()
            pad = (max(values) - min(values)) * 0.6 + 1e-3
            axis.set_xlim(max(0.0, min(values) - pad), max(values) + pad)
            axis.set_title(f"{name}: {label}")
    ctx.save(figure)

    figure, axes = ctx.figure("ensemble_size", width=7.5, height=3.8, columns=len(names))
    for column, name in enumerate(names):
        axis = axes[0][column]
        for index, result in enumerate(found[name]):
            accuracy = [a for a, _ in result["growth"]]
            first = index == 0
            axis.plot(range(1, k + 1), accuracy, "o-", color="tab:green", alpha=0.7,
                      label="seed ensemble" if first else None)  # fmt: skip
            axis.plot([1] * len(result["members"]), result["members"], "k.", alpha=0.6,
                      label="members alone" if first else None)  # fmt: skip
        axis.set_xticks(range(1, k + 1))
        axis.set_xlabel("members averaged (K)")
        axis.set_ylabel("test accuracy")
        axis.set_title(f"{name}: accuracy against ensemble size")
        axis.legend(loc="lower right")
    ctx.save(figure)
