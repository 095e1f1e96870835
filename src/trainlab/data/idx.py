"""The IDX format of MNIST and Fashion-MNIST: a tiny header, then one big-endian array.

Layout (LeCun et al., "The MNIST database of handwritten digits")::

    bytes 0-1   0x00 0x00                 (anything else: not an IDX file)
    byte  2     type code                 0x08 ubyte, 0x09 byte, 0x0B short (int16),
                                          0x0C int (int32), 0x0D float (float32), 0x0E double
    byte  3     d = number of dimensions
    then        d big-endian uint32 sizes n_1 ... n_d
    then        n_1 · n_2 · ... · n_d values of the type, big-endian, row-major

so the image files start with 0x00000803 (ubyte, 3 dims: N × 28 × 28) and the label files
with 0x00000801 (ubyte, 1 dim: N). Files may be gzipped (they are published as ``.gz``).

References: http://yann.lecun.com/exdb/mnist/ (format description, kept on many mirrors).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import limits
from ._errors import DatasetError, check_labels, invalid

# Type code -> big-endian numpy dtype.
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_FIX = "re-download the file"
# After the declared payload, a gzip stream is read this much further: enough to tell
# "trailing bytes" (with their count when few) and to reach the end, where gzip checks its CRC.
_SLACK = 1 << 16


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (raw or gzipped) into a native-endian numpy array of its shape.

    The header is checked before any data is touched: magic ``0x00 0x00``, a known type
    code, the dimension count, and the declared size ``n_1 · ... · n_d · itemsize`` against
    ``limits.MAX_ARRAY_BYTES`` and, for a raw file, against the bytes that follow (fewer:
    truncated; more: trailing bytes). A gzipped file is decompressed in chunks into an
    array of the declared size, never further than that plus 64 KiB: a small .gz that
    expands to gigabytes is refused after reading a few bytes past its declared size.

    Raises:
        DatasetError: naming the file and the problem.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            gzipped = file.read(2) == _GZIP_MAGIC
            file.seek(0)
            if not gzipped:
                return _read_stream(file, path, os.fstat(file.fileno()).st_size)
            try:
                with gzip.GzipFile(fileobj=file) as stream:
                    return _read_stream(stream, path, None)
            except (OSError, EOFError, zlib.error) as error:
                raise invalid(
                    "IDX file", path, f"corrupted or truncated gzip data ({error}); {_FIX}"
                ) from error
    except OSError as error:
        raise invalid("IDX file", path, f"cannot be read: {error.strerror or error}") from error


def _read_stream(stream: BinaryIO, path: Path, file_size: int | None) -> np.ndarray:
    """Header, checks, then exactly the declared payload (``file_size``: raw files only)."""
    magic = stream.read(4)
    if len(magic) < 4:
        raise invalid("IDX file", path, f"truncated: {len(magic)} bytes, the header alone needs 4")
    if magic[0] != 0 or magic[1] != 0:
        raise invalid(
            "IDX file",
            path,
            f"bad magic number 0x{magic.hex()} (must start with 0x0000); not an IDX file",
        )
    dtype = IDX_TYPES.get(magic[2])
    if dtype is None:
        codes = ", ".join(f"0x{code:02X}" for code in IDX_TYPES)
        raise invalid(
            "IDX file", path, f"unknown type code 0x{magic[2]:02X} (must be one of {codes})"
        )
    ndim = magic[3]
    if ndim == 0:
        raise invalid("IDX file", path, "dimension count is 0 (must be at least 1)")
    header = 4 + 4 * ndim
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise invalid(
            "IDX file",
            path,
            f"truncated header: {ndim} dimensions need {header} bytes, got {4 + len(sizes)}",
        )
    shape = tuple(int(n) for n in np.frombuffer(sizes, dtype=">u4"))
    expected = math.prod(shape) * dtype.itemsize
    declares = (
        f"header declares {'×'.join(map(str, shape))} values of {dtype.itemsize} byte(s) = "
        f"{expected} data bytes"
    )
    limits.check(
        "MAX_ARRAY_BYTES",
        expected,
        "IDX file",
        path,
        declares,
        f"raise the limit if the file is genuine, else {_FIX}",
    )
    if file_size is not None and file_size - header != expected:
        raise _payload_error(path, declares, expected, file_size - header)
    with limits.memory_guard("IDX file", path, "MAX_ARRAY_BYTES"):
        # The big-endian bytes go straight into a native array, then are swapped in place:
        # the only copy of the data is the array returned.
        values = np.empty(shape, dtype.newbyteorder("="))
        payload = limits.read_into(stream, values)
        if payload < expected:
            raise _payload_error(path, declares, expected, payload)
        extra = len(stream.read(_SLACK))
        if extra:
            raise _payload_error(path, declares, expected, expected + extra, extra == _SLACK)
        if not dtype.isnative:
            values.byteswap(inplace=True)
        return values


def _payload_error(
    path: Path, declares: str, expected: int, payload: int, at_least: bool = False
) -> DatasetError:
    problem = "truncated" if payload < expected else "trailing bytes"
    has = f"at least {payload}" if at_least else f"{payload}"
    return invalid("IDX file", path, f"{problem}: {declares}, the file has {has}; {_FIX}")


def read_idx_images(path: str | Path, image_shape: tuple[int, ...] = (28, 28)) -> np.ndarray:
    """Read an IDX image file: ubyte, shape ``(N, *image_shape)``."""
    images = read_idx(path)
    _check_ubyte(images, path, f"N×{'×'.join(map(str, image_shape))} images")
    if images.shape[1:] != image_shape:
        raise invalid(
            "IDX image file",
            Path(path),
            f"shape {images.shape} is not N×{'×'.join(map(str, image_shape))}; "
            "wrong file in the image slot?",
        )
    return images


def read_idx_labels(path: str | Path, classes: int = 10) -> np.ndarray:
    """Read an IDX label file: ubyte, one dimension, every label in ``[0, classes)``."""
    labels = read_idx(path)
    _check_ubyte(labels, path, "a 1-D label vector")
    if labels.ndim != 1:
        raise invalid(
            "IDX label file",
            Path(path),
            f"{labels.ndim} dimensions (must be 1); wrong file in the label slot?",
        )
    check_labels(labels, Path(path), classes)
    return labels.astype(np.int64)


def read_idx_pair(
    images_path: str | Path,
    labels_path: str | Path,
    image_shape: tuple[int, ...] = (28, 28),
    classes: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """Images scaled to ``[0, 1]`` float32 of shape ``(N, 1, *image_shape)`` and int64 labels.

    ``x = pixel / 255``; the image and label files must hold the same count N.
    """
    images = read_idx_images(images_path, image_shape)
    labels = read_idx_labels(labels_path, classes)
    if len(images) != len(labels):
        raise invalid(
            "IDX pair",
            f"{Path(images_path).name} + {Path(labels_path).name}",
            f"{len(images)} images but {len(labels)} labels in {Path(images_path).parent}; "
            "the files come from different sets or one is damaged",
        )
    with limits.memory_guard("IDX image file", Path(images_path), "MAX_ARRAY_BYTES"):
        x = images.astype(np.float32)
        x /= np.float32(255)  # in place: one float32 copy of the images, not two
    return x[:, None], labels


def _check_ubyte(values: np.ndarray, path: str | Path, what: str) -> None:
    if values.dtype != np.uint8:
        raise invalid(
            "IDX file",
            Path(path),
            f"type {values.dtype} (must be ubyte, code 0x08, for {what}); wrong file?",
        )
