"""The pre-flight checks of ``trainlab doctor``: babysitting the learning process, before it.

The lectures' checklist before a long run, each a function returning
`trainlab.diagnose.findings.Finding` s:

1. [`loss_at_init`][trainlab.diagnose.loss_at_init] — with regularization off, a softmax classifier
with small weights
   predicts the uniform distribution, so the loss is −ln(1/C) = ln C (2.303 for 10 classes);
   turning the L2 penalty on must raise it.
2. `trainlab.diagnose.gradcheck.gradient_check` — autograd against centred differences.
3. [`overfit_tiny`][trainlab.diagnose.overfit_tiny] — with regularization off, the model must fit
~20 examples
   perfectly (100% train accuracy, loss → 0); if it cannot, nothing larger will work.
4. `trainlab.diagnose.data_checks.data_checks` — labels stored in order ("all the
   cats first, then all the dogs") with no shuffling, unnormalized features
   (x' = (x − μ)/σ), class imbalance.
5. `trainlab.diagnose.activations.initialization_check` — activations per layer:
   collapse towards 0 with depth (N(0, 0.01) weights in a deep tanh net), explosion or
   saturation (weights too large), dead ReLUs, and identical units (zero init: symmetry
   never breaks).

[`doctor`][trainlab.diagnose.doctor] runs them all on a batch of the data. Every check works on a
deep copy of the model and restores the global RNG state: the model (weights, buffers, train/eval
flags, ``requires_grad``) and the random streams are exactly as they were before.

How the copy (`trainlab.diagnose.activations.training_copy`) runs its forward:
train mode, so that batch norm normalizes with the batch's statistics as the first training
step will (fresh running statistics in eval mode would not normalize at all), with dropout
switched off (the lecture's "turn off regularization"; it would also add noise to every
statistic) and torch's RNG seeded, so that any other random module is repeatable. The
gradient check keeps dropout on, with one fixed mask.

References: cs231n lecture 6 (2017), "Babysitting the learning process"; Gunasekar,
"Tricks and tools for NN training" (TTICS 2018): gradient checker, sample order,
initialization (N(0, 0.01), Xavier, Kaiming); 최건호, "Problems & Solutions": weight
initialization, data normalization.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import fail, nonnegative, one_of, positive_int
from ..data.batches import SHUFFLES
from ..optim import Adam
from ..train.build import make_loss
from ..train.regularize import penalty
from ..train.sources import check_pair
from .activations import initialization_check, json_number, on_device, training_copy
from .data_checks import data_checks, is_classification
from .findings import Finding
from .gradcheck import check_batch, forward, gradient_check, loss_value, rng_restored

LossFn = Callable[[Tensor, Tensor], Tensor]

# --- thresholds (each with the reason it is where it is) ------------------------------------

#: |loss − ln C| / ln C above which the loss at init warns / fails. For logits of std s the
#: loss is about ln C + s²/2, so 10% of ln 10 is s ≈ 0.7 and 50% is s ≈ 1.5: the net starts
#: confidently wrong and spends its first steps shrinking the last layer.
LOSS_WARN, LOSS_FAIL = 0.1, 0.5
#: The L2 strength used to show the penalty's effect when the run itself has none.
L2_PROBE = 1e-3
#: overfit_tiny: regression passes when the loss falls below this fraction of its start.
REGRESSION_FIT = 0.01


# --- 1. loss at init ------------------------------------------------------------------------


def loss_at_init(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    classes: int | None,
    l2: float = 0.0,
    parameters: Any = None,
) -> Finding:
    """Is the loss at initialization what the lecture predicts? ≈ ln C for softmax + CE.

    With small weights the logits are ≈ 0, the softmax is uniform and the cross-entropy is
    −ln(1/C) = ln C. With logits of std s it is ≈ ln C + s²/2, so the relative deviation
    d = (loss − ln C)/ln C measures how far from "uninformed" the net starts:
    |d| > 0.1 warns, > 0.5 fails (s ≈ 0.7 and 1.5 for C = 10). Below ln C before any
    training means the labels leak into the inputs (or the weights were trained already).

    The loss counts as softmax cross-entropy when ``loss_fn`` of all-zero logits is ln C
    (plain, label-smoothed or log-softmax + NLL). For any other loss, and for regression
    (``classes=None``), the loss at init is compared with a baseline — all-zero outputs
    for classes, predicting the mean of y for regression — as a sanity check that passes
    unless the loss is not finite.

    Then regularization on: the loss plus λ·‖W‖² must be larger (the lecture's "crank up
    regularization, the loss goes up"). With ``l2=0`` a probe λ = 1e-3 shows by how much.

    Runs on a copy in train mode with dropout off (batch norm with batch statistics), under
    ``torch.no_grad``; the model and the RNG state are untouched.

    Args:
        model: the network, freshly initialized.
        x: a batch of inputs (a few hundred examples).
        y: their targets.
        loss_fn: the data loss ``loss_fn(outputs, y)`` → scalar, without penalties.
        classes: C, the number of logits; None for regression.
        l2: the run's L2 strength λ of loss + λ·‖W‖² (default: 0, use a probe of 1e-3).
        parameters: what the penalty covers, anything ``trainlab.train.penalty`` takes
            (default: None, every tensor with ≥ 2 dimensions — the weights, not biases or
            norm scales, as the trainer's default ``exclude``).

    Returns:
        ``Finding("loss_at_init", ...)`` with the loss, the expectation and the penalty.
    """
    check_batch(x, y)
    nonnegative("l2", l2)
    if classes is not None:
        positive_int("classes", classes)
        if classes < 2:
            raise fail("classes", classes, "must be >= 2; use classes=None for one output")
    work = training_copy(model)
    x, y = on_device(work, x, y)
    with rng_restored(), torch.no_grad():
        torch.manual_seed(0)
        out = forward(work, x)
        measured = loss_value(loss_fn, out, y).item()
        if classes is not None:
            if out.dim() < 2 or out.shape[1] != classes:
                raise ValueError(
                    f"Invalid classes: {classes} (the model outputs shape {tuple(out.shape)}; "
                    "classes must be the number of logits, out.shape[1])"
                )
            baseline = loss_value(loss_fn, torch.zeros_like(out), y).item()
        else:
            baseline = _mean_prediction_loss(loss_fn, out, y)
        weights = (
            [p for p in model.parameters() if p.dim() >= 2] if parameters is None else parameters
        )
        strength = l2 if l2 > 0 else L2_PROBE
        added = penalty(weights, l2=strength).item()
    ln_c = math.log(classes) if classes is not None else None
    softmax_ce = ln_c is not None and abs(baseline - ln_c) <= 1e-6 * ln_c
    data: dict[str, Any] = {
        "loss": json_number(measured),
        "classes": classes,
        "expected": ln_c if softmax_ce else None,
        "baseline": json_number(baseline),
        "l2": strength,
        "l2_is_probe": l2 == 0,
        "penalty": json_number(added),
        "loss_with_penalty": json_number(measured + added),
    }
    with_l2 = (
        f"; with the L2 penalty λ = {strength:g}{' (a probe)' if l2 == 0 else ''} it rises to "
        f"{measured + added:.4g} (+{added:.3g}), as adding regularization must"
    )
    if not math.isfinite(measured):
        return Finding(
            "loss_at_init",
            "fail",
            f"the loss at init is {measured} before any training step",
            "Something overflows in the forward or the loss: check the input scale, the "
            "initialization (weights too large) and the loss (log of 0, a division by 0)",
            data,
        )
    if not softmax_ce:
        against = "all-zero outputs" if classes is not None else "predicting the mean of y"
        shown = "not computable" if baseline is None else f"{baseline:.4g}"
        return Finding(
            "loss_at_init",
            "pass",
            f"the loss at init is {measured:.4g}, against {shown} for {against}{with_l2}",
            "",
            data,
        )
    deviation = (measured - ln_c) / ln_c
    data["relative_deviation"] = deviation
    status = (
        "fail" if abs(deviation) > LOSS_FAIL else "warn" if abs(deviation) > LOSS_WARN else "pass"
    )
    evidence = (
        f"the loss at init is {measured:.4g} against ln {classes} = {ln_c:.4g} for a uniform "
        f"softmax ({deviation:+.0%}){with_l2}"
    )
    if l2 > 0 and added == 0.0:
        status = "warn" if status == "pass" else status
        evidence += "; the penalty adds nothing: no weight is penalized or all are 0"
    if deviation > 0:
        fix = (
            "The logits at init are too large — the net starts confidently wrong: scale the "
            "last layer's weights down (×0.1, or zero them), use Xavier/Kaiming with the gain "
            "of the nonlinearity, and normalize the inputs"
        )
    else:
        fix = (
            "The loss is below chance before any training: the labels leak into the inputs, "
            "the model was trained already (expected after a warm start), or the loss is not "
            "averaged over the batch"
        )
    return Finding("loss_at_init", status, evidence, fix if status != "pass" else "", data)


def _mean_prediction_loss(loss_fn: LossFn, out: Tensor, y: Tensor) -> float | None:
    """The loss of predicting the mean of y for every example, or None if it has no shape."""
    mean = y.to(out.dtype).mean(0, keepdim=True).expand_as(y)
    if mean.numel() == out.numel():
        mean = mean.reshape(out.shape)
    try:
        return loss_value(loss_fn, mean, y).item()
    except ValueError:  # a loss that cannot take y-shaped predictions: no baseline
        return None


# --- 3. overfit a tiny subset ---------------------------------------------------------------


def overfit_tiny(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    *,
    task: str,
    examples: int = 20,
    steps: int = 200,
    lr: float = 3e-3,
    seed: int = 0,
) -> Finding:
    """Can the model memorize ~20 examples? The lecture's sanity check before a real run.

    "Make sure that you can overfit very small portion of the training data": with
    regularization off (dropout off, no weight decay, no penalty) and Adam, a network
    with far more parameters than examples must reach 100% train accuracy on 20
    examples within a few hundred steps, the loss falling towards 0. If it cannot, the
    bug is in the model, the loss or the labels — or the learning rate is far off — and
    training on all the data would only hide it.

    Pass, classification: train accuracy reaches 100% (stops at the first step where it
    does). Regression: the loss falls below 1% of its initial value (memorizing 20
    targets leaves no residual; 1% is a 10× smaller RMSE for the MSE). Otherwise fail,
    with the likely causes read from the loss curve.

    Trains a copy in train mode (batch norm with the batch's statistics, the same ones the
    accuracy is measured with) on the first ``examples`` rows as one full batch.

    Args:
        model: the network; only a copy is trained.
        x: inputs, at least ``examples`` rows (fewer: all of them).
        y: targets (integer labels for classification).
        loss_fn: the data loss ``loss_fn(outputs, y)`` → scalar.
        task: "classification" or "regression".
        examples: rows to memorize (default: 20).
        steps: the budget of Adam steps (default: 200).
        lr: Adam's learning rate (default: 3e-3).
        seed: seeds torch's RNG for the copy's forward passes (default: 0).

    Returns:
        ``Finding("overfit_tiny", ...)``; ``data["losses"]`` holds the loss of every step.
    """
    check_batch(x, y)
    classification = is_classification(task, y)
    positive_int("examples", examples)
    positive_int("steps", steps)
    nonnegative("lr", lr)
    work = training_copy(model)
    trainable = [p for p in work.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            "Invalid model: it has no trainable parameters (requires_grad is False "
            "everywhere; nothing can be fitted)"
        )
    x, y = on_device(work, x[:examples], y[:examples])
    optimizer = Adam(trainable, lr=lr, weight_decay=0.0, backend="eager")
    losses: list[float] = []
    accuracy = None
    reached = None
    with rng_restored():
        torch.manual_seed(seed)
        for step in range(steps + 1):  # the last pass only measures the final weights
            out = forward(work, x)
            loss = loss_value(loss_fn, out, y)
            losses.append(loss.item())
            if not math.isfinite(losses[-1]):
                break
            if classification:
                accuracy = (out.detach().argmax(1) == y).double().mean().item()
                done = accuracy == 1.0
            else:
                done = losses[-1] <= REGRESSION_FIT * losses[0]
            if done:
                reached = step
                break
            if step < steps:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    prior_loss = _label_entropy(y) if classification else None
    return _overfit_finding(losses, accuracy, reached, prior_loss, len(x), steps, lr)


def _label_entropy(y: Tensor) -> float:
    """H = −Σ p_k ln p_k of the label frequencies: the best loss of an input-blind model."""
    p = torch.bincount(y.reshape(-1).long()).double() / y.numel()
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def _overfit_finding(
    losses: list[float],
    accuracy: float | None,
    reached: int | None,
    prior_loss: float | None,
    n: int,
    steps: int,
    lr: float,
) -> Finding:
    classification = prior_loss is not None
    first, last = losses[0], losses[-1]
    data = {
        "examples": n,
        "steps": steps,
        "lr": lr,
        "reached_at_step": reached,
        "final_accuracy": accuracy,
        "initial_loss": json_number(first),
        "final_loss": json_number(last),
        "label_entropy": prior_loss,
        "losses": [json_number(v) for v in losses],
    }
    goal = "100% train accuracy" if classification else f"a loss below {REGRESSION_FIT:.0%} of it"
    if reached is not None:
        return Finding(
            "overfit_tiny",
            "pass",
            f"{n} examples memorized: {goal} after {reached} Adam steps (loss {first:.3g} → "
            f"{last:.3g})",
            "",
            data,
        )
    status = f"train accuracy {accuracy:.0%}" if accuracy is not None else f"loss {last:.3g}"
    return Finding(
        "overfit_tiny",
        "fail",
        f"{n} examples not memorized: {status} after {len(losses) - 1} steps (loss {first:.3g} "
        f"→ {last:.3g}), short of {goal}",
        f"A network must be able to overfit {n} examples with regularization off; "
        + _overfit_cause(losses, prior_loss, lr),
        data,
    )


def _overfit_cause(losses: list[float], prior_loss: float | None, lr: float) -> str:
    """The likely cause of a failed overfit, read from the loss curve."""
    first, last = losses[0], losses[-1]
    tail = losses[-max(2, len(losses) // 5) :]  # the last 20% of the steps
    if not math.isfinite(last):
        return (
            f"the loss diverged at step {len(losses) - 1}: the learning rate ({lr:g}) is too "
            "high (divide it by 10), or something overflows in the forward"
        )
    if abs(last - first) <= 1e-3 * abs(first):
        return (
            f"the loss did not move: the learning rate ({lr:g}) is too small or 0, the "
            "parameters are frozen, or a .detach()/.data cuts the graph so that the gradient "
            "never reaches them"
        )
    if prior_loss is not None and abs(last - prior_loss) <= 0.05 * max(prior_loss, 1e-3):
        return (
            f"the loss settled at {last:.3g}, the entropy of the label frequencies "
            f"({prior_loss:.3g}): the model predicts the class priors and ignores its input — "
            "a bug such as pooling or reshaping over the wrong axis (the batch mixed into "
            "one), an input overwritten or detached, or labels not aligned with x"
        )
    if abs(tail[0] - tail[-1]) <= 1e-2 * abs(tail[0]):
        return (
            f"the loss got stuck at {last:.3g}: a bug that makes the output ignore part of "
            "the input (pooling or reshaping over the wrong axis), labels not aligned with "
            "x, a model too small for the data, or a learning rate to retune"
        )
    return (
        "the loss was still falling when the budget ran out: raise the learning rate "
        "(try ×3) or the steps"
    )


# --- all of them ----------------------------------------------------------------------------

#: Examples for the forward checks, the overfitting test and the gradient check.
FORWARD_BATCH, OVERFIT_BATCH, GRADIENT_BATCH = 256, 20, 8


@dataclass(frozen=True)
class Setup:
    """What every check of ``doctor`` reads: the model, the data and the run's settings."""

    model: nn.Module
    x: Tensor  # all the data: order and feature statistics
    y: Tensor
    batch: Tensor  # a seeded random subset of up to FORWARD_BATCH row indices
    loss_fn: LossFn
    task: str
    classes: int | None
    shuffle: str
    l2: float
    seed: int

    def rows(self, n: int) -> tuple[Tensor, Tensor]:
        picked = self.batch[:n]
        return self.x[picked], self.y[picked]


def _run_loss_at_init(s: Setup) -> list[Finding]:
    x, y = s.rows(FORWARD_BATCH)
    return [loss_at_init(s.model, x, y, s.loss_fn, classes=s.classes, l2=s.l2)]


def _run_gradient_check(s: Setup) -> list[Finding]:
    x, y = s.rows(GRADIENT_BATCH)
    return [gradient_check(s.model, x, y, s.loss_fn, seed=s.seed)]


def _run_overfit_tiny(s: Setup) -> list[Finding]:
    x, y = s.rows(OVERFIT_BATCH)
    return [overfit_tiny(s.model, x, y, s.loss_fn, task=s.task, seed=s.seed)]


def _run_data(s: Setup) -> list[Finding]:
    return data_checks(s.x, s.y, shuffle=s.shuffle, task=s.task, classes=s.classes)


def _run_initialization(s: Setup) -> list[Finding]:
    return initialization_check(s.model, s.rows(FORWARD_BATCH)[0])


CHECKS: dict[str, Callable[[Setup], list[Finding]]] = {
    "loss_at_init": _run_loss_at_init,
    "gradient_check": _run_gradient_check,
    "overfit_tiny": _run_overfit_tiny,
    "data": _run_data,
    "initialization": _run_initialization,
}
"""The checks of `doctor` by name, in the order they run: each takes the prepared model and
data and returns its findings. ``doctor(..., checks=...)`` selects checks by these names.
"""


def doctor(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    *,
    loss_fn: LossFn | None = None,
    task: str | None = None,
    shuffle: str = "epoch",
    l2: float = 0.0,
    seed: int = 0,
    checks: Sequence[str] = tuple(CHECKS),
) -> list[Finding]:
    """Every pre-flight check on a batch of the data: the lecture's babysitting, up front.

    The forward checks (loss at init, initialization) see up to 256 examples, the
    overfitting test 20 and the gradient check 8 — the first rows of one random subset
    drawn with ``seed``, so that data stored sorted still gives mixed batches. The data
    checks see all of ``data``.

    The model is never modified — weights, buffers, train/eval flags and ``requires_grad``
    stay as they were, since every check runs on a deep copy — and the global RNG states
    (torch, numpy, random) are restored afterwards.

    Args:
        model: the network, as it will start training.
        data: the training data as ``(x, y)`` tensors.
        loss_fn: the data loss ``loss_fn(outputs, y)`` (default: None, cross-entropy for
            classification and the mean squared error for regression).
        task: "classification" or "regression" (default: None, from y: integer labels are
            classes, floating-point targets regression — as ``trainlab.fit``).
        shuffle: the order training will read the data in (default: "epoch").
        l2: the L2 strength of the run, shown raising the loss at init (default: 0).
        seed: the subset, the gradient check's entries and the copies' RNG (default: 0).
        checks: which of ``CHECKS`` to run, in their order (default: all).

    Returns:
        The findings, check by check.

    Example:
        >>> print(table(doctor(mlp(20, [64], 3), (x, y), shuffle="none")))
    """
    x, y = check_pair("data", data)
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    for name in checks:
        if name not in CHECKS:
            raise fail("check", name, f"must be one of {', '.join(map(repr, CHECKS))}")
    one_of(*SHUFFLES)("shuffle", shuffle)
    nonnegative("l2", l2)
    if task is None:
        task = "regression" if y.is_floating_point() else "classification"
    classification = is_classification(task, y)
    with rng_restored():
        batch = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        batch = batch[:FORWARD_BATCH]
        classes = _output_width(model, x[batch[:2]]) if classification else None
        if classification and int(y.max()) >= classes:
            raise ValueError(
                f"Invalid y: label {int(y.max())} for a model with {classes} outputs (labels "
                f"must be in 0…{classes - 1}; give the last layer one output per class)"
            )
        if loss_fn is None:
            loss_fn = make_loss("cross_entropy" if classification else "mse", task, classes)
        setup = Setup(model, x, y, batch, loss_fn, task, classes, shuffle, l2, seed)
        return [finding for name in CHECKS if name in checks for finding in CHECKS[name](setup)]


def _output_width(model: nn.Module, x: Tensor) -> int:
    """The number of logits the model gives per example (its output's dim 1)."""
    work = training_copy(model).eval()  # eval: batch norm accepts one example
    (x,) = on_device(work, x)
    with torch.no_grad():
        out = forward(work, x)
    if out.dim() < 2:
        raise ValueError(
            f"Invalid model: it outputs shape {tuple(out.shape)} for {len(x)} examples (a "
            "classifier outputs (N, C) logits; pass task='regression' for real targets)"
        )
    return out.shape[1]
