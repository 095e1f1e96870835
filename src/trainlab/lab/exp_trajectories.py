"""Experiment "trajectories": the lectures' optimizers drawn as paths on 2-D functions.

Every optimizer of the race (SGD, momentum, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam,
AdaMax, NAdam, L-BFGS, Newton) runs on the taco shell (κ = 100), Rosenbrock, Beale and a
saddle, and once on the taco shell with noisy gradients, as mini-batches give them. The
paths go on contour plots and into a small animation; three claims of the lectures are
judged from the numbers:

1. momentum reaches the tolerance on the taco shell in fewer than half of SGD's steps,
   at the same learning rate (one that is stable for SGD);
2. Nesterov overshoots the minimum less than momentum does, at that same learning rate;
3. started on the saddle's stable manifold (plus 1e-6), SGD lingers near the saddle
   point longer than momentum and Adam.

The saddle starts at (1.5, 1e-6), as in ``trainlab race``: the lecture's point is that
the gradient *near* a saddle is tiny, so plain gradient descent crawls away from it; 1e-6
puts the start that close to the ridge y = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from ..optim import OPTIMIZERS
from .experiment import Context, Outcome, experiment
from .problems import PROBLEMS, Problem
from .race import TOLERANCE, Entrant, entrants

SHARED_LR = 0.12
"""SGD, momentum and Nesterov's learning rate on the taco shell and the saddle.

Stable for SGD (η·λ_max = 1.2 < 2, so it zig-zags across the steep axis and converges)
and for Nesterov (η·λ_max < 2(1 + μ)/(1 + 2μ) ≈ 1.36 at μ = 0.9): claims 1 and 2 compare
the methods at the same step size, as the lecture does.
"""
LINGER_RADIUS = 0.1  # "near the saddle": ‖θ − (0, 0)‖ < 0.1 (the minima are 1 away)
SADDLE_POINT = (0.0, 0.0)
NOISE = 1.0  # σ of the Gaussian noise added to each gradient component in the noisy panel


def _beale(t: Tensor) -> Tensor:
    x, y = t[0], t[1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _beale_grad(t: Tensor) -> Tensor:
    x, y = t[0], t[1]
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3
    return torch.stack(
        [
            2 * a * (y - 1) + 2 * b * (y**2 - 1) + 2 * c * (y**3 - 1),
            2 * a * x + 4 * b * x * y + 6 * c * x * y**2,
        ]
    )


BEALE = Problem(
    "beale",
    "Beale (1.5 − x + xy)² + (2.25 − x + xy²)² + (2.625 − x + xy³)², flat plateaus, steep walls",
    _beale,
    _beale_grad,
    start=(1.0, 1.5),
    minima=((3.0, 0.5),),
)
SADDLE = PROBLEMS["saddle"]
FUNCTIONS: dict[str, Problem] = {
    p.name: p for p in (PROBLEMS["taco"], PROBLEMS["rosenbrock"], BEALE, SADDLE)
}

# Learning rate of each optimizer on each function, for the pictures: the SGD family at
# SHARED_LR where the claims compare them; the others picked by hand from race.LR_GRID
# for a path that reads well. Race's best of the grid (fewest steps) is often larger and
# crosses the panel in a few jumps (AdaGrad at η = 10 solves the axis-aligned taco shell in
# 7). Claim 3 holds for Adam at every grid rate from 3e-3 to 0.3 (0 steps near the saddle).
# L-BFGS and Newton take their natural step 1.
LEARNING_RATES: dict[str, dict[str, float]] = {
    "taco": {
        "sgd": SHARED_LR, "momentum": SHARED_LR, "nesterov": SHARED_LR, "adagrad": 1.0,
        "rmsprop": 0.1, "adadelta": 10.0, "adam": 0.3, "adamax": 0.3, "nadam": 0.3,
    },
    "rosenbrock": {
        "sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "adagrad": 0.3, "rmsprop": 0.03,
        "adadelta": 3.0, "adam": 0.1, "adamax": 0.3, "nadam": 0.03,
    },
    "beale": {
        "sgd": 0.03, "momentum": 3e-3, "nesterov": 3e-3, "adagrad": 1.0, "rmsprop": 0.03,
        "adadelta": 3.0, "adam": 0.3, "adamax": 1.0, "nadam": 0.3,
    },
    "saddle": {
        "sgd": SHARED_LR, "momentum": SHARED_LR, "nesterov": SHARED_LR, "adagrad": 0.5,
        "rmsprop": 0.03, "adadelta": 3.0, "adam": 0.1, "adamax": 0.1, "nadam": 0.1,
    },
}  # fmt: skip

# Where each panel looks: (x range, y range).
VIEWS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "taco": ((-9.0, 3.0), (-2.5, 2.5)),
    "rosenbrock": ((-2.0, 2.0), (-1.0, 3.0)),
    "beale": ((-0.5, 4.0), (-1.75, 2.0)),
    "saddle": ((-1.7, 1.7), (-1.5, 1.5)),
}
TITLES = {
    "taco": "taco shell ½(0.1·x² + 10·y²), κ = 100",
    "rosenbrock": "Rosenbrock (1 − x)² + 100·(y − x²)²",
    "beale": "Beale: plateaus and steep walls",
    "saddle": "saddle x² + y⁴/4 − y²/2, start (1.5, 1e-6)",
}


def racers() -> list[Entrant]:
    """The race's optimizers, less AdamW: its weight decay only moves these minima."""
    return [e for e in entrants() if e.label != "adamw"]


def noisy_racers() -> list[Entrant]:
    """SGD, momentum and Adam for the noisy panel.

    Momentum in its EMA form, v ← μ·v + (1 − μ)·g, steps as far as SGD does at the same η
    once v has built up: the panel then shows what averaging does to the noise. The
    "rho" form at the same η takes steps 1/(1 − μ) = 10× longer and amplifies the noise.
    """
    field = {e.label: e for e in racers()}
    ema = Entrant("momentum", OPTIMIZERS["sgd"], {"momentum": 0.9, "momentum_form": "ema"})
    return [field["sgd"], ema, field["adam"]]


@dataclass(frozen=True)
class Trajectory:
    """The points θ₀, θ₁, … one optimizer visited on one function."""

    optimizer: str
    problem: Problem
    lr: float
    points: Tensor  # (steps + 1, 2), float64; cut short where it diverged or converged
    diverged: bool

    def distances(self, point: tuple[float, float]) -> Tensor:
        return (self.points - self.points.new_tensor(point)).norm(dim=1)


def trajectory(
    entrant: Entrant,
    problem: Problem,
    lr: float,
    steps: int,
    *,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> Trajectory:
    """Run ``entrant`` on ``problem`` for up to ``steps`` steps and keep every iterate.

    ``noise`` > 0 adds N(0, noise²) to each gradient component of the first-order
    methods, as a mini-batch estimate of the full gradient would (L-BFGS and Newton are
    full-batch methods: the lecture says to "disable all sources of noise" for them).
    L-BFGS takes one strong-Wolfe iteration per step and Newton one backtracking step, as
    in the race; both stop once within 1e-10 of a minimum, where nothing more is drawn.
    """
    theta = torch.tensor(problem.start, dtype=torch.float64, requires_grad=True)
    options = dict(entrant.options)
    name = entrant.spec.name
    if name == "lbfgs":
        options.update(max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
    elif name == "newton":
        options.update(line_search_fn="backtracking")
    optimizer = entrant.spec.cls([theta], lr=lr, **options)

    def closure() -> Tensor:  # L-BFGS: the value, with the gradient in closed form
        theta.grad = problem.gradient(theta.detach())
        return problem.value(theta.detach())

    points, diverged = [theta.detach().clone()], False
    for _ in range(steps):
        if name == "lbfgs":
            optimizer.step(closure)
        elif name == "newton":
            optimizer.step(lambda: problem.value(theta))
        else:
            grad = problem.gradient(theta.detach())
            if noise > 0:
                grad = grad + noise * torch.randn(2, dtype=grad.dtype, generator=generator)
            theta.grad = grad
            optimizer.step()
        point = theta.detach().clone()
        if not bool(point.isfinite().all()) or point.norm().item() > 1e6:
            diverged = True
            break
        points.append(point)
        if entrant.spec.closure and problem.distance(point) < 1e-10:
            break
    return Trajectory(entrant.label, problem, lr, torch.stack(points), diverged)


def steps_to_tolerance(path: Trajectory, tolerance: float = TOLERANCE) -> int | None:
    """First step from which θ stays within ``tolerance`` of a minimum (race's rule)."""
    if path.diverged:
        return None
    near = torch.stack([path.distances(m) for m in path.problem.minima]).min(dim=0).values
    far = (near >= tolerance).nonzero()
    if len(far) == 0:
        return 0
    last_far = int(far[-1])
    return None if last_far == len(near) - 1 else last_far + 1


def past_minimum(path: Trajectory) -> Tensor:
    """Each θ_t's position on the line from the start through the minimum: (θ_t − θ*)·u.

    u = (θ* − θ₀)/‖θ* − θ₀‖, so the value is negative before the minimum, positive past it.
    """
    minimum = path.points.new_tensor(path.problem.minima[0])
    direction = minimum - path.points[0]
    return (path.points - minimum) @ (direction / direction.norm())


def overshoot(path: Trajectory) -> float:
    """How far θ went past the minimum along the line from the start through it.

    max over t of `past_minimum`: 0 for a path that never passes the minimum
    (plain gradient descent on a quadratic), the swing of the ball for momentum.
    """
    return max(0.0, float(past_minimum(path).max()))


def steps_near(path: Trajectory, point: tuple[float, float], radius: float) -> int:
    """Number of iterates θ_t with ‖θ_t − point‖ < radius."""
    return int((path.distances(point) < radius).sum())


def _budgets(quick: bool) -> dict[str, int]:
    # SGD needs ~745 steps on the taco shell at η = 0.12 (ln(8/1e-3)/(η·0.1)): 900 leaves room.
    if quick:
        return {"taco": 900, "rosenbrock": 500, "beale": 500, "saddle": 250}
    return {"taco": 1500, "rosenbrock": 3000, "beale": 1500, "saddle": 400}


SWEEP_LRS = (0.02, 0.05, 0.08, 0.1, 0.12, 0.13)  # all below Nesterov's limit ≈ 0.136
SWEEP_PERTURBATIONS = (1e-2, 1e-4, 1e-6, 1e-8)


def shared_lr_sweep(steps: int = 6000) -> list[dict[str, object]]:
    """Claims 1 and 2 at other shared learning rates (full mode: does η = 0.12 stand alone?)."""
    field = {e.label: e for e in racers()}
    rows = []
    for lr in SWEEP_LRS:
        runs = {
            label: trajectory(field[label], FUNCTIONS["taco"], lr, steps)
            for label in ("sgd", "momentum", "nesterov")
        }
        sgd_steps, momentum_steps = (steps_to_tolerance(runs[k]) for k in ("sgd", "momentum"))
        rows.append(
            {
                "lr": lr,
                "sgd_steps": sgd_steps,
                "momentum_steps": momentum_steps,
                "momentum_to_sgd_steps": momentum_steps / sgd_steps
                if sgd_steps and momentum_steps is not None
                else None,
                "overshoot_momentum": overshoot(runs["momentum"]),
                "overshoot_nesterov": overshoot(runs["nesterov"]),
            }
        )
    return rows


def saddle_perturbation_sweep(steps: int = 400) -> list[dict[str, object]]:
    """Steps near the saddle against the start's distance δ from the stable manifold.

    Along y the saddle repels at rate 1 + η per SGD step, so SGD needs about
    ln(r/δ)/ln(1 + η) steps to leave: each factor 100 closer adds ~40 steps at η = 0.12.
    """
    field = {e.label: e for e in racers()}
    rows = []
    for delta in SWEEP_PERTURBATIONS:
        problem = replace(SADDLE, start=(1.5, delta))
        row: dict[str, object] = {"perturbation": delta}
        for label in ("sgd", "momentum", "adam"):
            path = trajectory(field[label], problem, LEARNING_RATES["saddle"][label], steps)
            row[f"steps_near_{label}"] = steps_near(path, SADDLE_POINT, LINGER_RADIUS)
        rows.append(row)
    return rows


COLORS = {
    "sgd": "black", "momentum": "tab:blue", "nesterov": "tab:green", "adagrad": "tab:orange",
    "rmsprop": "tab:red", "adadelta": "tab:olive", "adam": "tab:purple", "adamax": "tab:pink",
    "nadam": "tab:cyan", "lbfgs": "tab:brown", "newton": "tab:gray",
}  # fmt: skip


def _contours(ax, problem: Problem, view) -> None:
    from matplotlib.patches import Circle

    (x0, x1), (y0, y1) = view
    xs, ys = np.linspace(x0, x1, 160), np.linspace(y0, y1, 160)
    grid = torch.tensor(np.stack(np.meshgrid(xs, ys)), dtype=torch.float64)
    z = problem.value(grid).numpy()
    if problem.name == "saddle":
        levels = np.linspace(z.min(), z.max(), 25)
    else:  # log-spaced levels show both the valley floor and the walls
        low = max(z.min(), 1e-3)
        levels = np.geomspace(low, z.max(), 25)
    ax.contour(xs, ys, z, levels=levels, colors="0.6", linewidths=0.5)
    for m in problem.minima:
        ax.plot(*m, marker="*", color="gold", markeredgecolor="black", markersize=12, zorder=5)
    ax.plot(*problem.start, marker="o", color="black", markersize=4, zorder=5)
    if problem.name == "saddle":  # the saddle point and the "near it" disc of claim 3
        ax.plot(*SADDLE_POINT, marker="x", color="red", markersize=7, zorder=5)
        disc = Circle(SADDLE_POINT, LINGER_RADIUS, fill=False, color="red", linestyle=":")
        ax.add_patch(disc)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)


def _draw_paths(ax, paths: list[Trajectory], upto: int | None = None) -> list:
    lines = []
    for path in paths:
        xy = path.points[: None if upto is None else upto + 1].numpy()
        second_order = path.optimizer in ("lbfgs", "newton")
        (line,) = ax.plot(
            xy[:, 0],
            xy[:, 1],
            color=COLORS[path.optimizer],
            linewidth=1.2,
            marker="." if second_order else None,
            markersize=4,
            label=path.optimizer,
            linestyle="--" if second_order else "-",
            alpha=0.9,
        )
        lines.append(line)
    return lines


def _animate(ctx: Context, paths: dict[str, list[Trajectory]], frames: int) -> dict[str, object]:
    """The four functions' paths growing step by step, as an animated GIF.

    Frames are log-spaced in steps, so the first few steps (all Newton and L-BFGS take)
    get as many frames as the long crawl of SGD. Pillow, which writes the GIF, is one of
    matplotlib's own requirements.
    """
    from matplotlib.animation import PillowWriter

    figure, axes = ctx.figure("trajectories_animation", width=7, height=5.5, rows=2, columns=2)
    lines = {}
    for ax, (name, group) in zip(axes.flat, paths.items()):
        _contours(ax, FUNCTIONS[name], VIEWS[name])
        ax.set_title(TITLES[name], fontsize=8)
        ax.tick_params(labelsize=6)
        lines[name] = _draw_paths(ax, group, upto=0)
    figure.legend(handles=lines["taco"], loc="outside right center", fontsize=7, frameon=False)
    title = figure.suptitle("step 0", fontsize=9)
    figure.canvas.draw()
    figure.set_layout_engine("none")  # lay out once: the frames only move lines
    longest = max(len(p.points) for group in paths.values() for p in group)
    shown = sorted({round(longest ** (k / (frames - 1))) - 1 for k in range(frames)})
    writer, target = PillowWriter(fps=5), ctx.out / "trajectories.gif"
    with writer.saving(figure, str(target), dpi=75):
        for step in shown:
            for name, group in paths.items():
                for line, path in zip(lines[name], group):
                    xy = path.points[: step + 1].numpy()
                    line.set_data(xy[:, 0], xy[:, 1])
            title.set_text(f"step {step}")
            writer.grab_frame()
    return {"animation": target.name, "animation_bytes": target.stat().st_size}


@experiment(
    "trajectories",
    claim=(
        "On the κ = 100 taco shell momentum converges in under half of SGD's steps at the "
        "same learning rate, and Nesterov overshoots the minimum less than momentum; "
        "started next to a saddle, SGD lingers there longer than momentum and Adam."
    ),
    seed="002",
    rule=(
        "holds if all three hold: (1) steps to ‖θ − θ*‖ < 1e-3 for momentum < 0.5 × SGD's, "
        "both at η = 0.12, μ = 0.9; (2) Nesterov's overshoot, max_t (θ_t − θ*)·u along the "
        "start→minimum direction u, < momentum's at the same η; (3) iterates within 0.1 of "
        "the saddle point for SGD > those of momentum and of Adam"
    ),
)
def trajectories(ctx: Context) -> Outcome:
    budgets = _budgets(ctx.quick)
    field = racers()
    paths = {
        name: [
            trajectory(e, problem, LEARNING_RATES[name].get(e.label, 1.0), budgets[name])
            for e in field
        ]
        for name, problem in FUNCTIONS.items()
    }
    generator = torch.Generator().manual_seed(ctx.seed)
    noisy = [
        trajectory(
            e,
            FUNCTIONS["taco"],
            LEARNING_RATES["taco"][e.label],
            budgets["taco"],
            noise=NOISE,
            generator=generator,
        )
        for e in noisy_racers()
    ]
    by_label = {name: {p.optimizer: p for p in group} for name, group in paths.items()}

    # Claim 1: momentum vs SGD steps on the taco shell, same η.
    taco = by_label["taco"]
    sgd_steps = steps_to_tolerance(taco["sgd"])
    momentum_steps = steps_to_tolerance(taco["momentum"])
    speedup_ratio = (
        momentum_steps / sgd_steps if sgd_steps and momentum_steps is not None else math.nan
    )
    momentum_faster = speedup_ratio < 0.5
    # Claim 2: overshoot past the minimum, Nesterov vs momentum.
    overshoot_momentum = overshoot(taco["momentum"])
    overshoot_nesterov = overshoot(taco["nesterov"])
    nesterov_less = not taco["nesterov"].diverged and overshoot_nesterov < overshoot_momentum
    # Claim 3: time spent near the saddle point.
    saddle = by_label["saddle"]
    linger = {label: steps_near(p, SADDLE_POINT, LINGER_RADIUS) for label, p in saddle.items()}
    sgd_lingers = linger["sgd"] > max(linger["momentum"], linger["adam"])

    claims = [
        {
            "claim": "momentum converges in < 0.5× SGD's steps (taco, same η)",
            "numbers": f"SGD {sgd_steps} steps, momentum {momentum_steps}, "
            f"ratio {speedup_ratio:.2f}",
            "verdict": "holds" if momentum_faster else "fails",
        },
        {
            "claim": "Nesterov overshoots the minimum less than momentum (taco, same η)",
            "numbers": f"momentum {overshoot_momentum:.3f}, Nesterov {overshoot_nesterov:.3f}",
            "verdict": "holds" if nesterov_less else "fails",
        },
        {
            "claim": f"SGD lingers within {LINGER_RADIUS} of the saddle longer than "
            "momentum and Adam",
            "numbers": f"SGD {linger['sgd']} steps, momentum {linger['momentum']}, "
            f"Adam {linger['adam']}",
            "verdict": "holds" if sgd_lingers else "fails",
        },
    ]
    table = [
        {
            "function": name,
            "optimizer": p.optimizer,
            "lr": p.lr,
            "steps_run": len(p.points) - 1,
            "steps_to_tolerance": steps_to_tolerance(p),
            "final_distance": math.inf if p.diverged else p.problem.distance(p.points[-1]),
            **({"steps_near_saddle": linger[p.optimizer]} if name == "saddle" else {}),
        }
        for name, group in paths.items()
        for p in group
    ]

    _figure_paths(ctx, paths, noisy)
    _figure_claims(ctx, taco, saddle)
    animation = _animate(ctx, paths, frames=10 if ctx.quick else 30)

    holds = momentum_faster and nesterov_less and sgd_lingers
    evidence = (
        f"On the taco shell at η = {SHARED_LR}, momentum took {momentum_steps} steps to SGD's "
        f"{sgd_steps} (ratio {speedup_ratio:.2f}) and overshot by {overshoot_momentum:.2f} "
        f"against Nesterov's {overshoot_nesterov:.2f}; next to the saddle SGD spent "
        f"{linger['sgd']} steps within {LINGER_RADIUS}, momentum {linger['momentum']}, "
        f"Adam {linger['adam']}."
    )
    outcome = Outcome.judge(
        holds,
        evidence,
        shared_lr=SHARED_LR,
        tolerance=TOLERANCE,
        sgd_steps=sgd_steps,
        momentum_steps=momentum_steps,
        momentum_to_sgd_steps=speedup_ratio,
        momentum_faster=momentum_faster,
        overshoot_momentum=overshoot_momentum,
        overshoot_nesterov=overshoot_nesterov,
        nesterov_overshoots_less=nesterov_less,
        linger_radius=LINGER_RADIUS,
        steps_near_saddle=linger,
        sgd_lingers=sgd_lingers,
        noise=NOISE,
        # the steep axis's jitter over the second half of the noisy runs
        noisy_rms_y={p.optimizer: _rms(p.points[len(p.points) // 2 :, 1]) for p in noisy},
        **animation,
    )
    tables = {"claims": claims, "paths": table}
    if not ctx.quick:  # how the numbers move with η and with the distance from the manifold
        tables["shared_lr_sweep"] = shared_lr_sweep()
        tables["saddle_perturbation_sweep"] = saddle_perturbation_sweep()
    return replace(outcome, tables=tables)


def _rms(values: Tensor) -> float:
    return values.pow(2).mean().sqrt().item()


def _figure_paths(
    ctx: Context, paths: dict[str, list[Trajectory]], noisy: list[Trajectory]
) -> None:
    figure, axes = ctx.figure("trajectories", width=13, height=8, rows=2, columns=3)
    for ax, (name, group) in zip(axes.flat, paths.items()):
        _contours(ax, FUNCTIONS[name], VIEWS[name])
        handles = _draw_paths(ax, group)
        ax.set_title(TITLES[name], fontsize=9)
        ax.tick_params(labelsize=7)
    ax = axes.flat[len(paths)]
    _contours(ax, FUNCTIONS["taco"], VIEWS["taco"])
    noisy_lines = _draw_paths(ax, noisy)
    ax.legend(noisy_lines, ["sgd", "momentum, EMA form", "adam"], fontsize=7, loc="lower right")
    ax.set_title(f"taco shell, gradient + N(0, {NOISE:g}²) noise, as mini-batches", fontsize=9)
    ax.tick_params(labelsize=7)
    legend_ax = axes.flat[-1]
    legend_ax.axis("off")
    legend_ax.legend(
        handles=handles,
        loc="center",
        fontsize=9,
        title="optimizer (its lr per function: results.json)",
        title_fontsize=8,
        frameon=False,
    )
    ctx.save(figure)


def _figure_claims(
    ctx: Context, taco: dict[str, Trajectory], saddle: dict[str, Trajectory]
) -> None:
    figure, axes = ctx.figure("trajectories_claims", width=13, height=4, columns=3)
    ax_steps, ax_overshoot, ax_saddle = axes[0]
    for label in ("sgd", "momentum", "nesterov"):
        path = taco[label]
        ax_steps.semilogy(
            path.distances((0.0, 0.0)).numpy(),
            color=COLORS[label],
            label=f"{label}: {steps_to_tolerance(path)} steps",
        )
        ax_overshoot.plot(
            past_minimum(path)[:200].numpy(),
            color=COLORS[label],
            label=f"{label}: overshoot {overshoot(path):.2f}",
        )
    ax_steps.axhline(TOLERANCE, color="red", linestyle=":", linewidth=1, label="tolerance")
    ax_steps.set_ylim(1e-6, 30)
    ax_steps.set(
        xlabel="step",
        ylabel="‖θ − θ*‖",
        title=f"(1) taco shell, η = {SHARED_LR}: steps to tolerance",
    )
    ax_overshoot.axhline(0.0, color="red", linestyle=":", linewidth=1, label="minimum")
    ax_overshoot.set(
        xlabel="step",
        ylabel="(θ − θ*)·u,  u: start → minimum",
        title="(2) how far past the minimum (> 0: overshoot)",
    )
    for label in ("sgd", "momentum", "adam"):
        path = saddle[label]
        ax_saddle.semilogy(
            path.distances(SADDLE_POINT).numpy(),
            color=COLORS[label],
            label=f"{label}: {steps_near(path, SADDLE_POINT, LINGER_RADIUS)} steps inside",
        )
    ax_saddle.axhline(
        LINGER_RADIUS, color="red", linestyle=":", linewidth=1, label=f"radius {LINGER_RADIUS}"
    )
    ax_saddle.set(
        xlabel="step", ylabel="‖θ − saddle point‖", title="(3) time near the saddle point"
    )
    for ax in axes[0]:
        ax.legend(fontsize=8)
        ax.title.set_fontsize(9)
    ctx.save(figure)
