"""CIFAR-10 "python version" batches, read with an unpickler that can only rebuild arrays.

The official files (``cifar-10-batches-py/``: ``data_batch_1`` ... ``data_batch_5``,
``test_batch``, ``batches.meta``) are Python 2 pickles of dicts::

    b"data":   uint8 array (n, 3072) — per image 1024 red, then 1024 green, then 1024 blue
               values, each channel row-major 32 × 32, so ``data.reshape(n, 3, 32, 32)``
    b"labels": list of n ints in [0, 10)

A plain ``pickle.load`` runs whatever callable the file names, so a tampered batch could
execute code. ``RestrictedUnpickler.find_class`` admits only the three globals numpy needs
to rebuild an array and refuses everything else before it is called.

References: Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html
"""

from __future__ import annotations

import io
import numbers
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

from . import limits
from ._errors import DatasetError, check_labels, invalid, missing_files
from .download import fetch_dataset

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_PIXELS = 3 * 32 * 32

# (module, name) -> object. Batches written by numpy 1.x name numpy.core, by 2.x numpy._core;
# both map to the object directly, so the deprecated numpy.core alias is never imported.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays are rebuilt from."""

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module: str, name: str) -> object:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            names = ", ".join(f"{m}.{n}" for m, n in _ALLOWED)
            raise invalid(
                "CIFAR batch",
                self.path,
                f"refers to {module}.{name}, which is not allowed (only {names}); "
                "the file is not a CIFAR-10 batch or was tampered with",
            )
        return allowed


def unpickle(path: str | Path) -> object:
    """Load one pickle with ``RestrictedUnpickler`` (``encoding="bytes"``).

    The file is read whole first, at most ``limits.MAX_PICKLE_BYTES`` of it: unpickling
    builds objects many times the size of their opcodes, so the file's size is the bound.
    """
    path = Path(path)
    limit = limits.MAX_PICKLE_BYTES
    fix = "not a CIFAR-10 batch (an official one is 31 MB); re-download the file"
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            limits.check("MAX_PICKLE_BYTES", size, "CIFAR batch", path, f"{size} bytes", fix)
            content = file.read(limit + 1)
        size = len(content)  # the file may have grown since fstat
        problem = f"{size} bytes or more"
        limits.check("MAX_PICKLE_BYTES", size, "CIFAR batch", path, problem, fix)
        with limits.memory_guard("CIFAR batch", path, "MAX_PICKLE_BYTES"):
            return RestrictedUnpickler(io.BytesIO(content), path).load()
    except DatasetError:
        raise
    except OSError as error:
        raise invalid("CIFAR batch", path, f"cannot be read: {error.strerror or error}") from error
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as error:
        raise invalid(
            "CIFAR batch", path, f"corrupted or truncated pickle ({error!r}); re-download the file"
        ) from error


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch as uint8 images ``(n, 3, 32, 32)`` and int64 labels ``(n,)``."""
    path = Path(path)
    batch = unpickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise invalid("CIFAR batch", path, f"holds {keys}, not a dict with b'data' and b'labels'")
    data, labels = batch[b"data"], batch[b"labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _PIXELS
    ):
        shown = (
            f"{data.dtype} array {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise invalid(
            "CIFAR batch", path, f"b'data' is {shown} (must be a uint8 array (n, {_PIXELS}))"
        )
    if not isinstance(labels, list) or not all(
        isinstance(label, numbers.Integral) and not isinstance(label, bool) for label in labels
    ):
        raise invalid("CIFAR batch", path, "b'labels' must be a list of ints")
    if len(labels) != len(data):
        raise invalid(
            "CIFAR batch",
            path,
            f"{len(data)} images but {len(labels)} labels; re-download the file",
        )
    y = np.asarray(labels, dtype=np.int64)
    check_labels(y, path, len(CLASS_NAMES))
    return data.reshape(-1, 3, 32, 32), y


def read_class_names(path: str | Path) -> tuple[str, ...]:
    """The ``b"label_names"`` of ``batches.meta``, decoded; the standard names if absent."""
    path = Path(path)
    if not path.is_file():
        return CLASS_NAMES
    meta = unpickle(path)
    names = meta.get(b"label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != len(CLASS_NAMES):
        raise invalid(
            "CIFAR meta file", path, f"b'label_names' must be a list of {len(CLASS_NAMES)} names"
        )
    return tuple(name.decode() if isinstance(name, bytes) else str(name) for name in names)


def batches_dir(root: str | Path) -> Path | None:
    """The folder holding the batches: ``root`` itself or ``root/cifar-10-batches-py``."""
    folder, missing = _nearest_folder(Path(root))
    return None if missing else folder


def _nearest_folder(root: Path) -> tuple[Path, list[str]]:
    """Of ``root`` and ``root/cifar-10-batches-py``, the one missing fewest batches, and those
    it misses (``root`` on a tie)."""
    needed = (*TRAIN_BATCHES, TEST_BATCH)
    candidates = [(c, [n for n in needed if not (c / n).is_file()]) for c in (root, root / FOLDER)]
    return min(candidates, key=lambda candidate: len(candidate[1]))


def _missing_batches(root: Path) -> DatasetError:
    """Name only the batches that are absent, in the folder that holds the others."""
    folder, missing = _nearest_folder(root)
    if len(missing) == len(TRAIN_BATCHES) + 1:  # none anywhere
        return missing_files("cifar10", root, missing, f" (in it or in {root / FOLDER})")
    return missing_files("cifar10", root, missing, "" if folder == root else f" (in {folder})")


def extract(archive: str | Path, directory: str | Path) -> Path:
    """Copy the batch files out of the official archive into ``directory/cifar-10-batches-py``.

    Only the known member names are read, as regular files, so an archive cannot write
    anywhere else (no path traversal, no links). Each member's declared size is checked
    against ``limits.MAX_PICKLE_BYTES`` before it is copied, in chunks; members are taken
    as the archive is read, so a header declaring gigabytes is refused before its data.
    """
    archive = Path(archive)
    target = Path(directory) / FOLDER
    target.mkdir(parents=True, exist_ok=True)
    wanted = {f"{FOLDER}/{name}": name for name in (*TRAIN_BATCHES, TEST_BATCH, META)}
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.pop(member.name, None)
                if name is None:
                    continue
                source = tar.extractfile(member) if member.isfile() else None
                if source is None:
                    raise invalid("CIFAR archive", archive, f"{member.name} is not a regular file")
                limits.check(
                    "MAX_PICKLE_BYTES",
                    member.size,
                    "CIFAR archive",
                    archive,
                    f"{member.name} declares {member.size} bytes",
                    "not the official archive; delete it and retry",
                )
                partial = target / f".{name}.part"  # a cut-off member leaves no batch behind
                with source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out, limits.CHUNK_BYTES)
                os.replace(partial, target / name)
    except (tarfile.TarError, OSError, EOFError) as error:
        raise invalid(
            "CIFAR archive", archive, f"corrupted or incomplete ({error}); delete it and retry"
        ) from error
    if wanted:
        raise invalid(
            "CIFAR archive",
            archive,
            f"corrupted or incomplete (no {', '.join(wanted)}); delete it and retry",
        )
    return target


def read_cifar10(
    root: str | Path, download: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
    """Train and test images as float32 ``(N, 3, 32, 32)`` in ``[0, 1]`` (``x = pixel / 255``).

    Returns ``(x, y, x_test, y_test, meta)`` with ``meta`` holding the folder, the files read
    and the class names. With ``download=True`` missing batches are fetched (SHA-256
    verified) and extracted into ``root/cifar-10-batches-py``.
    """
    root = Path(root)
    folder = batches_dir(root)
    if folder is None and download:
        (archive,) = fetch_dataset("cifar10", root)
        folder = extract(archive, root)
    if folder is None:
        raise _missing_batches(root)
    train = [read_batch(folder / name) for name in TRAIN_BATCHES]
    x_test, y_test = read_batch(folder / TEST_BATCH)
    x = np.concatenate([images for images, _ in train])
    y = np.concatenate([labels for _, labels in train])
    files = [str(folder / name) for name in (*TRAIN_BATCHES, TEST_BATCH)]
    meta = {"source": str(folder), "files": files, "class_names": read_class_names(folder / META)}
    return _scale(x), y, _scale(x_test), y_test, meta


def _scale(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255)
