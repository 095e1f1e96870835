"""Line searches for the full-batch methods (L-BFGS, Newton).

``strong_wolfe`` is the bracketing/zoom search of Nocedal & Wright, *Numerical
Optimization* (2nd ed.), Algorithms 3.5 and 3.6, with cubic interpolation (eq. 3.59)
and the safeguards of minFunc, which torch.optim.LBFGS also follows — so both pick the
same step sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

# f(t), ∇f(t) along the search direction: returns (loss, flat gradient).
Evaluate = Callable[[float], tuple[float, Tensor]]


def cubic_minimizer(
    t1: float,
    f1: float,
    g1: float,
    t2: float,
    f2: float,
    g2: float,
    bounds: tuple[float, float] | None = None,
) -> float:
    """Minimizer of the cubic matching f and f' at t1 and t2, clipped to ``bounds``.

    d1 = g1 + g2 − 3·(f1 − f2)/(t1 − t2),  d2 = √(d1² − g1·g2)
    t  = t2 − (t2 − t1)·(g2 + d2 − d1)/(g2 − g1 + 2·d2)        (N&W eq. 3.59)
    Falls back to the middle of the bounds when the cubic has no minimizer.
    """
    lo, hi = bounds if bounds is not None else ((t1, t2) if t1 <= t2 else (t2, t1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (t1 - t2)
    d2_square = d1**2 - g1 * g2
    if d2_square < 0:
        return (lo + hi) / 2
    d2 = d2_square.sqrt() if isinstance(d2_square, Tensor) else math.sqrt(d2_square)
    if t1 <= t2:
        t = t2 - (t2 - t1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        t = t1 - (t1 - t2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(t, lo), hi)


def strong_wolfe(
    evaluate: Evaluate,
    t: float,
    direction: Tensor,
    loss: float,
    grad: Tensor,
    gtd: float,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, Tensor, float, int]:
    """Find t with f(t) ≤ f(0) + c1·t·f'(0) and |f'(t)| ≤ c2·|f'(0)|.

    Returns (loss, grad, t, evaluations) at the accepted step. Slopes stay 0-dim tensors
    in the parameters' dtype (as in torch.optim), so float32 runs decide alike.
    ``max_ls`` bounds the evaluations after the first one (L-BFGS passes what is left of
    its ``max_eval``); with 0 the search returns the better of t = 0 and the first t.
    """
    d_norm = direction.abs().max()
    f_new, g_new = evaluate(t)
    evals, ls_iter = 1, 0
    gtd_new = g_new.dot(direction)
    t_prev, f_prev, g_prev, gtd_prev = 0.0, loss, grad.clone(), gtd
    done = False

    # Phase 1 (Alg. 3.5): grow t until an interval is known to contain a Wolfe point.
    while ls_iter < max_ls:
        if f_new > loss + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new.clone(), gtd_new]]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [[t, f_new, g_new, gtd_new]], True
            break
        if gtd_new >= 0:
            bracket = [[t_prev, f_prev, g_prev, gtd_prev], [t, f_new, g_new.clone(), gtd_new]]
            break
        t_next = cubic_minimizer(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(t + 0.01 * (t - t_prev), t * 10)
        )
        t_prev, f_prev, g_prev, gtd_prev = t, f_new, g_new.clone(), gtd_new
        t = t_next
        f_new, g_new = evaluate(t)
        evals, ls_iter = evals + 1, ls_iter + 1
        gtd_new = g_new.dot(direction)
    else:
        bracket = [[0.0, loss, grad, gtd], [t, f_new, g_new, gtd_new]]

    # Phase 2 (Alg. 3.6, "zoom"): shrink the interval by cubic interpolation.
    insufficient_progress = False
    low, high = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
    while not done and ls_iter < max_ls:
        (a, fa, _, ga), (b, fb, _, gb) = bracket
        if abs(b - a) * d_norm < tolerance_change:
            break
        t = cubic_minimizer(a, fa, ga, b, fb, gb)
        # Safeguard: keep t away from the ends, or the interval may never shrink.
        lo, hi = min(a, b), max(a, b)
        margin = 0.1 * (hi - lo)
        if min(hi - t, t - lo) < margin:
            if insufficient_progress or t >= hi or t <= lo:
                t = hi - margin if abs(t - hi) < abs(t - lo) else lo + margin
                insufficient_progress = False
            else:
                insufficient_progress = True
        else:
            insufficient_progress = False
        f_new, g_new = evaluate(t)
        evals, ls_iter = evals + 1, ls_iter + 1
        gtd_new = g_new.dot(direction)
        if f_new > loss + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = [t, f_new, g_new.clone(), gtd_new]
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = [t, f_new, g_new.clone(), gtd_new]

    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evals


def backtracking(
    evaluate_loss: Callable[[float], float],
    t: float,
    loss: float,
    gtd: float,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_ls: int = 40,
) -> tuple[float, float, int]:
    """Armijo backtracking: halve t until f(t) ≤ f(0) + c1·t·f'(0).

    Returns (loss, t, evaluations); if no t passes, the last (smallest) one is returned.
    """
    evals = 0
    for _ in range(max_ls):
        f_new = evaluate_loss(t)
        evals += 1
        if f_new <= loss + c1 * t * gtd:
            return f_new, t, evals
        t *= shrink
    return f_new, t, evals


def loss_value(loss: object) -> float:
    """A closure's loss as a Python number (without autograd's scalar-conversion warning)."""
    return float(loss.detach()) if isinstance(loss, Tensor) else float(loss)  # type: ignore[arg-type]


def flat(tensors: list[Tensor]) -> Tensor:
    """Concatenate tensors into one 1-D tensor."""
    return torch.cat([x.reshape(-1) for x in tensors])
