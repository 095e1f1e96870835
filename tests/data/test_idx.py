"""The IDX reader: round trips for every type code, and one test per kind of damage."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from trainlab.data import DatasetError, limits, read_idx
from trainlab.data.idx import IDX_TYPES, read_idx_images, read_idx_labels, read_idx_pair

CODES = {np.dtype(dtype.str[1:]): code for code, dtype in IDX_TYPES.items()}  # native -> code
MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(values: np.ndarray) -> bytes:
    """The IDX encoding of ``values``: 0x0000, type code, ndim, big-endian dims, big-endian data."""
    code = CODES[values.dtype]
    header = bytes([0, 0, code, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return header + values.astype(IDX_TYPES[code]).tobytes()


def write_idx(path: Path, values: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(values)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def mnist_arrays(train: int = 12, test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, test, dtype=np.uint8),
    }


def write_mnist_dir(root: Path, gz: bool = False, **overrides: np.ndarray) -> dict[str, np.ndarray]:
    """Four tiny IDX files under their standard names; ``overrides`` replace single arrays."""
    root.mkdir(parents=True, exist_ok=True)
    arrays = {**mnist_arrays(), **overrides}
    for key, name in MNIST_NAMES.items():
        write_idx(root / (f"{name}.gz" if gz else name), arrays[key], gz=gz)
    return arrays


@pytest.mark.parametrize("dtype", list(CODES), ids=str)
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_round_trip_every_type_code(tmp_path, dtype, gz):
    values = (np.arange(24) - 7).reshape(2, 3, 4)
    values = values.astype(dtype) if dtype != np.uint8 else (values + 7).astype(dtype)
    read = read_idx(write_idx(tmp_path / "a.idx", values, gz=gz))
    assert read.dtype == dtype and read.dtype.isnative
    np.testing.assert_array_equal(read, values)
    read[0, 0, 0] = 1  # writable copy


def test_gzip_is_recognised_by_content_not_name(tmp_path):
    values = np.arange(6, dtype=np.uint8)
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx_bytes(values)))
    np.testing.assert_array_equal(read_idx(path), values)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:3], r"truncated: 3 bytes, the header alone needs 4"),
        (lambda b: b"\x01\x00" + b[2:], r"bad magic number 0x01000802.*not an IDX file"),
        (lambda b: b[:2] + b"\x0a" + b[3:], r"unknown type code 0x0A \(must be one of 0x08, "),
        (lambda b: b[:3] + b"\x00" + b[4:], r"dimension count is 0"),
        (lambda b: b[:3] + b"\x09" + b[4:], r"truncated header: 9 dimensions need 40 bytes"),
        (lambda b: b[:-1], r"truncated: header declares 3×4 values .* = 12 data bytes, .* has 11"),
        (lambda b: b + b"\x00", r"trailing bytes: .* 12 data bytes, the file has 13"),
    ],
    ids=["short", "magic", "type", "ndim0", "header", "truncated", "trailing"],
)
def test_damaged_header_or_payload_is_refused(tmp_path, damage, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(damage(idx_bytes(np.zeros((3, 4), dtype=np.uint8))))
    with pytest.raises(DatasetError, match=r"Invalid IDX file: '.*bad-idx' \(" + message):
        read_idx(path)


def test_truncated_gzip_is_refused(tmp_path):
    data = gzip.compress(idx_bytes(np.zeros((50, 4), dtype=np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cut\.gz' \(corrupted or truncated gzip data"):
        read_idx(path)


def test_unreadable_path_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"Invalid IDX file: .* \(cannot be read"):
        read_idx(tmp_path / "absent")


def test_images_must_be_ubyte_of_the_image_shape(tmp_path):
    shorts = write_idx(tmp_path / "shorts", np.zeros((2, 28, 28), dtype=np.int16))
    with pytest.raises(DatasetError, match=r"type int16 \(must be ubyte, code 0x08"):
        read_idx_images(shorts)
    small = write_idx(tmp_path / "small", np.zeros((2, 27, 28), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"shape \(2, 27, 28\) is not N×28×28"):
        read_idx_images(small)


def test_labels_must_be_one_dimensional_and_in_range(tmp_path):
    matrix = write_idx(tmp_path / "matrix", np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"2 dimensions \(must be 1\)"):
        read_idx_labels(matrix)
    high = write_idx(tmp_path / "high", np.array([1, 2, 10, 3], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"label 10 at index 2 is out of range \[0, 10\)"):
        read_idx_labels(high)


def test_pair_scales_to_unit_interval_and_checks_counts(tmp_path):
    images = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    labels = np.array([3, 7], dtype=np.uint8)
    x, y = read_idx_pair(write_idx(tmp_path / "i", images), write_idx(tmp_path / "l", labels))
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    assert x[0].max() == 0.0 and x[1].min() == 1.0
    assert y.dtype == np.int64 and y.tolist() == [3, 7]
    write_idx(tmp_path / "l3", np.array([3, 7, 1], dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"Invalid IDX pair: 'i \+ l3' \(2 images but 3 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l3")


# --- limits: the declared size is checked first, a gzip stream is read no further than it ----


def idx_header(code: int, shape: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_header_declaring_more_than_the_default_limit_is_refused_before_reading(tmp_path, gz):
    # The security review's bomb: a few MB of gzip whose header declares 3 GiB of pixels.
    data = idx_header(0x08, (3072, 1024, 1024)) + bytes(1000)
    path = tmp_path / "huge"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(
        DatasetError,
        match=r"Invalid IDX file: '.*huge' \(header declares 3072×1024×1024 values of 1 byte\(s\) "
        r"= 3221225472 data bytes, over the limit trainlab\.data\.limits\.MAX_ARRAY_BYTES = "
        r"2147483648; raise the limit if the file is genuine, else re-download the file\)",
    ):
        read_idx(path)


def test_gzip_bomb_is_refused_after_reading_little_past_the_declared_size(tmp_path):
    # 4 declared bytes, then 64 MiB of zeros as 64 gzip members (a 70 KB file).
    member = gzip.compress(bytes(1 << 20), mtime=0)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (4,)) + bytes(4), mtime=0) + member * 64)
    tracemalloc.start()
    try:
        with pytest.raises(
            DatasetError,
            match=r"bomb\.gz' \(trailing bytes: header declares 4 values of 1 byte\(s\) = 4 data "
            r"bytes, the file has at least 65540; re-download the file\)",
        ):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20  # reading it whole would take 64 MiB


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (bytes(11), r"truncated: header declares 3×4 values .* = 12 data bytes, the file has 11;"),
        (bytes(13), r"trailing bytes: header declares 3×4 .* = 12 data bytes, the file has 13;"),
    ],
    ids=["short", "long"],
)
def test_gzip_payload_must_be_exactly_the_declared_size(tmp_path, payload, message):
    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, (3, 4)) + payload))
    with pytest.raises(DatasetError, match=r"a\.gz' \(" + message):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_a_changed_limit_applies_at_the_next_read(tmp_path, monkeypatch, gz):
    path = write_idx(tmp_path / "a", np.ones((3, 4), dtype=np.int16), gz=gz)
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 23)
    with pytest.raises(DatasetError, match=r"= 24 data bytes, over the limit .*BYTES = 23;"):
        read_idx(path)
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 24)
    np.testing.assert_array_equal(read_idx(path), np.ones((3, 4), dtype=np.int16))


def test_running_out_of_memory_names_the_file_and_the_limit(tmp_path, monkeypatch):
    path = write_idx(tmp_path / "a", np.zeros((3, 4), dtype=np.uint8))
    monkeypatch.setattr(np, "empty", _no_memory)
    with pytest.raises(
        DatasetError,
        match=r"Invalid IDX file: '.*a' \(out of memory while reading it \(what it declares is "
        r"within the limit trainlab\.data\.limits\.MAX_ARRAY_BYTES = 2147483648\); free memory",
    ):
        read_idx(path)


def _no_memory(*args, **kwargs):
    raise MemoryError
