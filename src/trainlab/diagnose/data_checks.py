"""The data checks of ``trainlab doctor``: the order, scale and balance of the training set.

[`data_checks`][trainlab.diagnose.data_checks.data_checks] looks at the data before any model sees
it, for the pitfalls of the lectures: labels stored in order ("all the cats first, then all the
dogs") and read without shuffling, so that every mini-batch holds one class; features far from mean
0 and variance 1, which Xavier and Kaiming initialization assume (normalize, x' = (x − μ)/σ); and
imbalanced classes, on which accuracy misleads. `is_classification` is the task check shared with
the other checks of `trainlab.diagnose.checks`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import one_of, positive_int
from ..data.batches import SHUFFLES
from ..train.build import TASKS
from .findings import Finding
from .gradcheck import check_batch

# --- thresholds (each with the reason it is where it is) ------------------------------------

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


def is_classification(task: str, y: Tensor) -> bool:
    """True for task "classification", False for "regression"; fails on float class labels."""
    one_of(*TASKS)("task", task)
    if task == "classification" and (y.is_floating_point() or y.is_complex()):
        raise ValueError(
            f"Invalid y: {y.dtype} targets for task 'classification' (class labels must be "
            "integers; use task='regression' for real-valued targets)"
        )
    return task == "classification"


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
    classification = is_classification(task, y)
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
