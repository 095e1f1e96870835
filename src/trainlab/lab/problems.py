"""The lectures' 2-D test functions, where optimizer behaviour can be seen.

Each problem has a value f(θ) written with torch ops (so autograd and Newton's
Hessian work), its gradient in closed form (cheap, and checked against autograd in the
tests), a start point, its minima and, where it has them, its saddle points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Problem:
    """A 2-D objective with known minima (and saddle points, where it has them)."""

    name: str
    description: str
    value: Callable[[Tensor], Tensor]
    gradient: Callable[[Tensor], Tensor]
    start: tuple[float, float]
    minima: tuple[tuple[float, float], ...]
    saddle_points: tuple[tuple[float, float], ...] = ()

    def distance(self, theta: Tensor) -> float:
        """Distance from θ to the nearest minimum."""
        best = min(torch.dist(theta, theta.new_tensor(m)).item() for m in self.minima)
        return best if best == best else float("inf")  # NaN (diverged) counts as infinitely far


# Taco shell: f = ½·(a·x² + b·y²) with b/a = 100 — the lecture's high condition number:
# SGD crawls along x and zig-zags across y.
_A, _B = 0.1, 10.0


def _taco(t: Tensor) -> Tensor:
    return 0.5 * (_A * t[0] ** 2 + _B * t[1] ** 2)


def _taco_grad(t: Tensor) -> Tensor:
    return torch.stack([_A * t[0], _B * t[1]])


# Rosenbrock: f = (1 − x)² + 100·(y − x²)² — a curved, narrow valley.
def _rosenbrock(t: Tensor) -> Tensor:
    return (1 - t[0]) ** 2 + 100 * (t[1] - t[0] ** 2) ** 2


def _rosenbrock_grad(t: Tensor) -> Tensor:
    x, y = t[0], t[1]
    return torch.stack([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


# Saddle: f = x² + y⁴/4 − y²/2 — a saddle point at the origin, minima at (0, ±1).
# The start (1.5, 1e-6) is on the saddle's stable manifold y = 0 (descent from there runs
# straight into the saddle) plus a perturbation of 1e-6, as in the lab's trajectories
# experiment. Near the origin the y-gradient is only −y, so plain gradient descent grows y
# by a factor 1 + η per step and lingers at the saddle for ~ln(0.1/1e-6)/ln(1 + η) steps,
# while momentum builds up speed along y and Adam's per-coordinate scaling takes
# full-size steps along it: the lecture's point that saddles slow gradient descent. 1e-3
# off the manifold is too far for it: SGD leaves the saddle's neighbourhood in ~15 steps.
def _saddle(t: Tensor) -> Tensor:
    return t[0] ** 2 + t[1] ** 4 / 4 - t[1] ** 2 / 2


def _saddle_grad(t: Tensor) -> Tensor:
    return torch.stack([2 * t[0], t[1] ** 3 - t[1]])


PROBLEMS: dict[str, Problem] = {
    p.name: p
    for p in (
        Problem(
            "taco",
            "ill-conditioned quadratic ½(0.1·x² + 10·y²), condition number 100",
            _taco,
            _taco_grad,
            start=(-8.0, 1.5),
            minima=((0.0, 0.0),),
        ),
        Problem(
            "rosenbrock",
            "Rosenbrock (1 − x)² + 100·(y − x²)², curved narrow valley",
            _rosenbrock,
            _rosenbrock_grad,
            start=(-1.5, 2.0),
            minima=((1.0, 1.0),),
        ),
        Problem(
            "saddle",
            "x² + y⁴/4 − y²/2, saddle at (0, 0); start 1e-6 off its stable manifold y = 0",
            _saddle,
            _saddle_grad,
            start=(1.5, 1e-6),
            minima=((0.0, 1.0), (0.0, -1.0)),
            saddle_points=((0.0, 0.0),),
        ),
    )
}
"""The registry of 2-D test problems: name → `Problem`.

The optimizer race (`race_all`, `format_table`) runs every entrant on every problem here;
the trajectory experiment draws some of them.
"""
