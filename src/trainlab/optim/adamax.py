"""AdaMax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import (
    FirstOrderOptimizer,
    first_order_checks,
    no_torch_kernel,
    prepare_gradient,
    step_counter,
)
from ._ops import add_quotient_


def adamax(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_inf: Tensor,
    *,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float | Tensor,
    step_size: float | Tensor,
) -> None:
    r"""One AdaMax step (Kingma & Ba, 2015, section 7.1).

    m ← β1·m + (1 − β1)·g
    u ← max(β2·u, |g| + ε)                 the L∞ limit of Adam's (β2·v + (1 − β2)·|g|^p)^(1/p)
    θ ← θ − (η/(1 − β1ᵗ))·m/u

    $$
    \begin{aligned}
    m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
    u &\leftarrow \max(\beta_2 u,\ |g| + \epsilon) \\
    \theta &\leftarrow \theta - \frac{\eta}{1 - \beta_1^t}\, \frac{m}{u}
    \end{aligned}
    $$

    ``step_size`` is η/(1 − β1ᵗ); u needs no bias correction (it is a max, not an average
    started at 0). ε sits inside the max, as in torch.optim, keeping u > 0.
    """
    exp_avg.lerp_(grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)  # u
    add_quotient_(param, exp_avg, exp_inf, -step_size)  # θ ← θ − η/(1 − β1ᵗ)·m/u


class Adamax(FirstOrderOptimizer):
    r"""AdaMax: u ← max(β2·u, |g|);  θ ← θ − η/(1 − β1ᵗ)·m/u.

    $$
    u \leftarrow \max(\beta_2 u,\ |g|), \qquad \theta \leftarrow \theta - \frac{\eta}{1 -
    \beta_1^t}\, \frac{m}{u}
    $$

    Same keywords, defaults and numbers as ``torch.optim.Adamax``; trainlab adds
    ``decoupled_weight_decay``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 2e-3).
        betas: (β1, β2) (default: (0.9, 0.999)).
        eps: ε added to |g| inside the max (default: 1e-8).
        weight_decay: decay λ (default: 0).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" — see `BACKENDS` (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    checks = first_order_checks(
        betas=_checks.betas, eps=_checks.positive, fused=no_torch_kernel("Adamax")
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
        decoupled_weight_decay: bool = False,
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``step``, ``exp_avg`` (m) and ``exp_inf`` (u), all zeros."""
        return {
            "step": step_counter(),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_inf": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def coefficients(
        self, step: float | None, h: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, float]:
        """``step_size`` = η/(1 − β1ᵗ)."""
        return {"step_size": h["lr"] / (1 - h["beta1"] ** step)}

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        adamax(
            param,
            prepare_gradient(param, grad, h),
            state["exp_avg"],
            state["exp_inf"],
            beta1=h["beta1"],
            beta2=h["beta2"],
            eps=h["eps"],
            step_size=h["step_size"],
        )
