"""What the trainer reads: training batches that resume exactly, and data to evaluate on.

The trainer takes the user's data in three forms and turns each into a resumable source
of ``(x, y)`` mini-batches:

- ``(x, y)`` tensors → `trainlab.data.Batches` (indexing in memory; order a function
  of seed and epoch, so a resume continues mid-epoch exactly); NumPy arrays, lists and
  anything else ``torch.as_tensor`` takes become tensors first (`as_pair`);
- a map-style ``Dataset`` → a ``DataLoader`` over `trainlab.data.EpochSampler`
  (same orders, same exact resume);
- a ``DataLoader`` → used as it is. If its sampler has ``state_dict``/``load_state_dict``
  (an ``EpochSampler``), a resume is exact; otherwise it resumes at the start of the next
  epoch, since the trainer cannot know which batches an arbitrary sampler would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .. import data as data_lib
from .errors import TrainingError

#: Samples per forward pass when evaluating tensors (no gradients, so larger than training).
EVAL_BATCH = 1024


def check_pair(name: str, value: Any) -> tuple[Tensor, Tensor]:
    """``value`` as an ``(x, y)`` pair of tensors of one length."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TrainingError(
            f"Invalid {name}: a {type(value).__name__} (must be an (x, y) pair of tensors, a "
            "torch Dataset of (x, y) items or a DataLoader of (x, y) batches)"
        )
    x, y = value
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TrainingError(
            f"Invalid {name}: ({type(x).__name__}, {type(y).__name__}) (x and y must be "
            "tensors; convert with torch.as_tensor)"
        )
    if x.dim() == 0 or y.dim() == 0 or len(x) != len(y):
        raise TrainingError(
            f"Invalid {name}: x has {len(x) if x.dim() else 0} rows and y has "
            f"{len(y) if y.dim() else 0} (x and y must have the same first dimension, one "
            "row per example)"
        )
    if len(x) == 0:
        raise TrainingError(f"Invalid {name}: it has no examples (pass at least one row)")
    return x, y


def as_tensor(name: str, part: str, value: Any, float_dtype: torch.dtype) -> Tensor:
    """``value`` as a tensor, as Keras and fastai take NumPy arrays: a tensor is kept as it
    is; anything else goes through ``torch.as_tensor``, floating point becoming
    ``float_dtype`` (the model's: NumPy's default float64 would not fit a float32 model) and
    integers int64 (cross-entropy's labels, whatever NumPy's platform integer is)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray) and not value.flags.writeable:
        value = value.copy()  # torch shares memory, and warns of a read-only array
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TrainingError(
            f"Invalid {name}: {part} is {_article(type(value).__name__)} that torch.as_tensor "
            f"cannot convert ({error}) (pass tensors, NumPy arrays of numbers or nested lists "
            "of numbers)"
        ) from None
    if tensor.is_floating_point():
        return tensor.to(float_dtype)
    if tensor.dtype != torch.bool and not tensor.is_complex():
        return tensor.long()
    return tensor


def as_pair(name: str, value: Any, float_dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """``value`` as an ``(x, y)`` pair of tensors of one length (see `as_tensor`)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        value = (
            as_tensor(name, "x", value[0], float_dtype),
            as_tensor(name, "y", value[1], float_dtype),
        )
    return check_pair(name, value)


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def unpack(batch: Any, where: str) -> tuple[Tensor, Tensor]:
    """One ``(x, y)`` batch from a Dataset or DataLoader, or a clear error."""
    if isinstance(batch, dict) or not isinstance(batch, (tuple, list)) or len(batch) != 2:
        shown = (
            f"dict with keys {sorted(batch)}"
            if isinstance(batch, dict)
            else (
                f"{type(batch).__name__} of {len(batch)}"
                if isinstance(batch, (tuple, list))
                else type(batch).__name__
            )
        )
        raise TrainingError(
            f"Invalid {where}: its batches are a {shown} (must be (x, y) pairs; wrap the "
            "dataset so that __getitem__ returns (input, target))"
        )
    x, y = batch
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TrainingError(
            f"Invalid {where}: its batches hold ({type(x).__name__}, {type(y).__name__}) "
            "(must be tensors; return tensors from __getitem__ or use a collate_fn)"
        )
    return x, y


class LoaderBatches:
    """A ``DataLoader`` with the epoch bookkeeping of `trainlab.data.Batches`."""

    def __init__(self, loader: DataLoader, where: str = "train") -> None:
        self.loader, self.where = loader, where
        self.epoch = 0
        self.batch = 0  # batches handed out in the epoch under way
        self._skip_to_next_epoch = False
        sampler = loader.sampler
        self.exact = callable(getattr(sampler, "state_dict", None)) and callable(
            getattr(sampler, "load_state_dict", None)
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self._skip_to_next_epoch:  # resumed mid-epoch without a resumable sampler
            self.epoch, self.batch, self._skip_to_next_epoch = self.epoch + 1, 0, False
        start = self.batch
        for b, batch in enumerate(self.loader, start=start):
            self.batch = b + 1
            yield unpack(batch, self.where)
        self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        sampler = self.loader.sampler.state_dict() if self.exact else None
        return {"epoch": self.epoch, "batch": self.batch, "sampler": sampler}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
        if self.exact and state.get("sampler") is not None:
            self.loader.sampler.load_state_dict(state["sampler"])
        elif self.batch:
            self._skip_to_next_epoch = True


def training_batches(
    train: Any, *, batch_size: int, shuffle: str, seed: int, drop_last: bool = False
) -> data_lib.Batches | LoaderBatches:
    """The resumable source of training batches for tensors, a Dataset or a DataLoader."""
    if isinstance(train, DataLoader):
        return LoaderBatches(train)
    if isinstance(train, Dataset):
        loader = data_lib.loader(train, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)
        return LoaderBatches(loader)
    x, y = check_pair("train", train)
    return data_lib.Batches(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)


def evaluation_batches(data: Any, where: str) -> Iterator[tuple[Tensor, Tensor]]:
    """The batches of ``data`` (tensors, a Dataset or a DataLoader), in order."""
    if isinstance(data, DataLoader):
        for batch in data:
            yield unpack(batch, where)
        return
    if isinstance(data, Dataset):
        for batch in DataLoader(data, batch_size=EVAL_BATCH, shuffle=False):
            yield unpack(batch, where)
        return
    x, y = data
    for start in range(0, len(x), EVAL_BATCH):
        yield x[start : start + EVAL_BATCH], y[start : start + EVAL_BATCH]


def size(data: Any) -> int:
    """Examples in ``data`` (None counts 0)."""
    if data is None:
        return 0
    if isinstance(data, DataLoader):
        return len(data.dataset)  # type: ignore[arg-type]
    if isinstance(data, Dataset):
        return len(data)  # type: ignore[arg-type]
    return len(data[0])


def first_batch(data: Any, where: str) -> tuple[Tensor, Tensor]:
    """The first ``(x, y)`` of ``data``, to check shapes and labels before training."""
    if isinstance(data, DataLoader):
        return unpack(next(iter(data)), where)
    if isinstance(data, Dataset):
        return unpack(next(iter(DataLoader(data, batch_size=256))), where)
    return data[0][:EVAL_BATCH], data[1][:EVAL_BATCH]


def input_batches(inputs: Any, batch_size: int, float_dtype: torch.dtype) -> Iterator[Tensor]:
    """The inputs to predict on, in order, ``batch_size`` at a time.

    ``inputs`` is an array of examples (a tensor, NumPy array or anything ``torch.as_tensor``
    takes, converted by `as_tensor`), a Dataset of ``x`` or ``(x, y)`` items, or a DataLoader
    of such batches (read in its own order and batch size).
    """
    if isinstance(inputs, (Dataset, DataLoader)):
        loader = inputs if isinstance(inputs, DataLoader) else DataLoader(inputs, batch_size)
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            if not isinstance(x, (Tensor, np.ndarray)):
                raise TrainingError(
                    f"Invalid inputs: their batches hold a {type(x).__name__} (must be tensors "
                    "of inputs, or (x, y) pairs of tensors)"
                )
            yield model_input(as_tensor("inputs", "a batch", x, float_dtype), float_dtype)
        return
    x = model_input(as_tensor("inputs", "the input", inputs, float_dtype), float_dtype)
    if x.dim() == 0:
        raise TrainingError(
            "Invalid inputs: a single number (pass a batch of examples, one row per example)"
        )
    for start in range(0, len(x), batch_size):
        yield x[start : start + batch_size]


def model_input(x: Tensor, float_dtype: torch.dtype) -> Tensor:
    """``x`` with floating point in the model's dtype: a Dataset of NumPy rows collates to
    float64, which a float32 model refuses; a prediction needs no other precision."""
    return x.to(float_dtype) if x.is_floating_point() else x
