"""Train / val / test splits: sizes, disjointness, reproducibility, stratification."""

import pytest
import torch

from trainlab.data.splits import _round_table, carve_validation, largest_remainder, split


def data(n: int, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """x[i] = i, so rows can be traced back; labels sorted, all of class 0 first."""
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1)
    y = torch.arange(n) * classes // n
    return x, y


@pytest.mark.parametrize(
    ("n", "ratios", "sizes"),
    [
        (100, (0.6, 0.2, 0.2), [60, 20, 20]),
        (100, (0.5, 0.3, 0.2), [50, 30, 20]),
        (1000, (0.5, 0.3, 0.2), [500, 300, 200]),
        (101, (0.6, 0.2, 0.2), [61, 20, 20]),
        (7, (0.5, 0.3, 0.2), [4, 2, 1]),
        (10, (0.8, 0.2), [8, 2, 0]),
    ],
)
def test_sizes(n, ratios, sizes):
    parts = split(*data(n), ratios)
    assert [len(i) for i in parts.indices] == sizes
    assert [len(x) for x, _ in parts[:3]] == sizes
    assert [len(y) for _, y in parts[:3]] == sizes


@pytest.mark.parametrize("stratify", [False, True])
def test_disjoint_exhaustive_and_rows_match(stratify):
    x, y = data(97)
    parts = split(x, y, (0.5, 0.3, 0.2), stratify=stratify, seed=3)
    everything = torch.cat(parts.indices)
    assert torch.equal(everything.sort().values, torch.arange(97))
    for (xs, ys), index in zip(parts[:3], parts.indices):
        assert torch.equal(xs, x[index]) and torch.equal(ys, y[index])


def test_reproducible_by_seed():
    x, y = data(50)
    first, again, other = split(x, y, seed=1), split(x, y, seed=1), split(x, y, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(first.indices, again.indices))
    assert not torch.equal(first.indices.train, other.indices.train)


def test_two_ratios_leave_test_empty():
    x, y = data(20)
    parts = split(x, y, (0.75, 0.25))
    assert parts.test[0].shape == (0, 1) and parts.test[1].shape == (0,)
    assert len(parts.indices.test) == 0


def test_parts_are_shuffled_even_when_stored_sorted():
    """What if all the cats are stored first? No part may keep the class-sorted order."""
    for stratify in (False, True):
        _, y_train = split(*data(300), stratify=stratify).train
        assert not torch.equal(y_train, y_train.sort().values)


def test_stratified_proportions_within_one_sample():
    counts = [57, 31, 8, 4]  # imbalanced classes, stored sorted
    y = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    x = torch.randn(len(y), 2)
    n = len(y)
    for ratios in ((0.6, 0.2, 0.2), (0.5, 0.3, 0.2), (0.7, 0.3)):
        parts = split(x, y, ratios, stratify=True, seed=5)
        plain = split(x, y, ratios, seed=5)
        for (_, labels), plain_index in zip(parts[:3], plain.indices):
            assert len(labels) == len(plain_index)  # same part sizes as unstratified
            got = torch.bincount(labels, minlength=len(counts)).tolist()
            for k, n_c in enumerate(counts):
                assert abs(got[k] - n_c * len(labels) / n) < 1


def test_round_table_keeps_margins():
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        rows = (torch.randint(1, 40, (6,), generator=generator)).tolist()
        n = sum(rows)
        columns = largest_remainder(n, (0.5, 0.3, 0.2))
        table = _round_table(rows, columns)
        assert [sum(r) for r in table] == rows
        assert [sum(c) for c in zip(*table)] == columns
        for r, row in zip(rows, table):
            assert all(abs(v - r * s / n) < 1 for v, s in zip(row, columns))


@pytest.mark.parametrize(
    "ratios",
    [(0.5, 0.2), (0.6, 0.2, 0.2, 0.0), (1.2, -0.2), (0.5, 0.5, 0.0), (0.6,), "0.6", (0.5, True)],
)
def test_bad_ratios(ratios):
    pattern = r"Invalid ratios: .* \(must be 2 or 3 positive numbers \(train, val\[, test\]\)"
    with pytest.raises(ValueError, match=pattern):
        split(*data(10), ratios)


def test_ratios_within_rounding_are_accepted():
    assert sum((0.7, 0.2, 0.1)) != 1.0
    assert len(split(*data(10), (0.7, 0.2, 0.1)).indices.train) == 7


def test_bad_inputs():
    x, y = data(10)
    with pytest.raises(ValueError, match=r"Invalid y length: 9 \(must equal the length of x, 10\)"):
        split(x, y[:9])
    with pytest.raises(ValueError, match=r"Invalid x length: 0 \(must hold at least one sample\)"):
        split(x[:0], y[:0])
    with pytest.raises(ValueError, match=r"Invalid y: .* \(stratify needs \(n,\) int labels\)"):
        split(x, y.float(), stratify=True)
    with pytest.raises(ValueError, match=r"Invalid seed: -1 \(must be an integer >= 0\)"):
        split(x, y, seed=-1)


def test_carve_validation():
    x, y = data(50)
    (x_train, y_train), (x_val, y_val) = carve_validation(x, y, 0.2, stratify=True, seed=4)
    assert len(x_train) == len(y_train) == 40 and len(x_val) == len(y_val) == 10
    rows = torch.cat([x_train, x_val]).squeeze(1).sort().values
    assert torch.equal(rows, x.squeeze(1))
    (x_again, _), _ = carve_validation(x, y, 0.2, stratify=True, seed=4)
    assert torch.equal(x_train, x_again)
    for fraction in (0.0, 1.0, -0.1, "0.2"):
        with pytest.raises(
            ValueError, match=r"Invalid fraction: .* \(must be a number in \(0, 1\)\)"
        ):
            carve_validation(x, y, fraction)
