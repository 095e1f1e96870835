"""Regularization added to the loss (L2, L1, elastic net) and gradient clipping.

The penalty is a term of the loss, L = data loss + λ₂‖W‖² + λ₁‖W‖₁, whose gradient
flows through backprop — distinct from (decoupled) weight decay, which an optimizer
applies to the weights inside its step. Clipping rescales or clamps the gradients
between ``backward()`` and ``optimizer.step()``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from fnmatch import fnmatchcase
from functools import reduce
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from .._checks import fail

Exclude = Callable[[str, Tensor], bool] | Sequence[str] | None
Params = nn.Module | Mapping[str, Tensor] | Iterable[Tensor] | Iterable[tuple[str, Tensor]]

# Added to the norm before dividing, as torch.nn.utils.clip_grad_norm_ does.
CLIP_EPS = 1e-6


# --- penalties ---------------------------------------------------------------------------


def l2_penalty(weights: list[Tensor]) -> Tensor:
    """The squared L2 norm summed over tensors: R(W) = ‖W‖² = Σₖ Σₗ W²ₖₗ;  ∂R/∂W = 2·W."""
    return _total(n.square() for n in torch._foreach_norm(weights, 2))


def l1_penalty(weights: list[Tensor]) -> Tensor:
    """The L1 norm summed over tensors: R(W) = ‖W‖₁ = Σₖ Σₗ |Wₖₗ|;  ∂R/∂W = sign(W) (0 at 0)."""
    return _total(torch._foreach_norm(weights, 1))


def penalty(
    model_or_params: Params, *, l2: float = 0.0, l1: float = 0.0, exclude: Exclude = None
) -> Tensor:
    """The regularization term to add to the loss: λ₂·‖W‖² + λ₁·‖W‖₁ (elastic net when both).

        R(W) = λ₂·Σ W² + λ₁·Σ |W|        ∂R/∂W = 2·λ₂·W + λ₁·sign(W)

    L2 convention: λ·‖W‖², the lecture's R(W) = Σₖ Σₗ W²ₖₗ with loss + λ·R(W) — no ½, so
    the gradient is 2·λ·W. Adding ``penalty(model, l2=λ)`` to the loss of plain SGD is
    therefore ``torch.optim.SGD(weight_decay=2·λ)``; with momentum or Adam the two part from
    decoupled weight decay (θ ← θ − η·λ·θ, outside the gradient). The L1 subgradient at
    W = 0 is taken as 0.

    Args:
        model_or_params: a module (its ``named_parameters()``), a mapping name → tensor, an
            iterable of (name, tensor) pairs, or an iterable of tensors (named "0", "1", ...).
        l2: L2 strength λ₂ >= 0 (default: 0).
        l1: L1 strength λ₁ >= 0 (default: 0).
        exclude: tensors left out of the penalty — a callable ``(name, tensor) -> bool``, or
            a list of ``fnmatch`` patterns of the full dotted name such as
            ``["*.bias", "*.norm.*"]`` (no decay on biases and norm layers). A leading
            ``*.`` also matches top-level names: "*.bias" excludes a bare Linear's "bias"
            (default: None, keep all).

    Returns:
        A 0-dim tensor (0 when nothing is penalized) that gradients flow through.

    References: cs231n lecture 3 (2017), "Regularization"; Zou & Hastie, "Regularization
    and variable selection via the elastic net" (2005).
    """
    _checks.nonnegative("l2", l2)
    _checks.nonnegative("l1", l1)
    excluded = _exclusion(exclude)
    weights = [w for name, w in _named(model_or_params) if not excluded(name, w)]
    terms = []
    if weights and l2:
        terms.append(l2 * l2_penalty(weights))
    if weights and l1:
        terms.append(l1 * l1_penalty(weights))
    if not terms:
        like = weights[0] if weights else torch.empty(())
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return _total(terms)


def _named(model_or_params: Params) -> list[tuple[str, Tensor]]:
    if isinstance(model_or_params, nn.Module):
        return list(model_or_params.named_parameters())
    if isinstance(model_or_params, Mapping):
        named = list(model_or_params.items())
    elif isinstance(model_or_params, Tensor):
        named = [("0", model_or_params)]
    else:
        named = [
            item if isinstance(item, tuple) else (str(i), item)
            for i, item in enumerate(model_or_params)
        ]
    for name, w in named:
        if not isinstance(name, str) or not isinstance(w, Tensor):
            allowed = "must be a module, or tensors, (name, tensor) pairs or a name → tensor map"
            raise fail("model_or_params", f"item {name!r}: {type(w).__name__}", allowed)
    return named


def _exclusion(exclude: Exclude) -> Callable[[str, Tensor], bool]:
    """``exclude`` as one predicate; patterns are checked here, before any use."""
    if exclude is None:
        return lambda name, w: False
    if callable(exclude):
        return exclude
    allowed = "must be a callable (name, param) -> bool or a list of name patterns like ['*.bias']"
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, Iterable):
        raise fail("exclude", exclude, allowed)
    patterns = list(exclude)
    if not all(isinstance(p, str) and p.strip() for p in patterns):
        raise fail("exclude", patterns, allowed)
    return lambda name, w: name_matches(name, patterns)


def name_matches(name: str, patterns: Iterable[str]) -> bool:
    """Does a dotted parameter name match one of the ``fnmatch`` patterns (case-sensitive)?

    Matching "." + name too lets "*.bias" catch a top-level "bias" (a bare Linear's).
    """
    return any(fnmatchcase(name, p) or fnmatchcase("." + name, p) for p in patterns)


def _stack(terms: Iterable[Tensor]) -> Tensor:
    """0-dim tensors as one vector, in their promoted dtype."""
    terms = list(terms)
    dtype = reduce(torch.promote_types, (t.dtype for t in terms))
    return torch.stack([t.to(dtype) for t in terms])


def _total(terms: Iterable[Tensor]) -> Tensor:
    return _stack(terms).sum()


# --- gradient clipping -------------------------------------------------------------------


def clip_grad_value_(
    params: Tensor | Iterable[Tensor], limit: float, *, count: bool = True
) -> int | None:
    """Clamp every gradient element to [−limit, limit]:  g ← min(max(g, −G), G).

    The lecture's g ← max(g, G_max), on both sides. Parameters without a gradient are
    skipped; NaN entries stay NaN (as in torch) and are not counted.

    Args:
        params: a tensor or tensors whose ``.grad`` is clipped in place.
        limit: the largest magnitude G > 0 a gradient element may keep.
        count: count the clipped elements (a pass over the gradients and, on a GPU, a
            synchronisation); False skips it (default: True).

    Returns:
        How many elements were clipped (|g| > G); None when ``count`` is False.

    References: Pascanu et al., "On the difficulty of training recurrent neural networks"
    (2013); ``torch.nn.utils.clip_grad_value_``.
    """
    _checks.positive("limit", limit)
    _checks.flag("count", count)
    grads = _grads(params)
    if not grads:
        return 0 if count else None
    limit = float(limit)
    clipped = [torch.count_nonzero(a > limit) for a in torch._foreach_abs(grads)] if count else []
    torch._foreach_clamp_min_(grads, -limit)
    torch._foreach_clamp_max_(grads, limit)
    return int(torch.stack(clipped).sum()) if count else None


def clip_grad_norm_(
    params: Tensor | Iterable[Tensor], max_norm: float, norm_type: float = 2.0
) -> Tensor:
    """Rescale all gradients together when their global norm is above ``max_norm``.

        ‖g‖ = ‖(‖g₁‖, ‖g₂‖, ...)‖_p        g ← g · max_norm / (‖g‖ + 1e-6)   if that factor < 1

    Same numbers as ``torch.nn.utils.clip_grad_norm_`` (which multiplies by the factor
    clamped at 1). A non-finite norm (inf or NaN gradients) is returned and nothing is
    scaled: scaling by it would zero or poison every gradient, and the trainer's
    non-finite policy (skip the step, stop, lower the loss scale) decides what to do.

    Args:
        params: a tensor or tensors whose ``.grad`` is rescaled in place; parameters
            without a gradient are skipped.
        max_norm: the largest global norm allowed, > 0.
        norm_type: p of the p-norm, > 0 or ``inf`` for the largest magnitude (default: 2).

    Returns:
        The global norm before clipping (0-dim tensor; 0 when no parameter has a gradient).

    References: Pascanu et al. (2013), Algorithm 1; ``torch.nn.utils.clip_grad_norm_``.
    """
    _checks.positive("max_norm", max_norm)
    _check_norm_type(norm_type)
    grads = _grads(params)
    if not grads:
        return torch.tensor(0.0)
    norm_type = float(norm_type)
    total = torch.linalg.vector_norm(_stack(torch._foreach_norm(grads, norm_type)), norm_type)
    if not torch.isfinite(total):
        return total
    factor = max_norm / (total + CLIP_EPS)
    if factor < 1:
        torch._foreach_mul_(grads, factor)
    return total


def _grads(params: Tensor | Iterable[Tensor]) -> list[Tensor]:
    params = [params] if isinstance(params, Tensor) else list(params)
    return [p.grad for p in params if p.grad is not None]


def _check_norm_type(norm_type: Any) -> None:
    allowed = "must be a number > 0 or inf"
    if (
        isinstance(norm_type, bool)
        or not isinstance(norm_type, numbers.Real)
        or math.isnan(norm_type)
        or norm_type <= 0
    ):
        raise fail("norm_type", norm_type, allowed)
