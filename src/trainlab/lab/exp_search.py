"""Random search beats grid search when one hyperparameter matters and another does not.

The "Problems & Solutions" notes (seed 004) hold a validation split out because
hyperparameters such as the learning rate must be searched for; how to search is
Bergstra & Bengio (2012), "Random search for hyper-parameter optimization" (cs231n's
lecture 6, not among the lab's notes): with the same budget of 9 trials, a 3 × 3 grid
tries only 3 distinct values of each hyperparameter, random search tries 9.
When the validation loss depends on one of them sharply (the learning rate) and hardly on
the other, the grid spends 6 of its 9 trials repeating learning rates it already tried.

The objective here is a validation loss with that shape: a valley 0.3 decades wide in
log₁₀(learning rate) ∈ [−5, 0] and a weight decay that moves it by at most 0.02. Where the
best rate lies is not known beforehand, so each repetition draws it at random in the
range, and a new random search is drawn too. Both search in log scale (a rate is a
factor: 1e-4 to 1e-3 is as far as 1e-3 to 1e-2). The grid is the best a grid can do
without knowing the optimum — the centres of three equal thirds — so its nearest rate is
up to 1/6 of the range off, uniformly; random's nearest of 9 is closer in about 70% of
the draws (1 − 6·∫₀^{1/6} (1 − 2d)⁹ dd ≈ 0.70 away from the ends).

The full mode also searches for real: 9 short AdamW trainings of an MLP on digits per
search, the learning rate and weight decay drawn as above.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch

from .. import data, models
from ..train import NonFiniteError, fit
from .experiment import Context, Outcome, experiment

TRIALS = 9
LOG_LR = (-5.0, 0.0)  # log₁₀ learning rate: the hyperparameter that matters
LOG_WD = (-6.0, -2.0)  # log₁₀ weight decay: the one that does not
VALLEY_WIDTH = 0.3  # decades of learning rate
CHANCE_LOSS = math.log(10)  # a 10-class softmax that learned nothing
BEST_LOSS = 0.3
NUISANCE = 0.02  # the most the weight decay changes the loss


def validation_loss(log_lr: torch.Tensor, log_wd: torch.Tensor, best_log_lr: Any) -> torch.Tensor:
    """The synthetic validation loss: a sharp valley in log₁₀ lr, nearly flat in weight decay.

    L(u, w) = ln 10 − (ln 10 − 0.3)·exp(−(u − u*)² / (2·0.3²)) + 0.02·(w − w_min)/(w_max − w_min)
    """
    valley = torch.exp(-0.5 * ((log_lr - best_log_lr) / VALLEY_WIDTH) ** 2)
    nuisance = NUISANCE * (log_wd - LOG_WD[0]) / (LOG_WD[1] - LOG_WD[0])
    return CHANCE_LOSS - (CHANCE_LOSS - BEST_LOSS) * valley + nuisance


def grid_trials(trials: int = TRIALS) -> torch.Tensor:
    """A √trials × √trials grid, (log lr, log wd) rows: the centres of equal slices."""
    side = math.isqrt(trials)
    centres = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    u = LOG_LR[0] + (LOG_LR[1] - LOG_LR[0]) * centres
    w = LOG_WD[0] + (LOG_WD[1] - LOG_WD[0]) * centres
    return torch.cartesian_prod(u, w)


def random_trials(generator: torch.Generator, trials: int = TRIALS) -> torch.Tensor:
    """``trials`` points drawn uniformly in (log lr, log wd): log-uniform rates and decays."""
    unit = torch.rand(trials, 2, generator=generator, dtype=torch.float64)
    low = torch.tensor([LOG_LR[0], LOG_WD[0]], dtype=torch.float64)
    span = torch.tensor([LOG_LR[1] - LOG_LR[0], LOG_WD[1] - LOG_WD[0]], dtype=torch.float64)
    return low + span * unit


def synthetic_searches(repetitions: int, seed: int) -> dict[str, torch.Tensor]:
    """Per repetition: the best rate u* drawn in the range, the grid's and a fresh random
    search's best loss, and the random search's trials."""
    generator = torch.Generator().manual_seed(seed)
    grid = grid_trials()
    best = torch.empty(repetitions, dtype=torch.float64)
    grid_best, random_best = torch.empty_like(best), torch.empty_like(best)
    points = torch.empty(repetitions, TRIALS, 2, dtype=torch.float64)
    for r in range(repetitions):
        best[r] = LOG_LR[0] + (LOG_LR[1] - LOG_LR[0]) * torch.rand(1, generator=generator)
        points[r] = random_trials(generator)
        grid_best[r] = validation_loss(grid[:, 0], grid[:, 1], best[r]).min()
        random_best[r] = validation_loss(points[r, :, 0], points[r, :, 1], best[r]).min()
    return {"best_log_lr": best, "grid": grid_best, "random": random_best, "points": points}


def digits_trial(
    split: dict[str, tuple[torch.Tensor, torch.Tensor]],
    log_lr: float,
    log_wd: float,
    run_dir: Path,
    epochs: int = 2,
) -> float:
    """Validation loss of an MLP on digits after ``epochs`` of AdamW at (lr, weight decay);
    inf when the rate makes the loss overflow."""
    torch.manual_seed(0)  # the same initial weights for every trial: only (lr, wd) differ
    model = models.mlp(split["train"][0].shape[1:], (64,), 10)
    try:
        summary = fit(
            model,
            split["train"],
            val=split["val"],
            optimizer="adamw",
            lr=10**log_lr,
            settings={"optimizer.options": {"weight_decay": 10**log_wd}},
            epochs=epochs,
            batch_size=64,
            seed=0,
            run_dir=run_dir,
            progress=False,  # one of many runs inside an experiment: no bar of its own
        )
    except NonFiniteError:
        return math.inf
    return float(summary["val_loss"])


def digits_searches(searches: int, seed: int, runs: Path) -> dict[str, Any]:
    """The grid and ``searches`` random searches of 9 trainings each on digits."""
    ds = data.load("digits")
    parts = data.split(ds.x, ds.y, (0.7, 0.3), stratify=True, seed=seed)
    norm = data.Normalizer("feature").fit(parts.train[0])
    split = {name: (norm(x), y) for name, (x, y) in zip(("train", "val"), parts[:2])}
    generator = torch.Generator().manual_seed(seed)
    grid = grid_trials().tolist()
    grid_losses = [digits_trial(split, u, w, runs / f"grid-{i}") for i, (u, w) in enumerate(grid)]
    random_points, random_losses = [], []
    for s in range(searches):
        points = random_trials(generator).tolist()
        random_points.append(points)
        random_losses.append(
            [digits_trial(split, u, w, runs / f"random{s}-{i}") for i, (u, w) in enumerate(points)]
        )
    return {
        "grid_points": grid,
        "grid_losses": grid_losses,
        "random_points": random_points,
        "random_losses": random_losses,
    }


@experiment(
    "random_vs_grid",
    claim="With the same budget of trials, random search finds a better setting than grid "
    "search when one hyperparameter matters and another does not: it tries 9 distinct "
    "values of the one that matters where a 3 × 3 grid tries 3.",
    seed="004",
    rule="9 trials over log₁₀ lr ∈ [−5, 0] × log₁₀ weight decay ∈ [−6, −2] on a validation "
    "loss with a 0.3-decade valley in lr (its place drawn anew each repetition): random "
    "search's best loss is lower than the 3 × 3 grid's in more than half of the repetitions "
    "(1,000), with 9 distinct learning rates against 3; in full mode "
    "also on digits (AdamW, 2 epochs): random's best validation loss beats the grid's in "
    "more than half of 20 random searches",
)
def run(ctx: Context) -> Outcome:
    repetitions = 1000
    synthetic = synthetic_searches(repetitions, ctx.seed)
    wins = int((synthetic["random"] < synthetic["grid"]).sum())
    share = wins / repetitions
    distinct_grid = len(set(grid_trials()[:, 0].tolist()))
    distinct_random = len(set(synthetic["points"][0, :, 0].tolist()))
    holds = share > 0.5 and distinct_random == TRIALS and distinct_grid == math.isqrt(TRIALS)
    evidence = (
        f"random search's best beats the 3 × 3 grid's in {wins} of {repetitions} repetitions "
        f"({share:.0%}); median best loss {synthetic['random'].median():.3f} (random) vs "
        f"{synthetic['grid'].median():.3f} (grid), {distinct_random} vs {distinct_grid} "
        "distinct learning rates tried"
    )
    numbers: dict[str, Any] = {
        "repetitions": repetitions,
        "random_wins": wins,
        "random_win_share": share,
        "distinct_learning_rates": {"grid": distinct_grid, "random": distinct_random},
        "median_best": {
            "grid": synthetic["grid"].median(),
            "random": synthetic["random"].median(),
        },
    }
    real = None
    if not ctx.quick:
        runs = ctx.out / "runs"
        shutil.rmtree(runs, ignore_errors=True)  # a new run needs new or empty folders
        real = digits_searches(20, ctx.seed, runs)
        grid_best = min(real["grid_losses"])
        random_bests = [min(losses) for losses in real["random_losses"]]
        real_wins = sum(b < grid_best for b in random_bests)
        holds &= real_wins > len(random_bests) / 2
        evidence += (
            f"; on digits the grid's best validation loss is {grid_best:.3f}, random "
            f"search's beats it in {real_wins} of {len(random_bests)} searches (median best "
            f"{sorted(random_bests)[len(random_bests) // 2]:.3f})"
        )
        numbers["digits"] = {**real, "grid_best": grid_best, "random_bests": random_bests}
    _draw(ctx, synthetic, real)
    return Outcome("holds" if holds else "fails", evidence, numbers)


def _draw(ctx: Context, synthetic: dict[str, torch.Tensor], real: dict[str, Any] | None) -> None:
    columns = 3 if real is None else 4
    figure, axes = ctx.figure("random_vs_grid", width=4.2 * columns, height=4.3, columns=columns)
    space, profile, spread = axes[0][:3]
    grid = grid_trials()
    # The example drawn: the first repetition with the majority's outcome (random wins).
    wins = (synthetic["random"] < synthetic["grid"]).nonzero().flatten().tolist()
    example = wins[0] if wins else 0
    points, u_star = synthetic["points"][example], synthetic["best_log_lr"][example]
    u = torch.linspace(*LOG_LR, 300, dtype=torch.float64)
    w = torch.linspace(*LOG_WD, 100, dtype=torch.float64)
    uu, ww = torch.meshgrid(u, w, indexing="xy")
    contour = space.contourf(uu, ww, validation_loss(uu, ww, u_star), levels=20, cmap="viridis")
    figure.colorbar(contour, ax=space, label="validation loss")
    space.plot(
        grid[:, 0],
        grid[:, 1],
        "X",
        color="white",
        markeredgecolor="k",
        markersize=9,
        label="grid (3 × 3)",
    )
    space.plot(
        points[:, 0], points[:, 1], "o", color="tab:orange", markeredgecolor="k", label="random (9)"
    )
    space.set(
        xlabel="log₁₀ learning rate (matters)",
        ylabel="log₁₀ weight decay (does not)",
        title=f"Repetition {example + 1}: 9 trials, two layouts",
    )
    space.legend(loc="upper left", fontsize=8)

    profile.plot(u, validation_loss(u, torch.full_like(u, LOG_WD[0]), u_star), color="0.4")
    for values, marker, color, label in (
        (grid[:, 0], "X", "white", "grid: 3 distinct rates"),
        (points[:, 0], "o", "tab:orange", "random: 9 distinct rates"),
    ):
        loss = validation_loss(values, torch.full_like(values, LOG_WD[0]), u_star)
        profile.plot(
            values, loss, marker, color=color, markeredgecolor="k", markersize=8, label=label
        )
    profile.set(
        xlabel="log₁₀ learning rate",
        ylabel="validation loss",
        title="What each layout sees of the learning rate",
    )
    profile.legend(fontsize=8)

    bins = torch.linspace(BEST_LOSS, CHANCE_LOSS + NUISANCE, 30).tolist()
    for name, color in (("grid", "0.4"), ("random", "tab:orange")):
        spread.hist(
            synthetic[name].tolist(),
            bins=bins,
            histtype="step",
            linewidth=2,
            color=color,
            label=f"{name} (median {synthetic[name].median():.2f})",
        )
    share = float((synthetic["random"] < synthetic["grid"]).double().mean())
    spread.set(
        xlabel="best validation loss of the 9 trials",
        ylabel="repetitions",
        title=f"Best of each search: random wins {share:.0%}",
    )
    spread.legend(fontsize=8)

    if real is not None:
        digits = axes[0][3]
        tried = [
            (10 ** p[0], v)
            for search, values in zip(real["random_points"], real["random_losses"])
            for p, v in zip(search, values)
            if math.isfinite(v)  # a rate that overflowed has no loss to draw
        ]
        lrs, losses = zip(*tried)
        digits.plot(
            lrs,
            losses,
            "o",
            color="tab:orange",
            alpha=0.35,
            markersize=4,
            label=f"random: {len(real['random_losses'])} searches × 9",
        )
        digits.plot(
            [10 ** p[0] for p in real["grid_points"]],
            real["grid_losses"],
            "X",
            color="white",
            markeredgecolor="k",
            markersize=9,
            label="grid (3 × 3)",
        )
        digits.axhline(min(real["grid_losses"]), color="0.4", linestyle=":", label="grid's best")
        digits.set(
            xscale="log",
            yscale="log",
            xlabel="learning rate (AdamW)",
            ylabel="validation loss after 2 epochs",
            title="Digits MLP: real trainings",
        )
        digits.legend(fontsize=8)
    ctx.save(figure)
