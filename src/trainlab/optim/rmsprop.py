"""RMSProp: AdaGrad with a leaky (exponentially averaged) sum of squared gradients."""

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
from ._ops import add_product_, add_quotient_, add_scaled_


def rmsprop(
    param: Tensor,
    grad: Tensor,
    square_avg: Tensor,
    grad_avg: Tensor | None,
    momentum_buffer: Tensor | None,
    *,
    lr: float | Tensor,
    alpha: float | Tensor,
    eps: float | Tensor,
    momentum: float | Tensor,
) -> None:
    r"""One RMSProp step (Tieleman & Hinton, 2012).

    v ← α·v + (1 − α)·g²
    s = √v + ε                     (centered: ḡ ← α·ḡ + (1 − α)·g;  s = √(v − ḡ²) + ε)
    θ ← θ − η·g/s                  (momentum μ > 0: b ← μ·b + g/s;  θ ← θ − η·b)

    $$
    \begin{aligned}
    v &\leftarrow \alpha v + (1 - \alpha)\, g \odot g \\
    s &= \sqrt{v} + \epsilon \qquad \text{(centered: } \bar g \leftarrow \alpha \bar g + (1 -
    \alpha)\, g,\ s = \sqrt{v - \bar g^2} + \epsilon \text{)} \\
    \theta &\leftarrow \theta - \eta\, \frac{g}{s} \qquad \text{(momentum: } b \leftarrow \mu b +
    \frac{g}{s},\ \theta \leftarrow \theta - \eta\, b \text{)}
    \end{aligned}
    $$

    ``grad_avg`` is given for the centered variant (Graves, 2013), ``momentum_buffer``
    when μ > 0. ε sits outside the square root, as in torch.optim and the lecture's
    ``x += -lr * dx / (np.sqrt(cache) + 1e-7)``.
    """
    add_product_(square_avg.mul_(alpha), grad, grad, 1 - alpha)  # v ← α·v + (1 − α)·g²
    if grad_avg is not None:
        add_scaled_(grad_avg.mul_(alpha), grad, 1 - alpha)  # ḡ ← α·ḡ + (1 − α)·g
        scale = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_().add_(eps)
    else:
        scale = square_avg.sqrt().add_(eps)  # s = √v + ε
    if momentum_buffer is not None:
        momentum_buffer.mul_(momentum).addcdiv_(grad, scale)  # b ← μ·b + g/s
        add_scaled_(param, momentum_buffer, -lr)  # θ ← θ − η·b
    else:
        add_quotient_(param, grad, scale, -lr)  # θ ← θ − η·g/s


class RMSprop(FirstOrderOptimizer):
    r"""RMSProp: v ← α·v + (1 − α)·g²;  θ ← θ − η·g/(√v + ε).

    $$
    v \leftarrow \alpha v + (1 - \alpha)\, g \odot g, \qquad \theta \leftarrow \theta - \eta\,
    \frac{g}{\sqrt{v} + \epsilon}
    $$

    Same keywords, defaults and numbers as ``torch.optim.RMSprop``; trainlab adds
    ``decoupled_weight_decay``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 1e-2).
        alpha: smoothing constant α, the lecture's decay_rate (default: 0.99).
        eps: ε added to √v (default: 1e-8).
        weight_decay: decay λ (default: 0).
        momentum: momentum μ applied to the scaled gradient (default: 0).
        centered: normalize by an estimate of the gradient's variance (default: False).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" — see `BACKENDS` (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).

    References: Tieleman & Hinton, Coursera "Neural Networks for Machine Learning",
    lecture 6.5 (2012); Graves, "Generating Sequences With Recurrent Neural Networks" (2013).
    """

    checks = first_order_checks(
        alpha=_checks.unit_closed,
        eps=_checks.positive,
        momentum=_checks.unit_half_open,
        centered=_checks.flag,
        fused=no_torch_kernel("RMSprop"),
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        decoupled_weight_decay: bool = False,
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    state_switches = ("centered", "momentum")

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """A ``step`` counter and ``square_avg`` (v), zeros.

        Also ``momentum_buffer`` (b) when μ > 0 and ``grad_avg`` (ḡ) when centered.
        """

        def zeros() -> Tensor:
            return torch.zeros_like(param, memory_format=torch.preserve_format)

        state = {"step": step_counter(), "square_avg": zeros()}
        if group["momentum"] > 0:
            state["momentum_buffer"] = zeros()
        if group["centered"]:
            state["grad_avg"] = zeros()
        return state

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        rmsprop(
            param,
            prepare_gradient(param, grad, h),
            state["square_avg"],
            state["grad_avg"] if h["centered"] else None,
            state["momentum_buffer"] if h["momentum_on"] else None,
            lr=h["lr"],
            alpha=h["alpha"],
            eps=h["eps"],
            momentum=h["momentum"],
        )
