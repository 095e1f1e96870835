"""Reduce-on-plateau and the one adapter that applies schedules to an optimizer.

``ReduceOnPlateau`` is the lecture's "drop η by 10× when the loss is stuck; wait a bit
before dropping", as a multiplicative factor that can start watching only after a warmup
phase. ``LRController`` sets every parameter group's learning rate to
base_lr × schedule(step) × plateau factor (SWA's constant rate × plateau factor from
swa_start on), and, given a momentum schedule, every group's momentum (or Adam's β₁) to
momentum(step); schedules are pure, so its state is the rates and the plateau's counters,
and a resumed run sees the same rate at every step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from .._checks import fail, nonnegative, nonnegative_int, one_of, unit_closed, unit_half_open
from .schedules import _check_step, _unit_open


@dataclass
class PlateauState:
    """What ``ReduceOnPlateau`` remembers between reports; plain JSON values."""

    best: float | None = None  # best metric so far; None before the first counted report
    num_bad_epochs: int = 0  # reports in a row without a significant improvement
    cooldown_counter: int = 0  # reports left in which bad reports are not counted
    factor: float = 1.0  # the current factor of the learning rate


#: The validation metrics a run can monitor, and which way is better.
METRIC_MODES = {"val_loss": "min", "val_accuracy": "max"}


def improves(metric: float, best: float | None, mode: str, threshold: float, rel: bool) -> bool:
    """Whether ``metric`` is a significant improvement on ``best`` (torch's rule).

        min: metric < best·(1 − threshold)  (rel)   or   metric < best − threshold  (abs)
        max: metric > best·(1 + threshold)  (rel)   or   metric > best + threshold  (abs)

    The first finite metric always improves on ``best = None``; a NaN or infinite metric
    never does (torch lets ±inf become the best, after which nothing can improve).
    """
    if not math.isfinite(metric):
        return False
    if best is None:
        return True
    if mode == "min":
        return metric < (best * (1.0 - threshold) if rel else best - threshold)
    return metric > (best * (threshold + 1.0) if rel else best + threshold)


class ReduceOnPlateau:
    """Drop the learning rate by ``factor`` when the watched metric stops improving.

    For each report after ``start_step``::

        improves(metric, best) → best ← metric, bad ← 0;   else bad ← bad + 1
        cooldown > 0           → cooldown ← cooldown − 1, bad ← 0
        bad > patience         → f ← max(f·factor, min_factor), cooldown ← cooldown, bad ← 0

    The learning rate is multiplied by the current f (``.factor``: 1 → 0.1 → 0.01 ...).

    Args:
        mode: "min" for a loss, "max" for an accuracy (default: "min").
        factor: the multiplier of each drop, in (0, 1) (default: 0.1).
        patience: bad reports tolerated before a drop, an integer >= 0 (default: 10).
        threshold: how much better counts as better, >= 0 and < 1 in "rel" mode
            (default: 1e-4).
        threshold_mode: "rel" (relative to best) or "abs" (default: "rel").
        cooldown: reports ignored after a drop, an integer >= 0 (default: 0).
        min_factor: the lowest f, in [0, 1] (default: 0.0).
        start_step: reports before this step are ignored, e.g. the warmup length, an
            integer >= 0 (default: 0).

    Same decisions as ``torch.optim.lr_scheduler.ReduceLROnPlateau`` with the same
    arguments (``min_lr = min_factor·lr``); it has no ``eps`` (the factor stops at
    ``min_factor`` instead) and treats a non-finite metric as a bad report.

    References: torch.optim.lr_scheduler.ReduceLROnPlateau; Keras ``ReduceLROnPlateau``.
    """

    def __init__(
        self,
        mode: str = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_factor: float = 0.0,
        start_step: int = 0,
    ) -> None:
        one_of("min", "max")("mode", mode)
        _unit_open("factor", factor)
        nonnegative_int("patience", patience)
        one_of("rel", "abs")("threshold_mode", threshold_mode)
        (unit_half_open if threshold_mode == "rel" else nonnegative)("threshold", threshold)
        nonnegative_int("cooldown", cooldown)
        unit_closed("min_factor", min_factor)
        nonnegative_int("start_step", start_step)
        self.mode = mode
        self.reduce_factor = float(factor)  # the multiplier of a drop; .factor is the current f
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.threshold_mode = threshold_mode
        self.cooldown = int(cooldown)
        self.min_factor = float(min_factor)
        self.start_step = int(start_step)
        self.state = PlateauState()

    @property
    def factor(self) -> float:
        """The current factor of the learning rate."""
        return self.state.factor

    def update(self, metric: float, step: int) -> float:
        """Count one report of the metric made at ``step``; return the current factor."""
        _check_step(step)
        try:
            value = float(metric)
        except (TypeError, ValueError, RuntimeError):
            raise fail("metric", metric, "must be a real number") from None
        if step < self.start_step:  # e.g. during warmup, where the loss says little
            return self.state.factor
        state = self.state
        if improves(value, state.best, self.mode, self.threshold, self.threshold_mode == "rel"):
            state.best, state.num_bad_epochs = value, 0
        else:
            state.num_bad_epochs += 1
        if state.cooldown_counter > 0:
            state.cooldown_counter -= 1
            state.num_bad_epochs = 0  # bad reports during cooldown do not count
        if state.num_bad_epochs > self.patience:
            state.factor = max(state.factor * self.reduce_factor, self.min_factor)
            state.cooldown_counter = self.cooldown
            state.num_bad_epochs = 0
        return state.factor

    def state_dict(self) -> dict[str, Any]:
        """best, num_bad_epochs, cooldown_counter and factor, as plain JSON values."""
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where the run that saved ``state`` stopped."""
        keys = [f.name for f in fields(PlateauState)]
        if not isinstance(state, dict) or sorted(state) != sorted(keys):
            raise fail("plateau state", state, "must be a dict with keys " + ", ".join(keys))
        if state["best"] is not None:
            _finite("best", state["best"])
        nonnegative_int("num_bad_epochs", state["num_bad_epochs"])
        nonnegative_int("cooldown_counter", state["cooldown_counter"])
        unit_closed("factor", state["factor"])
        best = state["best"]
        self.state = PlateauState(
            best=None if best is None else float(best),
            num_bad_epochs=int(state["num_bad_epochs"]),
            cooldown_counter=int(state["cooldown_counter"]),
            factor=float(state["factor"]),
        )


def _finite(name: str, value: Any) -> None:
    allowed = "must be a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, allowed)
    if not math.isfinite(value):
        raise fail(name, value, allowed)


class LRController:
    """The one adapter from schedules to an optimizer; call ``step(t)`` before each update.

        η_g(t) = base_lr_g · s(t) · f_plateau       for every param group g, t < swa_start
        η_g(t) = swa_lr · f_plateau                  t >= swa_start (with an SWA rate)
        μ_g(t) = m(t)                               (with a momentum schedule m)

    Args:
        optimizer: any ``torch.optim``-style optimizer; each group's lr at construction is
            its base lr (the peak for ``OneCycle``).
        schedule: a pure ``step -> factor`` callable, usually a ``Schedule``.
        plateau: a ``ReduceOnPlateau`` fed through ``report``, or None (default: None).
        momentum: a pure ``step -> momentum`` callable with values in [0, 1), usually a
            ``MomentumSchedule``, or None to leave the momentum alone (default: None).
        swa_lr: SWA's constant rate of every group from step ``swa_start`` on, replacing
            base_lr · s(t), or None to keep the schedule (default: None).
        swa_start: the first step (from 0) at ``swa_lr``; required with it (default: None).

    A drop decided by ``report`` applies from the next ``step``, to the SWA rate too; so
    does ``cut`` (a non-finite rollback's 10×), which scales the base lrs and the SWA
    rate alike. ``state_dict`` holds the base lrs, the plateau state and the SWA rate (if
    any), all a resume needs: load it after any optimizer state, whose lrs are already
    scheduled values and must not become the base. Momentum schedules are pure, so they
    add nothing to it.

    The momentum μ goes where the group keeps it: β₁ of ``betas`` (the Adam family; the
    tuple is replaced by (μ, β₂)), else ``momentum`` (SGD, RMSprop). A group whose momentum
    is 0 at construction is accepted: SGD (torch's and trainlab's) and trainlab's RMSprop
    create the velocity buffer at the first step with μ ≠ 0, from that step's gradient, as
    if momentum had been on from the start. ``torch.optim.RMSprop`` creates its buffer only
    in its first step, so with it μ(0) must be > 0. A schedule that returns to 0 leaves the
    buffer as it was until μ ≠ 0 again, as torch does.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Callable[[int], float],
        plateau: ReduceOnPlateau | None = None,
        *,
        momentum: Callable[[int], float] | None = None,
        swa_lr: float | None = None,
        swa_start: int | None = None,
    ) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            raise fail("optimizer", type(optimizer).__name__, "must have param_groups")
        if not callable(schedule):
            raise fail("schedule", schedule, "must be a callable step -> factor")
        if plateau is not None and not isinstance(plateau, ReduceOnPlateau):
            raise fail("plateau", plateau, "must be a ReduceOnPlateau or None")
        if momentum is not None:
            _check_momentum_schedule(optimizer, momentum)
        for group in groups:
            nonnegative("lr", group["lr"])
        if swa_lr is not None:
            nonnegative("swa_lr", swa_lr)
            if swa_start is None:
                raise fail("swa_lr", swa_lr, "needs swa_start, the step it applies from")
        if swa_start is not None:
            nonnegative_int("swa_start", swa_start)
        self.optimizer = optimizer
        self.schedule = schedule
        self.plateau = plateau
        self.momentum = momentum
        self.base_lrs = [float(group["lr"]) for group in groups]
        self.swa_lr = None if swa_lr is None else float(swa_lr)
        self.swa_start = swa_start
        self._given_swa_lr = self.swa_lr  # what a state saved without swa_lr ran at

    def cut(self, factor: float) -> None:
        """Multiply every rate from now on by ``factor``: the base lrs and the SWA rate."""
        nonnegative("factor", factor)
        self.base_lrs = [base * factor for base in self.base_lrs]
        if self.swa_lr is not None:
            self.swa_lr *= factor

    def step(self, step: int) -> list[float]:
        """Set every group's lr (and momentum) for optimizer step ``step``; return the lrs."""
        _check_step(step)
        groups = self.optimizer.param_groups
        if len(groups) != len(self.base_lrs):
            raise fail("number of param groups", len(groups), f"must stay {len(self.base_lrs)}")
        plateau = 1.0 if self.plateau is None else self.plateau.factor
        if self.swa_lr is not None and step >= self.swa_start:
            lrs = [self.swa_lr * plateau] * len(groups)
        else:
            scale = self.schedule(step)
            nonnegative("schedule factor", scale)
            lrs = [base * scale * plateau for base in self.base_lrs]
        for group, lr in zip(groups, lrs):
            if isinstance(group["lr"], torch.Tensor):  # a tensor lr (capturable) stays a tensor
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        if self.momentum is not None:
            mu = self.momentum(step)
            unit_half_open("momentum", mu)
            for group in groups:
                _set_momentum(group, float(mu))
        return lrs

    def report(self, metric: float, step: int) -> float:
        """Give the watched metric to the plateau controller; return its factor."""
        if self.plateau is None:
            raise fail("plateau", None, "report needs a ReduceOnPlateau: LRController(plateau=)")
        return self.plateau.update(metric, step)

    def state_dict(self) -> dict[str, Any]:
        """The base lrs, the plateau state and the SWA rate (with one, as cut so far);
        schedules are pure, so nothing else."""
        plateau = None if self.plateau is None else self.plateau.state_dict()
        state = {"base_lrs": list(self.base_lrs), "plateau": plateau}
        if self.swa_lr is not None:
            state["swa_lr"] = self.swa_lr
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the base lrs, plateau state and SWA rate saved by ``state_dict``.

        A state without ``swa_lr`` (saved before the SWA rate lived here) keeps the rate
        given at construction.
        """
        keys = ["base_lrs", "plateau", *(["swa_lr"] if self.swa_lr is not None else [])]
        if not isinstance(state, dict) or sorted(state) not in (keys[:2], sorted(keys)):
            raise fail("controller state", state, "must be a dict with keys " + ", ".join(keys))
        swa_lr = state.get("swa_lr", self._given_swa_lr)
        if swa_lr is not None:
            nonnegative("swa_lr", swa_lr)
        base_lrs = state["base_lrs"]
        n = len(self.optimizer.param_groups)
        if not isinstance(base_lrs, list) or len(base_lrs) != n:
            raise fail("base_lrs", base_lrs, f"must be a list of {n} lrs, one per param group")
        for lr in base_lrs:
            nonnegative("lr", lr)
        if (state["plateau"] is None) != (self.plateau is None):
            having = "no plateau" if self.plateau is None else "a plateau"
            raise fail("plateau state", state["plateau"], f"must match a controller with {having}")
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])
        self.base_lrs = [float(lr) for lr in base_lrs]
        self.swa_lr = None if swa_lr is None else float(swa_lr)


def _check_momentum_schedule(optimizer: Any, momentum: Any) -> None:
    """Refuse, before training, what would fail or do nothing at a later step."""
    name = type(optimizer).__name__
    if not callable(momentum):
        raise fail("momentum", momentum, "must be a callable step -> momentum, or None")
    if any("betas" not in group and "momentum" not in group for group in optimizer.param_groups):
        raise fail(
            "optimizer",
            name,
            "a momentum schedule needs param groups with 'betas' (the Adam family) or "
            f"'momentum' (SGD, RMSprop); {name} has neither",
        )
    first = momentum(0)
    unit_half_open("momentum", first)
    if isinstance(optimizer, torch.optim.RMSprop) and first == 0:
        raise fail(
            "momentum",
            first,
            "torch.optim.RMSprop creates its momentum buffer in its first step only if the "
            "momentum is > 0 then: start the schedule above 0 or use trainlab.optim.RMSprop",
        )


def _set_momentum(group: dict[str, Any], mu: float) -> None:
    """μ into β₁ of ``betas`` (Adam family) or into ``momentum``; tensors stay tensors."""
    key = "betas" if "betas" in group else "momentum"
    current = group[key][0] if key == "betas" else group[key]
    if isinstance(current, torch.Tensor):
        current.fill_(mu)
    elif key == "betas":
        group["betas"] = (mu, group["betas"][1])
    else:
        group["momentum"] = mu
