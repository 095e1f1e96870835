"""The loss landscape around a solution, with and without batch norm (Li et al. 2018).

Seed 004 ("Problems & Solutions") motivates batch norm by the shift of each layer's
inputs during training and credits it with faster, more accurate convergence; Li et al.'s
pictures show the other side of that story: the nets that train easily sit in smoother,
wider basins. We train trainlab's CNN on MNIST-1D with and without batch norm, and a small
residual net with and without its skip connections, and look at the training loss

1. along the straight line from the initial weights θ₀ to the solution θ* (Goodfellow
   et al. 2015): L(θ₀ + α (θ* − θ₀)), α from −0.25 to 1.25;
2. on a 2-D slice around the solution: L(θ* + a δ + b η), a, b ∈ [−1, 1], along two
   random Gaussian directions δ, η with **filter normalization**: each filter of a
   direction (a conv's output channel, a Linear weight's row) is rescaled to the norm of
   the same filter of θ*,  d_ij ← d_ij / ‖d_ij‖ · ‖θ*_ij‖. Without it, a direction moves
   the small filters of a layer by more than their own size and the large ones by almost
   nothing, and BN's scale invariance makes slices of different nets incomparable. Biases
   and BN's γ, β get zero in both directions (Li et al. exclude them too).

BN's running statistics: the 2-D slice evaluates every point in eval mode with the
*solution's* statistics — the network as deployed, moved only in its weights. (Re-computing
the statistics at each point would re-normalize away part of every perturbation.) The 1-D
path runs from θ₀, whose statistics were never measured, so there BN normalizes with the
statistics of the evaluation subset itself (one batch of all of it, buffers untouched).
"""

from __future__ import annotations

import itertools
import math
import shutil
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .. import data, models
from ..train import fit
from ..train.checkpoint import CHECKPOINTS_DIR
from .experiment import Context, Outcome, experiment

CHANNELS, KERNEL = (16, 32), 5  # the batch-norm experiment's CNN at half width: 441 evaluations
WIDTH, BLOCKS = 16, 2  # the residual net: a stem, a 2× pool and BLOCKS two-conv blocks
LR, MOMENTUM, BATCH = 0.05, 0.9, 64  # SGD with momentum: every net trains at this rate
ALPHAS = [round(-0.25 + 0.05 * k, 2) for k in range(31)]  # the 1-D path, −0.25 … 1.25
RADIUS = 0.5  # "around the solution": grid points with √(a² + b²) ≤ 0.5
BUMP = 1e-3  # the 1-D path is monotone if it never rises by more than this between 0 and 1
CLIP = 5.0  # contour plots: losses above this are drawn in one colour


class ResidualNet(nn.Module):
    """stem conv → ReLU → 2× max pool → BLOCKS × (conv → ReLU → conv, + x if ``skip``, ReLU) →
    global average → Linear. With ``skip=False`` it is the same plain net ("no-short")."""

    def __init__(self, width: int, blocks: int, classes: int, *, skip: bool) -> None:
        super().__init__()
        self.skip = skip
        self.stem = nn.Conv1d(1, width, KERNEL, padding="same")
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(width, width, KERNEL, padding="same"),
                nn.ReLU(),
                nn.Conv1d(width, width, KERNEL, padding="same"),
            )
            for _ in range(blocks)
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:
        h = F.max_pool1d(F.relu(self.stem(x.unsqueeze(1))), 2)
        for block in self.blocks:
            h = F.relu(block(h) + h if self.skip else block(h))
        return self.head(h.mean(dim=2))


#: The nets compared: name → builder(classes). Each pair differs in one thing.
NETS: dict[str, Callable[[int], nn.Module]] = {
    "CNN": lambda classes: models.cnn((40,), CHANNELS, classes, kernel_size=KERNEL),
    "CNN + BN": lambda classes: models.cnn(
        (40,), CHANNELS, classes, kernel_size=KERNEL, batch_norm=True
    ),
    "residual, no skip": lambda classes: ResidualNet(WIDTH, BLOCKS, classes, skip=False),
    "residual": lambda classes: ResidualNet(WIDTH, BLOCKS, classes, skip=True),
}


def filter_normalized_direction(
    weights: dict[str, Tensor], generator: torch.Generator
) -> dict[str, Tensor]:
    """A Gaussian direction, each filter rescaled to the norm of the solution's filter.

    For every weight with ≥ 2 axes (conv kernels, Linear matrices), filter i along the first
    (output) axis gets d_i ← d_i / ‖d_i‖ · ‖θ_i‖. Biases and BN's γ, β (1-axis tensors) get
    zero: the slice leaves them at the solution.

    References: Li, Xu, Taylor, Studer, Goldstein, "Visualizing the Loss Landscape of Neural
    Nets", NeurIPS 2018, section 4.
    """
    direction = {}
    for name, theta in weights.items():
        if theta.dim() < 2:
            direction[name] = torch.zeros_like(theta)
            continue
        d = torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        d_norm = d.flatten(1).norm(dim=1).view(-1, *[1] * (theta.dim() - 1))
        theta_norm = theta.flatten(1).norm(dim=1).view_as(d_norm)
        direction[name] = d / d_norm * theta_norm
    return direction


def loss_at(
    model: nn.Module, weights: dict[str, Tensor], batch: tuple[Tensor, Tensor], *, batch_stats: bool
) -> float:
    """Cross-entropy of ``model`` with ``weights`` on ``batch``; the model is left as it was.

    ``batch_stats``: BN normalizes with the batch's own statistics (train mode) instead of
    the running ones; the running buffers are cloned, so they never change.
    """
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    model.train(batch_stats)
    try:
        with torch.no_grad():
            logits = functional_call(model, {**weights, **buffers}, (batch[0],))
    finally:
        model.train(was_training)
    return float(F.cross_entropy(logits, batch[1]))


def interpolation(
    model: nn.Module, start: dict[str, Tensor], end: dict[str, Tensor], batch: Any
) -> list[float]:
    """L(θ₀ + α (θ* − θ₀)) at each α of ``ALPHAS``, BN on the batch's statistics."""
    return [
        loss_at(
            model, {n: start[n] + a * (end[n] - start[n]) for n in end}, batch, batch_stats=True
        )
        for a in ALPHAS
    ]


def surface(
    model: nn.Module,
    center: dict[str, Tensor],
    directions: tuple[dict[str, Tensor], dict[str, Tensor]],
    coordinates: list[float],
    batch: Any,
    *,
    batch_stats: bool = False,
) -> list[list[float]]:
    """L(θ* + a δ + b η) on the grid ``coordinates``², rows b, columns a; BN in eval mode
    with the solution's statistics unless ``batch_stats``."""
    delta, eta = directions
    return [
        [
            loss_at(
                model,
                {n: center[n] + a * delta[n] + b * eta[n] for n in center},
                batch,
                batch_stats=batch_stats,
            )
            for a in coordinates
        ]
        for b in coordinates
    ]


def basin_numbers(grid: list[list[float]], coordinates: list[float]) -> dict[str, float]:
    """Mean loss increase over the center at radius ≤ RADIUS (center excluded) and over the
    whole grid, and the share of the grid within 0.1 of the center's loss."""
    middle = len(coordinates) // 2
    center = grid[middle][middle]
    near, everywhere = [], []
    for b, row in zip(coordinates, grid):
        for a, loss in zip(coordinates, row):
            rise = loss - center if math.isfinite(loss) else math.inf
            everywhere.append(rise)
            if 0 < math.hypot(a, b) <= RADIUS + 1e-9:
                near.append(rise)
    return {
        "center_loss": center,
        "near_rise": sum(near) / len(near),
        "grid_rise": sum(everywhere) / len(everywhere),
        "flat_share": sum(r <= 0.1 for r in everywhere) / len(everywhere),
    }


def largest_bump(path: list[float]) -> float:
    """The largest rise of the 1-D path between α = 0 and α = 1 (≤ 0: monotone)."""
    inside = [loss for a, loss in zip(ALPHAS, path) if 0 <= a <= 1]
    return max(later - earlier for earlier, later in itertools.pairwise(inside))


@experiment(
    "loss_landscape",
    claim="The CNN with batch norm sits in a smoother, wider basin around its solution than "
    "the same CNN without it (Li et al. 2018's filter-normalized slices).",
    seed="004",
    rule="each net trained by SGD + momentum 0.9 (lr 0.05) on MNIST-1D; 2-D slice "
    "L(θ* + aδ + bη), a, b ∈ [−1, 1], along two filter-normalized Gaussian directions "
    "(biases and BN parameters excluded, BN in eval mode with the solution's statistics), "
    "the training loss on a fixed subset (quick: 9×9 grid, 512 examples; full: 21×21, "
    "2000): holds if the mean loss increase over the center at the grid points with "
    "radius ≤ 0.5 is smaller with BN than without. Also reported, not judged: whether the "
    "1-D path θ₀ → θ* is monotone (never rises by more than 1e-3 for α in [0, 1]), and the "
    "residual net with and without skip connections",
)
def run(ctx: Context) -> Outcome:
    steps, size, points = (200, 512, 9) if ctx.quick else (1000, 2000, 21)
    coordinates = [-1 + 2 * k / (points - 1) for k in range(points)]
    runs = ctx.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # a rerun starts afresh, not in numbered folders
    ds = data.load("mnist1d")
    x = data.Normalizer("feature").fit(ds.x)(ds.x)
    subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(ctx.seed))[:size]
    batch = (x[subset], ds.y[subset])
    paths, grids, finals = {}, {}, {}
    for k, (name, build) in enumerate(NETS.items()):
        torch.manual_seed(ctx.seed)
        model = build(ds.classes)
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        run_dir = runs / name.replace(" ", "").replace(",", "-").replace("+", "-")
        try:
            summary = fit(
                model,
                (x, ds.y),
                run_dir=run_dir,
                optimizer="sgd",
                lr=LR,
                batch_size=BATCH,
                seed=ctx.seed,
                keep_best_by=None,
                settings={"optimizer.options": {"momentum": MOMENTUM}, "run.steps": steps},
                progress=False,  # one of many runs inside an experiment: no bar of its own
            )
        finally:
            shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
        finals[name] = summary["train_loss"]
        model.eval()
        solution = {n: p.detach().clone() for n, p in model.named_parameters()}
        generator = torch.Generator().manual_seed(ctx.seed * 1000 + k)
        directions = (
            filter_normalized_direction(solution, generator),
            filter_normalized_direction(solution, generator),
        )
        paths[name] = interpolation(model, start, solution, batch)
        grids[name] = surface(model, solution, directions, coordinates, batch)
        if name == "CNN + BN":  # the other choice for BN, to show how much it matters
            batch_stats_grid = surface(
                model, solution, directions, coordinates, batch, batch_stats=True
            )

    basins = {name: basin_numbers(grid, coordinates) for name, grid in grids.items()}
    batch_stats_basin = basin_numbers(batch_stats_grid, coordinates)
    bumps = {name: largest_bump(path) for name, path in paths.items()}
    plain, normed = basins["CNN"], basins["CNN + BN"]
    holds = normed["near_rise"] < plain["near_rise"]
    monotone = {name: bump <= BUMP for name, bump in bumps.items()}
    _draw_paths(ctx, paths)
    _draw_slices(ctx, grids, coordinates)

    evidence = (
        f"{steps} SGD steps each; mean loss increase at radius ≤ {RADIUS} around the "
        f"solution: {normed['near_rise']:.3f} with BN vs {plain['near_rise']:.3f} without "
        f"(center losses {normed['center_loss']:.3f} and {plain['center_loss']:.3f}; whole "
        f"grid {normed['grid_rise']:.3f} vs {plain['grid_rise']:.3f}; BN on the subset's own "
        f"statistics instead: {batch_stats_basin['near_rise']:.3f}); residual net "
        f"{basins['residual']['near_rise']:.3f} with skips, "
        f"{basins['residual, no skip']['near_rise']:.3f} without; 1-D path θ₀ → θ* monotone "
        f"for {', '.join(n for n, ok in monotone.items() if ok) or 'none'}"
        + (
            f", with a bump for {', '.join(n for n, ok in monotone.items() if not ok)}"
            if not all(monotone.values())
            else ""
        )
    )
    numbers = {
        "steps": steps,
        "subset": size,
        "grid": points,
        "coordinates": coordinates,
        "alphas": ALPHAS,
        "train_loss": finals,
        "basin": basins,
        "bn_batch_stats_basin": batch_stats_basin,
        "largest_bump": bumps,
        "monotone": monotone,
        "paths": paths,
        "slices": grids,
    }
    rows = [
        {
            "net": name,
            "train loss (fit)": finals[name],
            "center loss": basins[name]["center_loss"],
            f"mean rise, radius ≤ {RADIUS}": basins[name]["near_rise"],
            "mean rise, whole grid": basins[name]["grid_rise"],
            "share of grid within 0.1": basins[name]["flat_share"],
            "largest bump, α ∈ [0, 1]": bumps[name],
            "1-D path monotone": monotone[name],
        }
        for name in NETS
    ]
    return Outcome("holds" if holds else "fails", evidence, numbers, {"landscape": rows})


def _draw_paths(ctx: Context, paths: dict[str, list[float]]) -> None:
    figure, axes = ctx.figure("loss_landscape_1d", width=7, height=4.4)
    ax = axes[0][0]
    for name, path in paths.items():
        ax.plot(ALPHAS, path, label=name)
    for a, text in ((0, "θ₀"), (1, "θ*")):
        ax.axvline(a, color="0.7", linestyle=":")
        ax.annotate(text, (a, 1), xycoords=("data", "axes fraction"), ha="center", va="bottom")
    ax.set(
        yscale="log",
        xlabel="α  (θ₀ + α (θ* − θ₀))",
        ylabel="training loss (fixed subset)",
        title="From the initial weights to the solution",
    )
    ax.legend()
    ctx.save(figure)


def _draw_slices(
    ctx: Context, grids: dict[str, list[list[float]]], coordinates: list[float]
) -> None:
    import numpy as np

    figure, axes = ctx.figure(
        "loss_landscape_2d", width=3.3 * len(grids), height=3.6, columns=len(grids)
    )
    centers = [g[len(coordinates) // 2][len(coordinates) // 2] for g in grids.values()]
    levels = np.linspace(min(centers), CLIP, 21)
    for ax, (name, grid) in zip(axes[0], grids.items()):
        z = np.minimum(np.nan_to_num(np.array(grid), nan=CLIP, posinf=CLIP), CLIP)
        filled = ax.contourf(coordinates, coordinates, z, levels=levels, cmap="viridis")
        ax.contour(coordinates, coordinates, z, levels=levels, colors="w", linewidths=0.3)
        ax.add_patch(_circle(RADIUS))
        ax.plot(0, 0, "r+")
        ax.set(title=name, xlabel="δ", aspect="equal")
    axes[0][0].set_ylabel("η")
    figure.colorbar(filled, ax=list(axes[0]), label=f"training loss (≥ {CLIP:g} clipped)")
    ctx.save(figure)


def _circle(radius: float) -> Any:
    from matplotlib.patches import Circle

    return Circle((0, 0), radius, fill=False, color="r", linestyle="--", linewidth=0.8)
