"""Race the optimizers on the 2-D problems: steps to converge and final distance.

On a problem with a saddle point the race also counts the steps spent near it: the
lecture's claim is that plain gradient descent lingers at saddles, where the gradient is
tiny, while momentum and adaptive methods get away faster.

For a fair race each first-order optimizer gets the best learning rate from a grid
(fewest steps to converge for good, then smallest final distance); L-BFGS runs with
its strong-Wolfe line search and Newton with backtracking, both at their natural step 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..optim import OPTIMIZERS, OptimizerSpec
from .problems import PROBLEMS, Problem

LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
TOLERANCE = 1e-3  # converged when ‖θ − θ*‖ < TOLERANCE from some step on
BUDGET = 1000  # optimizer steps per run
NEAR_SADDLE = 0.1  # "near a saddle point": ‖θ − saddle‖ < NEAR_SADDLE (the lab's radius)


@dataclass(frozen=True)
class Entrant:
    """An optimizer in the race, with the keywords that make it this variant."""

    label: str
    spec: OptimizerSpec
    options: dict[str, Any] = field(default_factory=dict)


def entrants() -> list[Entrant]:
    """Every registered optimizer, plus the lecture's momentum variants of SGD."""
    field_ = [Entrant("sgd", OPTIMIZERS["sgd"])]
    field_.append(Entrant("momentum", OPTIMIZERS["sgd"], {"momentum": 0.9}))
    field_.append(Entrant("nesterov", OPTIMIZERS["sgd"], {"momentum": 0.9, "nesterov": True}))
    field_ += [Entrant(name, spec) for name, spec in OPTIMIZERS.items() if name != "sgd"]
    return field_


@dataclass(frozen=True)
class RaceResult:
    """One optimizer on one problem, at its best learning rate.

    Attributes:
        optimizer: the entrant's name.
        problem: the problem's name (a key of ``PROBLEMS``).
        lr: the best learning rate found for this pair.
        steps: the first step from which ‖θ − θ*‖ stays below the tolerance; None: never.
        evals: function and gradient evaluations used up to that step.
        final_distance: ‖θ − θ*‖ after the whole budget (inf: diverged).
        steps_near_saddle: steps ending near a saddle point; None where the problem has none.
    """

    optimizer: str
    problem: str
    lr: float
    steps: int | None  # first step from which ‖θ − θ*‖ < TOLERANCE for good; None: never
    evals: int | None  # function/gradient evaluations used up to that step
    final_distance: float  # ‖θ − θ*‖ after the whole budget (inf: diverged)
    steps_near_saddle: int | None = None  # steps ending near a saddle point; None: no saddle


def _run(entrant: Entrant, problem: Problem, lr: float, budget: int) -> RaceResult:
    theta = torch.tensor(problem.start, dtype=torch.float64, requires_grad=True)
    spec, evals = entrant.spec, 0
    options = dict(entrant.options)
    if spec.name == "lbfgs":
        # one iteration per step; max_eval bounds the line search too (torch's default for
        # max_iter=1, 1 evaluation, would leave it none)
        options.update(max_iter=1, max_eval=25, line_search_fn="strong_wolfe")
    elif spec.name == "newton":
        options.update(line_search_fn="backtracking")
    opt = spec.cls([theta], lr=lr, **options)

    def closure():  # L-BFGS: value, with the gradient in closed form
        nonlocal evals
        evals += 1
        theta.grad = problem.gradient(theta.detach())
        return problem.value(theta.detach())

    def value():  # Newton differentiates the value itself
        nonlocal evals
        evals += 1
        return problem.value(theta)

    saddles = [theta.new_tensor(s) for s in problem.saddle_points]
    near_saddle = 0
    converged_at, evals_then = None, None
    for step in range(1, budget + 1):
        if spec.name == "lbfgs":
            opt.step(closure)
        elif spec.name == "newton":
            opt.step(value)
        else:
            theta.grad = problem.gradient(theta.detach())
            evals += 1
            opt.step()
        distance = problem.distance(theta.detach())
        if distance >= TOLERANCE:
            converged_at, evals_then = None, None
        elif converged_at is None:
            converged_at, evals_then = step, evals
        near_saddle += any(torch.dist(theta.detach(), s) < NEAR_SADDLE for s in saddles)
        lingered = near_saddle if saddles else None
        if not math.isfinite(distance) or distance > 1e6:
            return RaceResult(entrant.label, problem.name, lr, None, None, math.inf, lingered)
    final = problem.distance(theta.detach())
    return RaceResult(entrant.label, problem.name, lr, converged_at, evals_then, final, lingered)


def race(entrant: Entrant, problem: Problem, budget: int = BUDGET) -> RaceResult:
    """The entrant's best run on the problem over the learning-rate grid."""
    grid = (1.0,) if entrant.spec.closure else LR_GRID
    runs = [_run(entrant, problem, lr, budget) for lr in grid]
    return min(runs, key=lambda r: (r.steps if r.steps is not None else math.inf, r.final_distance))


def race_all(budget: int = BUDGET) -> list[RaceResult]:
    """Every entrant on every problem."""
    return [race(e, p, budget) for p in PROBLEMS.values() for e in entrants()]


def format_table(results: list[RaceResult], budget: int = BUDGET) -> str:
    """One table per problem: optimizer, best lr, steps and evaluations, final distance,
    and the steps spent near a saddle point on a problem that has one."""
    lines = []
    for name, problem in PROBLEMS.items():
        rows = [r for r in results if r.problem == name]
        if not rows:
            continue
        lines.append(f"{name}: {problem.description}; start {problem.start}")
        near = " near saddle" if problem.saddle_points else ""
        header = (
            f"  {'optimizer':<10} {'best lr':>8} {'steps':>6} {'evals':>6} "
            f"{'dist after ' + str(budget):>16}{near}"
        )
        lines += [header, "  " + "-" * (len(header) - 2)]
        for r in rows:
            steps = str(r.steps) if r.steps is not None else "—"
            evals = str(r.evals) if r.evals is not None else "—"
            distance = f"{r.final_distance:.1e}" if math.isfinite(r.final_distance) else "diverged"
            row = f"  {r.optimizer:<10} {r.lr:>8g} {steps:>6} {evals:>6} {distance:>16}"
            if near:
                row += f" {r.steps_near_saddle:>{len(near) - 1}}"
            lines.append(row)
        lines.append("")
    lines.append(
        f"steps: optimizer steps until θ stays within {TOLERANCE:g} of a minimum (— = not "
        f"within {budget}); evals: function/gradient evaluations until then (line searches "
        f"and Newton's Hessian evaluation included); near saddle: steps that end within "
        f"{NEAR_SADDLE:g} of the saddle point, the lecture's measure of lingering there. "
        "AdamW's default weight decay (0.01) pulls θ towards 0, so it settles near, not at, "
        "a minimum away from the origin."
    )
    return "\n".join(lines)
