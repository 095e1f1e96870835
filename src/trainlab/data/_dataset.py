"""The ``Dataset`` every loader returns: validated arrays as float32 features, int64 labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(repr=False)
class Dataset:
    """Features and labels of one dataset, as tensors ready for training.

    Attributes:
        name: registry key it was loaded by.
        x: float32 training features, shape ``(N, *feature_shape)``.
        y: int64 training labels in ``[0, classes)``, shape ``(N,)``.
        x_test, y_test: the held-out split of the same form, or None when the source has none.
        classes: number of classes.
        feature_shape: shape of one example, e.g. ``(1, 28, 28)``.
        meta: where it came from: ``source``, ``files`` read, ``class_names`` when known.
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: int
    feature_shape: tuple[int, ...]
    meta: dict

    @property
    def sizes(self) -> dict[str, int]:
        """Examples per split: ``{"train": N, "test": M}`` (M = 0 without a test split)."""
        return {"train": len(self.y), "test": 0 if self.y_test is None else len(self.y_test)}

    def __repr__(self) -> str:  # the tensors themselves would print thousands of numbers
        return (
            f"Dataset(name={self.name!r}, sizes={self.sizes}, "
            f"feature_shape={self.feature_shape}, classes={self.classes})"
        )


def _to_dataset(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    classes: int,
    meta: dict,
) -> Dataset:
    """Wrap validated numpy arrays as tensors (float32 features, int64 labels)."""

    def features(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    def labels(a: np.ndarray | None) -> torch.Tensor | None:
        return None if a is None else torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    return Dataset(
        name,
        features(x),
        labels(y),
        features(x_test),
        labels(y_test),
        classes,
        tuple(x.shape[1:]),
        meta,
    )
