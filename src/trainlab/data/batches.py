"""Mini-batches in a seeded, resumable order.

"What if all the cats are stored first?" — a model trained on stored order sees one class
per stretch of batches, so the lectures reshuffle every epoch. Four orders:

* ``"epoch"`` — a new permutation every epoch (the default);
* ``"once"`` — one permutation (that of epoch 0), reused every epoch;
* ``"none"`` — stored order;
* ``"replacement"`` — n indices drawn uniformly with replacement per epoch (a bootstrap).

Epoch e's order is a pure function of (seed, e): its generator is seeded with
``seed * 1_000_003 + e``. A position is therefore three small integers (epoch, batch or
index within the epoch, seed) that ``state_dict`` saves as plain JSON-able values, and a
run resumed mid-epoch continues with exactly the batches it would have seen.

Two paths: [`Batches`][trainlab.data.Batches] indexes in-memory tensors directly (the fast path, no
DataLoader), [`loader`][trainlab.data.loader] wraps any ``Dataset`` in a ``DataLoader`` driven by
[`EpochSampler`][trainlab.data.EpochSampler].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .._checks import fail, flag, nonnegative_int, one_of, positive_int
from .splits import check_samples

SHUFFLES = ("epoch", "once", "none", "replacement")
PRIME = 1_000_003
SEED_RANGE = 2**63  # torch.Generator.manual_seed takes 64-bit seeds


def derived_generator(*keys: int) -> torch.Generator:
    """A generator seeded by keys (k_0, k_1, ...) -> (...(k_0 * P + k_1) * P + ...) mod 2^63.

    ``derived_generator(seed, epoch)`` is seeded with seed * 1_000_003 + epoch.
    """
    mixed = 0
    for key in keys:
        mixed = (mixed * PRIME + key) % SEED_RANGE
    return torch.Generator().manual_seed(mixed)


def epoch_order(num_samples: int, epoch: int, *, shuffle: str = "epoch", seed: int = 0) -> Tensor:
    """The sample indices of epoch ``epoch``, in order: a pure function of its arguments."""
    if shuffle == "none":
        return torch.arange(num_samples)
    if shuffle == "replacement":
        return torch.randint(num_samples, (num_samples,), generator=derived_generator(seed, epoch))
    generator = derived_generator(seed, 0 if shuffle == "once" else epoch)
    return torch.randperm(num_samples, generator=generator)


class Batches:
    """Iterate over (x[idx], y[idx]) mini-batches of in-memory tensors.

    Each ``iter()`` runs one epoch, the next one: ``epoch`` is the epoch in progress, or the
    next to start. Abandoning an iteration (``break``) and calling ``iter()`` again starts
    the next epoch; after `load_state_dict` it continues the saved epoch instead.
    If ``augment`` is given, batch b of epoch e is augmented as
    ``augment(xb, derived_generator(seed, e, b))``, so augmentation resumes exactly too.

    Args:
        x: features, a tensor whose first axis is the sample axis.
        y: labels (or targets), with the same first axis as ``x``.
        batch_size: samples per batch.
        shuffle: ``"epoch"``, ``"once"``, ``"none"`` or ``"replacement"`` (default: "epoch").
        drop_last: drop the last, smaller batch (default: False).
        seed: seed of the orders and augmentations (default: 0).
        augment: a callable ``augment(xb, generator)``, e.g. an ``augment.Compose``
            (default: None).
        shard: ``(rank, world)``: hand out only rank's part of every batch,
            ``batch[rank·n/world : (rank+1)·n/world]`` of its n examples, augmented as the
            whole batch is, so that the parts of all ranks make up the single-process
            batch (data-parallel training; default: (0, 1), the whole batch).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        *,
        shuffle: str = "epoch",
        drop_last: bool = False,
        seed: int = 0,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        num_samples = check_samples(x, y)
        positive_int("batch_size", batch_size)
        one_of(*SHUFFLES)("shuffle", shuffle)
        flag("drop_last", drop_last)
        nonnegative_int("seed", seed)
        if drop_last and batch_size > num_samples:
            allowed = f"must be <= the {num_samples} samples when drop_last=True"
            raise fail("batch_size", batch_size, allowed)
        if not (
            isinstance(shard, tuple)
            and len(shard) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
            and 0 <= shard[0] < shard[1]
        ):
            raise fail("shard", shard, "must be (rank, world) with integers 0 <= rank < world")
        if augment is not None and not callable(augment):
            raise fail("augment", augment, "must be None or callable as augment(xb, generator)")
        self.x, self.y = x, y
        self.batch_size, self.drop_last = batch_size, drop_last
        self.shuffle, self.seed, self.augment = shuffle, seed, augment
        self.num_samples = num_samples
        self.shard = shard
        self.epoch = 0
        self.batch = 0  # batches of this epoch already handed out
        self._live: object | None = None  # token of the iteration that owns the position

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._live is not None or self.batch >= len(self):
            self.epoch, self.batch = self.epoch + 1, 0  # previous epoch abandoned or done
        self._live = token = object()
        return self._run(token)

    def _run(self, token: object) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, size, x, y, augment = self.epoch, self.batch_size, self.x, self.y, self.augment
        order = epoch_order(self.num_samples, epoch, shuffle=self.shuffle, seed=self.seed)
        for b in range(self.batch, len(self)):
            if self._live is not token:
                return  # a newer iteration took over
            index = order[b * size : (b + 1) * size]
            if self.shard[1] > 1:
                xb, yb = self._part(index, derived_generator(self.seed, epoch, b))
                self.batch = b + 1
                yield xb, yb
                continue
            xb = x[index]
            if augment is not None:
                xb = augment(xb, derived_generator(self.seed, epoch, b))
            self.batch = b + 1
            yield xb, y[index]
        if self._live is token:
            self.epoch, self.batch, self._live = epoch + 1, 0, None

    def _part(self, index: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """This rank's part of the batch ``index``. Augmentation draws its randomness for the
        whole batch, so the batch is augmented whole, then cut."""
        rank, world = self.shard
        n = len(index)
        part = slice(n * rank // world, n * (rank + 1) // world)
        if self.augment is None:
            return self.x[index[part]], self.y[index[part]]
        return self.augment(self.x[index], generator)[part], self.y[index[part]]

    def state_dict(self) -> dict[str, Any]:
        """Position and order: plain ints and strings (JSON-serialisable); the same on
        every rank (the shard is not part of it)."""
        return {
            "epoch": self.epoch,
            "batch": self.batch,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position: the next ``iter()`` resumes its epoch."""
        _check_state(state, self.state_dict(), "batch", len(self))
        self.epoch, self.batch = state["epoch"], state["batch"]
        self.seed, self.shuffle = state["seed"], state["shuffle"]
        self._live = None


class EpochSampler(Sampler[int]):
    """A ``Sampler`` with [`Batches`][trainlab.data.Batches]' four orders and resumable position.

    ``consumed`` counts the indices handed out in the current epoch. With
    ``num_workers > 0`` the DataLoader prefetches, so the count runs ahead of the batches
    the training loop has received; for an exact mid-epoch resume use ``num_workers=0``
    or set ``consumed`` to batches_seen * batch_size before saving.

    Args:
        data_source: the dataset (anything with ``len``) or its length.
        shuffle: ``"epoch"``, ``"once"``, ``"none"`` or ``"replacement"`` (default: "epoch").
        seed: seed of the orders (default: 0).
    """

    def __init__(self, data_source: Sized | int, *, shuffle: str = "epoch", seed: int = 0) -> None:
        num_samples = data_source if isinstance(data_source, int) else _sized_length(data_source)
        positive_int("num_samples", num_samples)
        one_of(*SHUFFLES)("shuffle", shuffle)
        nonnegative_int("seed", seed)
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.epoch = 0
        self.consumed = 0
        self._live: object | None = None

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        if self._live is not None or self.consumed >= self.num_samples:
            self.epoch, self.consumed = self.epoch + 1, 0
        self._live = token = object()
        return self._run(token)

    def _run(self, token: object) -> Iterator[int]:
        epoch = self.epoch
        order = epoch_order(self.num_samples, epoch, shuffle=self.shuffle, seed=self.seed).tolist()
        for i in range(self.consumed, self.num_samples):
            if self._live is not token:
                return
            self.consumed = i + 1  # counted before the DataLoader takes it
            yield order[i]
        if self._live is token:
            self.epoch, self.consumed, self._live = epoch + 1, 0, None

    def state_dict(self) -> dict[str, Any]:
        """Position and order: plain ints and strings (JSON-serialisable)."""
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_samples": self.num_samples,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position: the next ``iter()`` resumes its epoch."""
        _check_state(state, self.state_dict(), "consumed", self.num_samples)
        self.epoch, self.consumed = state["epoch"], state["consumed"]
        self.seed, self.shuffle = state["seed"], state["shuffle"]
        self._live = None


def loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: str = "epoch",
    drop_last: bool = False,
    seed: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` in [`EpochSampler`][trainlab.data.EpochSampler] order, for
    data that does not fit in memory. Its sampler (``loader(...).sampler``) holds the resumable
    state.

    The DataLoader's own generator is seeded too, so worker seeds are reproducible and the
    global torch RNG is left alone.
    """
    positive_int("batch_size", batch_size)
    flag("drop_last", drop_last)
    nonnegative_int("num_workers", num_workers)
    sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=num_workers,
        generator=torch.Generator().manual_seed(seed),
    )


def _sized_length(data_source: Any) -> int:
    if not isinstance(data_source, Sized):
        raise fail(
            "dataset", type(data_source).__name__, "must have a length (a map-style Dataset)"
        )
    return len(data_source)


def _check_state(state: Any, current: dict[str, Any], position: str, end: int) -> None:
    """Same keys; same sizes as this object; a valid epoch, position, seed and order."""
    if not isinstance(state, dict) or set(state) != set(current):
        shown = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise fail("state", shown, f"must be a dict with keys {sorted(current)}")
    for key in ("batch_size", "num_samples"):
        if key in current and state[key] != current[key]:
            raise fail(f"state {key}", state[key], f"must be {current[key]}, as in this object")
    for key in ("epoch", "seed"):
        nonnegative_int(f"state {key}", state[key])
    value = state[position]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= end:
        raise fail(f"state {position}", value, f"must be an integer in [0, {end}]")
    one_of(*SHUFFLES)("state shuffle", state["shuffle"])
