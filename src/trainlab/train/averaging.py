"""Polyak averaging: an exponential moving average (EMA) of the weights, used at test time.

The lecture's trick — keep ``x_test = 0.995·x_test + 0.005·x`` beside the training
iterate ``x`` and evaluate with ``x_test`` — as a small class that never touches the raw
weights: :meth:`EMA.swapped` lends the averaged weights to the model for an evaluation and
always puts the raw ones back, and :meth:`EMA.weights` hands out copies to save.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from .. import _checks
from .._checks import fail

STATE_KEYS = ("decay", "bias_correction", "every", "num_updates", "num_steps", "shadow", "copied")


def ema_update_(shadow: list[Tensor], weights: list[Tensor], decay: float) -> None:
    """One averaging step for all tensors at once: s ← β·s + (1 − β)·θ.

    Written as the interpolation s ← s + (1 − β)·(θ − s) (one ``lerp`` pass over memory);
    β = 0 copies θ exactly, and a constant θ stays exactly constant.
    """
    if shadow:
        torch._foreach_lerp_(shadow, weights, 1.0 - decay)


def debias(shadow: list[Tensor], decay: float, num_updates: int) -> list[Tensor]:
    """The bias-corrected average ŝ = s / (1 − βᵗ), for a shadow that started at s₀ = 0.

    With s₀ = 0, s_t = (1 − β)·Σₖ βᵗ⁻ᵏ·θₖ puts total weight 1 − βᵗ on the iterates;
    dividing by it makes the weights sum to one (a constant θ gives ŝ = θ exactly).

    References: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (2015), §3.
    """
    return list(torch._foreach_div(shadow, 1.0 - decay**num_updates)) if shadow else []


class EMA:
    """An exponential moving average of a model's parameters (Polyak averaging).

    After each optimizer step, :meth:`update` does for every floating-point parameter θ

        s ← β·s + (1 − β)·θ          (β = ``decay``; the lecture's x_test ← 0.995·x_test + 0.005·x)

    Without bias correction the shadow starts at the initial weights, s₀ = θ₀. With
    ``bias_correction=True`` it starts at s₀ = 0 and the weights to evaluate are
    ŝ = s / (1 − βᵗ), t = ``num_updates`` (as Adam corrects its moments); this removes the
    pull towards θ₀ that makes an early uncorrected average lag.

    Buffers (BatchNorm's running mean and variance, ``num_batches_tracked`` and any other
    integer buffer) are *copied as they are* at every averaging update, not averaged:
    running statistics are already moving averages of the activations, and averaging them
    again would only make them lag further. They belong to the latest raw weights, so for
    statistics that match the averaged weights exactly, recompute them inside
    :meth:`swapped` (e.g. ``torch.optim.swa_utils.update_bn``) and evaluate in the same
    block. Only persistent buffers are kept (those in ``model.state_dict()``); a
    parameter that is not floating point is copied like a buffer.

    ``every=k`` averages at every k-th call of :meth:`update` only (calls k, 2k, ...);
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
        every: average at every k-th call of :meth:`update` (default: 1).

    References: Polyak & Juditsky, "Acceleration of stochastic approximation by averaging"
    (1992); cs231n lecture 7 (2017), "Model ensembles"; Kingma & Ba (2015), §3 and §7.2.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.995,
        *,
        bias_correction: bool = False,
        every: int = 1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise fail("model", type(model).__name__, "must be a torch.nn.Module")
        _check_settings(decay, bias_correction, every)
        self.decay = float(decay)
        self.bias_correction = bias_correction
        self.every = int(every)
        self.num_updates = 0  # t: averaging updates done
        self.num_steps = 0  # calls of update()
        persistent = set(model.state_dict())
        params = list(model.named_parameters())
        self.averaged_names = [n for n, p in params if _is_averaged(p)]
        self.copied_names = [n for n, p in params if not _is_averaged(p)]
        self.copied_names += [n for n, _ in model.named_buffers() if n in persistent]
        averaged, copied = self._gather(model)
        with torch.no_grad():
            start = torch.zeros_like if bias_correction else torch.clone
            self._shadow = [start(p) for p in averaged]
            self._copied = [c.clone() for c in copied]

    def update(self, model: nn.Module) -> bool:
        """Count one optimizer step; average on every ``every``-th. Returns whether it did."""
        self.num_steps += 1
        if self.num_steps % self.every:
            return False
        averaged, copied = self._gather(model)
        with torch.no_grad():
            ema_update_(self._shadow, averaged, self.decay)
            if copied:
                torch._foreach_copy_(self._copied, copied)
        self.num_updates += 1
        return True

    def weights(self) -> dict[str, Tensor]:
        """The averaged weights (bias-corrected if asked) and buffers, as fresh copies.

        Keyed like ``model.state_dict()``, so ``copy.deepcopy(model).load_state_dict(
        ema.weights())`` gives a separate averaged model.
        """
        return dict(zip(self.averaged_names + self.copied_names, self._averaged()))

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Evaluate ``model`` with the averaged weights; the raw weights always come back.

        The averaged values are copied into the model's own tensors (so optimizers and
        hooks still hold the right objects) and the raw values are copied back on leaving
        the block — also when it raises. Anything the block writes into the weights or
        buffers (e.g. BatchNorm statistics in train mode) is discarded with them.
        """
        averaged = self._averaged()  # before touching the model: may refuse (t = 0)
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

    def state_dict(self) -> dict[str, Any]:
        """Settings, counters and copies of the raw shadow and buffers (tensors, ints, floats).

        The shadow is stored uncorrected, so a round trip continues the average exactly.
        """
        return {
            "decay": self.decay,
            "bias_correction": self.bias_correction,
            "every": self.every,
            "num_updates": self.num_updates,
            "num_steps": self.num_steps,
            "shadow": {n: s.clone() for n, s in zip(self.averaged_names, self._shadow)},
            "copied": {n: c.clone() for n, c in zip(self.copied_names, self._copied)},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, settings included (as ``torch.optim`` does)."""
        if not isinstance(state, dict) or set(state) != set(STATE_KEYS):
            shown = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise fail("state_dict", shown, f"must be a dict with keys {list(STATE_KEYS)}")
        _check_settings(state["decay"], state["bias_correction"], state["every"])
        for key in ("num_updates", "num_steps"):
            count = state[key]
            if isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 0:
                raise fail(f"state_dict[{key!r}]", count, "must be an integer >= 0")
        _load_tensors_(self._shadow, self.averaged_names, state["shadow"], "shadow")
        _load_tensors_(self._copied, self.copied_names, state["copied"], "copied")
        self.decay = float(state["decay"])
        self.bias_correction = state["bias_correction"]
        self.every = int(state["every"])
        self.num_updates = int(state["num_updates"])
        self.num_steps = int(state["num_steps"])

    def __repr__(self) -> str:
        return (
            f"EMA(decay={self.decay}, bias_correction={self.bias_correction}, "
            f"every={self.every}, num_updates={self.num_updates}, "
            f"averaged={len(self.averaged_names)}, copied={len(self.copied_names)})"
        )

    def _averaged(self) -> list[Tensor]:
        """Fresh tensors: the (corrected) shadow, then the copied buffers."""
        if not self.bias_correction:
            shadow = [s.clone() for s in self._shadow]
        elif self.num_updates == 0:
            raise RuntimeError(
                "EMA with bias_correction=True has no average before its first update "
                "(ŝ = s / (1 − βᵗ) is 0/0 at t = 0): call update(model) after a step first"
            )
        else:
            shadow = debias(self._shadow, self.decay, self.num_updates)
        return shadow + [c.clone() for c in self._copied]

    def _gather(self, model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """The model's tensors in the EMA's order; a model that lacks one is refused."""
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
                "model the EMA was built from",
            ) from None


def _is_averaged(param: Tensor) -> bool:
    return param.is_floating_point() or param.is_complex()


def _check_settings(decay: Any, bias_correction: Any, every: Any) -> None:
    _checks.unit_half_open("decay", decay)
    _checks.flag("bias_correction", bias_correction)
    _checks.positive_int("every", every)


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
