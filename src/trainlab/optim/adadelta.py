"""AdaDelta: RMSProp whose step size is itself a running RMS of past updates."""

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
from ._ops import add_product_, add_scaled_


def adadelta(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    acc_delta: Tensor,
    *,
    lr: float | Tensor,
    rho: float | Tensor,
    eps: float | Tensor,
) -> None:
    r"""One AdaDelta step (Zeiler, 2012).

    E[g²]  ← ρ·E[g²] + (1 − ρ)·g²
    Δθ      = −√(E[Δθ²] + ε) / √(E[g²] + ε) · g
    E[Δθ²] ← ρ·E[Δθ²] + (1 − ρ)·Δθ²
    θ      ← θ + η·Δθ

    $$
    \begin{aligned}
    E[g^2] &\leftarrow \rho\, E[g^2] + (1 - \rho)\, g^2 \\
    \Delta\theta &= -\frac{\sqrt{E[\Delta\theta^2] + \epsilon}}{\sqrt{E[g^2] + \epsilon}}\, g \\
    E[\Delta\theta^2] &\leftarrow \rho\, E[\Delta\theta^2] + (1 - \rho)\, \Delta\theta^2 \\
    \theta &\leftarrow \theta + \eta\, \Delta\theta
    \end{aligned}
    $$

    The ratio of RMS values gives Δθ the units of θ, so the paper needs no learning rate
    (η = 1); torch.optim keeps η as a multiplier and so does trainlab. ε sits inside both
    square roots.
    """
    add_product_(square_avg.mul_(rho), grad, grad, 1 - rho)  # E[g²]
    rms_g = square_avg.add(eps).sqrt_()
    minus_delta = acc_delta.add(eps).sqrt_().div_(rms_g).mul_(grad)  # −Δθ
    add_product_(acc_delta.mul_(rho), minus_delta, minus_delta, 1 - rho)  # E[Δθ²]
    add_scaled_(param, minus_delta, -lr)  # θ ← θ + η·Δθ


class Adadelta(FirstOrderOptimizer):
    r"""AdaDelta: Δθ = −(RMS[Δθ] / RMS[g])·g;  θ ← θ + η·Δθ.

    $$
    \Delta\theta = -\frac{\operatorname{RMS}[\Delta\theta]}{\operatorname{RMS}[g]}\, g, \qquad
    \theta \leftarrow \theta + \eta\, \Delta\theta
    $$

    Same keywords, defaults and numbers as ``torch.optim.Adadelta``; trainlab adds
    ``decoupled_weight_decay``.

    Args:
        params: parameters or parameter groups.
        lr: multiplier η on the update (default: 1.0).
        rho: decay rate ρ of both running averages (default: 0.9).
        eps: ε inside the square roots (default: 1e-6).
        weight_decay: decay λ (default: 0).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" — see `BACKENDS` (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).

    References: Zeiler, "ADADELTA: An Adaptive Learning Rate Method" (2012).
    """

    checks = first_order_checks(
        rho=_checks.unit_closed, eps=_checks.positive, fused=no_torch_kernel("Adadelta")
    )
    fused_stats_in_loop = False  # Δθ reads E[Δθ²] before the step overwrites it

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: bool | None = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
        decoupled_weight_decay: bool = False,
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``step``, ``square_avg`` (E[g²]) and ``acc_delta`` (E[Δθ²]), all zeros."""
        return {
            "step": step_counter(),
            "square_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "acc_delta": torch.zeros_like(param, memory_format=torch.preserve_format),
        }

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        grad = prepare_gradient(param, grad, h)
        adadelta(
            param,
            grad,
            state["square_avg"],
            state["acc_delta"],
            lr=h["lr"],
            rho=h["rho"],
            eps=h["eps"],
        )
