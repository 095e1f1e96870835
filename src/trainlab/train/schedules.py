"""Learning-rate and momentum schedules: pure functions of the optimizer step.

"Start fast, slow down later." A schedule is a pure function of the optimizer step t
(counted from 0) that returns a factor s(t) of the base learning rate. ``ReduceOnPlateau``
(in ``plateau.py``) is the one stateful piece ("drop η by 10× when the loss is stuck; wait
a bit before dropping"), and ``plateau.LRController`` applies both to every param group g
of an optimizer::

    η_g(t) = base_lr_g · s(t) · plateau_factor

Because schedules are pure, a checkpoint needs only the base learning rates and the plateau
state: there is no ``last_epoch`` to fall out of step, so learning rates do not jump after a
resume. ``Phases`` runs schedules in sequence (warmup, then cosine), and the plateau controller
starts watching only after warmup (``start_step``), so the two combine instead of fighting.
``SCHEDULES`` is the registry that ``build_schedule`` (configs, CLI), the tests and the docs use.

Momentum schedules (``MOMENTUM_SCHEDULES``) return the momentum μ(t) itself, not a factor:
the lectures' anneal from 0.5 to 0.99 (``LinearAnneal``, ``CosineAnneal``) and one-cycle's
inverse cycling (``OneCycleMomentum``, the mirror of ``OneCycle``). The same
``LRController`` writes μ(t) into each param group's ``momentum`` or β₁.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from .._checks import (
    fail,
    nonnegative,
    nonnegative_int,
    positive,
    positive_int,
    unit_closed,
    unit_half_open,
)

Config = dict[str, Any] | list[dict[str, Any]]


def _integer_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise fail(name, value, f"must be an integer >= {low}")


def _unit_left_open(name: str, value: Any) -> None:
    """A number in (0, 1]: a decay factor γ, where γ = 1 means no decay."""
    allowed = "must be a number in (0, 1]"
    try:
        positive(name, value)
    except ValueError:
        raise fail(name, value, allowed) from None
    if float(value) > 1.0:
        raise fail(name, value, allowed)


def _unit_open(name: str, value: Any) -> None:
    allowed = "must be a number in (0, 1)"
    try:
        _unit_left_open(name, value)
    except ValueError:
        raise fail(name, value, allowed) from None
    if float(value) == 1.0:
        raise fail(name, value, allowed)


def _check_step(step: Any) -> None:
    nonnegative_int("step", step)


def _cosine_between(start: float, end: float, pct: float) -> float:
    """Half a cosine from ``start`` (pct = 0) to ``end`` (pct = 1), torch's ``_annealing_cos``.

    end + (start − end)·½(1 + cos(π·pct))
    """
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _check_cycle(total: Any, peak_at: Any) -> None:
    """Refuse a cycle that is not ``total`` >= 2 steps with a way up (peak_at·total − 1) > 0."""
    _integer_at_least("total", total, 2)
    allowed = f"must be a number in (1/total, 1) = ({1 / total:.6g}, 1)"
    try:
        _unit_open("peak_at", peak_at)
    except ValueError:
        raise fail("peak_at", peak_at, allowed) from None
    if peak_at * total <= 1:  # the way up needs more than one step
        raise fail("peak_at", peak_at, allowed)


def _one_cycle(
    step: int, total: int, peak_at: float, start: float, peak: float, end: float
) -> float:
    """Half a cosine from ``start`` to ``peak`` over t <= p, then one from ``peak`` to ``end``.

    p = peak_at·T − 1 (torch's phase boundary, a float step), T = total; ``end`` after T − 1.
    ``OneCycle`` (the lr) and ``OneCycleMomentum`` share it, so their phases line up.
    """
    t = min(step, total - 1)
    p = peak_at * total - 1
    if t <= p:
        return _cosine_between(start, peak, t / p)
    return _cosine_between(peak, end, (t - p) / (total - 1 - p))


class _StepFunction:
    """A pure function of the optimizer step t = 0, 1, 2, ...

    Subclasses are frozen dataclasses whose fields are their hyperparameters, so equality,
    hashing and ``to_config`` come for free.
    """

    name: ClassVar[str] = ""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def to_config(self) -> dict[str, Any]:
        """A plain dict (name and fields) that describes an equal object."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}

    def _store(self, **values: Any) -> None:
        # Plain Python numbers (not numpy scalars or tensors), so configs are JSON.
        for key, value in values.items():
            object.__setattr__(self, key, value)


class Schedule(_StepFunction):
    """A pure map from the optimizer step t = 0, 1, 2, ... to a factor s(t) of the base lr.

    ``build_schedule(s.to_config()) == s``.
    """

    @property
    def duration(self) -> int | None:
        """The natural length of a phase built from this schedule (warmup steps, cosine total).

        None where there is none (constant, step, exponential, 1/t decay).
        """
        return None


@dataclass(frozen=True)
class Constant(Schedule):
    """No schedule: the base learning rate throughout.

        s(t) = 1

    The baseline every other schedule is compared with.
    """

    name: ClassVar[str] = "constant"

    def __call__(self, step: int) -> float:
        _check_step(step)
        return 1.0


@dataclass(frozen=True)
class StepDecay(Schedule):
    """Step decay: multiply the learning rate by γ every ``every`` steps.

        s(t) = γ^⌊t / every⌋

    Args:
        every: steps between two drops (an integer >= 1).
        gamma: factor of each drop, in (0, 1] (default: 0.1).

    Same as ``torch.optim.lr_scheduler.StepLR(step_size=every, gamma=gamma)``.

    References: CS231n notes, "Annealing the learning rate".
    """

    name: ClassVar[str] = "step"
    every: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        positive_int("every", self.every)
        _unit_left_open("gamma", self.gamma)
        self._store(every=int(self.every), gamma=float(self.gamma))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.gamma ** (step // self.every)


@dataclass(frozen=True)
class Exponential(Schedule):
    """Exponential decay: multiply the learning rate by γ every step.

        s(t) = γ^t

    Args:
        gamma: factor per step, in (0, 1].

    Same as ``torch.optim.lr_scheduler.ExponentialLR(gamma=gamma)``.

    References: CS231n notes, "Annealing the learning rate".
    """

    name: ClassVar[str] = "exponential"
    gamma: float

    def __post_init__(self) -> None:
        _unit_left_open("gamma", self.gamma)
        self._store(gamma=float(self.gamma))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.gamma**step


@dataclass(frozen=True)
class InverseTime(Schedule):
    """1/t decay: the learning rate falls like 1/t for large t.

        s(t) = 1 / (1 + k·t)

    Args:
        decay: k, a finite number >= 0 (k = 0 is a constant schedule).

    References: CS231n notes, "Annealing the learning rate" (1/t decay).
    """

    name: ClassVar[str] = "inverse_time"
    decay: float

    def __post_init__(self) -> None:
        nonnegative("decay", self.decay)
        self._store(decay=float(self.decay))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return 1.0 / (1.0 + self.decay * step)


@dataclass(frozen=True)
class Cosine(Schedule):
    """Cosine annealing from 1 down to ``floor`` over ``total`` steps, then ``floor``.

        s(t) = floor + (1 − floor)·½(1 + cos(π·min(t, T)/T)),   T = total

    Args:
        total: T, the steps of the descent (an integer >= 1).
        floor: the final factor, in [0, 1] (default: 0.0).

    The closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total,
    eta_min=floor·lr)`` for t <= T; torch's goes back up after T, this one stays at floor.

    References: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017.
    """

    name: ClassVar[str] = "cosine"
    total: int
    floor: float = 0.0

    def __post_init__(self) -> None:
        positive_int("total", self.total)
        unit_closed("floor", self.floor)
        self._store(total=int(self.total), floor=float(self.floor))

    @property
    def duration(self) -> int:
        return self.total

    def __call__(self, step: int) -> float:
        _check_step(step)
        return _cosine_between(1.0, self.floor, min(step, self.total) / self.total)


@dataclass(frozen=True)
class CyclicCosine(Schedule):
    """Cosine annealing restarted ``cycles`` times: the snapshot-ensemble schedule.

    With M = cycles and a cycle length c = ⌈T/M⌉ (T = total):

        s(t) = floor + (1 − floor)·½(1 + cos(π·(t mod c)/c))   for t < T,   s(t) = floor after

    Each cycle starts at 1 and falls towards ``floor``; cycle k (k = 1..M) is the steps
    (k − 1)·c ≤ t < min(k·c, T), and its last step is where a snapshot ensemble saves the
    weights (`cycle_ends`). This is the paper's α(t) = α₀/2·(cos(π·mod(t − 1,
    ⌈T/M⌉)/⌈T/M⌉) + 1) with its iterations t = 1..T counted from 0 here (t_paper = t + 1),
    plus a floor. When c does not divide T the last cycle is cut short at T; a T and M that
    would leave a cycle empty ((M − 1)·c ≥ T) are refused.

    Args:
        total: T, the steps of all the cycles (an integer >= 1).
        cycles: M, the number of cycles (an integer in [1, total]); M = 1 is ``Cosine``
            without its last step's floor.
        floor: the factor the cosine falls towards, in [0, 1] (default: 0.0).

    Like ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(T_0=c, T_mult=1,
    eta_min=floor·lr)`` for t < T; torch's keeps cycling after T, this one holds ``floor``.

    References: Huang, Li, Pleiss, Liu, Hopcroft & Weinberger, "Snapshot Ensembles: Train
    1, Get M for Free", ICLR 2017, Eq. (2); Loshchilov & Hutter, "SGDR", ICLR 2017.
    """

    name: ClassVar[str] = "cyclic_cosine"
    total: int
    cycles: int
    floor: float = 0.0

    def __post_init__(self) -> None:
        positive_int("total", self.total)
        positive_int("cycles", self.cycles)
        unit_closed("floor", self.floor)
        total, cycles = int(self.total), int(self.cycles)
        length = -(-total // cycles)
        if (cycles - 1) * length >= total:
            used = -(-total // length)
            raise fail(
                "cycles",
                self.cycles,
                f"must give every cycle a step: cycles of ⌈total/cycles⌉ = {length} steps "
                f"fill total = {total} steps in {used}; choose cycles = {used} or a total "
                "that cycles divides",
            )
        self._store(total=total, cycles=cycles, floor=float(self.floor))

    @property
    def duration(self) -> int:
        return self.total

    @property
    def cycle_length(self) -> int:
        """c = ⌈T/M⌉, the steps of every cycle but perhaps the last."""
        return -(-self.total // self.cycles)

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step >= self.total:
            return self.floor
        return _cosine_between(1.0, self.floor, (step % self.cycle_length) / self.cycle_length)


@dataclass(frozen=True)
class LinearWarmup(Schedule):
    """Linear warmup from ``start`` to 1 over ``steps`` steps, then 1.

        s(t) = start + (1 − start)·t/steps   for t < steps,   s(t) = 1 after

    Args:
        steps: the warmup length (an integer >= 1); s(steps) is the first factor of 1.
        start: the factor at t = 0, in [0, 1] (default: 0.0, so the first step does not move).

    In ``Phases([(steps, LinearWarmup(steps)), (None, next)])`` the warmup ends just below 1
    and ``next`` starts at its own s(0). Like ``torch.optim.lr_scheduler.LinearLR(
    start_factor=start, total_iters=steps)``, which refuses start = 0.

    References: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
    2017 (gradual warmup).
    """

    name: ClassVar[str] = "warmup"
    steps: int
    start: float = 0.0

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        unit_closed("start", self.start)
        self._store(steps=int(self.steps), start=float(self.start))

    @property
    def duration(self) -> int:
        return self.steps

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step >= self.steps:
            return 1.0
        return self.start + (1.0 - self.start) * step / self.steps


@dataclass(frozen=True)
class OneCycle(Schedule):
    """One cycle: cosine up from ``start`` to the peak, then cosine down to ``end``.

    A factor of the PEAK learning rate (the optimizer's lr is the peak). With
    p = peak_at·T − 1 and T = total (torch's phase boundary):

        s(t) = start + (1 − start)·½(1 − cos(π·t/p))                 for t <= p
        s(t) = end + (1 − end)·½(1 + cos(π·(t − p)/(T − 1 − p)))     for p < t <= T − 1
        s(t) = end                                                   after

    Args:
        total: T, the steps of the whole cycle (an integer >= 2).
        peak_at: the fraction of the cycle spent going up, in (1/T, 1) (default: 0.3).
        start: the first factor, in [0, 1] (default: 1/25).
        end: the last factor, in [0, 1] (default: 1e-4).

    Equals ``torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps=T,
    pct_start=peak_at, anneal_strategy="cos", three_phase=False, div_factor=1/start,
    final_div_factor=start/end)``: torch divides the peak by ``div_factor`` to start and
    the start by ``final_div_factor`` to end, so torch's defaults (25, 1e4) are start = 1/25,
    end = 1/(25·1e4) = 4e-6; the default end here (1e-4) is final_div_factor = 400.
    Torch raises after T steps; this schedule holds ``end``. Torch's momentum cycling is
    ``OneCycleMomentum``, given to ``LRController(momentum=...)`` beside this schedule.

    References: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates", 2019.
    """

    name: ClassVar[str] = "one_cycle"
    total: int
    peak_at: float = 0.3
    start: float = 1 / 25
    end: float = 1 / 1e4

    def __post_init__(self) -> None:
        _check_cycle(self.total, self.peak_at)
        unit_closed("start", self.start)
        unit_closed("end", self.end)
        self._store(
            total=int(self.total),
            peak_at=float(self.peak_at),
            start=float(self.start),
            end=float(self.end),
        )

    @property
    def duration(self) -> int:
        return self.total

    def __call__(self, step: int) -> float:
        _check_step(step)
        return _one_cycle(step, self.total, self.peak_at, self.start, 1.0, self.end)


@dataclass(frozen=True)
class Phases(Schedule):
    """Schedules in sequence; each sees the step counted from the start of its phase.

        s(t) = s_k(t − T_k)   for T_k <= t < T_k + n_k,   T_k = n_0 + ... + n_(k−1)

    Args:
        phases: ``[(n_0, s_0), (n_1, s_1), ..., (n_last, s_last)]``, phase lengths n_k
            (integers >= 1) and schedules. Only the last length may be None (open-ended);
            past the end of a finite last phase its schedule keeps going (cosine and one
            cycle hold their final value).

    ``to_config`` gives a list of phase dicts; a phase's ``"duration"`` is written only where
    it differs from the default that ``build_schedule`` assumes (see there).
    """

    name: ClassVar[str] = "phases"
    phases: tuple[tuple[int | None, Schedule], ...]

    def __post_init__(self) -> None:
        allowed = "must be a non-empty list of (steps, schedule) pairs"
        if not isinstance(self.phases, (list, tuple)) or not self.phases:
            raise fail("phases", self.phases, allowed)
        last = len(self.phases) - 1
        for i, phase in enumerate(self.phases):
            if not isinstance(phase, (list, tuple)) or len(phase) != 2:
                raise fail(f"phase {i}", phase, "must be a pair (steps, schedule)")
            steps, schedule = phase
            if steps is None and i != last:
                raise fail(f"steps of phase {i}", steps, "only the last phase may be None")
            if steps is not None:
                positive_int(f"steps of phase {i}", steps)
            if not isinstance(schedule, Schedule) or isinstance(schedule, Phases):
                raise fail(
                    f"schedule of phase {i}",
                    schedule,
                    "must be a trainlab schedule other than Phases (list all phases in one)",
                )
        self._store(phases=tuple((s if s is None else int(s), f) for s, f in self.phases))

    def __call__(self, step: int) -> float:
        _check_step(step)
        begin = 0
        for steps, schedule in self.phases[:-1]:
            if step < begin + steps:
                return schedule(step - begin)
            begin += steps
        return self.phases[-1][1](step - begin)

    def to_config(self) -> list[dict[str, Any]]:  # type: ignore[override]
        config = []
        last = len(self.phases) - 1
        for i, (steps, schedule) in enumerate(self.phases):
            entry = schedule.to_config()
            if steps != (None if i == last else schedule.duration):
                entry["duration"] = steps
            config.append(entry)
        return config


def cycle_ends(schedule: Schedule) -> list[int]:
    """The steps after which the cycles of the ``cyclic_cosine`` in ``schedule`` end.

    Counted in optimizer steps done (cycle k ends after step min(k·c, T) of its phase, i.e.
    when the run's step counter reaches that plus the steps of the phases before it); one
    entry per cycle, so M entries. ``schedule`` is a ``CyclicCosine`` or ``Phases`` with
    exactly one; a phase shorter than its ``total`` would cut cycles and is refused.
    """
    if isinstance(schedule, CyclicCosine):
        placed: list[tuple[int, int | None, CyclicCosine]] = [(0, None, schedule)]
    elif isinstance(schedule, Phases):
        placed, begin = [], 0
        for steps, phase in schedule.phases:
            if isinstance(phase, CyclicCosine):
                placed.append((begin, steps, phase))
            begin += steps or 0
    else:
        placed = []
    if len(placed) != 1:
        raise fail(
            "schedule",
            schedule,
            f"must have exactly one {CyclicCosine.name!r} phase to end cycles "
            f"(it has {len(placed)})",
        )
    begin, steps, cyclic = placed[0]
    if steps is not None and steps < cyclic.total:
        raise fail(
            "duration of the cyclic_cosine phase",
            steps,
            f"must be >= its total = {cyclic.total}, or its last cycles would be cut off",
        )
    c = cyclic.cycle_length
    return [begin + min(k * c, cyclic.total) for k in range(1, cyclic.cycles + 1)]


SCHEDULES: dict[str, type[Schedule]] = {
    cls.name: cls
    for cls in (
        Constant,
        StepDecay,
        Exponential,
        InverseTime,
        Cosine,
        LinearWarmup,
        OneCycle,
        CyclicCosine,
    )
}
"""The registry of learning-rate schedules: name → `Schedule` subclass.

`build_schedule` reads a config's ``{"name": ..., **hyperparameters}`` through it; the tests
check every entry against its closed form, and the docs and the CLI list it.
"""


def _build_one(spec: dict[str, Any], phase_keys: tuple[str, ...] = ()) -> Schedule:
    name = spec.get("name")
    if not isinstance(name, str) or name not in SCHEDULES:
        raise fail("schedule name", name, "must be one of " + ", ".join(map(repr, SCHEDULES)))
    cls = SCHEDULES[name]
    keys = [f.name for f in fields(cls)]
    for key in spec:
        if key != "name" and key not in keys:
            allowed = ", ".join(map(repr, ["name", *keys, *phase_keys]))
            raise fail(f"key for {name!r}", key, f"must be one of {allowed}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in spec]
    if missing:
        raise fail(f"config for {name!r}", spec, "missing " + ", ".join(map(repr, missing)))
    return cls(**{key: value for key, value in spec.items() if key != "name"})


def build_schedule(spec: Config) -> Schedule:
    """The schedule a config describes: ``{"name": ..., **hyperparameters}`` or a list of phases.

    Examples: ``{"name": "cosine", "total": 1000}``;
    ``[{"name": "warmup", "steps": 100}, {"name": "cosine", "total": 900}]``.

    In a list each phase lasts ``"duration"`` steps. Without one, a phase lasts its schedule's
    natural length (``warmup.steps``, ``cosine.total``, ``one_cycle.total``,
    ``cyclic_cosine.total``), and the last phase is open-ended.
    ``build_schedule(s.to_config()) == s`` for every schedule ``s``.
    """
    if isinstance(spec, dict):
        return _build_one(spec)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise fail("schedule config", spec, "must be a dict with a 'name' or a list of them")
    phases = []
    for i, entry in enumerate(spec):
        if not isinstance(entry, dict):
            raise fail(f"config of phase {i}", entry, "must be a dict with a 'name'")
        entry = dict(entry)
        last = i == len(spec) - 1
        given = "duration" in entry
        duration = entry.pop("duration", None)
        schedule = _build_one(entry, phase_keys=("duration",))
        if not given and not last:
            duration = schedule.duration
            if duration is None:
                raise fail(
                    f"duration of phase {i}", None, f"must be given: {schedule.name!r} has no end"
                )
        phases.append((duration, schedule))
    return Phases(tuple(phases))


# --------------------------------------------------------------------------- momentum


class MomentumSchedule(_StepFunction):
    """A pure map from the optimizer step t to the momentum μ(t) itself, in [0, 1).

    Not a factor: ``LRController(momentum=...)`` writes μ(t) into every param group, as
    ``momentum`` (SGD, RMSprop) or as β₁ of ``betas`` (the Adam family).
    """


@dataclass(frozen=True)
class _Anneal(MomentumSchedule):
    """Fields and checks shared by the anneals from ``start`` to ``end`` over ``steps``."""

    steps: int
    start: float = 0.5
    end: float = 0.99

    def __post_init__(self) -> None:
        positive_int("steps", self.steps)
        unit_half_open("start", self.start)
        unit_half_open("end", self.end)
        self._store(steps=int(self.steps), start=float(self.start), end=float(self.end))


@dataclass(frozen=True)
class LinearAnneal(_Anneal):
    """Momentum annealed linearly from ``start`` to ``end`` over ``steps`` steps, then ``end``.

        μ(t) = start + (end − start)·min(t, T)/T,   T = steps

    Args:
        steps: T, the length of the anneal (an integer >= 1).
        start: μ(0), in [0, 1) (default: 0.5).
        end: μ(T) and every later value, in [0, 1) (default: 0.99).

    References: CS231n notes, "Parameter updates": "a typical setting is to start with
    momentum of about 0.5 and anneal it to 0.99 or so over multiple epochs".
    """

    name: ClassVar[str] = "linear"

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.start + (self.end - self.start) * min(step, self.steps) / self.steps


@dataclass(frozen=True)
class CosineAnneal(_Anneal):
    """Momentum annealed along half a cosine from ``start`` to ``end`` over ``steps``, then ``end``.

        μ(t) = end + (start − end)·½(1 + cos(π·min(t, T)/T)),   T = steps

    Args:
        steps: T, the length of the anneal (an integer >= 1).
        start: μ(0), in [0, 1) (default: 0.5).
        end: μ(T) and every later value, in [0, 1) (default: 0.99).

    Flat at both ends, unlike ``LinearAnneal``: the shape of ``Cosine`` for the lr.

    References: CS231n notes, "Parameter updates" (momentum annealed from 0.5 to 0.99);
    Loshchilov & Hutter, "SGDR", ICLR 2017 (the cosine shape).
    """

    name: ClassVar[str] = "cosine"

    def __call__(self, step: int) -> float:
        _check_step(step)
        return _cosine_between(self.start, self.end, min(step, self.steps) / self.steps)


@dataclass(frozen=True)
class OneCycleMomentum(MomentumSchedule):
    """One-cycle momentum: down from ``max`` to ``min`` while the lr rises, back while it falls.

    The mirror image of ``OneCycle`` (same T = total, same p = peak_at·T − 1), so the
    momentum is lowest exactly when the learning rate peaks::

        μ(t) = min + (max − min)·½(1 + cos(π·t/p))                  for t <= p
        μ(t) = max + (min − max)·½(1 + cos(π·(t − p)/(T − 1 − p)))  for p < t <= T − 1
        μ(t) = max                                                  after

    Args:
        total: T, the steps of the whole cycle (an integer >= 2); as in the ``OneCycle``.
        peak_at: the fraction of the cycle spent going down, in (1/T, 1) (default: 0.3);
            as in the ``OneCycle``.
        max: the first and last momentum, in [0, 1) (default: 0.95).
        min: the momentum at the lr's peak, in [0, max] (default: 0.85).

    Equals the momentum of ``torch.optim.lr_scheduler.OneCycleLR(total_steps=T,
    pct_start=peak_at, anneal_strategy="cos", three_phase=False, cycle_momentum=True,
    max_momentum=max, base_momentum=min)`` for t <= T − 1; torch raises after T steps,
    this schedule holds ``max``.

    References: Smith, "A disciplined approach to neural network hyper-parameters:
    Part 1", 2018 (cyclical momentum, 0.95 → 0.85 → 0.95).
    """

    name: ClassVar[str] = "one_cycle"
    total: int
    peak_at: float = 0.3
    max: float = 0.95
    min: float = 0.85

    def __post_init__(self) -> None:
        _check_cycle(self.total, self.peak_at)
        unit_half_open("max", self.max)
        unit_half_open("min", self.min)
        if self.min > self.max:
            raise fail("min", self.min, f"must be <= max = {self.max!r}")
        self._store(
            total=int(self.total),
            peak_at=float(self.peak_at),
            max=float(self.max),
            min=float(self.min),
        )

    def __call__(self, step: int) -> float:
        _check_step(step)
        return _one_cycle(step, self.total, self.peak_at, self.max, self.min, self.max)


MOMENTUM_SCHEDULES: dict[str, type[MomentumSchedule]] = {
    cls.name: cls for cls in (LinearAnneal, CosineAnneal, OneCycleMomentum)
}
"""The registry of momentum schedules: name → `MomentumSchedule` subclass.

Configs name one in ``schedule.momentum``; the tests and the docs read the same table.
"""
