"""AdaGrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _checks
from ._base import FirstOrderOptimizer, first_order_checks, step_counter


def adagrad(
    param: Tensor,
    grad: Tensor,
    sum_sq: Tensor,
    *,
    step: float,
    lr: float,
    lr_decay: float,
    eps: float,
) -> None:
    """One AdaGrad step (Duchi et al., 2011).

    G ← G + g²
    η_t = η / (1 + (t − 1)·lr_decay)
    θ ← θ − η_t · g / (√G + ε)

    Steep coordinates (large accumulated G) get small steps, flat ones large steps; since
    G only grows, the effective step decays towards zero — the lecture's "AdaGrad stops
    learning", which RMSProp fixes. ε is added after the square root, as in torch.optim
    and the cs231n notes (there ε = 1e-7; torch's default is 1e-10).
    """
    lr_t = lr / (1 + (step - 1) * lr_decay)
    sum_sq.addcmul_(grad, grad)  # G ← G + g²
    param.addcdiv_(grad, sum_sq.sqrt().add_(eps), value=-lr_t)  # θ ← θ − η_t·g/(√G + ε)


class Adagrad(FirstOrderOptimizer):
    """AdaGrad: G ← G + g²;  θ ← θ − η·g/(√G + ε).

    Same keywords, defaults and numbers as ``torch.optim.Adagrad``; trainlab adds
    ``decoupled_weight_decay``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 1e-2).
        lr_decay: inverse-time decay of η per step (default: 0).
        weight_decay: decay λ (default: 0).
        initial_accumulator_value: starting value of G (default: 0).
        eps: ε added to √G (default: 1e-10).
        maximize: ascend the objective instead (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).

    References: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning
    and Stochastic Optimization", JMLR 2011.
    """

    checks = first_order_checks(
        lr_decay=_checks.nonnegative,
        initial_accumulator_value=_checks.nonnegative,
        eps=_checks.positive,
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())
        # Like torch.optim.Adagrad, state exists from construction (G starts at a value).
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param].update(self.init_state(param, group))

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        start = group["initial_accumulator_value"]
        return {
            "step": step_counter(),
            "sum": torch.full_like(param, start, memory_format=torch.preserve_format),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        adagrad(
            param,
            grad,
            state["sum"],
            step=self._count_step(state),
            lr=float(group["lr"]),
            lr_decay=group["lr_decay"],
            eps=group["eps"],
        )
