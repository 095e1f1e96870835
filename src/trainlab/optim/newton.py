"""Newton's method with the exact Hessian — for small problems only, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from .. import _checks
from .._checks import Check
from ._base import TrainlabOptimizer
from ._line_search import backtracking, flat, loss_value


def newton_direction(grad: Tensor, hessian: Tensor, damping: float) -> tuple[Tensor, float]:
    r"""Solve (H + λI)·d = −g; returns (d, λ actually used).

    θ* = θ − H⁻¹·∇J(θ) is the minimizer of the second-order Taylor model. Away from a
    minimum H may be indefinite (a saddle), where the pure Newton step heads *to* the
    saddle; λ is then raised tenfold until the Cholesky factorization succeeds, which
    makes d a descent direction (Levenberg–Marquardt damping).

    $$
    (H + \lambda I)\, d = -\nabla J(\theta), \qquad \theta^\ast = \theta - H^{-1} \nabla J(\theta)
    $$

    """
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype, device=hessian.device)
    scale = max(hessian.diagonal().abs().max().item(), 1.0)
    lam = damping
    for _ in range(60):
        chol, info = torch.linalg.cholesky_ex(hessian + lam * eye)
        if info.item() == 0:
            return torch.cholesky_solve(-grad.unsqueeze(1), chol).squeeze(1), lam
        lam = max(10 * lam, 1e-10 * scale)
    raise ValueError(
        "Newton: the Hessian could not be made positive definite (it may contain NaN or "
        "infinite values; check the loss, or use a first-order optimizer)"
    )


def _check_loss(loss: object, where: str = "") -> None:
    """Raise unless ``loss`` is a scalar tensor still attached to the autograd graph."""
    if isinstance(loss, Tensor) and loss.numel() == 1 and loss.grad_fn is not None:
        return
    if not isinstance(loss, Tensor):
        got = type(loss).__name__
    elif loss.numel() != 1:
        got = f"a tensor of shape {tuple(loss.shape)}"
    else:
        got = "a tensor without grad_fn: computed under torch.no_grad(), or detached"
    raise ValueError(
        "Newton's closure must return the scalar loss tensor, still attached to the "
        f"autograd graph of the parameters (got {got}{where})"
    )


class _RetainGraph(TorchFunctionMode):
    """While a closure runs, its ``backward()`` calls keep the autograd graph.

    An LBFGS-style closure's ``loss.backward()`` would free the graph Newton needs to
    differentiate the returned loss twice, so ``Tensor.backward`` and
    ``torch.autograd.backward`` run with ``retain_graph=True`` (everything else they do,
    filling ``.grad`` included, is unchanged). A ``TorchFunctionMode`` is local to this
    thread and this ``with`` block: nothing in torch is patched.
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func is Tensor.backward or func is torch.autograd.backward:
            targets = args[:1] if func is Tensor.backward else args[0]
            if kwargs.get("gradient", kwargs.get("grad_tensors")) is None:
                for target in targets:
                    # Only what backward() itself would refuse, with Newton's message.
                    if isinstance(target, Tensor) and not (
                        target.requires_grad and target.numel() == 1
                    ):
                        _check_loss(target, " in backward()")
            kwargs = {**kwargs, "retain_graph": True}
        return func(*args, **kwargs)


def _human_bytes(n: float) -> str:
    units = ["bytes", "kB", "MB", "GB", "TB"]
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:,.1f} {units[i]}"


class Newton(TrainlabOptimizer):
    r"""Newton's method: θ ← θ − t·(H + λI)⁻¹·∇J(θ), exact Hessian, closure API.

    $$
    \theta \leftarrow \theta - t\,(H + \lambda I)^{-1} \nabla J(\theta)
    $$

    No learning rate to tune (t = 1) and quadratic convergence near a minimum — but H
    has n² entries and factoring it costs ~n³/3 operations, so it only fits problems of a
    few thousand parameters: the lecture's "why is this impractical for deep nets".
    Above ``max_params`` the optimizer refuses with that explanation.

    ``step(closure)``: the closure computes and **returns** the loss, and may call
    ``backward()`` as a ``torch.optim.LBFGS`` closure does (``zero_grad``, loss,
    ``backward()``, return) or not. Newton differentiates the returned loss twice itself
    (gradient, then all n Hessian rows at once with ``torch.func.vmap`` through
    ``is_grads_batched``); for that, the closure runs under a thread-local
    ``TorchFunctionMode`` that makes its ``backward()`` keep the graph
    (``retain_graph=True``), so both forms give the same iterates. Newton never writes
    ``.grad``: after ``step`` it holds what the closure's last ``backward()`` left — the
    gradient at the last point evaluated: the old parameters without a line search, the
    new ones with backtracking (whose last evaluation is the step it accepts).

    Args:
        params: parameters (all groups are treated as one vector).
        lr: step length t, the start of the line search if one is used (default: 1).
        damping: λ added to the Hessian's diagonal; raised automatically when H + λI is
            not positive definite (default: 0).
        line_search_fn: None or "backtracking" (Armijo, halving t) (default: None).
        max_params: largest parameter count accepted (default: 2000).

    References: Nocedal & Wright, Numerical Optimization, ch. 3.3 and 3.4 (modified
    Newton); cs231n lecture 7, "second-order optimization".
    """

    complex_parameters = False  # the Hessian solve needs a real vector space
    checks: ClassVar[dict[str, Check]] = {
        "lr": _checks.positive,
        "damping": _checks.nonnegative,
        "line_search_fn": _checks.one_of(None, "backtracking"),
        "max_params": _checks.positive_int,
    }

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        damping: float = 0.0,
        line_search_fn: str | None = None,
        max_params: int = 2000,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())
        self._check_size()

    @property
    def _params(self) -> list[Tensor]:
        """The parameters Newton moves: all of the one group's that require gradients."""
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if self.param_groups:
            raise ValueError(
                "Invalid params for Newton: a second parameter group (Newton treats all "
                "parameters as one vector with one Hessian; put them in one group)"
            )
        super().add_param_group(param_group)

    def _check_size(self) -> None:
        max_params = self.param_groups[0]["max_params"]
        if not self._params:
            raise ValueError(
                "Invalid params for Newton: no parameter requires a gradient (nothing to train)"
            )
        n = sum(p.numel() for p in self._params)
        if n > max_params:
            hessian_bytes = n * n * self._params[0].element_size()
            raise ValueError(
                f"Invalid params for Newton: {n:,} parameters (must be <= max_params="
                f"{max_params:,}). Newton's method stores the full n×n Hessian — "
                f"{_human_bytes(hessian_bytes)} here, O(n²) memory — and factors it every step, "
                f"about n³/3 = {n**3 / 3:.1e} operations, O(n³) time; this is why it is "
                "impractical for deep networks. Use LBFGS (it approximates H⁻¹ from a few "
                "gradient differences in O(m·n) memory) or a first-order optimizer; raise "
                "max_params only if you have the memory and time."
            )

    def _hessian(self, loss: Tensor) -> tuple[Tensor, Tensor]:
        """Flat gradient and n×n Hessian of ``loss`` w.r.t. the parameters."""
        params = self._params
        try:
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        except RuntimeError as error:  # e.g. torch.autograd.grad in the closure freed it
            raise ValueError(
                "Newton's closure freed the autograd graph of the loss it returns, but Newton "
                "differentiates that loss twice itself: call loss.backward() in the closure "
                "(Newton keeps the graph for it) or nothing, not torch.autograd.grad "
                f"without retain_graph=True ({error})"
            ) from None
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        g = flat(grads)
        n = g.numel()
        if not g.requires_grad:  # the loss is linear in the parameters
            return g.detach(), g.new_zeros(n, n)
        basis = torch.eye(n, dtype=g.dtype, device=g.device)
        rows = torch.autograd.grad(
            g, params, grad_outputs=basis, is_grads_batched=True, allow_unused=True
        )
        rows = [
            torch.zeros(n, *p.shape, dtype=g.dtype, device=g.device) if r is None else r
            for p, r in zip(params, rows)
        ]
        hessian = torch.cat([r.reshape(n, -1) for r in rows], dim=1)
        return g.detach(), (hessian + hessian.T) / 2

    def _add_step(self, t: float, d: Tensor) -> None:
        offset = 0
        for p in self._params:
            p.add_(d[offset : offset + p.numel()].view_as(p) * t)
            offset += p.numel()

    def _evaluate(self, closure: Callable[[], Any]) -> Tensor:
        """The closure's loss, evaluated with gradients on and its graph kept."""
        with torch.enable_grad(), _RetainGraph():
            loss = closure()
        _check_loss(loss)
        return loss

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One Newton step; returns the loss before the step."""
        if closure is None:
            raise ValueError(
                "Newton.step requires a closure that computes and returns the loss "
                "(calling backward() in it, as for LBFGS, is optional)"
            )
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        state.setdefault("n_iter", 0)
        state.setdefault("func_evals", 0)
        loss = self._evaluate(closure)
        with torch.enable_grad():
            grad, hessian = self._hessian(loss)
        state["func_evals"] += 1
        if not bool(hessian.any()) and bool(grad.any()):
            raise ValueError(
                "Newton: the Hessian is zero — the loss is linear in the parameters, so it "
                "has no minimum for a Newton step to jump to (check the loss, or use a "
                "first-order optimizer)"
            )
        d, damping = newton_direction(grad, hessian, float(group["damping"]))
        t = float(group["lr"])
        if group["line_search_fn"] == "backtracking":
            start = [p.clone() for p in self._params]

            def evaluate_loss(step: float) -> float:
                self._add_step(step, d)
                try:
                    return loss_value(self._evaluate(closure))
                finally:  # back to the start, even if the closure raised
                    for p, x in zip(self._params, start):
                        p.copy_(x)

            _, t, evals = backtracking(evaluate_loss, t, loss_value(loss), grad.dot(d).item())
            state["func_evals"] += evals
        self._add_step(t, d)
        state["n_iter"] += 1
        state.update(damping=damping, t=t, grad_norm=grad.norm().item())
        return loss
