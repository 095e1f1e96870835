"""L-BFGS: a quasi-Newton method that builds H⁻¹ from the last m gradient differences."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from .. import _checks
from .._checks import Check
from ._base import TrainlabOptimizer, as_real
from ._line_search import loss_value, strong_wolfe


def tolerance(name: str, value: Any) -> None:
    """A stopping tolerance: a number >= 0, or an infinity, as torch.optim.LBFGS takes them:
    ``tolerance_grad=inf`` stops after the first evaluation, and ``-inf`` never stops on
    that test (``max_iter`` and ``max_eval`` still end the step), as torch's own tests use it.
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = value.item()
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not (value >= 0 or value == -math.inf):  # nan fails both tests
        raise _checks.fail(name, value, "must be a number >= 0, inf, or -inf to never stop on it")


def lbfgs_direction(
    grad: Tensor, old_dirs: list[Tensor], old_stps: list[Tensor], ro: list[Tensor], h_diag: Any
) -> tuple[Tensor, list[Tensor]]:
    r"""The two-loop recursion: d = −H·g with H the L-BFGS inverse-Hessian estimate.

    With pairs sᵢ = θᵢ₊₁ − θᵢ, yᵢ = gᵢ₊₁ − gᵢ and ρᵢ = 1/(yᵢ·sᵢ), newest first:
        q = −g;  αᵢ = ρᵢ·(sᵢ·q);  q ← q − αᵢ·yᵢ
    then r = γ·q with γ = (s·y)/(y·y) of the newest pair, and oldest first:
        βᵢ = ρᵢ·(yᵢ·r);  r ← r + (αᵢ − βᵢ)·sᵢ
    (Nocedal & Wright, Algorithm 7.4.) Returns (d, α's).

    $$
    \begin{aligned}
    & s_i = \theta_{i+1} - \theta_i, \quad y_i = g_{i+1} - g_i, \quad \rho_i = \frac{1}{y_i^\top
    s_i} \\
    & q = -g; \quad \text{newest first: } \alpha_i = \rho_i\, s_i^\top q, \quad q \leftarrow q -
    \alpha_i\, y_i \\
    & r = \gamma\, q, \quad \gamma = \frac{s^\top y}{y^\top y}; \quad \text{oldest first: } \beta_i
    = \rho_i\, y_i^\top r, \quad r \leftarrow r + (\alpha_i - \beta_i)\, s_i \\
    & d = r = -H g
    \end{aligned}
    $$

    """
    q = grad.neg()
    al: list[Tensor] = [torch.zeros(())] * len(old_dirs)
    for i in range(len(old_dirs) - 1, -1, -1):
        al[i] = old_stps[i].dot(q) * ro[i]
        q.add_(old_dirs[i], alpha=-al[i])
    r = q * h_diag
    for i in range(len(old_dirs)):
        be_i = old_dirs[i].dot(r) * ro[i]
        r.add_(old_stps[i], alpha=al[i] - be_i)
    return r, al


class LBFGS(TrainlabOptimizer):
    r"""L-BFGS with an optional strong-Wolfe line search; full-batch, closure API.

    Each iteration: d = −H·g by the two-loop recursion
    ([`lbfgs_direction`][trainlab.optim.lbfgs_direction]), a step θ ← θ + t·d (t = η, or found by
    the strong-Wolfe search), then the pair (s, y) = (t·d, g_new − g) updates the history if its
    curvature y·s > 1e-10. The first iteration steps along −g with t = min(1, 1/‖g‖₁)·η.

    $$
    d = -H g, \qquad \theta \leftarrow \theta + t\, d, \qquad (s, y) = (t\, d,\ g_{\text{new}} - g)
    $$

    Same keywords, defaults, state format and numbers as ``torch.optim.LBFGS``, and the
    same closure calls: the strong-Wolfe search may use what is left of ``max_eval`` plus
    one (``max_iter=1, max_eval=5`` evaluates the closure 6 times, as in torch). As in
    torch, a complex parameter counts as two real coordinates and a sparse gradient is
    made dense.
    ``step(closure)`` runs up to ``max_iter`` iterations; ``closure`` must clear the
    gradients, compute the loss, call ``backward()`` and return the loss. As the lecture
    says: use it when full-batch updates are affordable, and disable all sources of
    noise (dropout, data shuffling) inside the closure.

    Args:
        params: parameters (one group only).
        lr: step length η (default: 1).
        max_iter: iterations per ``step`` (default: 20).
        max_eval: function evaluations per ``step`` (default: max_iter·1.25).
        tolerance_grad: stop when max|g| ≤ this; -inf: never (default: 1e-7).
        tolerance_change: stop when the step or loss change is below this; -inf: never
            (default: 1e-9).
        history_size: number m of (s, y) pairs kept (default: 100).
        line_search_fn: None or "strong_wolfe" (default: None).

    References: Liu & Nocedal, "On the limited memory BFGS method for large scale
    optimization", Math. Programming 1989; Nocedal & Wright, Numerical Optimization, ch. 7.
    """

    checks: ClassVar[dict[str, Check]] = {
        "lr": _checks.nonnegative,
        "max_iter": _checks.positive_int,
        "max_eval": _checks.optional_positive_int,
        "tolerance_grad": tolerance,
        "tolerance_change": tolerance,
        "history_size": _checks.positive_int,
        "line_search_fn": _checks.one_of(None, "strong_wolfe"),
    }

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        **unknown: Any,
    ) -> None:
        _checks.positive_int("max_iter", max_iter)
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, locals())
        if len(self.param_groups) != 1:
            raise ValueError(
                f"Invalid params for LBFGS: {len(self.param_groups)} parameter groups "
                "(L-BFGS needs exactly one: it treats all parameters as one vector)"
            )

    @property
    def _params(self) -> list[Tensor]:
        return self.param_groups[0]["params"]

    # -- the parameters as one flat vector -------------------------------------------------
    # A complex parameter is two real coordinates per entry (torch.view_as_real), as in
    # torch.optim.LBFGS.
    def _flat_grad(self) -> Tensor:
        parts = []
        for p in self._params:
            grad = p.grad
            if grad is None:
                grad = torch.zeros_like(p)
            elif grad.is_sparse:
                grad = grad.to_dense()
            parts.append(as_real(grad).reshape(-1))
        return torch.cat(parts, 0)

    def _add_step(self, t: float, d: Tensor) -> None:
        offset = 0
        for p in self._params:
            p = as_real(p)
            n = p.numel()
            p.add_(d[offset : offset + n].view_as(p), alpha=t)
            offset += n

    def _evaluate_along(
        self, closure: Callable[[], Any], start: list[Tensor], d: Tensor
    ) -> Callable[[float], tuple[float, Tensor]]:
        def evaluate(t: float) -> tuple[float, Tensor]:
            self._add_step(t, d)
            with torch.enable_grad():
                loss = loss_value(closure())
            grad = self._flat_grad()
            for p, x in zip(self._params, start):
                p.copy_(x)
            return loss, grad

        return evaluate

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; returns the first loss evaluated."""
        if closure is None:
            raise ValueError(
                "LBFGS.step requires a closure (a function that clears the gradients, "
                "computes the loss, calls backward() and returns the loss)"
            )
        group = self.param_groups[0]
        # η as given (an int, a float or a 0-dim tensor), as torch.optim.LBFGS takes it: the
        # step length t stored in the state then has the type torch's has.
        lr = group["lr"]
        if isinstance(lr, Tensor) and lr.dim() != 0:
            lr = lr.squeeze()
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        with torch.enable_grad():
            orig_loss = closure()
        loss = loss_value(orig_loss)
        evals = 1
        state["func_evals"] += 1
        grad = self._flat_grad()
        if grad.abs().max() <= tol_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag = state.get("H_diag")
        prev_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d, old_dirs, old_stps, ro, h_diag = grad.neg(), [], [], [], 1
            else:
                y, s = grad.sub(prev_grad), d.mul(t)
                ys = y.dot(s)
                if ys > 1e-10:  # curvature condition: keep H positive definite
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                d, al = lbfgs_direction(grad, old_dirs, old_stps, ro, h_diag)
                # torch.optim keeps the α's in the state, one slot per history entry.
                state.setdefault("al", [None] * history_size)[: len(al)] = al

            if prev_grad is None:
                prev_grad = grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_grad.copy_(grad)
            prev_loss = loss

            # t and gtd stay 0-dim tensors in the parameters' dtype, like torch.optim's, so
            # that float32 runs take the same line-search decisions.
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / grad.abs().sum()) * lr
            else:
                t = lr
            gtd = grad.dot(d)
            if gtd > -tol_change:  # not a descent direction
                break

            if group["line_search_fn"] == "strong_wolfe":
                start = [p.clone(memory_format=torch.contiguous_format) for p in self._params]
                evaluate = self._evaluate_along(closure, start, d)
                loss, grad, t, ls_evals = strong_wolfe(
                    evaluate, t, d, loss, grad, gtd, max_ls=max_eval - evals
                )
                self._add_step(t, d)
                converged = grad.abs().max() <= tol_grad
            else:
                self._add_step(t, d)
                ls_evals = 0
                converged = False
                if n_iter != max_iter:
                    with torch.enable_grad():
                        loss = loss_value(closure())
                    grad = self._flat_grad()
                    converged = grad.abs().max() <= tol_grad
                    ls_evals = 1
            evals += ls_evals
            state["func_evals"] += ls_evals

            if n_iter == max_iter or evals >= max_eval or converged:
                break
            if d.mul(t).abs().max() <= tol_change or abs(loss - prev_loss) < tol_change:
                break

        state.update(
            d=d,
            t=t,
            old_dirs=old_dirs,
            old_stps=old_stps,
            ro=ro,
            H_diag=h_diag,
            prev_flat_grad=prev_grad,
            prev_loss=prev_loss,
        )
        return orig_loss
