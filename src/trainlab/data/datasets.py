"""The datasets of the lectures behind one call: ``load(name, **options) -> Dataset``.

``DATASETS`` is the one table of them; it drives ``load``, the tests, the CLI and the docs.
Every loader validates what it reads and raises ``DatasetError`` naming the file and the
problem. Nothing is downloaded unless the caller passes ``download=True``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import inspect
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import cifar
from ._dataset import Dataset, _to_dataset
from ._errors import DatasetError, invalid, missing_files
from .download import fetch_dataset
from .idx import read_idx_pair
from .user_files import _load_csv, _load_npz, read_npz

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DIGIT_NAMES = tuple(str(digit) for digit in range(10))
FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


# --- mnist1d: generated offline, cached as .npz ----------------------------------------------


def default_cache_dir() -> Path:
    """``$TRAINLAB_CACHE`` when set, else ``~/.cache/trainlab``."""
    return Path(os.environ.get("TRAINLAB_CACHE") or Path.home() / ".cache" / "trainlab")


def mnist1d_cache_key(args: dict[str, Any]) -> str:
    """First 16 hex digits of SHA-256 over the generator arguments and the package version.

    The seed is part of the arguments; the download URL is not (it does not change the data).
    """
    used = {key: value for key, value in args.items() if key != "url"}
    used["mnist1d_version"] = importlib.metadata.version("mnist1d")
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


def _generate_mnist1d(args: dict[str, Any]) -> dict[str, np.ndarray]:
    """Run the mnist1d generator, leaving numpy's and Python's global RNG as they were."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    # make_dataset seeds the global generators; restore them so loading has no side effect.
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    return {key: np.asarray(data[key]) for key in ("x", "y", "x_test", "y_test")}


def _read_mnist1d_cache(path: Path, args: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when absent, unreadable or not what ``args`` generate.

    The cache is derived data, so a damaged one is regenerated rather than reported.
    """
    try:  # within limits.MAX_ARRAY_BYTES, as the user's own .npz files
        stored = read_npz(path)
        arrays = {key: stored[key] for key in ("x", "y", "x_test", "y_test")}
    except (DatasetError, KeyError):
        return None
    total = args["num_samples"] // 10 * 10  # the generator makes num_samples // 10 per class
    train = int(total * args["train_split"])
    features = args["final_seq_length"]
    shapes = {"x": (train, features), "y": (train,), "x_test": (total - train, features)}
    shapes["y_test"] = (total - train,)
    for key, shape in shapes.items():
        if arrays[key].shape != shape:
            return None
    labels = np.concatenate([arrays["y"], arrays["y_test"]])
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 9:
        return None
    if not (np.isfinite(arrays["x"]).all() and np.isfinite(arrays["x_test"]).all()):
        return None
    return arrays


def _write_mnist1d_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as file:
            np.savez(file, **arrays)
        os.replace(partial, path)  # atomic: a reader never sees half a file
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise invalid(
            "cache_dir",
            path.parent,
            f"cannot write the cache ({error.strerror or error}); pass cache_dir= a writable "
            "directory or set TRAINLAB_CACHE",
        ) from error


def _load_mnist1d(*, seed: int = 42, cache_dir: str | Path | None = None) -> Dataset:
    from mnist1d.data import get_dataset_args

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise invalid("seed", seed, "must be an integer in [0, 2**32)")
    args = get_dataset_args(as_dict=True)
    args["seed"] = seed
    path = Path(cache_dir or default_cache_dir()) / f"mnist1d-{mnist1d_cache_key(args)}.npz"
    arrays = _read_mnist1d_cache(path, args)
    cached = arrays is not None
    if arrays is None:
        arrays = _generate_mnist1d(args)
        _write_mnist1d_cache(path, arrays)
    meta = {
        "source": f"mnist1d generator (seed {seed})",
        "files": [str(path)],
        "cached": cached,
        "class_names": DIGIT_NAMES,
    }
    return _to_dataset(
        "mnist1d", arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], 10, meta
    )


# --- digits: bundled with scikit-learn ----------------------------------------------------


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images[:, None].astype(np.float32) / np.float32(16)  # pixels are 0..16
    meta = {"source": "sklearn.datasets.load_digits", "files": [], "class_names": DIGIT_NAMES}
    return _to_dataset("digits", x, bunch.target, None, None, 10, meta)


# --- mnist, fashion-mnist: IDX files in a directory ---------------------------------------


def _find_idx_files(root: Path) -> dict[str, Path | None]:
    """Each expected file, raw or ``.gz`` (raw preferred), or None when neither exists."""
    found: dict[str, Path | None] = {}
    for name in MNIST_FILES:
        candidates = [root / name, root / f"{name}.gz"]
        found[name] = next((path for path in candidates if path.is_file()), None)
    return found


def _load_idx_dataset(name: str, root: str | Path, download: bool, class_names: tuple) -> Dataset:
    _check_download(download)
    root = Path(root)
    files = _find_idx_files(root)
    if download and None in files.values():
        fetch_dataset(name, root)
        files = _find_idx_files(root)
    missing = [f"{file}[.gz]" for file, path in files.items() if path is None]
    if missing:
        raise missing_files(name, root, missing)
    train_images, train_labels, test_images, test_labels = files.values()
    x, y = read_idx_pair(train_images, train_labels)
    x_test, y_test = read_idx_pair(test_images, test_labels)
    meta = {
        "source": str(root),
        "files": [str(path) for path in files.values()],
        "class_names": class_names,
    }
    return _to_dataset(name, x, y, x_test, y_test, 10, meta)


def _load_mnist(*, root: str | Path, download: bool = False) -> Dataset:
    return _load_idx_dataset("mnist", root, download, DIGIT_NAMES)


def _load_fashion_mnist(*, root: str | Path, download: bool = False) -> Dataset:
    return _load_idx_dataset("fashion-mnist", root, download, FASHION_NAMES)


def _load_cifar10(*, root: str | Path, download: bool = False) -> Dataset:
    _check_download(download)
    x, y, x_test, y_test, meta = cifar.read_cifar10(root, download)
    return _to_dataset("cifar10", x, y, x_test, y_test, 10, meta)


def _check_download(download: bool) -> None:
    if not isinstance(download, bool):
        raise invalid("download", download, "must be True or False")


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """What trainlab knows about one dataset.

    Attributes:
        name: registry key (also the CLI name).
        description: one line for the docs and ``trainlab datasets``.
        loader: keyword-only function returning a ``Dataset``; its keywords are the options.
    """

    name: str
    description: str
    loader: Callable[..., Dataset]

    @property
    def options(self) -> dict[str, Any]:
        """Option name -> default (``inspect.Parameter.empty`` for required options)."""
        parameters = inspect.signature(self.loader).parameters.values()
        return {parameter.name: parameter.default for parameter in parameters}

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(
            name for name, default in self.options.items() if default is inspect.Parameter.empty
        )


_SPECS = (
    DatasetSpec(
        "mnist1d", "MNIST-1D: 4,000 + 1,000 signals of 40 points (generated)", _load_mnist1d
    ),
    DatasetSpec("digits", "scikit-learn's 1,797 8×8 handwritten digits (bundled)", _load_digits),
    DatasetSpec("mnist", "MNIST: 60,000 + 10,000 28×28 digits, IDX files in root", _load_mnist),
    DatasetSpec(
        "fashion-mnist",
        "Fashion-MNIST: 60,000 + 10,000 28×28 clothing images, IDX files in root",
        _load_fashion_mnist,
    ),
    DatasetSpec(
        "cifar10",
        "CIFAR-10: 50,000 + 10,000 32×32 colour images, python batches in root",
        _load_cifar10,
    ),
    DatasetSpec("npz", "your .npz file: arrays x, y and optionally x_test, y_test", _load_npz),
    DatasetSpec("csv", "your CSV file: a header, a label column, numeric features", _load_csv),
)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}
"""The registry of datasets: name → its spec (name, one-line description, loader).

`load` looks names up here, and the loader's keywords are the dataset's options; the
config's ``data.name``, ``trainlab datasets``, the tests and the docs read the same table.
"""


def load(name: str, **options: Any) -> Dataset:
    """Load dataset ``name`` (a key of ``DATASETS``) with its options, e.g. ``root=`` or ``path=``.

    Raises:
        DatasetError: unknown name or option, a missing required option, or a missing,
            truncated or corrupted file (the message names the file and the problem).
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise invalid("dataset name", name, f"must be one of {', '.join(DATASETS)}")
    allowed = spec.options
    for option in options:
        if option not in allowed:
            listed = ", ".join(allowed) or "none"
            raise invalid(f"option for {name}", option, f"allowed options: {listed}")
    missing = [option for option in spec.required if option not in options]
    if missing:
        example = ", ".join(f"{option}=..." for option in missing)
        raise invalid(
            f"options for {name}",
            options,
            f"missing required {', '.join(missing)}; call load({name!r}, {example})",
        )
    return spec.loader(**options)


__all__ = ["DATASETS", "Dataset", "DatasetSpec", "load"]
