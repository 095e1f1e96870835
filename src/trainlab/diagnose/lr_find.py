"""The learning-rate range test (Smith, 2017): sweep η up exponentially, watch the loss.

Train for ``steps`` mini-batches while the learning rate grows from ``start`` to ``end``
by a constant factor per step, record the loss of every step and its smoothed curve, and
stop once the loss blows up. The loss first stays flat (η too small to move), then falls
(η useful), then rises and diverges (η too large). The suggestions read the falling part.

Everything the sweep touches is put back afterwards, also when it raises: the model's
parameters, buffers, gradients and train/eval flags, the optimizer's state (a fresh
optimizer ends with no state at all), its parameter groups, the scheduler's state, the
batch source's position and the global RNGs. Training after ``lr_find`` is therefore
bit-identical to training without it (tested). The known failures of other finders are
the bugs this module is written against: weights left at the diverged end of the sweep
(pytorch-lr-finder #11, Lightning #6675/#9672), optimizer moments of the sweep kept after
it (fastai #2892/#3185), the learning rate left at the last swept value, and a suggestion
applied before the restore that then undid it (Lightning #21030). ``lr_find`` never
applies its suggestion; [`suggested_overrides`][trainlab.diagnose.suggested_overrides] gives it as
a config override.

References: L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
L. N. Smith, "A disciplined approach to neural network hyper-parameters", 2018.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._checks import fail, nonnegative_int, one_of, positive, positive_int, unit_half_open
from ..train.build import needs_closure
from ..train.state_tree import rng_state, set_rng_state
from ..train.trainer import seed_everything

# --- the curve ------------------------------------------------------------------------------


def sweep_lrs(start: float, end: float, steps: int) -> list[float]:
    """The learning rates of the sweep: η_t = start · (end / start)^(t / (steps − 1)).

    Exponential, so every decade gets the same number of steps; η_0 = start and
    η_{steps−1} = end.
    """
    ratio = end / start
    return [start * ratio ** (t / (steps - 1)) for t in range(steps)]


def smooth(losses: list[float], beta: float) -> list[float]:
    """The bias-corrected exponential moving average of the losses.

        avg_t = β · avg_{t−1} + (1 − β) · loss_t,   avg_0 = 0
        smoothed_t = avg_t / (1 − β^t)              (t counted from 1)

    The same average as the trainer's smoothed loss and Adam's moments: the first value is
    the first loss itself. Once a loss is NaN or infinite, so is everything after it.
    """
    avg, out = 0.0, []
    for t, loss in enumerate(losses, start=1):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta**t))
    return out


def settle_points(steps: int) -> int:
    """Points at the start of a sweep that neither stop it nor count for a suggestion.

    ``min(10, steps // 10)``: the bias-corrected average of the first few losses is a
    mean of very few mini-batches, so one odd batch there would set the "best" loss the
    divergence test compares against, or look like a descent to the suggestions.
    """
    return min(10, steps // 10)


def settled_curve(losses: list[float], beta: float, skip: int) -> list[float]:
    """The smoothed loss the suggestions read, from point ``skip`` on.

        c_{skip−1} = median(loss_0, …, loss_{skip−1})
        c_t = β · c_{t−1} + (1 − β) · loss_t          for t = skip, skip + 1, …

    The same average as `smooth`, restarted after the settling points from their
    median instead of from 0 with bias correction. In the smoothed loss one odd batch
    among the first points fades only over about 1/(1 − β) steps (50 at β = 0.98), a long
    and steep-looking descent that would capture ``steepest`` and ``valley``; here it
    leaves no trace. With ``skip = 0`` this is `smooth` itself.
    """
    if skip == 0:
        return smooth(losses, beta)
    avg, out = float(np.median(losses[:skip])), []
    for loss in losses[skip:]:
        avg = beta * avg + (1 - beta) * loss
        out.append(avg)
    return out


# --- suggestions: pure functions of (lrs, curve) --------------------------------------------


def suggest_minimum(lrs: list[float], curve: list[float]) -> float:
    """``minimum/10``: the lr of the lowest point of the curve, ÷ 10.

    At the minimum the loss has stopped improving, so η is already at the edge of
    stability; a tenth of it is the classic safe choice.
    """
    return lrs[int(np.argmin(curve))] / 10


def suggest_steepest(lrs: list[float], curve: list[float]) -> float:
    """``steepest``: the lr where the curve falls fastest per decade of lr.

        i* = argmin_{i ≤ i_min} d curve / d log η     (central differences, np.gradient)

    restricted to the points up to the curve's lowest point ``i_min``, since past it the
    loss rises and a steep slope there is a blow-up, not progress. The first lr when the
    curve never falls (i_min = 0).
    """
    s = np.asarray(curve, dtype=np.float64)
    lowest = int(np.argmin(s))
    if lowest == 0:
        return lrs[0]
    slope = np.gradient(s, np.log(np.asarray(lrs, dtype=np.float64)))
    return lrs[int(np.argmin(slope[: lowest + 1]))]


def suggest_valley(lrs: list[float], curve: list[float]) -> float:
    """``valley``: half-way down the longest descent of the curve before its minimum.

    1. The valley: among the stretches ``a … b`` with ``curve[i + 1] < curve[i]`` at every
       step, up to the curve's lowest point, the longest (the later one on a tie). Where
       η is too small to matter the smoothed loss wanders up and down, so the longest
       uninterrupted descent is the one the loss makes once η becomes useful.
    2. The suggestion: the first point of the valley where the curve has made half of its
       descent, ``curve[i] ≤ (curve[a] + curve[b]) / 2``.

    Half-way in loss, not in steps: a valley that begins with a long gentle slope still
    gets a point where the loss falls fast, and one well before the minimum, where the
    sweep has begun to reach the edge of stability. The first lr when the curve never
    falls.
    """
    s = np.asarray(curve, dtype=np.float64)
    lowest = int(np.argmin(s))
    start, length, run = 0, 0, 0  # the longest valley so far; where the current one began
    for i in range(lowest):
        if not s[i + 1] < s[i]:
            run = i + 1
        elif i + 1 - run >= length:
            start, length = run, i + 1 - run
    if length == 0:
        return lrs[0]
    half = (s[start] + s[start + length]) / 2
    return lrs[next(i for i in range(start, start + length + 1) if s[i] <= half)]


#: Suggestion methods by name: ``(lrs, curve) -> lr``.
SUGGESTIONS: dict[str, Callable[[list[float], list[float]], float]] = {
    "valley": suggest_valley,
    "steepest": suggest_steepest,
    "minimum/10": suggest_minimum,
}
#: The largest rate a sweep may reach.
MAX_LR = 1e10
METHODS = tuple(SUGGESTIONS)


def suggest_all(
    lrs: list[float], losses: list[float], beta: float, steps: int
) -> dict[str, float | None]:
    """Every method's suggestion for the losses of a sweep of ``steps`` steps.

    The rules read `settled_curve` over the finite losses: a NaN or infinite loss
    can only be the last (the sweep stops there) and is left out; the first
    `settle_points` are left out too, unless fewer than 3 points would remain. All
    None with fewer than 2 finite losses.
    """
    n = next((i for i, loss in enumerate(losses) if not math.isfinite(loss)), len(losses))
    if n < 2:
        return dict.fromkeys(SUGGESTIONS)
    skip = settle_points(steps)
    if n - skip < 3:
        skip = 0
    curve = settled_curve(losses[:n], beta, skip)
    finite = next((i for i, c in enumerate(curve) if not math.isfinite(c)), len(curve))
    if finite < 2:  # finite losses whose average overflowed
        return dict.fromkeys(SUGGESTIONS)
    lrs, curve = lrs[skip : skip + finite], curve[:finite]
    return {name: float(rule(lrs, curve)) for name, rule in SUGGESTIONS.items()}


# --- the result ------------------------------------------------------------------------------


@dataclass
class LRFindResult:
    """What a range test measured and suggests.

    Attributes:
        lrs: the learning rate of each recorded step (of the reference group, the one with
            the largest lr; see [`lr_find`][trainlab.diagnose.lr_find.lr_find]).
        losses: the mini-batch loss of each step, before its update (may end in NaN/inf).
        smoothed: the bias-corrected smoothed loss (`smooth`), as plotted.
        suggestion: the suggested lr by ``method`` (read from `settled_curve`), or
            None when too few points were finite to suggest anything.
        method: the method of ``suggestion``, one of ``METHODS``.
        suggestions: every method's suggestion, by name.
        stopped_early: True when the sweep stopped before ``end`` (divergence, NaN/inf).
        reason: why it stopped, in words ("" when it ran to the end).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float | None
    method: str
    suggestions: dict[str, float | None] = field(default_factory=dict)
    stopped_early: bool = False
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON values (``trainlab lr-find --json``): NaN and ±inf become None.

        Keys: suggestion, method, lrs, losses, smoothed, suggestions, stopped_early, reason.
        """
        return {
            "suggestion": _json_float(self.suggestion),
            "method": self.method,
            "lrs": [_json_float(v) for v in self.lrs],
            "losses": [_json_float(v) for v in self.losses],
            "smoothed": [_json_float(v) for v in self.smoothed],
            "suggestions": {k: _json_float(v) for k, v in self.suggestions.items()},
            "stopped_early": self.stopped_early,
            "reason": self.reason,
        }


def _json_float(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# --- the sweep -------------------------------------------------------------------------------


def lr_find(
    model: nn.Module,
    batches: Any,
    *,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
    method: str = "valley",
    scheduler: Any = None,
    device: torch.device | str | None = None,
    seed: int | None = None,
    batch_size: int = 64,
) -> LRFindResult:
    """Run the learning-rate range test on ``model`` and put everything back afterwards.

    Step t = 0 … steps − 1 trains one mini-batch at

        η_t = start · (end / start)^(t / (steps − 1))

    in the model's train mode, records its loss and the smoothed loss (`smooth`),
    and stops early when

        smoothed_t − best > (diverge − 1) · |best|   (`diverged`; smoothed_t >
                                                      diverge · best for a positive loss)

    with ``best`` the lowest smoothed loss so far, or when the loss is NaN or infinite
    (recorded, never raised). The first `settle_points` steps neither stop the
    sweep nor count for ``best``: one odd batch in an average of a few would. The
    suggestions (``SUGGESTIONS``) read `settled_curve`, the smoothed loss without
    those first steps.

    The smoothed loss lags: at β = 0.98 it averages about the last 50 steps, so over the
    default 100 steps and 8 decades its minimum sits about half a decade right of the
    mini-batch losses' (the demo CNN: η ≈ 0.6 against ≈ 0.17). ``valley`` reads the
    middle of the smoothed descent, well before that minimum; ``steepest`` and
    ``minimum/10`` sit nearer to it and move right with it. More steps or a narrower
    range shrink the lag in lr; so does a smaller β, at the price of a noisier curve.

    Parameter groups keep their ratios: group g trains at η_t · lr_g / max_h lr_h, so a
    group at half the rate stays at half, and a group at lr 0 stays frozen; ``lrs`` and
    the suggestions are the rates of the group with the largest lr (every group when all
    have the same lr, as trainlab's configs build them). If every group's lr is 0, all
    groups get η_t.

    Args:
        model: the network; trained in train mode during the sweep.
        batches: a resumable source of ``(x, y)`` batches (``trainlab.data.Batches``,
            ``LoaderBatches``, anything iterable with ``state_dict``/``load_state_dict``),
            or ``(x, y)`` tensors, a ``Dataset`` or a ``DataLoader``, batched the way the
            trainer batches them (shuffled per epoch, ``batch_size``, ``seed``). The
            sweep runs across epoch boundaries when ``steps`` exceeds an epoch.
        loss_fn: ``loss_fn(model(x), y)`` → a scalar tensor.
        optimizer: a first-order optimizer over the model's parameters (trainlab or
            ``torch.optim``); full-batch methods (L-BFGS, Newton) pick their own step and
            are refused.
        start: the first learning rate, 0 < start < end (default: 1e-7).
        end: the last learning rate (default: 10).
        steps: optimizer steps of the full sweep, >= 2 (default: 100).
        smoothing: β of the smoothed loss, in [0, 1) (default: 0.98).
        diverge: stop when the smoothed loss exceeds this multiple of its best, > 1
            (default: 4.0).
        method: the suggestion to return, one of ``METHODS`` (default: "valley"); all of
            them are in ``result.suggestions``.
        scheduler: a learning-rate scheduler on ``optimizer`` (torch ``lr_scheduler``,
            ``LRController``, anything with ``state_dict``/``load_state_dict``) to
            restore as well; it is not stepped (default: None).
        device: where the batches go; None: the device of the model's first parameter.
        seed: seed of the global RNGs (torch, numpy, random) during the sweep, for
            dropout and any other draw; None continues from the caller's RNGs. Either way
            they are restored afterwards, so two calls in a row give the same curve.
        batch_size: the batch size when ``batches`` is tensors or a Dataset (default: 64).

    Returns:
        An [`LRFindResult`][trainlab.diagnose.LRFindResult].

    Restoring is exact: parameters and buffers are copied back into the same tensors (so
    references held elsewhere, e.g. by an EMA, stay valid); gradients come back as they
    were (None stays None); each module's train/eval flag is restored; the optimizer gets
    its saved ``state_dict`` back, which replaces (never merges with) the state the sweep
    created; tensor hyperparameters (a capturable lr) keep their identity and value; the
    sweep iterates a shallow copy of ``batches``, so the caller's source is untouched
    (what the copy shares, a ``DataLoader``'s sampler, is loaded back from its saved
    ``state_dict``: exact when the sampler resumes exactly, as ``EpochSampler`` does); the
    global RNGs and a ``DataLoader``'s own generator get their states back. A fused
    trainlab optimizer that had not stepped yet lays its parameters out in flat buffers at
    the sweep's first step, as the first training step would; the values are the same.

    Raises:
        ValueError: ``Invalid <argument>: <value> (<allowed>)`` for a bad argument.
    """
    _check_arguments(start, end, steps, smoothing, diverge, method, seed, batch_size)
    if not callable(loss_fn):
        raise fail("loss_fn", loss_fn, "must be a callable loss_fn(outputs, targets)")
    _check_optimizer(optimizer)
    if scheduler is not None and not _has_state(scheduler):
        raise fail("scheduler", scheduler, "must have state_dict and load_state_dict, or be None")
    source = _as_source(batches, batch_size, 0 if seed is None else seed)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    saved = _save(model, optimizer, scheduler, source)
    try:
        if seed is not None:
            seed_everything(seed)
        lrs = sweep_lrs(float(start), float(end), steps)
        losses, smoothed, reason = _sweep(
            model,
            _sweep_copy(source),
            loss_fn,
            optimizer,
            lrs,
            smoothing,
            diverge,
            torch.device(device),
        )
    finally:
        _restore(saved)
    suggestions = suggest_all(lrs, losses, smoothing, steps)
    return LRFindResult(
        lrs=lrs[: len(losses)],
        losses=losses,
        smoothed=smoothed,
        suggestion=suggestions[method],
        method=method,
        suggestions=suggestions,
        stopped_early=bool(reason),
        reason=reason,
    )


def _sweep(
    model: nn.Module,
    source: Any,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    optimizer: torch.optim.Optimizer,
    lrs: list[float],
    beta: float,
    diverge: float,
    device: torch.device,
) -> tuple[list[float], list[float], str]:
    """Train one batch per lr; return the losses, the smoothed losses and why it stopped."""
    groups = optimizer.param_groups
    top = max(float(group["lr"]) for group in groups)
    ratios = [float(group["lr"]) / top if top > 0 else 1.0 for group in groups]
    skip = settle_points(len(lrs))
    losses: list[float] = []
    smoothed: list[float] = []
    avg, best, reason = 0.0, math.inf, ""
    model.train()
    stream = _endless(source)
    for t, lr in enumerate(lrs):
        for group, ratio in zip(groups, ratios):
            _set_lr(group, lr * ratio)
        x, y = next(stream)
        optimizer.zero_grad()
        loss = _scalar_loss(loss_fn, model(x.to(device)), y.to(device))
        value = float(loss.detach())
        avg = beta * avg + (1 - beta) * value  # smooth(), one step at a time
        losses.append(value)
        smoothed.append(avg / (1 - beta ** (t + 1)))
        if not math.isfinite(value):
            reason = f"the loss was {value} at lr {lr:.3g} (step {t})"
            break
        if t >= skip and diverged(smoothed[-1], best, diverge):
            reason = (
                f"the smoothed loss {smoothed[-1]:.4g} exceeded {diverge:g} × its best "
                f"{best:.4g} at lr {lr:.3g} (step {t})"
            )
            break
        if t >= skip:
            best = min(best, smoothed[-1])
        loss.backward()
        optimizer.step()
    return losses, smoothed, reason


def diverged(smoothed: float, best: float, diverge: float) -> bool:
    """The stopping rule: smoothed − best > (diverge − 1) · |best|.

    For a positive loss that is smoothed > diverge · best; written as a distance from
    ``best`` so that it also reads right for a loss that can be 0 or negative. Never true
    before there is a best (``best = inf``).
    """
    return smoothed - best > (diverge - 1) * abs(best)


def _scalar_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], out: Tensor, y: Tensor) -> Tensor:
    loss = loss_fn(out, y)
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise fail("loss_fn", name, f"must return a scalar tensor, returned {shape}")
    return loss


def _endless(source: Any) -> Iterator[tuple[Tensor, Tensor]]:
    """The source's batches, epoch after epoch."""
    while True:
        empty = True
        for batch in source:
            empty = False
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise fail("batches", type(batch).__name__, "must yield (x, y) pairs")
            yield batch[0], batch[1]
        if empty:
            raise fail("batches", source, "must yield at least one (x, y) batch per epoch")


def _set_lr(group: dict[str, Any], lr: float) -> None:
    if isinstance(group["lr"], Tensor):  # a tensor lr (capturable) stays the same tensor
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


# --- checks ----------------------------------------------------------------------------------


def _check_arguments(
    start: Any,
    end: Any,
    steps: Any,
    smoothing: Any,
    diverge: Any,
    method: Any,
    seed: Any,
    batch_size: Any,
) -> None:
    positive("start", start)
    positive("end", end)
    if end > MAX_LR:
        raise fail(
            "end",
            end,
            f"must be <= {MAX_LR:g}: no network trains above that, and float32 parameters "
            "cannot even take a step scaled by more than 3.4e38",
        )
    if not end > start:
        raise fail("end", end, f"must be > start = {start!r}: the sweep goes up")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 2:
        raise fail("steps", steps, "must be an integer >= 2")
    unit_half_open("smoothing", smoothing)
    positive("diverge", diverge)
    if not diverge > 1:
        raise fail("diverge", diverge, "must be a finite number > 1")
    one_of(*METHODS)("method", method)
    if seed is not None:
        nonnegative_int("seed", seed)
    positive_int("batch_size", batch_size)


def _check_optimizer(optimizer: Any) -> None:
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not groups or not callable(getattr(optimizer, "step", None)):
        raise fail("optimizer", type(optimizer).__name__, "must be a torch.optim-style optimizer")
    if needs_closure(optimizer):
        raise fail(
            "optimizer",
            type(optimizer).__name__,
            "must be a first-order optimizer with a fixed learning rate; full-batch methods "
            "choose their own step size by line search",
        )


def _has_state(obj: Any) -> bool:
    return callable(getattr(obj, "state_dict", None)) and callable(
        getattr(obj, "load_state_dict", None)
    )


def _as_source(batches: Any, batch_size: int, seed: int) -> Any:
    """A resumable batch source, as the trainer makes it from tensors, a Dataset, a loader."""
    if _has_state(batches) and not isinstance(batches, (DataLoader, Dataset)):
        if not callable(getattr(batches, "__iter__", None)):
            raise fail("batches", type(batches).__name__, "must be iterable over (x, y) batches")
        return batches
    from ..train.sources import training_batches

    is_pair = isinstance(batches, (tuple, list)) and len(batches) == 2
    if not (is_pair or isinstance(batches, (DataLoader, Dataset))):
        raise fail(
            "batches",
            type(batches).__name__,
            "must be a resumable batch source (trainlab.data.Batches), (x, y) tensors, a "
            "Dataset or a DataLoader",
        )
    return training_batches(batches, batch_size=batch_size, shuffle="epoch", seed=seed)


# --- saving and restoring ---------------------------------------------------------------------


@dataclass
class _Saved:
    """Everything the sweep changes, copied before it starts."""

    tensors: list[tuple[nn.Module, str, Tensor, Tensor]]  # (module, name, tensor, its copy)
    grads: list[tuple[Tensor, Tensor | None]]  # (parameter, copy of its gradient or None)
    modes: list[tuple[nn.Module, bool]]
    optimizer: torch.optim.Optimizer
    optimizer_state: dict[str, Any]
    hyper_tensors: list[tuple[int, str, Tensor]]  # (group, key, the tensor itself)
    scheduler: Any
    scheduler_state: Any
    source: Any
    source_state: Any
    rng: dict[str, Any]
    generators: list[tuple[torch.Generator, Tensor]]  # a DataLoader's own (worker seeds)


def _save(model: nn.Module, optimizer: Any, scheduler: Any, source: Any) -> _Saved:
    tensors = []
    for module in model.modules():
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        tensors += [(module, name, t, t.detach().clone()) for name, t in own]
    params = {id(p): p for p in model.parameters()}
    for group in optimizer.param_groups:
        params.update({id(p): p for p in group["params"]})
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in params.values()]
    hyper = [
        (index, key, value)
        for index, group in enumerate(optimizer.param_groups)
        for key, value in group.items()
        if isinstance(value, Tensor)
    ]
    return _Saved(
        tensors=tensors,
        grads=grads,
        modes=[(module, module.training) for module in model.modules()],
        optimizer=optimizer,
        optimizer_state=_copy_tree(optimizer.state_dict()),
        hyper_tensors=hyper,
        scheduler=scheduler,
        scheduler_state=None if scheduler is None else _copy_tree(scheduler.state_dict()),
        source=source,
        source_state=_copy_tree(source.state_dict()),
        rng=rng_state(),
        generators=[(g, g.get_state()) for g in _loader_generators(source)],
    )


def _restore(saved: _Saved) -> None:
    # The optimizer first: loading replaces its state with the saved one (empty for a
    # fresh optimizer), so no moment or momentum buffer of the sweep survives. The saved
    # copy is handed over as it is (it is used once): no second copy of Adam's moments.
    optimizer = saved.optimizer
    optimizer.load_state_dict(saved.optimizer_state)
    for index, key, tensor in saved.hyper_tensors:
        loaded = optimizer.param_groups[index][key]
        with torch.no_grad():
            tensor.copy_(loaded)
        optimizer.param_groups[index][key] = tensor  # the caller's own tensor, not a copy
    with torch.no_grad():
        for module, name, tensor, value in saved.tensors:
            if getattr(module, name) is not tensor:  # a module that reassigns a buffer
                setattr(module, name, tensor)
            tensor.copy_(value)
        for param, grad in saved.grads:
            if grad is None:
                param.grad = None
            elif param.grad is not None and param.grad.shape == grad.shape:
                param.grad.copy_(grad)
            else:
                param.grad = grad
    for module, training in saved.modes:
        module.training = training
    if saved.scheduler is not None:
        saved.scheduler.load_state_dict(_copy_tree(saved.scheduler_state))
    if not _same_tree(saved.source.state_dict(), saved.source_state):  # e.g. a shared sampler
        saved.source.load_state_dict(_copy_tree(saved.source_state))
    set_rng_state(saved.rng)
    for generator, state in saved.generators:
        generator.set_state(state)


def _loader_generators(source: Any) -> list[torch.Generator]:
    """The generator of a source's ``DataLoader``: each ``iter()`` draws its workers' seed
    from it (from the global torch RNG when it has none, which is restored anyway)."""
    generator = getattr(getattr(source, "loader", None), "generator", None)
    return [generator] if isinstance(generator, torch.Generator) else []


def _sweep_copy(source: Any) -> Any:
    """A shallow copy of the batch source for the sweep to iterate.

    The caller's object then keeps its position and also whether an iteration of it is
    under way (``Batches`` starts the next epoch after an abandoned iteration, but
    continues the saved one after ``load_state_dict``), which loading a state back could
    not restore. What the copy shares with it (a ``DataLoader``'s sampler) is put back by
    ``load_state_dict`` when its state changed. A source that cannot be copied is iterated
    itself and loaded back.
    """
    try:
        return copy.copy(source)
    except (TypeError, copy.Error):
        return source


def _same_tree(a: Any, b: Any) -> bool:
    """Whether two state trees are equal, tensors element by element."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and bool(torch.equal(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same_tree, a, b))
    return type(a) is type(b) and a == b


def _copy_tree(tree: Any) -> Any:
    """A copy of a state_dict tree that shares no tensor with it.

    Tensors are cloned one by one, which also turns the views a fused trainlab optimizer
    hands out (slices of its flat buffers) into tensors of their own.
    """
    if isinstance(tree, Tensor):
        return tree.detach().clone()
    if isinstance(tree, dict):
        return type(tree)((k, _copy_tree(v)) for k, v in tree.items())
    if isinstance(tree, list):
        return [_copy_tree(v) for v in tree]
    if isinstance(tree, tuple):
        return tuple(_copy_tree(v) for v in tree)
    return tree  # numbers, strings, None: immutable


# --- using the result -----------------------------------------------------------------------


def suggested_overrides(result: LRFindResult) -> list[str]:
    """The config override that applies the suggestion: ``["optimizer.lr=<value>"]``.

    For ``trainlab lr-find --apply`` and ``trainlab train --set``; three significant
    digits, as the curve does not pin the rate down any closer.
    """
    if result.suggestion is None:
        raise fail(
            "result",
            f"a sweep of {len(result.losses)} steps ({result.reason or 'ran to the end'})",
            "must have a suggestion; too few finite losses were recorded: lower start or "
            "raise steps",
        )
    return [f"optimizer.lr={result.suggestion:.3g}"]


def plot(result: LRFindResult, path: str | Path) -> Path:
    """Draw the loss against the learning rate (log axis) with the suggestion; write a PNG.

    The mini-batch losses are drawn faint, the smoothed loss solid, the suggestion as a
    dashed vertical line with its value in the legend. The y axis ends a little above the
    losses before the smoothed minimum, so the blow-up at the end does not flatten the
    rest. Uses a ``Figure`` with the Agg canvas directly: no pyplot, no global backend
    change.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    figure = Figure(figsize=(6, 4), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    raw = [(lr, v) for lr, v in zip(result.lrs, result.losses) if math.isfinite(v)]
    smoothed = [(lr, v) for lr, v in zip(result.lrs, result.smoothed) if math.isfinite(v)]
    if raw:
        ax.plot(*zip(*raw), color="C0", alpha=0.3, linewidth=1, label="mini-batch loss")
    if smoothed:
        ax.plot(*zip(*smoothed), color="C0", linewidth=2, label="smoothed loss")
        # up to the lowest smoothed loss the mini-batch losses are noise around it; after
        # it they blow up, and drawing all of that would flatten the rest of the curve
        lowest = min(range(len(smoothed)), key=lambda i: smoothed[i][1])
        shown = [v for _, v in smoothed[: lowest + 1] + raw[: lowest + 1]]
        low, high = min(v for _, v in raw + smoothed), max(shown)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
        ax.set_ylim(low - margin, high + margin)
    if result.suggestion is not None:
        ax.axvline(
            result.suggestion,
            color="C3",
            linestyle="--",
            label=f"suggestion ({result.method}): {result.suggestion:.3g}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    title = "Learning-rate range test"
    if result.stopped_early:
        title += f" (stopped after {len(result.losses)} steps)"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    if raw or result.suggestion is not None:
        ax.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


__all__ = [
    "METHODS",
    "SUGGESTIONS",
    "LRFindResult",
    "diverged",
    "lr_find",
    "plot",
    "settle_points",
    "settled_curve",
    "smooth",
    "suggest_all",
    "suggest_minimum",
    "suggest_steepest",
    "suggest_valley",
    "suggested_overrides",
    "sweep_lrs",
]
