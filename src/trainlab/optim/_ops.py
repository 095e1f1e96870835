"""Scaled in-place updates that take the scale as a number or a 0-dim tensor.

The update rules run twice: eagerly with Python-number hyperparameters (where torch's
fused ``alpha=``/``value=`` forms save a pass over memory) and compiled over flat
buffers with 0-dim tensor hyperparameters (so that a changing learning rate is a new
input, not a new program). These three helpers give a rule one spelling for both.
"""

from __future__ import annotations

from torch import Tensor


def _is_number(a: object) -> bool:
    # Faster than isinstance(a, numbers.Number), which goes through the ABC machinery:
    # this runs several times per parameter per eager step.
    return a.__class__ is float or not isinstance(a, Tensor)


def add_scaled_(y: Tensor, x: Tensor, a: float | Tensor) -> Tensor:
    """y ← y + a·x"""
    return y.add_(x, alpha=a) if _is_number(a) else y.add_(x * a)


def add_product_(y: Tensor, x1: Tensor, x2: Tensor, a: float | Tensor) -> Tensor:
    """y ← y + a·x1·x2"""
    return y.addcmul_(x1, x2, value=a) if _is_number(a) else y.add_(x1 * x2 * a)


def add_quotient_(y: Tensor, x1: Tensor, x2: Tensor, a: float | Tensor) -> Tensor:
    """y ← y + a·x1/x2"""
    return y.addcdiv_(x1, x2, value=a) if _is_number(a) else y.add_(x1 / x2 * a)


def add_scaled(y: Tensor, x: Tensor, a: float | Tensor) -> Tensor:
    """y + a·x, as a new tensor."""
    return y.add(x, alpha=a) if _is_number(a) else y + x * a
