"""AdaGrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .. import _checks
from ._base import FirstOrderOptimizer, first_order_checks, prepare_gradient, step_counter
from ._ops import add_quotient_


def adagrad(
    param: Tensor,
    grad: Tensor,
    sum_sq: Tensor,
    *,
    lr: float | Tensor,
    eps: float | Tensor,
) -> None:
    r"""One AdaGrad step (Duchi et al., 2011).

    G ← G + g²
    θ ← θ − η_t · g / (√G + ε)

    $$
    G \leftarrow G + g \odot g, \qquad \theta \leftarrow \theta - \eta_t\, \frac{g}{\sqrt{G} +
    \epsilon}
    $$

    Steep coordinates (large accumulated G) get small steps, flat ones large steps; since
    G only grows, the effective step decays towards zero — the lecture's "AdaGrad stops
    learning", which RMSProp fixes. ``lr`` is η_t from `adagrad_lr`. ε is added
    after the square root, as in torch.optim and the cs231n notes (there ε = 1e-7;
    torch's default is 1e-10).
    """
    sum_sq.addcmul_(grad, grad)  # G ← G + g²
    add_quotient_(param, grad, sum_sq.sqrt().add_(eps), -lr)  # θ ← θ − η_t·g/(√G + ε)


def adagrad_sparse(
    param: Tensor,
    grad: Tensor,
    sum_sq: Tensor,
    *,
    lr: float,
    eps: float,
) -> None:
    r"""One AdaGrad step for a sparse gradient: [`adagrad`][trainlab.optim.adagrad.adagrad] on the
    entries it holds.

    G ← G + g²;  θ ← θ − η_t · g / (√G + ε)     only where g has entries

    $$
    G_i \leftarrow G_i + g_i^2, \qquad \theta_i \leftarrow \theta_i - \eta_t\,
    \frac{g_i}{\sqrt{G_i} + \epsilon} \qquad \text{for each entry } i \text{ of } g
    $$

    Untouched rows (embeddings not in the batch) keep their θ and G. Repeated indices
    are summed first, since the step is not linear in g.
    """
    g = grad.coalesce()

    def at_entries(values: Tensor) -> Tensor:  # values placed at g's indices
        return torch.sparse_coo_tensor(
            g.indices(), values, g.shape, is_coalesced=True, check_invariants=False
        )

    sum_sq.add_(at_entries(g.values() * g.values()))  # G ← G + g²
    scale = sum_sq.sparse_mask(g).values().sqrt_().add_(eps)  # √G + ε at g's entries
    param.add_(at_entries(g.values() / scale), alpha=-lr)  # θ ← θ − η_t·g/(√G + ε)


def adagrad_lr(step: float, lr: float, lr_decay: float) -> float:
    """η_t = η / (1 + (t − 1)·lr_decay), torch.optim's inverse-time decay of AdaGrad."""
    return lr / (1 + (step - 1) * lr_decay)


class Adagrad(FirstOrderOptimizer):
    r"""AdaGrad: G ← G + g²;  θ ← θ − η·g/(√G + ε).

    $$
    G \leftarrow G + g \odot g, \qquad \theta \leftarrow \theta - \eta\, \frac{g}{\sqrt{G} +
    \epsilon}
    $$

    Same keywords, defaults and numbers as ``torch.optim.Adagrad``; trainlab adds
    ``decoupled_weight_decay``. A sparse gradient updates only the entries it holds
    ([`adagrad_sparse`][trainlab.optim.adagrad_sparse]), as in torch.

    Args:
        params: parameters or parameter groups.
        lr: learning rate η (default: 1e-2).
        lr_decay: inverse-time decay of η per step (default: 0).
        weight_decay: decay λ (default: 0).
        initial_accumulator_value: starting value of G (default: 0).
        eps: ε added to √G (default: 1e-10).
        maximize: ascend the objective instead (default: False).
        backend: "auto" | "eager" | "fused" | "torch-fused" — see `BACKENDS`
            (default: "auto").
        track_stats: record gradient norm, update ratio, non-finite count (default: False).
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
        backend: str = "auto",
        track_stats: bool = False,
        **unknown: Any,
    ) -> None:
        super().__init__(params, locals())
        # Like torch.optim.Adagrad, state exists from construction (G starts at a value).
        for group in self.param_groups:
            for param in group["params"]:
                self.state[param].update(self.init_state(param, group))

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``step`` and ``sum`` (G), filled with ``initial_accumulator_value``."""
        start = group["initial_accumulator_value"]
        if param.is_complex():  # G holds the real and the imaginary part's sums
            start = complex(start, start)
        return {
            "step": step_counter(),
            "sum": torch.full_like(param, start, memory_format=torch.preserve_format),
        }

    def coefficients(
        self, step: float | None, h: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, float]:
        """``lr_t``, the learning rate decayed by ``lr_decay``: η/(1 + (t − 1)·decay)."""
        return {"lr_t": adagrad_lr(step, h["lr"], h["lr_decay"])}

    has_torch_kernel = True

    def torch_kernel(
        self,
        h: dict[str, Any],
        param: Tensor,
        grad: Tensor,
        state: dict[str, Tensor],
        step: Tensor | None,
    ) -> Callable[[], None] | None:
        """``torch._fused_adagrad_`` over the flat buffers (coupled weight decay only)."""
        if h["weight_decay_on"] and h["decoupled_weight_decay"]:
            return None
        return functools.partial(
            torch._fused_adagrad_,
            [param],
            [grad],
            [state["sum"]],
            [step],
            lr=h["lr"],
            lr_decay=h["lr_decay"],
            weight_decay=h["weight_decay"],
            eps=h["eps"],
            maximize=h["maximize"],
        )

    @staticmethod
    def apply_rule(param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]) -> None:
        grad = prepare_gradient(param, grad, h)
        adagrad(param, grad, state["sum"], lr=h["lr_t"], eps=h["eps"])

    @staticmethod
    def apply_sparse_rule(
        param: Tensor, grad: Tensor, state: dict[str, Any], h: dict[str, Any]
    ) -> None:
        """`apply_rule` for a sparse gradient: `adagrad_sparse` on the gradient's entries only."""
        grad = prepare_gradient(param, grad, h)
        adagrad_sparse(param, grad, state["sum"], lr=h["lr_t"], eps=h["eps"])
