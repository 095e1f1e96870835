"""NAdam: Adam with Nesterov momentum (Dozat, 2016)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _checks
from ._base import FirstOrderOptimizer, first_order_checks, step_counter


def nadam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    mu_product: Tensor,
    *,
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    momentum_decay: float,
) -> None:
    """One NAdam step (Dozat, 2016), with torch.optim's momentum schedule.

    μ_t = β1·(1 − ½·0.96^(t·ψ))            momentum warms up from β1/2 towards β1
    Π_t = Π_{t−1}·μ_t                       (``mu_product``)
    m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²;   v̂ = v/(1 − β2ᵗ)
    θ ← θ − η·[ (1 − μ_t)/(1 − Π_t)·g + μ_{t+1}/(1 − Π_t·μ_{t+1})·m ] / (√v̂ + ε)

    The Nesterov look-ahead is the μ_{t+1}·m term: the momentum part of the *next*
    step is applied now, as in the change-of-variables form of Nesterov momentum.
    """
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    prod = mu_product.mul_(mu).item()  # Π_t (a float32 tensor, as torch.optim keeps it)
    exp_avg.lerp_(grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v ← β2·v + (1 − β2)·g²
    denom = exp_avg_sq.div(1 - beta2**step).sqrt_().add_(eps)  # √v̂ + ε
    param.addcdiv_(grad, denom, value=-lr * (1 - mu) / (1 - prod))
    param.addcdiv_(exp_avg, denom, value=-lr * mu_next / (1 - prod * mu_next))


class NAdam(FirstOrderOptimizer):
    """NAdam: Adam whose momentum term looks one step ahead (Nesterov).

    Same keywords, defaults and numbers as ``torch.optim.NAdam`` (including its
    ``decoupled_weight_decay`` switch).

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 2e-3).
        betas: (β1, β2) (default: (0.9, 0.999)).
        eps: ε added to √v̂ (default: 1e-8).
        weight_decay: decay λ (default: 0).
        momentum_decay: ψ in the momentum schedule μ_t (default: 4e-3).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).
        maximize: ascend the objective instead (default: False).

    References: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """

    checks = first_order_checks(
        betas=_checks.betas, eps=_checks.positive, momentum_decay=_checks.nonnegative
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "step": step_counter(),
            "mu_product": torch.ones((), dtype=step_counter().dtype),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        nadam(
            param,
            grad,
            state["exp_avg"],
            state["exp_avg_sq"],
            state["mu_product"],
            step=self._count_step(state),
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=group["eps"],
            momentum_decay=group["momentum_decay"],
        )
