"""CIFAR-10 batches: Python-2 style pickles load; tampered or malformed ones are refused."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from trainlab.data import DatasetError, limits, load
from trainlab.data.cifar import (
    CLASS_NAMES,
    FOLDER,
    META,
    TEST_BATCH,
    TRAIN_BATCHES,
    RestrictedUnpickler,
    extract,
    read_batch,
    unpickle,
)

PER_BATCH = 3


class Py2Pickler(pickle._Pickler):
    """Writes every str and bytes as a Python 2 ``str`` (BINSTRING), as the official files do."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_str
    dispatch[bytes] = save_str


def py2_pickle(obj) -> bytes:
    """Protocol 2, Python 2 strings, and numpy 1.x's module name, like the published batches."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def batch(n: int = PER_BATCH, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "batch_label": "synthetic batch",
        "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        "labels": [int(label) for label in rng.integers(0, 10, n)],
        "filenames": [f"img_{i}.png" for i in range(n)],
    }


def write_cifar_dir(folder: Path, meta: bool = True) -> dict[str, dict]:
    """Six tiny batches (and ``batches.meta``) in ``folder``; returns them by file name."""
    folder.mkdir(parents=True, exist_ok=True)
    batches = {name: batch(seed=i) for i, name in enumerate((*TRAIN_BATCHES, TEST_BATCH))}
    for name, content in batches.items():
        (folder / name).write_bytes(py2_pickle(content))
    if meta:
        names = [f"class_{i}" for i in range(10)]
        (folder / META).write_bytes(py2_pickle({"label_names": names, "num_vis": 3072}))
    return batches


def write_cifar_archive(path: Path) -> dict[str, dict]:
    """The layout of cifar-10-python.tar.gz: everything under cifar-10-batches-py/."""
    staging = path.parent / "staging"
    batches = write_cifar_dir(staging / FOLDER)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(staging / FOLDER, arcname=FOLDER)
    return batches


def test_load_reads_python2_batches_as_scaled_nchw(tmp_path):
    batches = write_cifar_dir(tmp_path)
    data = load("cifar10", root=tmp_path)
    assert data.x.shape == (5 * PER_BATCH, 3, 32, 32) and data.x_test.shape == (
        PER_BATCH,
        3,
        32,
        32,
    )
    assert data.feature_shape == (3, 32, 32) and data.classes == 10
    first = batches["data_batch_1"]["data"][0]
    np.testing.assert_allclose(data.x[0].numpy(), first.reshape(3, 32, 32) / 255, rtol=1e-6)
    assert data.y[:PER_BATCH].tolist() == batches["data_batch_1"]["labels"]
    assert data.y_test.tolist() == batches[TEST_BATCH]["labels"]
    assert data.meta["class_names"] == tuple(f"class_{i}" for i in range(10))


def test_root_may_be_the_parent_of_the_batches_folder_and_meta_is_optional(tmp_path):
    write_cifar_dir(tmp_path / FOLDER, meta=False)
    data = load("cifar10", root=tmp_path)
    assert data.sizes == {"train": 5 * PER_BATCH, "test": PER_BATCH}
    assert data.meta["class_names"] == CLASS_NAMES


def test_missing_batches_name_only_the_absent_files_the_folder_and_download(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    (tmp_path / TEST_BATCH).unlink()
    with pytest.raises(DatasetError) as caught:
        load("cifar10", root=tmp_path)
    assert str(caught.value) == (
        f"Invalid root for cifar10: '{tmp_path}' (missing data_batch_3, test_batch; "
        "place the files there, or pass download=True to fetch them)"
    )


def test_missing_batches_in_the_batches_folder_name_that_folder(tmp_path):
    write_cifar_dir(tmp_path / FOLDER)
    (tmp_path / FOLDER / "data_batch_5").unlink()
    with pytest.raises(DatasetError) as caught:
        load("cifar10", root=tmp_path)
    assert str(caught.value) == (
        f"Invalid root for cifar10: '{tmp_path}' (missing data_batch_5 (in {tmp_path / FOLDER}); "
        "place the files there, or pass download=True to fetch them)"
    )


def test_no_batches_anywhere_lists_all_of_them_and_both_folders(tmp_path):
    with pytest.raises(DatasetError) as caught:
        load("cifar10", root=tmp_path)
    listed = ", ".join((*TRAIN_BATCHES, TEST_BATCH))
    assert str(caught.value) == (
        f"Invalid root for cifar10: '{tmp_path}' (missing {listed} (in it or in "
        f"{tmp_path / FOLDER}); place the files there, or pass download=True to fetch them)"
    )


def test_malicious_reduce_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    evil = py2_pickle({"data": Payload(), "labels": [0]})
    pickle.loads(evil)  # the payload is live: an ordinary unpickler runs it
    assert marker.is_dir()
    marker.rmdir()

    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(evil)
    with pytest.raises(DatasetError, match=r"data_batch_2' \(refers to posix\.mkdir, which is not"):
        load("cifar10", root=tmp_path)
    assert not marker.exists()


def test_only_array_globals_are_resolved(tmp_path):
    unpickler = RestrictedUnpickler(io.BytesIO(b""), tmp_path / "x")
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    assert unpickler.find_class("numpy.core.multiarray", "_reconstruct") is unpickler.find_class(
        "numpy._core.multiarray", "_reconstruct"
    )
    for module, name in [("builtins", "eval"), ("numpy", "load"), ("os", "system")]:
        with pytest.raises(DatasetError, match=rf"refers to {module}\.{name}, which is not"):
            unpickler.find_class(module, name)


def _bad(**changes) -> dict:
    content = {key.encode(): value for key, value in batch().items()}
    content.update({key.encode(): value for key, value in changes.items()})
    return content


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], r"holds list, not a dict with b'data' and b'labels'"),
        ({b"data": np.zeros((1, 3072), np.uint8)}, r"holds \[b'data'\], not a dict"),
        (_bad(data=np.zeros((3, 3072), np.float32)), r"b'data' is float32 array \(3, 3072\)"),
        (_bad(data=np.zeros((3, 1024), np.uint8)), r"b'data' is uint8 array \(3, 1024\) \(must"),
        (_bad(data=[[0] * 3072] * 3), r"b'data' is list \(must be a uint8 array"),
        (_bad(labels=[0.0, 1.0, 2.0]), r"b'labels' must be a list of ints"),
        (_bad(labels=[0, 1]), r"3 images but 2 labels"),
        (_bad(labels=[0, 10, 1]), r"label 10 at index 1 is out of range \[0, 10\)"),
        (_bad(labels=[0, -1, 1]), r"label -1 at index 1 is negative"),
    ],
    ids=[
        "not-dict",
        "no-labels",
        "dtype",
        "width",
        "data-list",
        "float-labels",
        "count",
        "high",
        "neg",
    ],
)
def test_wrong_batch_structure_is_refused(tmp_path, content, message):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(DatasetError, match=message):
        read_batch(path)


def test_truncated_batch_is_refused(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch())[:-200])
    with pytest.raises(DatasetError, match=r"data_batch_1' \(corrupted or truncated pickle"):
        unpickle(path)


def test_wrong_meta_is_refused(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / META).write_bytes(py2_pickle({"label_names": ["a", "b"]}))
    with pytest.raises(DatasetError, match=r"Invalid CIFAR meta file: .*list of 10 names"):
        load("cifar10", root=tmp_path)


def test_download_fetches_verifies_and_extracts_the_archive(tmp_path, monkeypatch):
    from trainlab.data import download as download_module

    archive = tmp_path / "served" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    batches = write_cifar_archive(archive)
    remote = download_module.RemoteFile(
        archive.name, archive.as_uri(), download_module.sha256_of(archive)
    )
    monkeypatch.setitem(download_module.REMOTE_FILES, "cifar10", (remote,))
    root = tmp_path / "root"
    data = load("cifar10", root=root, download=True)
    assert (root / FOLDER / TEST_BATCH).is_file()
    assert data.y_test.tolist() == batches[TEST_BATCH]["labels"]


def test_archive_without_a_batch_is_refused(tmp_path, monkeypatch):
    from trainlab.data import download as download_module

    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
        tar.addfile(info, io.BytesIO(b""))
    remote = download_module.RemoteFile(
        archive.name, archive.as_uri(), download_module.sha256_of(archive)
    )
    monkeypatch.setitem(download_module.REMOTE_FILES, "cifar10", (remote,))
    with pytest.raises(DatasetError, match=r"Invalid CIFAR archive: .*corrupted or incomplete"):
        load("cifar10", root=tmp_path / "root", download=True)


@pytest.mark.parametrize(
    "kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE], ids=["symlink", "hardlink", "dir"]
)
def test_archive_member_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    archive = tmp_path / "cifar-10-python.tar.gz"
    outside = tmp_path / "outside"
    with tarfile.open(archive, "w:gz") as tar:
        for name in (*TRAIN_BATCHES, TEST_BATCH, META):
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            if name == "data_batch_2":
                info.type, info.linkname = kind, str(outside)
                tar.addfile(info)
            else:
                content = py2_pickle(batch())
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    with pytest.raises(
        DatasetError,
        match=r"Invalid CIFAR archive: '.*' \(cifar-10-batches-py/data_batch_2 is not a regular",
    ):
        extract(archive, tmp_path / "root")
    assert not outside.exists()
    assert not (tmp_path / "root" / FOLDER / "data_batch_2").exists()


# --- limits: a batch or archive member is size-checked before it is read ---------------------


def test_batch_over_the_size_limit_is_refused_before_unpickling(tmp_path):
    write_cifar_dir(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as file:
        file.truncate((64 << 20) + 1)  # sparse: costs no disk and no time
    with pytest.raises(
        DatasetError,
        match=r"Invalid CIFAR batch: '.*data_batch_1' \(67108865 bytes, over the limit "
        r"trainlab\.data\.limits\.MAX_PICKLE_BYTES = 67108864; not a CIFAR-10 batch",
    ):
        load("cifar10", root=tmp_path)


def test_batch_over_a_lowered_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch()))
    size = path.stat().st_size
    monkeypatch.setattr(limits, "MAX_PICKLE_BYTES", size - 1)
    with pytest.raises(DatasetError, match=rf"\({size} bytes, over the limit .*= {size - 1};"):
        read_batch(path)
    monkeypatch.setattr(limits, "MAX_PICKLE_BYTES", size)
    assert read_batch(path)[0].shape == (PER_BATCH, 3, 32, 32)


def test_pickle_declaring_a_huge_bytes_object_is_a_dataset_error(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 1 << 62) + b"\x00" * 16)  # BINBYTES8
    with pytest.raises(
        DatasetError,
        match=r"data_batch_1' \(out of memory while reading it \(what it declares is within the "
        r"limit trainlab\.data\.limits\.MAX_PICKLE_BYTES = 67108864\)",
    ):
        unpickle(path)


def test_archive_member_declaring_more_than_the_limit_is_refused_before_reading(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    info = tarfile.TarInfo(f"{FOLDER}/data_batch_1")
    info.size = 1 << 32  # a header claiming 4 GiB, with no data behind it
    archive.write_bytes(gzip.compress(info.tobuf(tarfile.USTAR_FORMAT)))
    with pytest.raises(
        DatasetError,
        match=r"Invalid CIFAR archive: '.*' \(cifar-10-batches-py/data_batch_1 declares 4294967296 "
        r"bytes, over the limit trainlab\.data\.limits\.MAX_PICKLE_BYTES = 67108864;",
    ):
        extract(archive, tmp_path / "root")
    assert not (tmp_path / "root" / FOLDER / "data_batch_1").exists()


def test_archive_member_over_a_lowered_limit_is_refused(tmp_path, monkeypatch):
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_archive(archive)
    size = len(py2_pickle(batch(seed=0)))
    monkeypatch.setattr(limits, "MAX_PICKLE_BYTES", size - 1)
    with pytest.raises(DatasetError, match=rf"data_batch_\d declares {size} bytes, over the limit"):
        extract(archive, tmp_path / "root")
    monkeypatch.setattr(limits, "MAX_PICKLE_BYTES", size)
    assert (extract(archive, tmp_path / "root") / TEST_BATCH).read_bytes() == py2_pickle(
        batch(seed=5)
    )
