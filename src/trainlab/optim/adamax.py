"""AdaMax: Adam with the infinity norm in place of the second moment."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _checks
from ._base import FirstOrderOptimizer, first_order_checks, step_counter


def adamax(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_inf: Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """One AdaMax step (Kingma & Ba, 2015, section 7.1).

    m ← β1·m + (1 − β1)·g
    u ← max(β2·u, |g| + ε)                 the L∞ limit of Adam's (β2·v + (1 − β2)·|g|^p)^(1/p)
    θ ← θ − (η/(1 − β1ᵗ))·m/u

    u needs no bias correction (it is a max, not an average started at 0). ε sits inside
    the max, as in torch.optim, keeping u > 0.
    """
    exp_avg.lerp_(grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    torch.maximum(exp_inf.mul_(beta2), grad.abs().add_(eps), out=exp_inf)  # u
    param.addcdiv_(exp_avg, exp_inf, value=-lr / (1 - beta1**step))  # θ ← θ − η/(1 − β1ᵗ)·m/u


class Adamax(FirstOrderOptimizer):
    """AdaMax: u ← max(β2·u, |g|);  θ ← θ − η/(1 − β1ᵗ)·m/u.

    Same keywords, defaults and numbers as ``torch.optim.Adamax``; trainlab adds
    ``decoupled_weight_decay``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 2e-3).
        betas: (β1, β2) (default: (0.9, 0.999)).
        eps: ε added to |g| inside the max (default: 1e-8).
        weight_decay: decay λ (default: 0).
        maximize: ascend the objective instead (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
    """

    checks = first_order_checks(betas=_checks.betas, eps=_checks.positive)

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
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": step_counter(),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_inf": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        adamax(
            param,
            grad,
            state["exp_avg"],
            state["exp_inf"],
            step=self._count_step(state),
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=group["eps"],
        )
