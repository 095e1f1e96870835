"""The one error of ``trainlab.data`` and the checks that raise it.

Every message has the form::

    Invalid IDX file: '/data/train-labels-idx1-ubyte' (label 11 at index 3 is out of range [0, 10);
    re-download the file)

naming what is wrong, the bad value (a file, an option, a name) and what is allowed or how to
fix it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset could not be loaded: a bad name or option, or a missing or corrupted file."""


def invalid(thing: str, value: Any, allowed: str) -> DatasetError:
    """The one error every check raises: ``Invalid <thing>: <value> (<allowed or fix>)``."""
    shown = repr(str(value)) if isinstance(value, Path) else repr(value)
    return DatasetError(f"Invalid {thing}: {shown} ({allowed})")


def missing_files(
    dataset: str, directory: Path, names: Iterable[str], extra: str = ""
) -> DatasetError:
    """Files a loader needs are absent: list them, the directory and the two ways to get them."""
    listed = ", ".join(names)
    return invalid(
        f"root for {dataset}",
        directory,
        f"missing {listed}{extra}; place the files there, or pass download=True to fetch them",
    )


def check_finite(x: np.ndarray, where: Path | str, array: str) -> None:
    """Refuse NaN and ±Inf features: they silently poison every loss and gradient."""
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise invalid(
            "features",
            where,
            f"{bad} NaN/Inf value{'s' if bad != 1 else ''} in {array!r}; "
            "clean or drop those rows first",
        )


def check_labels(y: np.ndarray, where: Path | str, classes: int | None = None) -> None:
    """Labels are integers in ``[0, classes)`` (``classes=None``: only ``>= 0`` is checked)."""
    if y.size == 0:
        return
    low = int(y.min())
    high = int(y.max())
    if low < 0:
        index = int(np.argmin(y))
        raise invalid("labels", where, f"label {low} at index {index} is negative (must be >= 0)")
    if classes is not None and high >= classes:
        index = int(np.argmax(y))
        raise invalid(
            "labels",
            where,
            f"label {high} at index {index} is out of range [0, {classes}); "
            "the file is corrupted or not this dataset",
        )
