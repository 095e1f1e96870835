"""Train / validation / test splits: a seeded permutation cut by ratios.

The lectures split one labelled data set three ways, e.g. 6:2:2 or 5:3:2: fit on the
training split, choose hyperparameters on the validation split, report on the test
split once. A stratified split cuts every class by the same ratios, so that a rare class
is not missing from the validation split by chance.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import fail, flag, nonnegative_int

Pair = tuple[Tensor, Tensor]


class SplitIndices(NamedTuple):
    """Row indices of each split into the original (x, y); disjoint, together exhaustive."""

    train: Tensor
    val: Tensor
    test: Tensor


class Splits(NamedTuple):
    """Three (x, y) pairs and the indices they were taken at.

    ``test`` is empty (zero rows) when the split had only (train, val) ratios.
    """

    train: Pair
    val: Pair
    test: Pair
    indices: SplitIndices


def split(
    x: Tensor,
    y: Tensor,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    *,
    stratify: bool = False,
    seed: int = 0,
) -> Splits:
    """Split (x, y) into train / val / test by ``ratios`` after a seeded shuffle.

    Sizes follow the largest-remainder rule: part k gets ``floor(n * r_k)`` rows, and the
    rows left over go to the parts with the largest fractional remainders, so the sizes
    add up to n exactly. With ``stratify=True`` every class c is cut the same way: its
    share of part k is ``n_c * size_k / n`` rounded up or down (so within one sample of
    proportional), while the part sizes stay those of the unstratified split.

    Each part keeps the order of the seeded permutation, so no part is sorted by class.

    Args:
        x: inputs, shape (n, ...).
        y: targets, shape (n, ...); class labels (n,) when ``stratify=True``.
        ratios: (train, val) or (train, val, test), positive, summing to 1
            (default: (0.6, 0.2, 0.2)).
        stratify: keep class proportions in every part (default: False).
        seed: seed of the permutation (default: 0).
    """
    n = check_samples(x, y)
    ratios = _check_ratios(ratios)
    flag("stratify", stratify)
    nonnegative_int("seed", seed)
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    sizes = largest_remainder(n, ratios)
    if stratify:
        parts = _stratified_parts(_check_labels(y), permutation, sizes)
    else:
        parts = list(permutation.split(sizes))
    parts += [permutation[:0]] * (3 - len(parts))
    indices = SplitIndices(*parts)
    train, val, test = ((x[i], y[i]) for i in indices)
    return Splits(train, val, test, indices)


def carve_validation(
    x: Tensor, y: Tensor, fraction: float, *, stratify: bool = False, seed: int = 0
) -> tuple[Pair, Pair]:
    """Carve a validation split off a training set whose test split is fixed (e.g. MNIST).

    Returns ((x_train, y_train), (x_val, y_val)) with ``round``-ed sizes as in
    [`split`][trainlab.data.split] with ratios (1 - fraction, fraction).
    """
    is_real = isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
    if not is_real or not 0.0 < fraction < 1.0:
        raise fail("fraction", fraction, "must be a number in (0, 1)")
    parts = split(x, y, (1.0 - fraction, fraction), stratify=stratify, seed=seed)
    return parts.train, parts.val


def largest_remainder(n: int, ratios: Sequence[float]) -> list[int]:
    """Integer sizes ``s_k`` with ``sum s_k = n`` and ``|s_k - n r_k| < 1``.

    ``s_k = floor(n r_k)`` plus one for the ``n - sum floor(n r_k)`` largest remainders
    (ties go to the earlier part).
    """
    quotas = [n * r for r in ratios]
    sizes = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(ratios)), key=lambda k: sizes[k] - quotas[k])
    for k in by_remainder[: n - sum(sizes)]:
        sizes[k] += 1
    return sizes


def _stratified_parts(labels: Tensor, permutation: Tensor, sizes: list[int]) -> list[Tensor]:
    """Cut each class of the permutation by its share of ``sizes``."""
    classes, class_of = torch.unique(labels, return_inverse=True)
    class_counts = torch.bincount(class_of, minlength=len(classes)).tolist()
    shares = _round_table(class_counts, sizes)
    # Stable sort by class: each class's members stay in permutation order.
    by_class = permutation[class_of[permutation].argsort(stable=True)]
    members = by_class.split(class_counts)
    pieces = [members[c].split(shares[c]) for c in range(len(classes))]
    position = torch.empty_like(permutation)
    position[permutation] = torch.arange(len(permutation))
    parts = []
    for k in range(len(sizes)):
        part = torch.cat([piece[k] for piece in pieces])
        parts.append(part[position[part].argsort()])  # back to permutation order
    return parts


def _round_table(row_sums: list[int], column_sums: list[int]) -> list[list[int]]:
    """Round ``q[c][k] = row_sums[c] * column_sums[k] / n`` to integers, each up or down
    (integers stay as they are), so that every row and every column keeps its exact sum.

    This is controlled rounding of a table with integer margins: the fractional parts are a
    feasible flow from rows to columns, so an integral one exists (a bipartite flow).
    Leftover units go first to the largest fractional parts, then augmenting paths place
    any units the greedy pass could not.
    """
    n = sum(row_sums)
    products = [[r * s for s in column_sums] for r in row_sums]  # exact: q = product / n
    remainder = [[p % n for p in row] for row in products]
    extra = [[0] * len(column_sums) for _ in row_sums]
    row_need = [sum(row) // n for row in remainder]
    column_need = [sum(column) // n for column in zip(*remainder)]
    cells = [(c, k) for c in range(len(row_sums)) for k in range(len(column_sums))]
    for c, k in sorted(cells, key=lambda cell: -remainder[cell[0]][cell[1]]):
        if remainder[c][k] and row_need[c] and column_need[k]:
            extra[c][k], row_need[c], column_need[k] = 1, row_need[c] - 1, column_need[k] - 1
    while any(row_need):
        _augment(extra, remainder, row_need, column_need)
    return [[p // n + e for p, e in zip(*pair)] for pair in zip(products, extra)]


def _augment(
    extra: list[list[int]], remainder: list[list[int]], row_need: list[int], column_need: list[int]
) -> None:
    """Place one more unit: breadth-first search over columns for a chain of moves
    "row c takes column k, the row that held k moves to k', ..." ending at a column in need.
    """
    columns = range(len(column_need))
    parent: dict[int, tuple[int, int | None]] = {}  # column -> (row moving in, column it left)
    for c, need in enumerate(row_need):
        for k in columns:
            if need and remainder[c][k] and not extra[c][k] and k not in parent:
                parent[k] = (c, None)
    frontier = list(parent)
    while frontier:
        k = frontier.pop(0)
        if column_need[k]:
            column_need[k] -= 1
            while True:
                c, left = parent[k]
                extra[c][k] = 1
                if left is None:
                    row_need[c] -= 1
                    return
                extra[c][left], k = 0, left
        for c, row in enumerate(extra):
            for k2 in columns:
                if row[k] and remainder[c][k2] and not row[k2] and k2 not in parent:
                    parent[k2] = (c, k)
                    frontier.append(k2)
    raise RuntimeError("no rounding keeps the margins")  # impossible: integral flow exists


def check_samples(x: Tensor, y: Tensor) -> int:
    """The number of samples of (x, y), which must be tensors of the same, non-zero length."""
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, Tensor) or value.dim() == 0:
            raise fail(name, type(value).__name__, "must be a tensor with a first (sample) axis")
    if len(x) != len(y):
        raise fail("y length", len(y), f"must equal the length of x, {len(x)}")
    if len(x) == 0:
        raise fail("x length", 0, "must hold at least one sample")
    return len(x)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    allowed = "must be 2 or 3 positive numbers (train, val[, test]) summing to 1"
    if not isinstance(ratios, (tuple, list)) or len(ratios) not in (2, 3):
        raise fail("ratios", ratios, allowed)
    for r in ratios:
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r <= 1:
            raise fail("ratios", tuple(ratios), allowed)
    if abs(sum(ratios) - 1.0) > 1e-9:
        raise fail("ratios", tuple(ratios), allowed)
    return tuple(float(r) for r in ratios)


def _check_labels(y: Tensor) -> Tensor:
    if y.dim() != 1 or y.is_floating_point() or y.is_complex():
        raise fail(
            "y", f"{y.dtype} tensor of shape {tuple(y.shape)}", "stratify needs (n,) int labels"
        )
    return y
