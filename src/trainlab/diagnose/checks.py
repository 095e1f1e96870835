"""The pre-flight checks of ``trainlab doctor``: babysitting the learning process, before it.

The lectures' checklist before a long run, each a function returning
:class:`~trainlab.diagnose.findings.Finding` s:

1. :func:`loss_at_init` — with regularization off, a softmax classifier with small weights
   predicts the uniform distribution, so the loss is −ln(1/C) = ln C (2.303 for 10 classes);
   turning the L2 penalty on must raise it.
2. :func:`~trainlab.diagnose.gradcheck.gradient_check` — autograd against centred differences.
3. :func:`overfit_tiny` — with regularization off, the model must fit ~20 examples
   perfectly (100% train accuracy, loss → 0); if it cannot, nothing larger will work.
4. :func:`data_checks` — labels stored in order ("all the cats first, then all the dogs")
   with no shuffling, unnormalized features (x' = (x − μ)/σ), class imbalance.
5. :func:`initialization_check` — activations per layer: collapse towards 0 with depth
   (N(0, 0.01) weights in a deep tanh net), explosion or saturation (weights too large),
   dead ReLUs, and identical units (zero init: symmetry never breaks).

:func:`doctor` runs them all on a batch of the data. Every check works on a deep copy of the
model and restores the global RNG state: the model (weights, buffers, train/eval flags,
``requires_grad``) and the random streams are exactly as they were before.

How the copy runs its forward: train mode, so that batch norm normalizes with the batch's
statistics as the first training step will (fresh running statistics in eval mode would
not normalize at all), with dropout switched off (the lecture's "turn off regularization";
it would also add noise to every statistic) and torch's RNG seeded, so that any other
random module is repeatable. The gradient check keeps dropout on, with one fixed mask.

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
from ..models.layers import InvertedDropout
from ..optim import Adam
from ..train.build import TASKS, make_loss
from ..train.regularize import penalty
from ..train.sources import check_pair
from .findings import Finding
from .gradcheck import (
    check_batch,
    deep_copy,
    forward,
    gradient_check,
    loss_value,
    model_device,
    rng_restored,
)

LossFn = Callable[[Tensor, Tensor], Tensor]

#: Modules switched off (eval mode) in the copies the checks run: regularization off.
DROPOUTS = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    InvertedDropout,
)
#: Layers whose outputs are the pre-activations checked for identical units.
WEIGHTED = (nn.Linear, nn.Bilinear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Saturating nonlinearities and where they saturate (gradient σ'(z) ≈ 0).
SATURATION: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.Tanh: lambda h: h.abs() > 0.99,
    nn.Sigmoid: lambda h: (h < 0.01) | (h > 0.99),
}
#: Rectifiers whose gradient is exactly 0 where the output is 0: units can die.
RECTIFIERS = (nn.ReLU, nn.ReLU6)
#: Nonlinearities whose outputs the initialization check reports.
NONLINEARITIES = (
    *SATURATION,
    *RECTIFIERS,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Softplus,
    nn.Softsign,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
)

# --- thresholds (each with the reason it is where it is) ------------------------------------

#: |loss − ln C| / ln C above which the loss at init warns / fails. For logits of std s the
#: loss is about ln C + s²/2, so 10% of ln 10 is s ≈ 0.7 and 50% is s ≈ 1.5: the net starts
#: confidently wrong and spends its first steps shrinking the last layer.
LOSS_WARN, LOSS_FAIL = 0.1, 0.5
#: The L2 strength used to show the penalty's effect when the run itself has none.
L2_PROBE = 1e-3
#: std of the last reported layer over the first's: below these, the signal collapsed
#: (N(0, 0.01) in a 10-layer tanh net gives ~1e-10; Xavier ~0.4; Xavier on ReLU ~0.03).
COLLAPSE_WARN, COLLAPSE_FAIL = 0.1, 1e-2
#: Growth of the std across layers (or above std 1) beyond which activations explode.
EXPLODE_WARN, EXPLODE_FAIL = 10.0, 100.0
#: Fraction of saturated outputs of a tanh/sigmoid layer (Kaiming-tanh: ~0.1; N(0, 1): ~0.7).
SATURATION_WARN, SATURATION_FAIL = 0.2, 0.5
#: Fraction of ReLU units never active on the batch (Kaiming, 10 layers: ≤ 0.16).
DEAD_WARN, DEAD_FAIL = 0.25, 0.5
#: Units are "identical" when they differ by less than this fraction of the layer's scale.
IDENTICAL_TOLERANCE = 1e-6
#: Adjacent-label disagreement over its value in a random order: below these the data is
#: sorted or clustered, provided the deficit is also 4 standard deviations of the random
#: orders (so small data sets do not cry wolf).
ORDER_WARN, ORDER_FAIL, ORDER_Z = 0.8, 0.5, 4.0
#: Random orders drawn to estimate that baseline.
ORDER_PERMUTATIONS = 32
#: Feature statistics: max |μⱼ| above 3 / 10, or the median σⱼ outside [0.1, 10] / [0.01, 100],
#: or one feature's σ 100× the median: Xavier and Kaiming assume inputs of mean 0, variance 1.
MEAN_WARN, MEAN_FAIL = 3.0, 10.0
STD_WARN, STD_FAIL = 10.0, 100.0
STD_SPREAD_WARN = 100.0
#: Rows used for the feature statistics (evenly spaced when there are more).
FEATURE_ROWS = 4096
#: Rarest over most frequent class below which the classes are imbalanced.
IMBALANCE_WARN = 0.1
#: overfit_tiny: regression passes when the loss falls below this fraction of its start.
REGRESSION_FIT = 0.01


# --- copies that run deterministically ------------------------------------------------------


def training_copy(model: nn.Module, *, dropout: bool = False) -> nn.Module:
    """A deep copy in train mode (batch norm uses batch statistics), dropout off by default."""
    work = deep_copy(model).train()
    if not dropout:
        for module in work.modules():
            if isinstance(module, DROPOUTS):
                module.eval()
    return work


def _on_device(model: nn.Module, *tensors: Tensor) -> list[Tensor]:
    device = model_device(model)
    return [t.to(device) for t in tensors]


def _classification(task: str, y: Tensor) -> bool:
    one_of(*TASKS)("task", task)
    if task == "classification" and (y.is_floating_point() or y.is_complex()):
        raise ValueError(
            f"Invalid y: {y.dtype} targets for task 'classification' (class labels must be "
            "integers; use task='regression' for real-valued targets)"
        )
    return task == "classification"


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
    x, y = _on_device(work, x, y)
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
        "loss": _number(measured),
        "classes": classes,
        "expected": ln_c if softmax_ce else None,
        "baseline": _number(baseline),
        "l2": strength,
        "l2_is_probe": l2 == 0,
        "penalty": _number(added),
        "loss_with_penalty": _number(measured + added),
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


def _count(n: int, noun: str) -> str:
    """``"1 layer"``, ``"3 layers"``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _number(value: float | None) -> float | None:
    """A JSON number: None for NaN and ±inf."""
    return value if value is not None and math.isfinite(value) else None


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
    classification = _classification(task, y)
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
    x, y = _on_device(work, x[:examples], y[:examples])
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
        "initial_loss": _number(first),
        "final_loss": _number(last),
        "label_entropy": prior_loss,
        "losses": [_number(v) for v in losses],
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


# --- 4. the data ----------------------------------------------------------------------------


def data_checks(
    x: Tensor, y: Tensor, *, shuffle: str, task: str, classes: int | None = None
) -> list[Finding]:
    """The data's pitfalls: sorted labels without shuffling, unnormalized features, imbalance.

    - ``label_order`` (only when ``shuffle="none"``): the lecture's "what happens if all the
      cats are stored first and then all the dogs?" — every mini-batch would hold one
      class and SGD would chase each in turn. Measured as the disagreement between
      neighbours (labels that differ; |Δy| for regression) over its mean in random orders
      of the same data: ≈ 1 for shuffled data, ≈ 0 for sorted. Below 0.8 warns, below 0.5
      fails — when the deficit is also 4 standard deviations of the random orders.
    - ``feature_scale``: per-feature mean μⱼ and std σⱼ. Xavier and Kaiming assume inputs of
      mean 0 and variance 1 (the lecture's x' = (x − μ)/σ); max |μⱼ| > 3 or a median σⱼ
      outside [0.1, 10] warns, > 10 or outside [0.01, 100] fails; one feature whose σ is
      100× the median warns (features on different scales: elongated loss contours).
      Constant features are left out of the σ statistics.
    - ``class_balance`` (classification): the rarest class's frequency over the most
      frequent one's; below 0.1, or a class with no example, warns.

    Args:
        x: all the training inputs (row-wise; at most 4096 evenly spaced rows are used for
            the feature statistics).
        y: their targets.
        shuffle: the run's order, one of ``trainlab.data.batches.SHUFFLES``.
        task: "classification" or "regression".
        classes: the number of classes (default: None, the largest label + 1).

    Returns:
        The findings ``label_order``, ``feature_scale`` and, for classes, ``class_balance``.
    """
    check_batch(x, y)
    one_of(*SHUFFLES)("shuffle", shuffle)
    classification = _classification(task, y)
    if classes is not None:
        positive_int("classes", classes)
    findings = [_label_order(y, shuffle, classification), _feature_scale(x)]
    if classification:
        findings.append(_class_balance(y, classes))
    return findings


def _label_order(y: Tensor, shuffle: str, classification: bool) -> Finding:
    if shuffle != "none":
        orders = {
            "epoch": "a new random order every epoch (the lecture's best choice)",
            "once": "one random permutation, cycled (fine; reshuffling every epoch is better)",
            "replacement": "examples drawn independently with replacement",
        }
        return Finding(
            "label_order",
            "pass",
            f"shuffle='{shuffle}': {orders[shuffle]}, so the stored order does not matter",
            "",
            {"shuffle": shuffle},
        )
    values = (
        y.reshape(len(y), -1).double().mean(1)
        if not classification
        else y.reshape(len(y), -1)[:, 0]
    )
    if len(values) < 3:
        return Finding("label_order", "pass", f"only {len(values)} examples: no order to judge")

    def disagreement(v: Tensor) -> float:
        if classification:
            return (v[1:] != v[:-1]).double().mean().item()
        return (v[1:] - v[:-1]).abs().mean().item()

    observed = disagreement(values)
    generator = torch.Generator().manual_seed(0)
    random_orders = torch.tensor(
        [
            disagreement(values[torch.randperm(len(values), generator=generator)])
            for _ in range(ORDER_PERMUTATIONS)
        ],
        dtype=torch.float64,
    )
    expected, spread = random_orders.mean().item(), random_orders.std().item()
    run = _longest_run(values) if classification else None
    data = {
        "shuffle": "none",
        "disagreement": observed,
        "random_disagreement": expected,
        "longest_run": run,
    }
    if expected == 0.0:
        return Finding(
            "label_order", "pass", "every target is the same: no order to judge", "", data
        )
    ratio = observed / expected
    if spread > 0:
        z = (observed - expected) / spread
    else:  # every random order gives the same value: any deficit is certain
        z = -math.inf if observed < expected else 0.0
    data.update(ratio=ratio, z=z if math.isfinite(z) else None)
    clustered = z <= -ORDER_Z
    status = (
        "fail"
        if clustered and ratio < ORDER_FAIL
        else "warn"
        if clustered and ratio < ORDER_WARN
        else "pass"
    )
    what = "labels differ" if classification else "targets change"
    runs = f"; the longest run of one label is {run} examples" if run is not None else ""
    evidence = (
        f"with shuffle='none', neighbouring {what} {ratio:.0%} as often as in a random order "
        f"({observed:.3g} vs {expected:.3g}){runs}"
    )
    fix = (
        "The data is stored sorted or clustered and is read in that order — the lecture's "
        "cats-then-dogs: use shuffle='epoch' (a new random order every epoch), or shuffle the "
        "data once before training"
    )
    return Finding("label_order", status, evidence, fix if status != "pass" else "", data)


def _longest_run(labels: Tensor) -> int:
    changes = torch.nonzero(labels[1:] != labels[:-1]).flatten()
    edges = torch.cat([torch.tensor([-1]), changes, torch.tensor([len(labels) - 1])])
    return int((edges[1:] - edges[:-1]).max().item())


def _feature_scale(x: Tensor) -> Finding:
    if not x.is_floating_point():
        return Finding(
            "feature_scale",
            "pass",
            f"x holds {x.dtype} values (ids or tokens, e.g. for an embedding): not normalized",
        )
    rows = x.reshape(len(x), -1)
    if len(rows) > FEATURE_ROWS:
        rows = rows[torch.linspace(0, len(rows) - 1, FEATURE_ROWS).long()]
    rows = rows.double()
    if not torch.isfinite(rows).all():
        return Finding(
            "feature_scale",
            "fail",
            "x holds NaN or infinite values",
            "Clean the data: replace missing values (e.g. by the feature's mean) before training",
        )
    mean, std = rows.mean(0), rows.std(0, unbiased=False)
    varying = std[std > 0]
    if len(varying) == 0:
        return Finding(
            "feature_scale",
            "fail",
            f"every one of the {rows.shape[1]} features is constant",
            "The inputs carry no information: check the data loading",
            {"features": rows.shape[1]},
        )
    worst = int(mean.abs().argmax())
    max_mean, median_std, max_std = (
        mean.abs().max().item(),
        varying.median().item(),
        varying.max().item(),
    )
    scale = max(median_std, 1 / median_std)
    spread = max_std / median_std
    data = {
        "features": rows.shape[1],
        "constant_features": int((std == 0).sum()),
        "max_abs_mean": max_mean,
        "feature_with_max_abs_mean": worst,
        "median_std": median_std,
        "max_std": max_std,
    }
    if max_mean > MEAN_FAIL or scale > STD_FAIL:
        status = "fail"
    elif max_mean > MEAN_WARN or scale > STD_WARN or spread > STD_SPREAD_WARN:
        status = "warn"
    else:
        status = "pass"
    evidence = (
        f"per-feature means up to {max_mean:.3g} (feature {worst}), median std {median_std:.3g}, "
        f"largest std {max_std:.3g} over {rows.shape[1]} features, against mean 0 and std 1"
    )
    fix = (
        "Normalize the inputs, x' = (x − μ)/σ with μ and σ of the training set "
        "(trainlab.data.Normalizer): the initialization assumes inputs of mean 0 and "
        "variance 1, and unscaled features stretch the loss surface"
    )
    return Finding("feature_scale", status, evidence, fix if status != "pass" else "", data)


def _class_balance(y: Tensor, classes: int | None) -> Finding:
    labels = y.reshape(-1).long()
    if labels.min() < 0:
        raise ValueError(f"Invalid y: label {int(labels.min())} (class labels must be >= 0)")
    count = classes if classes is not None else int(labels.max()) + 1
    if int(labels.max()) >= count:
        raise ValueError(
            f"Invalid y: label {int(labels.max())} with classes={count} (labels must be in "
            f"0…{count - 1})"
        )
    counts = torch.bincount(labels, minlength=count)
    rarest, commonest = int(counts.argmin()), int(counts.argmax())
    ratio = counts[rarest].item() / counts[commonest].item()
    absent = [k for k in range(count) if counts[k] == 0]
    data = {"counts": counts.tolist(), "ratio": ratio, "absent": absent}
    status = "warn" if absent or ratio < IMBALANCE_WARN else "pass"
    evidence = (
        f"the rarest class ({rarest}: {counts[rarest].item()} examples) over the most frequent "
        f"({commonest}: {counts[commonest].item()}) is {ratio:.2g}"
        + (f"; classes {absent} have no example" if absent else "")
    )
    fix = (
        "Accuracy is misleading on imbalanced classes: report per-class metrics, reweight the "
        "loss or resample the rare classes; a class without examples can never be predicted"
    )
    return Finding("class_balance", status, evidence, fix if status != "pass" else "", data)


# --- 5. activations at initialization -------------------------------------------------------


@dataclass
class LayerStats:
    """What one layer's output looked like on the batch."""

    name: str
    kind: str
    units: int
    mean: float
    std: float
    saturated: float | None = None  # tanh/sigmoid: fraction of outputs in the flat tails
    dead: float | None = None  # ReLU: fraction of units never active on the batch
    identical: bool = False  # every unit outputs the same value on every example

    def to_dict(self) -> dict[str, Any]:
        return {k: _number(v) if isinstance(v, float) else v for k, v in vars(self).items()}


def layer_stats(name: str, module: nn.Module, output: Tensor) -> LayerStats:
    """Mean, std, saturation, dead units and identical units of one layer's output.

    Units are along dim 1 (features of a Linear, channels of a Conv); a unit is dead when
    its output is 0 for every example and position, and the units are identical when, for
    every example, max − min over units ≤ 1e-6 × the largest |output|.
    """
    h = output.detach().double()
    units = h.shape[1] if h.dim() >= 2 else 1
    per_unit = h.transpose(0, 1).reshape(units, -1) if h.dim() >= 2 else h.reshape(1, -1)
    stats = LayerStats(
        name, type(module).__name__, units, h.mean().item(), h.std(unbiased=False).item()
    )
    for kind, saturates in SATURATION.items():
        if isinstance(module, kind):
            stats.saturated = saturates(h).double().mean().item()
    if isinstance(module, RECTIFIERS):
        stats.dead = 1.0 - (per_unit > 0).any(1).double().mean().item()
    if units > 1:
        gap = (per_unit.max(0).values - per_unit.min(0).values).max().item()
        stats.identical = gap <= IDENTICAL_TOLERANCE * h.abs().max().item()
    return stats


def initialization_check(model: nn.Module, x: Tensor) -> list[Finding]:
    """Activations layer by layer at initialization: collapse, explosion, saturation, symmetry.

    One forward of ``x`` with hooks on every nonlinearity module (and on every Linear/Conv,
    whose outputs are the pre-activations): each layer's output mean, std, saturated
    fraction and dead units. The lecture's picture of a 10-layer tanh net:

    - ``activation_scale``: with N(0, 0.01) weights every layer multiplies the std by about
      √fan_in·0.01 < 1, the activations collapse towards 0 (std ~1e-10 at layer 10) and
      so do the gradients; with weights too large they grow layer after layer. The std of
      the deepest reported layer over the first's below 0.1 warns, below 1e-2 fails
      (Xavier on tanh keeps ~0.4); any layer's over the first's above 10 warns, above
      100 fails. Reported: the outputs of the nonlinearity modules, or of the Linear/Conv
      layers except the last when the model has none (functional activations).
    - ``saturation`` (tanh, sigmoid): the fraction of outputs with |tanh| > 0.99, or
      sigmoid < 0.01 or > 0.99, where σ'(z) ≈ 0 and the gradient vanishes: above 0.2
      warns, above 0.5 fails.
    - ``dead_units`` (ReLU): units whose input is negative for every example of the batch
      get no gradient and never recover: a fraction above 0.25 warns, above 0.5 fails.
    - ``symmetry``: a hidden layer (a Linear/Conv other than the last) whose units all
      output the same value for every example — zero or constant initialization: the
      units get the same gradient and stay copies of each other, "symmetry never breaks".

    Runs on a copy in train mode with dropout off (batch norm normalizes with the batch's
    statistics, as in the first training step), under ``torch.no_grad``.

    Args:
        model: the network, freshly initialized.
        x: a batch of inputs (a few hundred examples; dead units are judged on it).

    Returns:
        ``activation_scale`` and ``symmetry``, plus ``saturation`` when the model has tanh or
        sigmoid modules and ``dead_units`` when it has ReLUs; the per-layer table is in
        ``activation_scale``'s data.
    """
    check_batch(x)
    work = training_copy(model)
    (x,) = _on_device(work, x)
    records: list[tuple[str, nn.Module, LayerStats]] = []
    seen: dict[str, int] = {}

    def hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def record(module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.is_floating_point() and output.numel():
                seen[name] = seen.get(name, 0) + 1  # a module used twice: name#2
                label = name if seen[name] == 1 else f"{name}#{seen[name]}"
                records.append((label, module, layer_stats(label, module, output)))

        return record

    handles = [
        module.register_forward_hook(hook(name or type(module).__name__))
        for name, module in work.named_modules()
        if isinstance(module, (*NONLINEARITIES, *WEIGHTED))
    ]
    try:
        with rng_restored(), torch.no_grad():
            torch.manual_seed(0)
            forward(work, x)
    finally:
        for handle in handles:
            handle.remove()
    weighted = [s for _, m, s in records if isinstance(m, WEIGHTED)]
    hidden = weighted[:-1]  # the last Linear/Conv gives the logits: units differ by target
    activations = [s for _, m, s in records if isinstance(m, NONLINEARITIES)]
    reported = activations or hidden
    findings = [_activation_scale(reported), _symmetry(hidden or activations)]
    saturating = [s for s in activations if s.saturated is not None]
    if saturating:
        findings.append(_saturation(saturating))
    rectified = [s for s in activations if s.dead is not None]
    if rectified:
        findings.append(_dead_units(rectified))
    return findings


_INIT_FIX = (
    "initialize with the variance the lecture derives: Xavier, Var(W) = 1/fan_in, for "
    "tanh/sigmoid; Kaiming, Var(W) = 2/fan_in, for ReLU (trainlab.models.init_), or add "
    "batch norm"
)


def _activation_scale(layers: list[LayerStats]) -> Finding:
    table = [s.to_dict() for s in layers]
    if not layers:
        return Finding(
            "activation_scale",
            "pass",
            "no nonlinearity or Linear/Conv module found to measure (functional layers only)",
            "",
            {"layers": table},
        )
    first = layers[0]
    data: dict[str, Any] = {"layers": table}
    stds = " → ".join(f"{s.std:.2g}" for s in layers)
    if first.std == 0.0:
        return Finding(
            "activation_scale",
            "fail",
            f"the first reported layer '{first.name}' ({first.kind}) outputs 0 on every example",
            "The signal dies at the first layer (zero weights, or every ReLU dead): " + _INIT_FIX,
            data,
        )
    ratios = [s.std / first.std for s in layers]
    data["std_ratio_to_first"] = [_number(r) for r in ratios]
    # growth against the first layer, or against std 1 (what Xavier/Kaiming keep for
    # unit-variance inputs) when the first layer is already larger than that
    reference = min(first.std, 1.0)
    where = max(layers, key=lambda s: s.std)
    growth = where.std / reference
    last = ratios[-1]
    if growth > EXPLODE_WARN:
        status = "fail" if growth > EXPLODE_FAIL else "warn"
        against = f"'{first.name}'" if first.std < 1.0 else "std 1"
        evidence = (
            f"activations explode: the std reaches {where.std:.3g} at '{where.name}' "
            f"({where.kind}), {growth:.3g}× {against}, across {_count(len(layers), 'layer')} "
            f"({stds})"
        )
        return Finding(
            "activation_scale",
            status,
            evidence,
            "Weights too large, or inputs not normalized: " + _INIT_FIX,
            data,
        )
    if last < COLLAPSE_WARN:
        status = "fail" if last < COLLAPSE_FAIL else "warn"
        threshold = COLLAPSE_FAIL if status == "fail" else COLLAPSE_WARN
        crossed = layers[next(k for k, r in enumerate(ratios) if r < threshold)]
        evidence = (
            f"activations collapse towards 0 with depth: std {first.std:.2g} at '{first.name}', "
            f"{layers[-1].std:.2g} at '{layers[-1].name}' ({last:.2g}× the first; below "
            f"{threshold:g}× from '{crossed.name}' on)"
        )
        return Finding(
            "activation_scale",
            status,
            evidence,
            "Weights too small (e.g. N(0, 0.01)): the gradients vanish with the activations; "
            + _INIT_FIX,
            data,
        )
    return Finding(
        "activation_scale",
        "pass",
        f"activation std stays in scale across {_count(len(layers), 'layer')} ({stds})",
        "",
        data,
    )


def _symmetry(layers: list[LayerStats]) -> Finding:
    same = [s for s in layers if s.identical]
    data = {"identical_layers": [s.name for s in same], "checked_layers": [s.name for s in layers]}
    if not same:
        return Finding(
            "symmetry",
            "pass",
            f"the units differ from each other in each of {_count(len(layers), 'hidden layer')}",
            "",
            data,
        )
    first = same[0]
    return Finding(
        "symmetry",
        "fail",
        f"in hidden layer '{first.name}' ({first.kind}) all {first.units} units output the same "
        f"value on every example ({len(same)} of {len(layers)} layers are so): identical units "
        "get identical gradients, so the symmetry never breaks",
        "Initialize the weights randomly — small random numbers scaled by fan-in (Xavier, "
        "Kaiming) — never all to zero or to one constant",
        data,
    )


def _saturation(layers: list[LayerStats]) -> Finding:
    worst = max(layers, key=lambda s: s.saturated or 0.0)
    fraction = worst.saturated or 0.0
    status = (
        "fail" if fraction > SATURATION_FAIL else "warn" if fraction > SATURATION_WARN else "pass"
    )
    data = {"saturated": {s.name: s.saturated for s in layers}}
    evidence = (
        f"{fraction:.0%} of the outputs of '{worst.name}' ({worst.kind}), the most saturated "
        "layer, sit in the flat tails (|tanh| > 0.99, sigmoid < 0.01 or > 0.99)"
        + (", where the gradient vanishes" if status != "pass" else "")
    )
    fix = "Weights too large for a saturating nonlinearity: " + _INIT_FIX
    return Finding("saturation", status, evidence, fix if status != "pass" else "", data)


def _dead_units(layers: list[LayerStats]) -> Finding:
    worst = max(layers, key=lambda s: s.dead or 0.0)
    fraction = worst.dead or 0.0
    status = "fail" if fraction > DEAD_FAIL else "warn" if fraction > DEAD_WARN else "pass"
    data = {"dead": {s.name: s.dead for s in layers}}
    evidence = (
        f"{fraction:.0%} of the {worst.units} units of '{worst.name}' ({worst.kind}), the "
        "layer with the most, are never active on the batch"
        + (": a dead ReLU gets no gradient and never recovers" if status != "pass" else "")
    )
    fix = (
        "The ReLU inputs are negative for every example — a large negative bias, weights too "
        "large, or unnormalized inputs: initialize biases to 0 (or slightly positive), use "
        "Kaiming init and normalized inputs, or Leaky ReLU to keep units alive"
    )
    return Finding("dead_units", status, evidence, fix if status != "pass" else "", data)


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


#: The checks of ``doctor`` by name, in the order they run.
CHECKS: dict[str, Callable[[Setup], list[Finding]]] = {
    "loss_at_init": _run_loss_at_init,
    "gradient_check": _run_gradient_check,
    "overfit_tiny": _run_overfit_tiny,
    "data": _run_data,
    "initialization": _run_initialization,
}


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
    classification = _classification(task, y)
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
    (x,) = _on_device(work, x)
    with torch.no_grad():
        out = forward(work, x)
    if out.dim() < 2:
        raise ValueError(
            f"Invalid model: it outputs shape {tuple(out.shape)} for {len(x)} examples (a "
            "classifier outputs (N, C) logits; pass task='regression' for real targets)"
        )
    return out.shape[1]
