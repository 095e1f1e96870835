"""The user's own data: ``.npz`` archives (x, y, optional x_test, y_test) and ``.csv`` files.

Both are read without pickle and validated: label column and dtype, lengths, label range,
non-numeric cells (named by row and column), NaN/Inf features. Both are read within
``limits``: an npz member's size is checked from its .npy header before its data is read, a
CSV's size, line length, columns and rows as it streams, and the labels of either may make
at most ``MAX_CLASSES`` classes.
"""

from __future__ import annotations

import csv
import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple, TextIO

import numpy as np

from . import limits
from ._dataset import Dataset, _to_dataset
from ._errors import DatasetError, check_finite, check_labels, invalid

_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}
_REMAP = "remap the labels to 0..K-1 first, e.g. `_, y = np.unique(y, return_inverse=True)`"
_ARRAY_FIX = "raise the limit if the file is genuine, else save smaller arrays"
_CSV_FIX = "save large data as .npz with np.savez, or raise the limit"
_CSV_BLOCK_CELLS = 1 << 20  # parsed cells become float32 in blocks of this many


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
    with limits.memory_guard("npz file", path, "MAX_ARRAY_BYTES"):
        x = x.astype(np.float32)
    check_finite(x, path, x_key)
    check_labels(y, path)
    return x


def _resolve_classes(classes: int | None, labels: dict[str, np.ndarray], path: Path) -> int:
    """``classes`` = max label + 1 over all splits, or the given count (which must cover them).

    ``labels`` maps a name for the message (``'y'``, ``the test file``) to a split's labels.
    Every split holds at least one label (empty files are refused first), so the labels are
    in ``[0, classes)`` by construction and need no second range check. Either count is at
    most ``limits.MAX_CLASSES``: a stray label of 10**8 would otherwise size the classifier
    head, and every one-hot or softmax, for 10**8 + 1 classes.
    """
    for name, y in labels.items():
        high = int(y.max())
        problem = f"label {high} at index {int(np.argmax(y))} of {name} makes {high + 1} classes"
        limits.check("MAX_CLASSES", high + 1, "labels", path, problem, _REMAP)
    needed = max(int(y.max()) + 1 for y in labels.values())
    if classes is None:
        return needed
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < needed:
        raise invalid("classes", classes, f"must be an integer >= {needed}, the labels in {path}")
    limits.check("MAX_CLASSES", classes, "classes", classes, f"{classes} classes", "pass fewer")
    return classes


# --- npz --------------------------------------------------------------------------------------


class _Member(NamedTuple):
    """One .npy member of an .npz archive, as its header describes it."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran_order: bool
    dtype: np.dtype
    offset: int  # bytes of .npy header before the data
    nbytes: int  # data bytes the header declares


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an .npz archive, each member's size checked before its data is read.

    Why not ``np.load``: it allocates what a member's .npy header declares before reading
    its data, so a 1 KB archive claiming 10**11 floats fails with a bare ``MemoryError``.
    Here every header is read first; each declared size must match the member's size in the
    zip directory, and together they must fit ``limits.MAX_ARRAY_BYTES``. Object arrays,
    which only pickle can load, are refused from their header, never unpickled.

    Raises:
        DatasetError: naming the file, the member and the problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            if file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise invalid("npz file", path, "holds one .npy array; save x and y with np.savez")
            file.seek(0)
            with zipfile.ZipFile(file) as archive:
                members = [_npy_header(archive, info, path) for info in archive.infolist()]
                total = sum(member.nbytes for member in members)
                problem = f"its {len(members)} arrays declare {total} data bytes together"
                limits.check("MAX_ARRAY_BYTES", total, "npz file", path, problem, _ARRAY_FIX)
                with limits.memory_guard("npz file", path, "MAX_ARRAY_BYTES"):
                    return {member.key: _npy_data(archive, member, path) for member in members}
    except DatasetError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        raise invalid("npz file", path, f"corrupted or not an .npz archive ({error})") from error


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> _Member:
    """Read and check one member's .npy header; none of its data is read."""
    name = info.filename
    with archive.open(info) as stream:
        try:
            version = np.lib.format.read_magic(stream)
        except ValueError as error:
            raise invalid(
                "npz file", path, f"member {name!r} is not a .npy array ({error}); use np.savez"
            ) from error
        read_header = _NPY_HEADER_READERS.get(version)
        if read_header is None:
            raise invalid(
                "npz file",
                path,
                f"member {name!r} is .npy format {version[0]}.{version[1]} (must be 1.0 or "
                "2.0); save the arrays with np.savez",
            )
        try:
            shape, fortran_order, dtype = read_header(stream)
        except ValueError as error:
            raise invalid(
                "npz file", path, f"member {name!r} has a corrupted .npy header ({error})"
            ) from error
        offset = stream.tell()
    key = name.removesuffix(".npy")
    if dtype.hasobject:
        raise invalid(
            "npz file",
            path,
            f"not plain arrays ({key!r} holds Python objects, which only pickle can load); "
            "save numeric arrays with np.savez",
        )
    if any(n < 0 for n in shape):
        raise invalid("npz file", path, f"member {name!r} declares shape {shape}; corrupted")
    nbytes = math.prod(shape) * dtype.itemsize
    declares = f"member {name!r} declares shape {shape} of {dtype} = {nbytes} data bytes"
    limits.check("MAX_ARRAY_BYTES", nbytes, "npz file", path, declares, _ARRAY_FIX)
    if offset + nbytes != info.file_size:
        raise invalid(
            "npz file",
            path,
            f"{declares} after a {offset}-byte header, but the zip directory gives it "
            f"{info.file_size} bytes; the file is corrupted",
        )
    return _Member(key, info, shape, fortran_order, dtype, offset, nbytes)


def _npy_data(archive: zipfile.ZipFile, member: _Member, path: Path) -> np.ndarray:
    """The data of a member whose header ``_npy_header`` checked, read in chunks."""
    values = np.empty(math.prod(member.shape), member.dtype)
    with archive.open(member.info) as stream:
        stream.read(member.offset)
        if limits.read_into(stream, values) < member.nbytes:
            raise invalid("npz file", path, f"member {member.info.filename!r} is truncated")
    if member.fortran_order:
        return values.reshape(member.shape[::-1]).transpose()
    return values.reshape(member.shape)


def _load_npz(*, path: str | Path, classes: int | None = None) -> Dataset:
    path = _open_user_file(path, "npz")
    arrays = read_npz(path)
    if "x" not in arrays or "y" not in arrays:
        raise invalid("npz file", path, f"holds {sorted(arrays)} (must hold 'x' and 'y')")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise invalid(
            "npz file", path, "holds only one of 'x_test', 'y_test' (give both or neither)"
        )
    y, y_test = arrays["y"], arrays.get("y_test")
    x = _checked_features(arrays["x"], y, path, "x", "y")
    x_test = arrays.get("x_test")
    labels = {"'y'": y}
    if x_test is not None:
        x_test = _checked_features(x_test, y_test, path, "x_test", "y_test")
        if x_test.shape[1:] != x.shape[1:]:
            raise invalid(
                "npz file", path, f"'x_test' examples are {x_test.shape[1:]}, 'x' are {x.shape[1:]}"
            )
        labels["'y_test'"] = y_test
    classes = _resolve_classes(classes, labels, path)
    meta = {"source": str(path), "files": [str(path)], "arrays": sorted(arrays)}
    return _to_dataset("npz", x, y, x_test, y_test, classes, meta)


# --- csv --------------------------------------------------------------------------------------


def _read_csv(
    path: Path, label: str, header: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (float32, one column per non-label column), integer labels and the header.

    Streamed within ``limits``: the file's size first, then each line's length and cell
    count before it is split, the row count and the features' float32 bytes as rows come.
    """
    try:
        size = path.stat().st_size
        limits.check("MAX_CSV_BYTES", size, "CSV file", path, f"{size} bytes", _CSV_FIX)
        with open(path, newline="") as file:
            rows = csv.reader(_csv_lines(file, path))
            first = next(rows, None)
            if first is None:
                raise invalid(
                    "CSV file", path, "empty (a header row naming the columns is required)"
                )
            columns = [cell.strip() for cell in first]
            if all(_is_number(cell) for cell in columns):
                raise invalid(
                    "CSV file",
                    path,
                    f"first row {columns} is all numbers (a header row naming the columns is "
                    "required)",
                )
            if label not in columns:
                raise invalid(
                    "label column", label, f"not in {path}; its columns are {', '.join(columns)}"
                )
            if header is not None and columns != header:
                raise invalid(
                    "CSV file", path, f"columns {columns} differ from the training file's {header}"
                )
            with limits.memory_guard("CSV file", path, "MAX_CSV_BYTES"):
                x, y = _csv_rows(rows, path, columns, columns.index(label))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise invalid("CSV file", path, f"cannot be read as CSV text ({error})") from error
    return x, y, columns


def _csv_lines(file: TextIO, path: Path) -> Iterator[str]:
    """The file's lines, each refused before csv splits it when it is too long or has too
    many cells (counted by commas: quoted commas count too, which errs on the safe side)."""
    longest, widest, most = limits.MAX_CSV_LINE_CHARS, limits.MAX_CSV_COLUMNS, limits.MAX_CSV_BYTES
    total = number = 0
    while line := file.readline(longest + 1):
        number += 1
        total += len(line)
        if len(line) > longest:
            problem = f"line {number} has {len(line)} characters or more"
            limits.check("MAX_CSV_LINE_CHARS", len(line), "CSV file", path, problem, _CSV_FIX)
        if line.count(",") >= widest:
            cells = line.count(",") + 1
            problem = f"line {number} has {cells} comma-separated cells"
            limits.check("MAX_CSV_COLUMNS", cells, "CSV file", path, problem, _CSV_FIX)
        if total > most:  # the file grew while it was read
            problem = f"{total} characters read"
            limits.check("MAX_CSV_BYTES", total, "CSV file", path, problem, _CSV_FIX)
        yield line


def _csv_rows(
    rows: Iterator[list[str]], path: Path, columns: list[str], at: int
) -> tuple[np.ndarray, np.ndarray]:
    """Parse the data rows; features become float32 in blocks, so no cell stays an object."""
    width = len(columns) - 1
    row_limit, byte_limit = limits.MAX_CSV_ROWS, limits.MAX_ARRAY_BYTES
    per_block = max(1, _CSV_BLOCK_CELLS // max(width, 1))
    blocks, block, labels = [], [], []
    for number, row in enumerate(rows, start=2):
        if not row:  # a blank line, e.g. at the end of the file
            continue
        if len(row) != len(columns):
            raise invalid(
                "CSV file", path, f"row {number} has {len(row)} cells, the header {len(columns)}"
            )
        count = len(labels) + 1
        if count > row_limit or count * width * 4 > byte_limit:
            limits.check("MAX_CSV_ROWS", count, "CSV file", path, f"{count} data rows", _CSV_FIX)
            problem = f"{count} rows of {width} float32 features = {count * width * 4} bytes"
            limits.check("MAX_ARRAY_BYTES", count * width * 4, "CSV file", path, problem, _CSV_FIX)
        block.append(
            [_parse_cell(row[i], path, number, columns[i]) for i in range(len(row)) if i != at]
        )
        labels.append(_parse_label(row[at], path, number, columns[at]))
        if len(block) == per_block:
            blocks.append(np.array(block, dtype=np.float32).reshape(len(block), width))
            block = []
    if not labels:  # only blank lines after the header
        raise invalid("CSV file", path, "has a header but no data rows; add at least one row")
    blocks.append(np.array(block, dtype=np.float32).reshape(len(block), width))
    return np.concatenate(blocks), np.asarray(labels, dtype=np.int64)


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
    label = int(value)
    if label >= limits.MAX_CLASSES:  # here, before int64 conversion: 1e20 would overflow it
        problem = f"{path} row {row}, column {column!r}: label {label} makes {label + 1} classes"
        limits.check("MAX_CLASSES", label + 1, "label", cell, problem, _REMAP)
    return label


def _load_csv(
    *, path: str | Path, label: str, test_path: str | Path | None = None, classes: int | None = None
) -> Dataset:
    path = _open_user_file(path, "csv")
    x, y, columns = _read_csv(path, label)
    check_finite(x, path, "features")
    x_test = y_test = None
    files = [str(path)]
    labels = {"the training file": y}
    if test_path is not None:
        test_path = _open_user_file(test_path, "csv test")
        x_test, y_test, _ = _read_csv(test_path, label, header=columns)
        check_finite(x_test, test_path, "features")
        files.append(str(test_path))
        labels["the test file"] = y_test
    classes = _resolve_classes(classes, labels, path)
    features = [column for column in columns if column != label]
    meta = {"source": str(path), "files": files, "columns": features, "label": label}
    return _to_dataset("csv", x, y, x_test, y_test, classes, meta)
