"""SGD with momentum and Nesterov momentum, in the three forms the lectures write."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import FirstOrderOptimizer, first_order_checks, prepare_gradient
from ._ops import add_scaled, add_scaled_

MOMENTUM_FORMS = ("rho", "cs231n", "ema")
"""The three momentum formulations `SGD`'s ``momentum_form`` accepts: ``"rho"``
(torch.optim, Sutskever et al.), ``"cs231n"`` (learning rate inside the velocity) and ``"ema"``
(an exponential moving average of the gradients); `sgd` gives each one's equations.
"""


def sgd(
    param: Tensor,
    grad: Tensor,
    velocity: Tensor | None,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    form: str,
    first_step: bool,
) -> None:
    r"""One SGD step; ``velocity`` is None for plain gradient descent θ ← θ − η·g.

    form="rho" (torch.optim, Sutskever et al.):  v ← μ·v + (1 − τ)·g   (v₁ = g)
        θ ← θ − η·v                      Nesterov: θ ← θ − η·(g + μ·v)
    form="cs231n" (learning rate inside the velocity):  v ← μ·v − η·g   (v₀ = 0)
        θ ← θ + v                        Nesterov: θ ← θ − μ·v_prev + (1 + μ)·v
    form="ema" (exponential moving average of gradients):  v ← μ·v + (1 − μ)·g   (v₀ = 0)
        θ ← θ − η·v                      Nesterov: θ ← θ − η·((1 − μ)·g + μ·v)

    $$
    \begin{aligned}
    \text{rho:}\quad & v \leftarrow \mu v + (1 - \tau)\, g, && \theta \leftarrow \theta - \eta\, v,
    && \text{Nesterov: } \theta \leftarrow \theta - \eta\,(g + \mu v) \\
    \text{cs231n:}\quad & v \leftarrow \mu v - \eta\, g, && \theta \leftarrow \theta + v, &&
    \text{Nesterov: } \theta \leftarrow \theta - \mu v_{\text{prev}} + (1 + \mu)\, v \\
    \text{ema:}\quad & v \leftarrow \mu v + (1 - \mu)\, g, && \theta \leftarrow \theta - \eta\, v,
    && \text{Nesterov: } \theta \leftarrow \theta - \eta\,\big((1 - \mu)\, g + \mu v\big)
    \end{aligned}
    $$

    With a constant η the three forms trace the same trajectory up to a rescaled η
    (cs231n: v = −η·v_rho; ema: η_ema·(1 − μ) = η_rho). They part ways when η changes
    mid-run: "cs231n" keeps the old η inside v, the others apply the new η to all of v.
    The Nesterov variants are the change of variables φ = θ + μ·v of the look-ahead
    update v ← μ·v − η·∇f(θ + μ·v); θ ← θ + v, so only ∇f at the stored point is needed.
    """
    if velocity is None:
        add_scaled_(param, grad, -lr)  # θ ← θ − η·g
        return
    v, mu, g = velocity, momentum, grad
    if form == "cs231n":
        v_prev = v.clone() if nesterov else None
        add_scaled_(v.mul_(mu), g, -lr)  # v ← μ·v − η·g
        if v_prev is None:
            param.add_(v)  # θ ← θ + v
        else:  # θ ← θ − μ·v_prev + (1 + μ)·v
            add_scaled_(add_scaled_(param, v, 1 + mu), v_prev, -mu)
        return
    if form == "ema":
        add_scaled_(v.mul_(mu), g, 1 - mu)  # v ← μ·v + (1 − μ)·g
        direction = add_scaled(g * (1 - mu), v, mu) if nesterov else v
    else:
        if first_step:  # torch starts the buffer at the first gradient, undampened
            v.copy_(g)
        else:
            add_scaled_(v.mul_(mu), g, 1 - dampening)  # v ← μ·v + (1 − τ)·g
        direction = add_scaled(g, v, mu) if nesterov else v
    add_scaled_(param, direction, -lr)  # θ ← θ − η·direction


class SGD(FirstOrderOptimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    Plain:     θ ← θ − η·g
    Momentum:  v ← μ·v + (1 − τ)·g;  θ ← θ − η·v              (``momentum_form="rho"``)
    Nesterov:  θ ← θ − η·(g + μ·v)

    $$
    \begin{aligned}
    \text{plain:}\quad & \theta \leftarrow \theta - \eta\, g \\
    \text{momentum:}\quad & v \leftarrow \mu v + (1 - \tau)\, g, \qquad \theta \leftarrow \theta -
    \eta\, v \\
    \text{Nesterov:}\quad & \theta \leftarrow \theta - \eta\,(g + \mu v)
    \end{aligned}
    $$

    Same keywords, defaults and numbers as ``torch.optim.SGD``. trainlab additions:
    ``momentum_form`` ("rho" | "cs231n" | "ema", see [`sgd`][trainlab.optim.sgd.sgd]) and
    ``decoupled_weight_decay`` (θ ← θ·(1 − η·λ) instead of g ← g + λ·θ; identical for
    momentum 0, different with momentum). Sparse gradients (``nn.Embedding(sparse=True)``)
    are taken as torch takes them, without (coupled) weight decay.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 1e-3).
        momentum: momentum factor μ in [0, 1) (default: 0).
        dampening: dampening τ for momentum, "rho" form only (default: 0).
        weight_decay: decay λ (default: 0).
        nesterov: Nesterov momentum; needs μ > 0 and τ = 0 (default: False).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" | "torch-fused" — see `BACKENDS`
            (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
        decoupled_weight_decay: decay the weights instead of the gradient (default: False).
        momentum_form: which of the lectures' momentum formulations (default: "rho").

    References: Polyak (1964); Sutskever et al., "On the importance of initialization and
    momentum in deep learning" (2013); cs231n lecture 7 (2017).
    """

    checks = first_order_checks(
        momentum=_checks.unit_half_open,
        dampening=_checks.unit_closed,
        nesterov=_checks.flag,
        momentum_form=_checks.one_of(*MOMENTUM_FORMS),
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        momentum_form: str = "rho",
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    def _check_combination(self, group: dict[str, Any]) -> None:
        if group.get("nesterov") and (group.get("momentum", 0) <= 0 or group.get("dampening")):
            raise _checks.fail(
                "nesterov",
                True,
                f"requires momentum > 0 and dampening = 0, got momentum={group.get('momentum')}"
                f" and dampening={group.get('dampening')}",
            )

    state_switches = ("momentum",)
    lazy_state = ("momentum_buffer",)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``momentum_buffer`` (v) when μ ≠ 0, created from the first gradient as in torch.optim."""
        # torch.optim creates the buffer from the first gradient, in the first step.
        return {"momentum_buffer": None} if group["momentum"] != 0 else {}

    has_torch_kernel = True

    def torch_kernel(
        self,
        h: dict[str, Any],
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        step: Tensor | None,
    ) -> Callable[[], None] | None:
        """``torch._fused_sgd_`` over the flat buffers: the "rho" form, coupled decay only."""
        decoupled = h["weight_decay_on"] and h["decoupled_weight_decay"]
        if h["momentum_form"] != "rho" or decoupled:
            return None
        buffers = [state["momentum_buffer"]] if h["momentum_on"] else []
        return functools.partial(
            torch._fused_sgd_,
            [param],
            [grad],
            buffers,
            weight_decay=h["weight_decay"],
            momentum=h["momentum"],
            lr=h["lr"],
            dampening=h["dampening"],
            nesterov=h["nesterov"],
            maximize=h["maximize"],
            is_first_step=False,  # the first step, which creates the buffer, runs eagerly
        )

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        sgd(
            param,
            prepare_gradient(param, grad, h),
            state["momentum_buffer"] if h["momentum_on"] else None,
            lr=h["lr"],
            momentum=h["momentum"],
            dampening=h["dampening"],
            nesterov=h["nesterov"],
            form=h["momentum_form"],
            first_step=h["first_step"],
        )

    # A sparse g goes through the same rule: every operation on it is torch's sparse one,
    # and the momentum buffer, started from g, stays sparse — as torch.optim.SGD keeps it.
    apply_sparse_rule = apply_rule
