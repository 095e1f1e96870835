"""Hyperparameter checks with one message style.

Every check raises ``ValueError`` with the form::

    Invalid learning rate (lr): -0.1 (must be a finite number >= 0)

naming the argument, the bad value and what is allowed. Checks are stricter than
``torch.optim``: NaN and infinity are refused everywhere.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch

# Human names for the keywords, used in messages.
LABELS = {
    "lr": "learning rate",
    "momentum": "momentum",
    "dampening": "dampening",
    "weight_decay": "weight decay",
    "eps": "epsilon",
    "betas": "betas",
    "alpha": "smoothing constant",
    "rho": "decay rate",
    "lr_decay": "learning rate decay",
    "initial_accumulator_value": "initial accumulator value",
    "momentum_decay": "momentum decay",
    "max_iter": "maximum iterations",
    "max_eval": "maximum function evaluations",
    "tolerance_grad": "gradient tolerance",
    "tolerance_change": "change tolerance",
    "history_size": "history size",
    "damping": "damping",
    "max_params": "parameter limit",
}


def fail(name: str, value: Any, allowed: str) -> ValueError:
    """The one error every check raises."""
    label = LABELS.get(name, name)
    shown = f"{label} ({name})" if label != name else name
    return ValueError(f"Invalid {shown}: {value!r} ({allowed})")


def _as_number(name: str, value: Any, allowed: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise fail(name, value, f"{allowed}; a tensor must hold exactly one element")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars too
        raise fail(name, value, allowed)
    value = float(value)
    if not math.isfinite(value):
        raise fail(name, value, allowed)
    return value


def nonnegative(name: str, value: Any) -> None:
    allowed = "must be a finite number >= 0"
    if _as_number(name, value, allowed) < 0:
        raise fail(name, value, allowed)


def positive(name: str, value: Any) -> None:
    allowed = "must be a finite number > 0"
    if _as_number(name, value, allowed) <= 0:
        raise fail(name, value, allowed)


def unit_closed(name: str, value: Any) -> None:
    allowed = "must be a number in [0, 1]"
    if not 0.0 <= _as_number(name, value, allowed) <= 1.0:
        raise fail(name, value, allowed)


def unit_half_open(name: str, value: Any) -> None:
    allowed = "must be a number in [0, 1)"
    if not 0.0 <= _as_number(name, value, allowed) < 1.0:
        raise fail(name, value, allowed)


def betas(name: str, value: Any) -> None:
    allowed = "must be a pair (beta1, beta2) of numbers in [0, 1)"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise fail(name, value, allowed)
    for i, beta in enumerate(value):
        try:
            unit_half_open(f"{name}[{i}]", beta)
        except ValueError:
            raise fail(name, tuple(value), allowed) from None


def flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise fail(name, value, "must be True or False")


def optional_flag(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise fail(name, value, "must be True, False or None")


def positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise fail(name, value, "must be an integer >= 1")


def nonnegative_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise fail(name, value, "must be an integer >= 0")


def optional_positive_int(name: str, value: Any) -> None:
    if value is not None:
        positive_int(name, value)


def one_of(*choices: Any) -> Callable[[str, Any], None]:
    """A check that accepts exactly ``choices``."""

    def check(name: str, value: Any) -> None:
        if value not in choices or isinstance(value, bool) != isinstance(choices[0], bool):
            shown = ", ".join(repr(c) for c in choices)
            raise fail(name, value, f"must be one of {shown}")

    return check


def must_be_false(reason: str) -> Callable[[str, Any], None]:
    """For torch keywords trainlab accepts for compatibility but does not implement."""

    def check(name: str, value: Any) -> None:
        if value is not False:
            raise fail(name, value, f"must be False: {reason}")

    return check


Check = Callable[[str, Any], None]
