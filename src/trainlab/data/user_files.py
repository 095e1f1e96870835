"""The user's own data: ``.npz`` archives (x, y, optional x_test, y_test) and ``.csv`` files.

Both are read without pickle and validated: label column and dtype, lengths, label range,
non-numeric cells (named by row and column), NaN/Inf features.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from ._dataset import Dataset, _to_dataset
from ._errors import DatasetError, check_finite, check_labels, invalid


def _open_user_file(path: str | Path, kind: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise invalid(f"{kind} path", path, "no such file; pass path= an existing file")
    return path


def _checked_features(
    x: np.ndarray, y: np.ndarray, path: Path, x_key: str, y_key: str
) -> np.ndarray:
    """``x`` numeric with at least 2 dims, at least one row, finite; ``y`` 1-D integers >= 0 of
    the same length. Returns ``x`` as float32 (the one conversion)."""
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise invalid("npz file", path, f"{x_key!r} has dtype {x.dtype} (must be real numbers)")
    if x.ndim < 2:
        raise invalid("npz file", path, f"{x_key!r} has shape {x.shape} (must be (N, *features))")
    if len(x) == 0:
        fix = "save at least one example" + ("" if x_key == "x" else ", or leave the split out")
        raise invalid("npz file", path, f"{x_key!r} has shape {x.shape}, no examples; {fix}")
    if not np.issubdtype(y.dtype, np.integer):
        raise invalid("npz file", path, f"{y_key!r} has dtype {y.dtype} (labels must be integers)")
    if y.ndim != 1 or len(y) != len(x):
        raise invalid(
            "npz file",
            path,
            f"{y_key!r} has shape {y.shape} (must be ({len(x)},), one label per row of {x_key!r})",
        )
    x = x.astype(np.float32)
    check_finite(x, path, x_key)
    check_labels(y, path)
    return x


def _resolve_classes(classes: int | None, labels: list[np.ndarray], path: Path) -> int:
    """``classes`` = max label + 1 over all splits, or the given count (which must cover them).

    Every split holds at least one label (empty files are refused first), so the labels are
    in ``[0, classes)`` by construction and need no second range check.
    """
    needed = max(int(y.max()) + 1 for y in labels)
    if classes is None:
        return needed
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < needed:
        raise invalid("classes", classes, f"must be an integer >= {needed}, the labels in {path}")
    return classes


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, read without pickle (object arrays are refused)."""
    try:
        # np.load leaks its handle when the zip is damaged, so the file is opened here.
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise invalid("npz file", path, "holds one .npy array; save x and y with np.savez")
            with archive:
                return {key: archive[key] for key in archive.files}
    except DatasetError:
        raise
    except ValueError as error:  # pickled or object data: refused, never unpickled
        raise invalid(
            "npz file", path, f"not plain arrays ({error}); save numeric arrays with np.savez"
        ) from error
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise invalid("npz file", path, f"corrupted or not an .npz archive ({error})") from error


def _load_npz(*, path: str | Path, classes: int | None = None) -> Dataset:
    path = _open_user_file(path, "npz")
    arrays = _read_npz(path)
    if "x" not in arrays or "y" not in arrays:
        raise invalid("npz file", path, f"holds {sorted(arrays)} (must hold 'x' and 'y')")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise invalid(
            "npz file", path, "holds only one of 'x_test', 'y_test' (give both or neither)"
        )
    y, y_test = arrays["y"], arrays.get("y_test")
    x = _checked_features(arrays["x"], y, path, "x", "y")
    x_test = arrays.get("x_test")
    if x_test is not None:
        x_test = _checked_features(x_test, y_test, path, "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise invalid(
                "npz file", path, f"'x_test' examples are {x_test.shape[1:]}, 'x' are {x.shape[1:]}"
            )
    classes = _resolve_classes(classes, [y] if y_test is None else [y, y_test], path)
    meta = {"source": str(path), "files": [str(path)], "arrays": sorted(arrays)}
    return _to_dataset("npz", x, y, x_test, y_test, classes, meta)


def _read_csv(
    path: Path, label: str, header: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float32, one column per non-label column), integer labels and the header."""
    try:
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise invalid("CSV file", path, f"cannot be read as CSV text ({error})") from error
    if not rows:
        raise invalid("CSV file", path, "empty (a header row naming the columns is required)")
    columns = [cell.strip() for cell in rows[0]]
    if all(_is_number(cell) for cell in columns):
        raise invalid(
            "CSV file",
            path,
            f"first row {columns} is all numbers (a header row naming the columns is required)",
        )
    if label not in columns:
        raise invalid("label column", label, f"not in {path}; its columns are {', '.join(columns)}")
    if header is not None and columns != header:
        raise invalid(
            "CSV file", path, f"columns {columns} differ from the training file's {header}"
        )
    at = columns.index(label)
    features, labels = [], []
    for number, row in enumerate(rows[1:], start=2):
        if not row:  # a blank line, e.g. at the end of the file
            continue
        if len(row) != len(columns):
            raise invalid(
                "CSV file", path, f"row {number} has {len(row)} cells, the header {len(columns)}"
            )
        features.append(
            [_parse_cell(row[i], path, number, columns[i]) for i in range(len(row)) if i != at]
        )
        labels.append(_parse_label(row[at], path, number, label))
    if not labels:  # only blank lines after the header
        raise invalid("CSV file", path, "has a header but no data rows; add at least one row")
    x = np.asarray(features, dtype=np.float32).reshape(len(features), len(columns) - 1)
    return x, np.asarray(labels, dtype=np.int64), columns


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _parse_cell(cell: str, path: Path, row: int, column: str) -> float:
    if not _is_number(cell):
        raise invalid(
            "CSV cell", cell, f"{path} row {row}, column {column!r}: features must be numbers"
        )
    return float(cell)


def _parse_label(cell: str, path: Path, row: int, column: str) -> int:
    value = float(cell) if _is_number(cell) else None
    if value is None or not value.is_integer() or value < 0:
        raise invalid(
            "label", cell, f"{path} row {row}, column {column!r}: labels must be integers >= 0"
        )
    return int(value)


def _load_csv(
    *, path: str | Path, label: str, test_path: str | Path | None = None, classes: int | None = None
) -> Dataset:
    path = _open_user_file(path, "csv")
    x, y, columns = _read_csv(path, label)
    check_finite(x, path, "features")
    x_test = y_test = None
    files = [str(path)]
    if test_path is not None:
        test_path = _open_user_file(test_path, "csv test")
        x_test, y_test, _ = _read_csv(test_path, label, header=columns)
        check_finite(x_test, test_path, "features")
        files.append(str(test_path))
    classes = _resolve_classes(classes, [y] if y_test is None else [y, y_test], path)
    features = [column for column in columns if column != label]
    meta = {"source": str(path), "files": files, "columns": features, "label": label}
    return _to_dataset("csv", x, y, x_test, y_test, classes, meta)
