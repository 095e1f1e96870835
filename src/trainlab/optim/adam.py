"""Adam and AdamW: momentum on the gradient plus RMSProp scaling, bias-corrected."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import FirstOrderOptimizer, first_order_checks, prepare_gradient, step_counter
from ._ops import add_product_, add_quotient_


def adam(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor | None,
    *,
    beta1: float | Tensor,
    beta2: float | Tensor,
    eps: float | Tensor,
    step_size: float | Tensor,
    bias2_sqrt: float | Tensor,
) -> None:
    r"""One Adam step (Kingma & Ba, 2015).

    m ← β1·m + (1 − β1)·g                 first moment ("momentum")
    v ← β2·v + (1 − β2)·g²                second moment ("RMSProp")
    m̂ = m/(1 − β1ᵗ),  v̂ = v/(1 − β2ᵗ)    bias correction (m, v start at 0)
    θ ← θ − η·m̂/(√v̂ + ε)

    $$
    \begin{aligned}
    m &\leftarrow \beta_1 m + (1 - \beta_1)\, g \\
    v &\leftarrow \beta_2 v + (1 - \beta_2)\, g \odot g \\
    \hat m &= \frac{m}{1 - \beta_1^t}, \qquad \hat v = \frac{v}{1 - \beta_2^t} \\
    \theta &\leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}
    \end{aligned}
    $$

    The scalars come from `adam_step_size`: ``step_size`` = η/(1 − β1ᵗ) and
    ``bias2_sqrt`` = √(1 − β2ᵗ). ``max_exp_avg_sq`` (AMSGrad, Reddi et al. 2018)
    replaces v by its running maximum. ε is added after the square root of v̂, as in the
    paper and torch.optim.
    """
    exp_avg.lerp_(grad, 1 - beta1)  # m ← β1·m + (1 − β1)·g
    add_product_(exp_avg_sq.mul_(beta2), grad, grad, 1 - beta2)  # v ← β2·v + (1 − β2)·g²
    v = exp_avg_sq
    if max_exp_avg_sq is not None:
        v = torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
    # η·m̂/(√v̂ + ε) = (η/(1 − β1ᵗ))·√(1 − β2ᵗ)·m/(√v + ε·√(1 − β2ᵗ)): one division fewer.
    denom = v.sqrt().add_(eps * bias2_sqrt)
    add_quotient_(param, exp_avg, denom, -step_size * bias2_sqrt)  # θ ← θ − η·m̂/(√v̂ + ε)


def adam_step_size(
    step: float, lr: float, beta1: float, beta2: float, bias_correction: bool
) -> dict[str, float]:
    """Adam's step-dependent scalars: η/(1 − β1ᵗ) and √(1 − β2ᵗ).

    ``bias_correction=False`` is the lecture's "incomplete, but close" Adam
    θ ← θ − η·m/(√v + ε). Since m and v start at 0, its early steps are off: the first
    one is η·(1 − β1)/√(1 − β2) ≈ 3.2·η per coordinate for β = (0.9, 0.999), where the
    corrected step is η.
    """
    if not bias_correction:
        return {"step_size": lr, "bias2_sqrt": 1.0}
    return {"step_size": lr / (1 - beta1**step), "bias2_sqrt": (1 - beta2**step) ** 0.5}


class Adam(FirstOrderOptimizer):
    r"""Adam: m, v running moments of g and g²;  θ ← θ − η·m̂/(√v̂ + ε).

    $$
    \begin{aligned}
    m &\leftarrow \beta_1 m + (1 - \beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\, g
    \odot g \\
    \theta &\leftarrow \theta - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}, \qquad \hat m =
    \frac{m}{1 - \beta_1^t},\ \hat v = \frac{v}{1 - \beta_2^t}
    \end{aligned}
    $$

    Same keywords, defaults and numbers as ``torch.optim.Adam`` (including its
    ``decoupled_weight_decay`` switch, which makes it AdamW). trainlab adds
    ``bias_correction`` (False gives the lecture's "incomplete" Adam).

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 1e-3).
        betas: (β1, β2), decay of the first and second moment (default: (0.9, 0.999)).
        eps: ε added to √v̂ (default: 1e-8).
        weight_decay: decay λ (default: 0).
        amsgrad: use the running maximum of v (default: False).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" | "torch-fused" — see `BACKENDS`
            (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
        decoupled_weight_decay: θ ← θ·(1 − η·λ) instead of g ← g + λ·θ (default: False).
        bias_correction: divide m and v by (1 − βᵗ) (default: True).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
    Reddi, Kale & Kumar, "On the Convergence of Adam and Beyond", ICLR 2018.
    """

    checks = first_order_checks(
        betas=_checks.betas,
        eps=_checks.positive,
        amsgrad=_checks.flag,
        bias_correction=_checks.flag,
    )

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        bias_correction: bool = True,
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())

    state_switches = ("amsgrad",)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """A ``step`` counter and the zero moments ``exp_avg`` (m) and ``exp_avg_sq`` (v).

        With AMSGrad, also ``max_exp_avg_sq``, the running maximum of v.
        """

        def zeros() -> Tensor:
            return torch.zeros_like(param, memory_format=torch.preserve_format)

        state = {"step": step_counter(), "exp_avg": zeros(), "exp_avg_sq": zeros()}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = zeros()
        return state

    def coefficients(
        self, step: float | None, h: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, float]:
        """η/(1 − β1ᵗ) and √(1 − β2ᵗ) from `adam_step_size`."""
        return adam_step_size(step, h["lr"], h["beta1"], h["beta2"], h["bias_correction"])

    has_torch_kernel = True

    def torch_kernel(
        self,
        h: dict[str, Any],
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        step: Tensor | None,
    ) -> Callable[[], None] | None:
        """``torch._fused_adam_`` (``_fused_adamw_`` for decoupled decay) over the flat
        buffers; None without bias correction, which torch's kernel always applies."""
        if not h["bias_correction"]:
            return None
        decoupled = h["weight_decay_on"] and h["decoupled_weight_decay"]
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        amsgrad = h["amsgrad"]
        return functools.partial(
            kernel,
            [param],
            [grad],
            [state["exp_avg"]],
            [state["exp_avg_sq"]],
            [state["max_exp_avg_sq"]] if amsgrad else [],
            [step],
            lr=h["lr"],
            beta1=h["beta1"],
            beta2=h["beta2"],
            weight_decay=h["weight_decay"],
            eps=h["eps"],
            amsgrad=amsgrad,
            maximize=h["maximize"],
        )

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        adam(
            param,
            prepare_gradient(param, grad, h),
            state["exp_avg"],
            state["exp_avg_sq"],
            state["max_exp_avg_sq"] if h["amsgrad"] else None,
            beta1=h["beta1"],
            beta2=h["beta2"],
            eps=h["eps"],
            step_size=h["step_size"],
            bias2_sqrt=h["bias2_sqrt"],
        )


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay θ ← θ·(1 − η·λ) (default λ = 1e-2).

    $$
    \theta \leftarrow \theta\,(1 - \eta\lambda) - \eta\, \frac{\hat m}{\sqrt{\hat v} + \epsilon}
    $$

    L2 regularisation added to g is divided by √v̂ like the rest of the gradient, so
    weights with large gradients are barely regularised; decoupling applies the same
    relative shrinkage to every weight. Same keywords, defaults and numbers as
    ``torch.optim.AdamW``; ``decoupled_weight_decay=False`` turns it back into Adam.

    ``load_state_dict`` keeps this optimizer's ``decoupled_weight_decay``, as
    torch.optim.AdamW does: a state saved by Adam (coupled decay) does not turn it into Adam.

    References: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """

    kept_on_load = ("decoupled_weight_decay",)

    def __init__(
        self,
        params: Any,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = True,
        bias_correction: bool = True,
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
            bias_correction=bias_correction,
            backend=backend,
            track_stats=track_stats,
            **unknown,
        )
