"""Weight averaging: Polyak/EMA averages and stochastic weight averaging (SWA).

The lecture's "model ensembles" without the cost of an ensemble: keep an average of the
weights beside the training iterate θ and evaluate with it.

- [`EMA`][trainlab.train.EMA]: ``x_test ← 0.995·x_test + 0.005·x`` after every step (Polyak
averaging
  with an exponential window), optionally with bias correction or a decay warmup;
- `SWA`: the equal-weight mean of the weights at chosen steps (Izmailov et al.
  2018), whose BatchNorm statistics are recomputed for the averaged weights with
  `recompute_batch_norm`.

Both never touch the raw weights: ``swapped`` lends the averaged weights to the model for
an evaluation and always puts the raw ones back, and ``weights`` hands out copies to save.
The update rules are pure tensor functions (`ema_update_`, `swa_update_`, the
decay `ema_decay`); the classes hold the bookkeeping.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import _checks
from .._checks import fail

STATE_KEYS = ("decay", "bias_correction", "every", "num_updates", "num_steps", "shadow", "copied")
#: EMA state keys added with the decay warmup; a state without them has the warmup off.
WARMUP_KEYS = ("warmup", "warmup_gamma", "warmup_power")
SWA_STATE_KEYS = ("start", "every", "num_updates", "num_steps", "average", "copied")


# --------------------------------------------------------------------------- the math


def ema_update_(shadow: list[Tensor], weights: list[Tensor], decay: float) -> None:
    """One averaging step for all tensors at once: s ← β·s + (1 − β)·θ.

    Written as the interpolation s ← s + (1 − β)·(θ − s) (one ``lerp`` pass over memory);
    β = 0 copies θ exactly, and a constant θ stays exactly constant.
    """
    if shadow:
        torch._foreach_lerp_(shadow, weights, 1.0 - decay)


def swa_update_(average: list[Tensor], weights: list[Tensor], n: int) -> None:
    """Add the (n+1)-th iterate to the running mean of n: θ̄ ← θ̄ + (θ − θ̄)/(n + 1).

    The equal-weight mean θ̄ = (θ₁ + … + θₙ₊₁)/(n + 1) without storing the iterates; the
    first update (n = 0) copies θ exactly. It is `ema_update_` with β = n/(n + 1).

    References: Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
    Generalization", UAI 2018, Algorithm 1.
    """
    if average:
        torch._foreach_lerp_(average, weights, 1.0 / (n + 1))


def ema_decay(
    t: int, decay: float, *, warmup: bool = False, gamma: float = 1.0, power: float = 0.75
) -> float:
    """β_t, the decay of the EMA update after t earlier updates (t = 0, 1, 2, ...).

        β_t = decay                                          (no warmup)
        β_t = min(decay, 1 − (1 + t/γ)^(−p))                 (warmup; γ = gamma, p = power)

    The warmup lets the average forget its start quickly: β₀ = 0 (the first update copies
    θ), and β_t grows towards ``decay``; γ = 1, p = 1 gives β_t = t/(t + 1), the
    equal-weight mean (`swa_update_`). timm's ``ModelEmaV3.get_decay`` with its step
    counted from 1 (its ``step − 1`` is this t), without its ``min_decay``.

    References: timm ``timm/utils/model_ema.py`` (``ModelEmaV3``, decay warmup after
    @crowsonkb, whose note there advises p = 2/3 for runs of a million steps or more and
    p = 3/4 for shorter ones; timm's default is 2/3).
    """
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + t / gamma) ** -power)


# --------------------------------------------------------------------------- bookkeeping


class _Average:
    """What EMA and SWA share: which tensors are averaged, the counters, swapping, state.

    Floating-point (and complex) parameters are averaged; persistent buffers and any other
    parameter are *copied* from the model at every averaging update. ``update`` counts a
    step and averages at steps ``start + every``, ``start + 2·every``, ...
    """

    kind: ClassVar[str] = ""

    def __init__(self, model: nn.Module, *, start: int, every: int, zeros: bool) -> None:
        if not isinstance(model, nn.Module):
            raise fail("model", type(model).__name__, "must be a torch.nn.Module")
        self.start = int(start)
        self.every = int(every)
        self.num_updates = 0  # averaging updates done
        self.num_steps = 0  # calls of update()
        persistent = set(model.state_dict())
        params = list(model.named_parameters())
        self.averaged_names = [n for n, p in params if _is_averaged(p)]
        self.copied_names = [n for n, p in params if not _is_averaged(p)]
        self.copied_names += [n for n, _ in model.named_buffers() if n in persistent]
        averaged, copied = self._gather(model)
        with torch.no_grad():
            first = torch.zeros_like if zeros else torch.clone
            self._shadow = [first(p) for p in averaged]
            self._copied = [c.clone() for c in copied]

    def _average_(self, weights: list[Tensor]) -> None:
        raise NotImplementedError

    def _averaged_shadow(self) -> list[Tensor]:
        """Fresh copies of the average to evaluate (EMA: bias-corrected when asked)."""
        return [s.clone() for s in self._shadow]

    def update(self, model: nn.Module) -> bool:
        """Count one optimizer step; average when one is due. Returns whether it did."""
        self.num_steps += 1
        if self.num_steps <= self.start or (self.num_steps - self.start) % self.every:
            return False
        averaged, copied = self._gather(model)
        with torch.no_grad():
            self._average_(averaged)
            if copied:
                torch._foreach_copy_(self._copied, copied)
        self.num_updates += 1
        return True

    def weights(self) -> dict[str, Tensor]:
        """The averaged weights and the copied buffers, as fresh copies.

        Keyed like ``model.state_dict()``, so ``copy.deepcopy(model).load_state_dict(
        average.weights())`` gives a separate averaged model.
        """
        return dict(zip(self.averaged_names + self.copied_names, self._averaged()))

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate ``model`` with the averaged weights; the raw weights always come back.

        The averaged values are copied into the model's own tensors (so optimizers and
        hooks still hold the right objects) and the raw values are copied back, bit for
        bit, on leaving the block — also when it raises. Anything the block writes into the
        weights or buffers (e.g. BatchNorm statistics recomputed with
        `recompute_batch_norm`) is discarded with them.
        """
        averaged = self._averaged()  # before touching the model: may refuse (no update yet)
        averaged_targets, copied_targets = self._gather(model)
        targets = averaged_targets + copied_targets
        if not targets:
            yield model
            return
        raw = [t.clone() for t in targets]
        with torch.no_grad():
            torch._foreach_copy_(targets, averaged)
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(targets, raw)

    def _averaged(self) -> list[Tensor]:
        return self._averaged_shadow() + [c.clone() for c in self._copied]

    def _tensors_state(self, key: str) -> dict[str, Any]:
        return {
            key: {n: s.clone() for n, s in zip(self.averaged_names, self._shadow)},
            "copied": {n: c.clone() for n, c in zip(self.copied_names, self._copied)},
        }

    def _load_counts_and_tensors(self, state: dict[str, Any], key: str) -> None:
        for name in ("num_updates", "num_steps"):
            count = state[name]
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
                raise fail(f"state_dict[{name!r}]", count, "must be an integer >= 0")
        _load_tensors_(self._shadow, self.averaged_names, state[key], key)
        _load_tensors_(self._copied, self.copied_names, state["copied"], "copied")
        self.num_updates = int(state["num_updates"])
        self.num_steps = int(state["num_steps"])

    def _no_average_yet(self, why: str) -> RuntimeError:
        return RuntimeError(
            f"{self.kind} has no average before its first update ({why}): call "
            "update(model) after a step first"
        )

    def _gather(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """The model's tensors in this average's order; a model that lacks one is refused."""
        tensors = dict(model.named_parameters())
        tensors.update(model.named_buffers())
        try:
            return (
                [tensors[n].detach() for n in self.averaged_names],
                [tensors[n].detach() for n in self.copied_names],
            )
        except KeyError as missing:
            raise fail(
                "model",
                type(model).__name__,
                f"has no tensor {missing}; must have the parameters and buffers of the "
                f"model the {self.kind} was built from",
            ) from None


# --------------------------------------------------------------------------- EMA


class EMA(_Average):
    """An exponential moving average of a model's parameters (Polyak averaging).

    After each optimizer step, `update` does for every floating-point parameter θ

        s ← β·s + (1 − β)·θ          (β = ``decay``; the lecture's x_test ← 0.995·x_test + 0.005·x)

    Without bias correction the shadow starts at the initial weights, s₀ = θ₀. With
    ``bias_correction=True`` it starts at s₀ = 0 and the weights to evaluate are
    ŝ = s / (1 − βᵗ), t = ``num_updates`` (as Adam corrects its moments); this removes the
    pull towards θ₀ that makes an early uncorrected average lag. ``warmup=True`` removes
    it another way: β_t = min(decay, 1 − (1 + t/γ)^(−p)) after t earlier updates
    (`ema_decay`, timm's decay warmup), so the first update copies θ and the window
    widens to 1/(1 − decay) steps as the run goes. The two are exclusive.

    Buffers (BatchNorm's running mean and variance, ``num_batches_tracked`` and any other
    integer buffer) are *copied from the raw model as they are* at every averaging update,
    not averaged: running statistics are already moving averages of the activations, and
    averaging them again would only make them lag further. They belong to the latest raw
    weights, so for statistics that match the averaged weights exactly, call
    `recompute_batch_norm` inside `swapped` and evaluate in the same block.
    Only persistent buffers are kept (those in ``model.state_dict()``); a parameter that is
    not floating point is copied like a buffer.

    ``every=k`` averages at every k-th call of `update` only (calls k, 2k, ...);
    β then applies per averaging update, not per optimizer step.

    Usage::

        ema = EMA(model, decay=0.995)
        for batch in batches:
            ...; optimizer.step()
            ema.update(model)
        with ema.swapped(model):          # averaged weights in, raw weights back after
            evaluate(model)
        save(ema.weights())               # or ema.state_dict() to resume the average

    The shadow lives on the device and in the dtype of the model when the EMA is built:
    build it after ``model.to(...)``.

    Args:
        model: the module whose weights are averaged.
        decay: decay rate β in [0, 1); 0 keeps a copy of the latest weights (default: 0.995).
        bias_correction: start at 0 and divide by 1 − βᵗ (default: False).
        every: average at every k-th call of `update` (default: 1).
        warmup: the decay warmup β_t = min(decay, 1 − (1 + t/γ)^(−p)) (default: False).
        warmup_gamma: γ > 0 (default: 1.0).
        warmup_power: p > 0 (default: 0.75; timm's default is 2/3, see `ema_decay`).

    References: Polyak & Juditsky, "Acceleration of stochastic approximation by averaging"
    (1992); cs231n lecture 7 (2017), "Model ensembles"; Kingma & Ba (2015), §3 and §7.2;
    timm ``ModelEmaV3`` (decay warmup).
    """

    kind: ClassVar[str] = "EMA"

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.995,
        *,
        bias_correction: bool = False,
        every: int = 1,
        warmup: bool = False,
        warmup_gamma: float = 1.0,
        warmup_power: float = 0.75,
    ) -> None:
        _check_settings(decay, bias_correction, every, warmup, warmup_gamma, warmup_power)
        self.decay = float(decay)
        self.bias_correction = bias_correction
        self.warmup = warmup
        self.warmup_gamma = float(warmup_gamma)
        self.warmup_power = float(warmup_power)
        super().__init__(model, start=0, every=every, zeros=bias_correction)

    def decay_at(self, t: int) -> float:
        """β_t after t earlier averaging updates (`ema_decay` with these settings)."""
        return ema_decay(
            t, self.decay, warmup=self.warmup, gamma=self.warmup_gamma, power=self.warmup_power
        )

    def _average_(self, weights: list[Tensor]) -> None:
        ema_update_(self._shadow, weights, self.decay_at(self.num_updates))

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters and copies of the raw shadow and buffers (tensors, ints, floats).

        The shadow is stored uncorrected, so a round trip continues the average exactly.
        """
        return {
            "decay": self.decay,
            "bias_correction": self.bias_correction,
            "every": self.every,
            "warmup": self.warmup,
            "warmup_gamma": self.warmup_gamma,
            "warmup_power": self.warmup_power,
            "num_updates": self.num_updates,
            "num_steps": self.num_steps,
            **self._tensors_state("shadow"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`, settings included (as ``torch.optim`` does).

        A state saved before the decay warmup existed (without its keys) has it off.
        """
        keys = set(state) if isinstance(state, dict) else set()
        if keys not in (set(STATE_KEYS), set(STATE_KEYS + WARMUP_KEYS)):
            shown = sorted(state) if isinstance(state, dict) else type(state).__name__
            allowed = f"must be a dict with keys {list(STATE_KEYS + WARMUP_KEYS)}"
            raise fail("state_dict", shown, allowed)
        state = {"warmup": False, "warmup_gamma": 1.0, "warmup_power": 0.75, **state}
        _check_settings(*(state[k] for k in ("decay", "bias_correction", "every", *WARMUP_KEYS)))
        self._load_counts_and_tensors(state, "shadow")
        self.decay = float(state["decay"])
        self.bias_correction = state["bias_correction"]
        self.every = int(state["every"])
        self.warmup = state["warmup"]
        self.warmup_gamma = float(state["warmup_gamma"])
        self.warmup_power = float(state["warmup_power"])

    def __repr__(self) -> str:
        warmup = (
            f", warmup_gamma={self.warmup_gamma}, warmup_power={self.warmup_power}"
            if self.warmup
            else ""
        )
        return (
            f"EMA(decay={self.decay}, bias_correction={self.bias_correction}, "
            f"every={self.every}{warmup}, num_updates={self.num_updates}, "
            f"averaged={len(self.averaged_names)}, copied={len(self.copied_names)})"
        )

    def _averaged_shadow(self) -> list[Tensor]:
        if not self.bias_correction:
            return super()._averaged_shadow()
        if self.num_updates == 0:
            raise self._no_average_yet(
                "with bias_correction=True, ŝ = s / (1 − βᵗ) is 0/0 at t = 0"
            )
        return debias(self._shadow, self.decay, self.num_updates)


def debias(shadow: list[Tensor], decay: float, num_updates: int) -> list[Tensor]:
    """The bias-corrected average ŝ = s / (1 − βᵗ), for a shadow that started at s₀ = 0.

    With s₀ = 0, s_t = (1 − β)·Σₖ βᵗ⁻ᵏ·θₖ puts total weight 1 − βᵗ on the iterates;
    dividing by it makes the weights sum to one (a constant θ gives ŝ = θ exactly).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2015), §3.
    """
    return list(torch._foreach_div(shadow, 1.0 - decay**num_updates)) if shadow else []


# --------------------------------------------------------------------------- SWA


class SWA(_Average):
    """Stochastic weight averaging: the equal-weight mean of the weights at chosen steps.

    `update` is called after every optimizer step; after steps ``start + every``,
    ``start + 2·every``, ... (steps counted from 1) it adds the weights to the running mean

        θ̄ ← θ̄ + (θ − θ̄)/(n + 1),   n = averages so far        (`swa_update_`)

    so that θ̄ = (θ_{s+k} + θ_{s+2k} + … )/n exactly, s = ``start``, k = ``every``.
    Buffers are copied from the raw model at each averaging update, as [`EMA`][trainlab.train.EMA]
    does; the BatchNorm statistics of the *averaged* weights are not any average of the raw ones
    (pytorch issue #84053: ``AveragedModel`` left them stale), so recompute them with
    `recompute_batch_norm` inside `swapped` before evaluating or saving::

        swa = SWA(model, start=1000, every=10)
        ...                                # swa.update(model) after every optimizer step
        with swa.swapped(model):
            recompute_batch_norm(model, train_inputs, device)
            evaluate(model); save(model.state_dict())

    Departs from the paper, which averages once per epoch (or per lr cycle), only in
    letting ``every`` be any number of steps; ``every`` = steps per epoch is the paper's.

    Args:
        model: the module whose weights are averaged (build after ``model.to(...)``).
        start: the optimizer step after which averaging starts (an integer >= 0; default: 0).
        every: steps between two averaged weights (an integer >= 1; default: 1).

    References: Izmailov, Podoprikhin, Garipov, Vetrov & Wilson, "Averaging Weights Leads
    to Wider Optima and Better Generalization", UAI 2018; ``torch.optim.swa_utils``.
    """

    kind: ClassVar[str] = "SWA"

    def __init__(self, model: nn.Module, *, start: int = 0, every: int = 1) -> None:
        _checks.nonnegative_int("start", start)
        _checks.positive_int("every", every)
        super().__init__(model, start=start, every=every, zeros=False)

    def _average_(self, weights: list[Tensor]) -> None:
        swa_update_(self._shadow, weights, self.num_updates)

    def _averaged_shadow(self) -> list[Tensor]:
        if self.num_updates == 0:
            raise self._no_average_yet(f"after step {self.start + self.every}")
        return super()._averaged_shadow()

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters and copies of the running mean and the copied buffers."""
        return {
            "start": self.start,
            "every": self.every,
            "num_updates": self.num_updates,
            "num_steps": self.num_steps,
            **self._tensors_state("average"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`, settings included; the mean continues exactly."""
        if not isinstance(state, dict) or set(state) != set(SWA_STATE_KEYS):
            shown = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise fail("state_dict", shown, f"must be a dict with keys {list(SWA_STATE_KEYS)}")
        _checks.nonnegative_int("start", state["start"])
        _checks.positive_int("every", state["every"])
        self._load_counts_and_tensors(state, "average")
        self.start, self.every = int(state["start"]), int(state["every"])

    def __repr__(self) -> str:
        return (
            f"SWA(start={self.start}, every={self.every}, num_updates={self.num_updates}, "
            f"averaged={len(self.averaged_names)}, copied={len(self.copied_names)})"
        )


# --------------------------------------------------------------------------- BatchNorm


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The layers of ``model`` that keep running statistics (BatchNorm, tracking InstanceNorm)."""
    return [
        m
        for m in model.modules()
        if callable(getattr(m, "reset_running_stats", None))
        and getattr(m, "track_running_stats", False)
        and getattr(m, "running_mean", None) is not None
    ]


@torch.no_grad()
def recompute_batch_norm(
    model: nn.Module,
    batches: Iterable[Tensor | tuple[Tensor, ...] | list[Tensor]] | None,
    device: torch.device | str | None = None,
) -> None:
    """Reset the BatchNorm running statistics and recompute them over ``batches``, in place.

    With K batches of inputs to a BN layer, per channel (μ_k, σ²_k: batch mean and the
    unbiased batch variance — BN's running_var is unbiased, n/(n − 1) times the variance
    it normalizes with):

        running_mean = (1/K)·Σₖ μ_k,    running_var = (1/K)·Σₖ σ²_k

    the cumulative averages BN keeps with ``momentum=None``; each layer's momentum is set
    back afterwards. Only the BN layers are in train mode during the pass; every other
    module is in eval mode, so the statistics are of the inputs the layers see when the
    model is evaluated (dropout off) and no random numbers are drawn — where
    ``torch.optim.swa_utils.update_bn`` puts the whole model in train mode. The model's
    train/eval mode is restored; on an error the old statistics are too.

    Args:
        model: the model, e.g. inside ``SWA.swapped(model)``; a model without BN layers
            is left alone (``batches`` is then not read).
        batches: inputs ``x``, or ``(x, y, ...)`` tuples whose first item is the input —
            the training data without augmentation (the statistics are of the training
            distribution). At least one batch for a model with BN.
        device: where to move each input (default: the device of the model's first
            parameter or buffer).

    Raises:
        ValueError: the model has BN layers but ``batches`` is None or empty.

    References: Izmailov et al. (2018), §3.2 ("we compute the BatchNorm statistics for
    w_SWA with one additional pass over the data"); ``torch.optim.swa_utils.update_bn``.
    """
    layers = batch_norm_layers(model)
    if not layers:
        return
    needed = "must give the training inputs: the model has BatchNorm layers"
    if batches is None:
        raise fail("batches", None, needed)
    if device is None:
        first = next(iter([*model.parameters(), *model.buffers()]))
        device = first.device
    saved = {m: (m.momentum, [b.clone() for b in _statistics(m)]) for m in layers}
    modes = {m: m.training for m in model.modules()}
    seen = 0
    try:
        model.eval()
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # cumulative average of the batch statistics
            m.train()
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            seen += 1
        if seen == 0:
            raise fail("batches", "empty", needed)
    except BaseException:
        for m, (_, statistics) in saved.items():
            torch._foreach_copy_(_statistics(m), statistics)
        raise
    finally:
        for m, (momentum, _) in saved.items():
            m.momentum = momentum
        for m, training in modes.items():
            m.training = training


def _statistics(layer: nn.Module) -> list[Tensor]:
    return [
        b
        for b in (layer.running_mean, layer.running_var, layer.num_batches_tracked)
        if b is not None
    ]


# --------------------------------------------------------------------------- checks


def _is_averaged(param: Tensor) -> bool:
    return param.is_floating_point() or param.is_complex()


def _check_settings(
    decay: Any,
    bias_correction: Any,
    every: Any,
    warmup: Any = False,
    warmup_gamma: Any = 1.0,
    warmup_power: Any = 0.75,
) -> None:
    _checks.unit_half_open("decay", decay)
    _checks.flag("bias_correction", bias_correction)
    _checks.positive_int("every", every)
    _checks.flag("warmup", warmup)
    _checks.positive("warmup_gamma", warmup_gamma)
    _checks.positive("warmup_power", warmup_power)
    if warmup and bias_correction:
        raise fail(
            "warmup",
            warmup,
            "must be False with bias_correction=True: both remove the pull towards the "
            "start (the warmup's first update copies θ), so choose one",
        )


def _load_tensors_(targets: list[Tensor], names: list[str], given: Any, key: str) -> None:
    """Copy ``given[name]`` into each target, refusing other names or shapes."""
    if not isinstance(given, dict) or set(given) != set(names):
        shown = list(given) if isinstance(given, dict) else type(given).__name__
        raise fail(f"state_dict[{key!r}]", shown, f"must be a dict of tensors named {names}")
    for name, target in zip(names, targets):
        tensor = given[name]
        if not isinstance(tensor, Tensor) or tensor.shape != target.shape:
            shown = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__
            allowed = f"must be a tensor of shape {tuple(target.shape)}"
            raise fail(f"state_dict[{key!r}][{name!r}]", shown, allowed)
    if targets:
        with torch.no_grad():
            torch._foreach_copy_(targets, [given[n] for n in names])


__all__ = [
    "EMA",
    "SWA",
    "batch_norm_layers",
    "debias",
    "ema_decay",
    "ema_update_",
    "recompute_batch_norm",
    "swa_update_",
]
