"""Bookkeeping shared by every trainlab optimizer.

The math lives in one small *rule* per algorithm (``sgd.py``, ``adam.py``, ...): a pure
tensor function of (parameter, gradient, state tensors, hyperparameters). This module
is everything around it: parameter groups, hyperparameter checks, lazily created
state in ``torch.optim``'s format, the loop over parameters, and the two pieces every
first-order method shares — ``maximize`` and (coupled or decoupled) weight decay.

Subclassing ``torch.optim.Optimizer`` keeps trainlab optimizers drop-in: LR
schedulers, ``state_dict()`` / ``load_state_dict()``, ``zero_grad()`` and hooks work
as they do for torch's own classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import _checks
from ._checks import Check

# Keys torch's LR schedulers and param-name support add to groups; legal in a group.
_SCHEDULER_KEYS = frozenset(
    {
        "params",
        "param_names",
        "initial_lr",
        "max_lr",
        "min_lr",
        "base_lr",
        "max_momentum",
        "base_momentum",
    }
)

# torch.optim keywords that select an implementation, not the math. trainlab accepts the
# harmless ones so that swapping `torch.optim.X(..., foreach=True)` for `trainlab.optim.X`
# just works; the rest must stay at their "off" value.
TORCH_COMPAT_CHECKS: dict[str, Check] = {
    "foreach": _checks.optional_flag,
    "fused": _checks.optional_flag,
    "capturable": _checks.must_be_false("trainlab steps are not CUDA-graph capturable"),
    "differentiable": _checks.must_be_false(
        "trainlab does not differentiate through optimizer steps"
    ),
}


def scalar_dtype() -> torch.dtype:
    """dtype of the 0-dim ``step`` tensors, as torch.optim stores them."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def as_float(value: float | Tensor) -> float:
    """A hyperparameter as a Python number (torch allows a 0-dim tensor learning rate)."""
    return value.item() if isinstance(value, Tensor) else float(value)


def reject_unknown(cls_name: str, unknown: dict[str, Any], known: Iterable[str]) -> None:
    """Constructor guard: an unknown keyword is a ValueError naming it and the allowed ones."""
    if unknown:
        name = sorted(unknown)[0]
        allowed = ", ".join(sorted(known))
        raise ValueError(
            f"Invalid keyword for {cls_name}: {name!r} (unknown; allowed keywords: {allowed})"
        )


def apply_weight_decay(
    param: Tensor, grad: Tensor, *, lr: float, weight_decay: float, decoupled: bool
) -> Tensor:
    """L2 regularisation in the gradient, or decoupled decay of the weights.

    Coupled (L2):  g ← g + λ·θ   — the decay then passes through the method's scaling.
    Decoupled:     θ ← θ·(1 − η·λ) — applied to the weights, outside the adaptive scaling
    (Loshchilov & Hutter, 2019). The two are the same for plain SGD and differ for any
    method that rescales the gradient (momentum, AdaGrad, RMSProp, Adam, ...).
    """
    if weight_decay == 0:
        return grad
    if decoupled:
        param.mul_(1 - lr * weight_decay)
        return grad
    return grad.add(param, alpha=weight_decay)


class TrainlabOptimizer(torch.optim.Optimizer):
    """Common base: validated parameter groups in ``torch.optim``'s format."""

    #: keyword -> check, for every hyperparameter a group may carry.
    checks: ClassVar[dict[str, Check]] = {}

    def __init__(self, params: Any, keywords: dict[str, Any]) -> None:
        """``keywords``: the subclass constructor's ``locals()`` — its signature is the list
        of hyperparameters, and ``**unknown`` collects misspelled ones."""
        hidden = {"self", "params", "unknown", "__class__"}
        reject_unknown(type(self).__name__, keywords.get("unknown", {}), self.checks)
        defaults = {k: v for k, v in keywords.items() if k not in hidden}
        self._validate_hyperparameters(defaults, where="")
        self._check_combination(defaults)
        super().__init__(params, defaults)

    # -- validation ------------------------------------------------------------------
    def _validate_hyperparameters(self, group: dict[str, Any], where: str) -> None:
        for name, value in group.items():
            if name in _SCHEDULER_KEYS:
                continue
            check = self.checks.get(name)
            if check is None:
                allowed = ", ".join(sorted(set(self.checks) | {"params"}))
                raise ValueError(
                    f"Invalid parameter group key{where}: {name!r} "
                    f"(unknown to {type(self).__name__}; allowed keys: {allowed})"
                )
            check(name, value)

    def _check_combination(self, group: dict[str, Any]) -> None:
        """Constraints between hyperparameters (e.g. Nesterov needs momentum)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        index = len(self.param_groups)
        params = param_group.get("params")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the "
                "ordering of tensors in sets will change between runs. Please use a list instead."
            )
        params = list(params) if params is not None else []
        param_group["params"] = params
        tensors = [p[1] if isinstance(p, tuple) and len(p) == 2 else p for p in params]
        for i, p in enumerate(tensors):
            if not isinstance(p, Tensor):
                raise TypeError(
                    f"Invalid parameter {i} of group {index}: {torch.typename(p)} "
                    "(must be a torch.Tensor)"
                )
            if not p.is_floating_point():
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: dtype {p.dtype} "
                    "(must be a real floating-point tensor; integer, boolean and complex "
                    "parameters cannot be optimized by gradient steps)"
                )
            if not p.is_leaf:
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: a non-leaf tensor "
                    "(optimize the leaf tensor it was computed from, e.g. `w = w.detach()"
                    ".requires_grad_()`)"
                )
        hyper = {k: v for k, v in param_group.items() if k != "params"}
        self._validate_hyperparameters(hyper, where=f" in group {index}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(tensors):
            if id(p) in seen:
                raise ValueError(
                    f"Invalid parameter {i} of group {index}: it already belongs to another "
                    "parameter group (a parameter may appear in only one group)"
                )
        if len({id(p) for p in tensors}) != len(tensors):
            raise ValueError(
                f"Invalid parameter list of group {index}: a parameter appears twice "
                "(list each parameter once)"
            )
        super().add_param_group(param_group)
        self._check_combination(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state saved by torch.optim lacks trainlab's extra switches: use the defaults.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)


class FirstOrderOptimizer(TrainlabOptimizer):
    """Bookkeeping around a first-order update rule.

    A subclass provides ``init_state`` (the state tensors, created on a parameter's first
    step, with torch.optim's keys) and ``update`` (calls its rule with the group's
    hyperparameters). This class loops over parameters, skips those without a gradient,
    and applies ``maximize`` and weight decay before the rule.
    """

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the loss (optional)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = as_float(group["lr"])
            weight_decay = as_float(group["weight_decay"])
            decoupled = group["decoupled_weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise ValueError(
                        f"{type(self).__name__} does not support sparse gradients "
                        "(use torch.nn.Embedding(sparse=False), or torch.optim.SparseAdam "
                        "for sparse embeddings)"
                    )
                state = self.state.get(param)
                if not state:
                    state = self.init_state(param, group)
                    if state:  # like torch.optim, stateless steps leave no state entry
                        self.state[param] = state
                if group["maximize"]:
                    grad = -grad
                grad = apply_weight_decay(
                    param, grad, lr=lr, weight_decay=weight_decay, decoupled=decoupled
                )
                self.update(param, grad, state, group)
        return loss

    def _count_step(self, state: dict[str, Any]) -> float:
        """Advance the per-parameter step counter t and return it as a number."""
        state["step"] += 1
        return state["step"].item()


def step_counter() -> Tensor:
    """The 0-dim ``step`` tensor torch.optim keeps per parameter."""
    return torch.tensor(0.0, dtype=scalar_dtype())


def first_order_checks(**specific: Check) -> dict[str, Check]:
    """Checks for the keywords every first-order optimizer takes, plus ``specific``."""
    return {
        "lr": _checks.nonnegative,
        "weight_decay": _checks.nonnegative,
        "maximize": _checks.flag,
        "decoupled_weight_decay": _checks.flag,
        **TORCH_COMPAT_CHECKS,
        **specific,
    }
