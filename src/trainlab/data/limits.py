"""How much the loaders will read: every size a file declares is checked before it is allocated.

A file's header can declare far more than the file holds (a 3 MB gzip that expands to 3 GiB,
an .npz member claiming 10**11 floats, a label of 10**8 that becomes 10**8 + 1 classes).
Every loader compares such numbers with these limits *before* allocating, reads streams in
chunks of ``CHUNK_BYTES`` with a cap, and turns a ``MemoryError`` into a ``DatasetError``
naming the file and the limit.

The limits are module constants, read at call time, so a genuine large file loads after::

    import trainlab.data.limits
    trainlab.data.limits.MAX_ARRAY_BYTES = 8 << 30  # 8 GiB
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._errors import invalid

MAX_ARRAY_BYTES = 2 << 30
"""Data bytes one file may declare: an IDX payload, the arrays of one .npz together, the
features of one CSV as float32. MNIST's training images are 47 MB; float32 features are 4×
the bytes of uint8 pixels, so 2 GiB of pixels already make 8 GiB of tensors. A ``.gz`` is
decompressed no further than this plus 64 KiB; each ``.npy`` header of an ``.npz`` is also
matched against its size in the zip directory, and nothing is unpickled."""

MAX_CLASSES = 100_000
"""Classes of the user's npz/CSV files (max label + 1) and of the ``classes=`` option; each
class is a row of the classifier head and a column of every one-hot or softmax. Remap sparse
labels first with ``np.unique(y, return_inverse=True)``."""

MAX_CSV_BYTES = 1 << 30
"""Size of one CSV file; its cells are parsed one by one in Python, which takes time and
memory."""

MAX_CSV_LINE_CHARS = 1 << 24
"""Characters of one line of a CSV file, checked before the line is split into cells."""

MAX_CSV_COLUMNS = 100_000
"""Columns of a CSV file (the label included)."""

MAX_CSV_ROWS = 10_000_000
"""Data rows of a CSV file; larger data loads faster as an .npz."""

MAX_PICKLE_BYTES = 64 << 20
"""Size of one CIFAR pickle (a batch file, batches.meta, or that member of the archive); the
official batches are 31 MB. Unpickling can build objects many times the file's size."""

MAX_DOWNLOAD_BYTES = 256 << 20
"""Bytes of one download, refused on a larger announced Content-Length or cut off at the
limit; the largest official file (cifar-10-python.tar.gz) is 163 MiB."""

CHUNK_BYTES = 4 << 20
"""Streams are read in pieces of this size: few enough calls to cost nothing, small enough that
reading past a declared size costs little."""


def check(limit: str, value: int, thing: str, where: Path | str, problem: str, fix: str) -> None:
    """Refuse ``value`` above the limit named ``limit``, a constant of this module.

    The message reads ``Invalid <thing>: <where> (<problem>, over the limit
    trainlab.data.limits.<limit> = <value of the limit>; <fix>)``.
    """
    allowed = globals()[limit]
    if value > allowed:
        raise invalid(
            thing, where, f"{problem}, over the limit {__name__}.{limit} = {allowed}; {fix}"
        )


@contextmanager
def memory_guard(thing: str, where: Path | str, limit: str) -> Iterator[None]:
    """Turn a ``MemoryError`` inside the block into a ``DatasetError`` naming the file and limit.

    What passed the limit can still be more than the machine has free.
    """
    try:
        yield
    except MemoryError as error:
        raise invalid(
            thing,
            where,
            f"out of memory while reading it (what it declares is within the limit "
            f"{__name__}.{limit} = {globals()[limit]}); free memory, or split the data into "
            "smaller files",
        ) from error


def read_into(stream: BinaryIO, buffer: np.ndarray) -> int:
    """Fill ``buffer`` (any contiguous array) from ``stream`` in ``CHUNK_BYTES`` pieces.

    Returns the number of bytes read: ``buffer.nbytes``, or fewer when the stream ended first.
    Reads nothing beyond ``buffer.nbytes``.
    """
    if buffer.nbytes == 0:
        return 0
    view = memoryview(buffer.reshape(-1).view(np.uint8))
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled : filled + CHUNK_BYTES])
        if not got:
            break
        filled += got
    return filled
