"""NAdam: Adam with Nesterov momentum (Dozat, 2016)."""

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
    scalar_dtype,
    step_counter,
)
from ._ops import add_product_, add_quotient_


def nadam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    *,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float | Tensor,
    grad_step: float | Tensor,
    momentum_step: float | Tensor,
    bias2_sqrt: float | Tensor,
) -> None:
    r"""One NAdam step (Dozat, 2016), with torch.optim's momentum schedule.

    m ← β1·m + (1 − β1)·g;   v ← β2·v + (1 − β2)·g²;   v̂ = v/(1 − β2ᵗ)
    θ ← θ − η·[ (1 − μ_t)/(1 − Π_t)·g + μ_{t+1}/(1 − Π_t·μ_{t+1})·m ] / (√v̂ + ε)

    $$
    \begin{aligned}
    m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\, g
    \odot g, \qquad \hat v = \frac{v}{1 - \beta_2^t} \\
    \theta &\leftarrow \theta - \eta \left[ \frac{1 - \mu_t}{1 - \Pi_t}\, g + \frac{\mu_{t+1}}{1 -
    \Pi_t\, \mu_{t+1}}\, m \right] \Big/ \left(\sqrt{\hat v} + \epsilon\right), \qquad \Pi_t =
    \prod_{i=1}^{t} \mu_i
    \end{aligned}
    $$

    with μ_t and Π_t = μ_1···μ_t from `nadam_schedule`, which also gives the two
    step sizes ``grad_step`` and ``momentum_step`` (the bracket's coefficients times η).
    The Nesterov look-ahead is the μ_{t+1}·m term: the momentum part of the *next* step
    is applied now, as in the change-of-variables form of Nesterov momentum.
    """
    exp_avg.lerp_(grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    add_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)  # v ← β2·v + (1 − β2)·g²
    # √v̂ + ε = (√v + ε·√(1 − β2ᵗ))/√(1 − β2ᵗ): multiply the steps instead of dividing v.
    denom = exp_avg_sq.sqrt().add_(eps * bias2_sqrt)
    add_quotient_(param, grad, denom, -grad_step * bias2_sqrt)
    add_quotient_(param, exp_avg, denom, -momentum_step * bias2_sqrt)


def nadam_schedule(
    step: float, lr: float, beta1: float, beta2: float, momentum_decay: float, mu_product: Tensor
) -> dict[str, float]:
    """NAdam's step-dependent scalars; multiplies ``mu_product`` (Π) by μ_t in place.

    μ_t = β1·(1 − ½·0.96^(t·ψ))      momentum warms up from β1/2 towards β1
    Π_t = Π_{t−1}·μ_t                 kept, like torch.optim, in a float32 tensor
    """
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    prod = mu_product.mul_(mu).reshape(-1)[0].item()
    return {
        "grad_step": lr * (1 - mu) / (1 - prod),
        "momentum_step": lr * mu_next / (1 - prod * mu_next),
        "bias2_sqrt": (1 - beta2**step) ** 0.5,
    }


class NAdam(FirstOrderOptimizer):
    r"""NAdam: Adam whose momentum term looks one step ahead (Nesterov).

    $$
    \theta \leftarrow \theta - \eta \left[ \frac{1 - \mu_t}{1 - \Pi_t}\, g + \frac{\mu_{t+1}}{1 -
    \Pi_t\, \mu_{t+1}}\, m \right] \Big/ \left(\sqrt{\hat v} + \epsilon\right)
    $$

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
        backend: "auto" | "eager" | "fused" — see `BACKENDS` (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).

    References: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016.
    """

    checks = first_order_checks(
        betas=_checks.betas,
        eps=_checks.positive,
        momentum_decay=_checks.nonnegative,
        fused=no_torch_kernel("NAdam"),
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
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``step``, ``mu_product`` (Π_t, starting at 1), ``exp_avg`` (m) and ``exp_avg_sq`` (v)."""
        return {
            "step": step_counter(),
            "mu_product": torch.ones((), dtype=scalar_dtype()),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    scalar_state = ("step", "mu_product")
    coefficients_update_state = True

    def coefficients(
        self, step: float | None, h: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, float]:
        """The momentum schedule's step sizes from `nadam_schedule`; advances ``mu_product``."""
        return nadam_schedule(
            step, h["lr"], h["beta1"], h["beta2"], h["momentum_decay"], state["mu_product"]
        )

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        nadam(
            param,
            prepare_gradient(param, grad, h),
            state["exp_avg"],
            state["exp_avg_sq"],
            beta1=h["beta1"],
            beta2=h["beta2"],
            eps=h["eps"],
            grad_step=h["grad_step"],
            momentum_step=h["momentum_step"],
            bias2_sqrt=h["bias2_sqrt"],
        )
