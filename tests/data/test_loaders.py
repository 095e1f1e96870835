"""load(): the registry, every loader's output contract, and one test per kind of bad input."""

from __future__ import annotations

import codecs
import io
import locale
import random
import zipfile

import numpy as np
import pytest
import torch

from trainlab.data import DATASETS, Dataset, DatasetError, limits, load, user_files
from trainlab.data import datasets as datasets_module
from trainlab.data.user_files import read_npz

from .test_cifar import write_cifar_dir
from .test_idx import MNIST_NAMES, write_mnist_dir


@pytest.fixture(scope="module")
def mnist1d_cache(tmp_path_factory):
    """Generate MNIST-1D once for the module (about 2 s) into a private cache directory."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mnist1d(mnist1d_cache):
    numpy_state, python_state = np.random.get_state(), random.getstate()
    data = load("mnist1d", cache_dir=mnist1d_cache)
    after = np.random.get_state(), random.getstate()
    return data, (numpy_state, python_state), after


def _write_npz(tmp_path, **arrays):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def _write_csv(path, text):
    path.write_text(text)
    return path


# How the generic tests load each registered dataset from tiny synthetic files.
OPTIONS = {
    "mnist1d": lambda tmp, cache: {"cache_dir": cache},
    "digits": lambda tmp, cache: {},
    "mnist": lambda tmp, cache: {"root": tmp, "_setup": write_mnist_dir(tmp)},
    "fashion-mnist": lambda tmp, cache: {"root": tmp, "_setup": write_mnist_dir(tmp, gz=True)},
    "cifar10": lambda tmp, cache: {"root": tmp, "_setup": write_cifar_dir(tmp)},
    "npz": lambda tmp, cache: {
        "path": _write_npz(tmp, x=np.ones((4, 2, 3)), y=np.array([0, 2, 1, 2])),
    },
    "csv": lambda tmp, cache: {
        "path": _write_csv(tmp / "a.csv", "f1,label,f2\n0.5,1,2\n1.5,0,-3\n"),
        "label": "label",
    },
}


def test_every_registered_dataset_has_synthetic_options_here():
    assert set(OPTIONS) == set(DATASETS)


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_loader_keeps_the_dataset_contract(tmp_path, mnist1d, mnist1d_cache, name):
    # mnist1d (the fixture) generates first, so the mnist1d case here reads the cache.
    options = OPTIONS[name](tmp_path, mnist1d_cache)
    options.pop("_setup", None)
    data = load(name, **options)
    assert isinstance(data, Dataset) and data.name == name
    splits = [(data.x, data.y)] + ([] if data.x_test is None else [(data.x_test, data.y_test)])
    assert (data.x_test is None) == (data.y_test is None)
    for x, y in splits:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == data.feature_shape and y.shape == (len(x),)
        assert torch.isfinite(x).all()
        assert int(y.min()) >= 0 and int(y.max()) < data.classes
    assert data.sizes == {"train": len(data.y), "test": len(splits[1][1]) if len(splits) > 1 else 0}
    assert isinstance(data.meta, dict) and "source" in data.meta


def test_every_spec_describes_itself():
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.description and callable(spec.loader)


def test_unknown_name_lists_the_names():
    with pytest.raises(
        DatasetError, match=r"Invalid dataset name: 'mnist2d' \(must be one of mnist1d, digits, "
    ):
        load("mnist2d")


def test_unknown_option_lists_the_options(tmp_path):
    with pytest.raises(
        DatasetError,
        match=r"Invalid option for mnist1d: 'sed' \(allowed options: seed, cache_dir\)",
    ):
        load("mnist1d", sed=1, cache_dir=tmp_path)
    with pytest.raises(DatasetError, match=r"'root' \(allowed options: none\)"):
        load("digits", root=tmp_path)


def test_missing_required_option_says_how_to_call(tmp_path):
    with pytest.raises(
        DatasetError, match=r"Invalid options for csv: .*missing required label; call load\('csv', "
    ):
        load("csv", path=tmp_path / "a.csv")


# --- mnist1d ----------------------------------------------------------------------------------


def test_mnist1d_has_the_default_split(mnist1d):
    data, _, _ = mnist1d
    assert data.x.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.feature_shape == (40,) and data.classes == 10
    assert sorted(data.y.unique().tolist()) == list(range(10))
    assert data.meta["cached"] is False


def test_mnist1d_leaves_the_global_random_state_alone(mnist1d):
    _, (numpy_before, python_before), (numpy_after, python_after) = mnist1d
    assert python_before == python_after
    for before, after in zip(numpy_before, numpy_after):
        np.testing.assert_array_equal(before, after)


def test_mnist1d_second_load_comes_from_the_cache(mnist1d, mnist1d_cache, monkeypatch):
    first, _, _ = mnist1d
    monkeypatch.setattr(datasets_module, "_generate_mnist1d", _must_not_generate)
    second = load("mnist1d", cache_dir=mnist1d_cache)
    assert second.meta["cached"] is True
    for a, b in [(first.x, second.x), (first.y, second.y), (first.x_test, second.x_test)]:
        assert torch.equal(a, b)


def test_mnist1d_cache_is_keyed_by_the_generator_arguments():
    args = {"num_samples": 5000, "seed": 42, "url": "https://a"}
    key = datasets_module.mnist1d_cache_key
    assert key(args) == key({**args, "url": "https://b"})  # the URL does not change the data
    assert key(args) != key({**args, "seed": 43})
    assert key(args) != key({**args, "num_samples": 500})


def test_mnist1d_damaged_cache_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "_generate_mnist1d", _fake_mnist1d)
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path))
    load("mnist1d", seed=7)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    cache.write_bytes(cache.read_bytes()[:100])
    data = load("mnist1d", seed=7)
    assert data.meta["cached"] is False and data.x.shape == (4000, 40)
    assert load("mnist1d", seed=7).meta["cached"] is True


def _shorter_x(arrays):
    arrays["x"] = arrays["x"][:, :39]


def _label_ten(arrays):
    arrays["y"][3] = 10


def _negative_label(arrays):
    arrays["y_test"][0] = -1


def _float_labels(arrays):
    arrays["y"] = arrays["y"].astype(np.float64)


def _nan_feature(arrays):
    arrays["x_test"][5, 7] = np.nan


@pytest.mark.parametrize(
    "damage", [_shorter_x, _label_ten, _negative_label, _float_labels, _nan_feature]
)
def test_mnist1d_cache_with_wrong_arrays_is_regenerated(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(datasets_module, "_generate_mnist1d", _fake_mnist1d)
    load("mnist1d", seed=7, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    with np.load(cache) as archive:
        arrays = dict(archive)
    damage(arrays)
    np.savez(cache, **arrays)
    data = load("mnist1d", seed=7, cache_dir=tmp_path)
    assert data.meta["cached"] is False and data.x.shape == (4000, 40)
    assert torch.isfinite(data.x_test).all() and int(data.y.max()) == 9
    assert load("mnist1d", seed=7, cache_dir=tmp_path).meta["cached"] is True


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_mnist1d_seed_must_be_a_valid_integer(tmp_path, seed):
    with pytest.raises(
        DatasetError, match=r"Invalid seed: .* \(must be an integer in \[0, 2\*\*32\)"
    ):
        load("mnist1d", seed=seed, cache_dir=tmp_path)


def _must_not_generate(args):
    raise AssertionError("the cached arrays should have been used")


def _fake_mnist1d(args):
    y = np.arange(5000) % 10
    return {
        "x": np.zeros((4000, 40)),
        "y": y[:4000],
        "x_test": np.zeros((1000, 40)),
        "y_test": y[4000:],
    }


# --- digits -----------------------------------------------------------------------------------


def test_digits_are_1797_unit_scaled_images_without_test_split():
    data = load("digits")
    assert data.x.shape == (1797, 1, 8, 8) and data.feature_shape == (1, 8, 8)
    assert float(data.x.min()) == 0.0 and float(data.x.max()) == 1.0
    assert data.x_test is None and data.sizes == {"train": 1797, "test": 0}


# --- mnist, fashion-mnist ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_mnist_reads_the_four_idx_files(tmp_path, gz):
    arrays = write_mnist_dir(tmp_path, gz=gz)
    data = load("mnist", root=str(tmp_path))
    assert data.x.shape == (12, 1, 28, 28) and data.x_test.shape == (5, 1, 28, 28)
    expected = arrays["train_images"][:, None] / 255
    np.testing.assert_allclose(data.x.numpy(), expected, rtol=1e-6)
    assert data.y_test.tolist() == arrays["test_labels"].tolist()
    assert data.meta["class_names"][0] == "0"


def test_fashion_mnist_knows_its_class_names(tmp_path):
    write_mnist_dir(tmp_path)
    assert load("fashion-mnist", root=tmp_path).meta["class_names"][-1] == "Ankle boot"


def test_missing_idx_file_lists_names_directory_and_download(tmp_path):
    write_mnist_dir(tmp_path)
    (tmp_path / MNIST_NAMES["test_labels"]).unlink()
    with pytest.raises(
        DatasetError,
        match=rf"Invalid root for mnist: '{tmp_path}' \(missing t10k-labels-idx1-ubyte\[\.gz\]; "
        r"place the files there, or pass download=True to fetch them\)",
    ):
        load("mnist", root=tmp_path)


def test_idx_count_mismatch_is_refused_by_the_loader(tmp_path):
    write_mnist_dir(tmp_path, test_labels=np.zeros(4, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"Invalid IDX pair: .*5 images but 4 labels"):
        load("mnist", root=tmp_path)


def test_idx_label_out_of_range_is_refused_by_the_loader(tmp_path):
    write_mnist_dir(tmp_path, train_labels=np.full(12, 10, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte' \(label 10 at index 0"):
        load("mnist", root=tmp_path)


def test_download_option_must_be_a_bool(tmp_path):
    with pytest.raises(DatasetError, match=r"Invalid download: 'yes' \(must be True or False\)"):
        load("mnist", root=tmp_path, download="yes")


# --- npz --------------------------------------------------------------------------------------


def test_npz_with_test_split_counts_classes_over_both(tmp_path):
    path = _write_npz(
        tmp_path,
        x=np.ones((3, 5), np.float64),
        y=np.array([0, 1, 1], np.int32),
        x_test=np.zeros((2, 5)),
        y_test=np.array([4, 0]),
    )
    data = load("npz", path=path)
    assert (
        data.classes == 5 and data.feature_shape == (5,) and data.sizes == {"train": 3, "test": 2}
    )
    assert load("npz", path=path, classes=7).classes == 7


X, Y = np.ones((2, 3)), np.array([0, 1])


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": X}, r"holds \['x'\] \(must hold 'x' and 'y'\)"),
        (
            {"x": np.ones((2, 3)), "y": np.array([0.0, 1.0])},
            r"'y' has dtype float64 \(labels must be",
        ),
        (
            {"x": np.ones((2, 3)), "y": np.zeros((2, 1), int)},
            r"'y' has shape \(2, 1\) \(must be \(2,\)",
        ),
        (
            {"x": np.ones((2, 3)), "y": np.array([0, 1, 2])},
            r"'y' has shape \(3,\) \(must be \(2,\)",
        ),
        (
            {"x": np.ones(2), "y": np.array([0, 1])},
            r"'x' has shape \(2,\) \(must be \(N, \*features\)",
        ),
        (
            {"x": np.array([["a"], ["b"]]), "y": np.array([0, 1])},
            r"'x' has dtype <U1 \(must be real",
        ),
        ({"x": np.ones((2, 3)), "y": np.array([0, -1])}, r"label -1 at index 1 is negative"),
        (
            {"x": np.array([[np.nan, 1], [np.inf, -np.inf]]), "y": Y},
            r"Invalid features: '.*data\.npz' \(3 NaN/Inf values in 'x'; clean or drop",
        ),
        (
            {"x": X, "y": Y, "x_test": np.ones((1, 3))},
            r"holds only one of 'x_test', 'y_test'",
        ),
        (
            {"x": X, "y": Y, "x_test": np.ones((1, 4)), "y_test": [0]},
            r"'x_test' examples are \(4,\), 'x' are \(3,\)",
        ),
        (
            {"x": np.ones((0, 3)), "y": np.zeros(0, int)},
            r"Invalid npz file: '.*data\.npz' \('x' has shape \(0, 3\), no examples; "
            r"save at least one example\)",
        ),
        (
            {"x": X, "y": Y, "x_test": np.ones((0, 3)), "y_test": np.zeros(0, int)},
            r"'x_test' has shape \(0, 3\), no examples; save at least one example, or leave",
        ),
    ],
    ids=[
        "no-y",
        "float-y",
        "2d-y",
        "length",
        "1d-x",
        "text-x",
        "negative",
        "nan",
        "half-test",
        "shape",
        "no-rows",
        "no-test-rows",
    ],
)
def test_bad_npz_is_refused(tmp_path, arrays, message):
    path = _write_npz(tmp_path, **arrays)
    with pytest.raises(DatasetError, match=message):
        load("npz", path=path)


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    path = _write_npz(tmp_path, x=np.array([[1], [2]], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DatasetError, match=r"data\.npz' \(not plain arrays \('x' holds Python obj"):
        load("npz", path=path)


def test_single_npy_array_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones(3))
    with pytest.raises(DatasetError, match=r"x\.npy' \(holds one \.npy array; save x and y with"):
        load("npz", path=path)


def test_corrupted_npz_is_refused(tmp_path):
    path = _write_npz(tmp_path, x=np.ones((2, 3)), y=np.array([0, 1]))
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DatasetError, match=r"data\.npz' \(corrupted or not an \.npz archive"):
        load("npz", path=path)


def test_npz_classes_option_must_cover_the_labels(tmp_path):
    path = _write_npz(tmp_path, x=np.ones((2, 3)), y=np.array([0, 3]))
    with pytest.raises(DatasetError, match=r"Invalid classes: 3 \(must be an integer >= 4"):
        load("npz", path=path, classes=3)


def test_missing_user_file_is_refused(tmp_path):
    with pytest.raises(DatasetError, match=r"Invalid npz path: '.*nope\.npz' \(no such file"):
        load("npz", path=tmp_path / "nope.npz")


# --- csv --------------------------------------------------------------------------------------


def test_csv_reads_features_labels_and_a_test_file(tmp_path):
    train = _write_csv(tmp_path / "train.csv", "a, y ,b\n1,0,2\n3,2,4.5\n")
    test = _write_csv(tmp_path / "test.csv", "a,y,b\n5,1,6\n")
    data = load("csv", path=train, label="y", test_path=test)
    assert data.x.tolist() == [[1.0, 2.0], [3.0, 4.5]] and data.y.tolist() == [0, 2]
    assert data.x_test.tolist() == [[5.0, 6.0]] and data.classes == 3
    assert data.meta["columns"] == ["a", "b"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a,y\n1,0\nx,1\n",
            r"Invalid CSV cell: 'x' \(.*train\.csv row 3, column 'a': features must",
        ),
        ("a,y\n1,0\n,1\n", r"Invalid CSV cell: '' \(.*row 3, column 'a'"),
        ("a,b\n1,0\n", r"Invalid label column: 'y' \(not in .*; its columns are a, b\)"),
        (
            "a,y\n1,0\n2,1.5\n",
            r"Invalid label: '1.5' \(.*row 3, column 'y': labels must be integers",
        ),
        ("a,y\n1,cat\n", r"Invalid label: 'cat'"),
        ("a,y\n1,-1\n", r"Invalid label: '-1' \(.*row 2, column 'y': labels must be integers >= 0"),
        ("a,y\n1,inf\n", r"Invalid label: 'inf' \(.*row 2, column 'y': labels must be integers"),
        ("1,0\n2,1\n", r"first row \['1', '0'\] is all numbers \(a header row .* is required\)"),
        ("", r"empty \(a header row naming the columns is required\)"),
        ("a,y\n", r"has a header but no data rows"),
        ("a,y\n\n\n", r"train\.csv' \(has a header but no data rows; add at least one row\)"),
        ("a,y\n1,0\n2\n", r"row 3 has 1 cells, the header 2"),
        ("a,y\nnan,0\ninf,1\n", r"Invalid features: '.*train\.csv' \(2 NaN/Inf values"),
    ],
    ids=[
        *("text", "empty-cell", "no-label", "float-label", "word-label", "negative-label"),
        *("inf-label", "no-header", "empty"),
        *("no-rows", "blank-rows", "ragged", "nan"),
    ],
)
def test_bad_csv_is_refused(tmp_path, text, message):
    path = _write_csv(tmp_path / "train.csv", text)
    with pytest.raises(DatasetError, match=message):
        load("csv", path=path, label="y")


def test_csv_skips_blank_lines(tmp_path):
    path = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n\n2,1\n\n")
    assert load("csv", path=path, label="y").y.tolist() == [0, 1]


def test_dataset_repr_is_a_summary(tmp_path):
    path = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n2,1\n")
    assert repr(load("csv", path=path, label="y")) == (
        "Dataset(name='csv', sizes={'train': 2, 'test': 0}, feature_shape=(1,), classes=2)"
    )


def test_csv_test_file_needs_the_same_columns(tmp_path):
    train = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n")
    test = _write_csv(tmp_path / "test.csv", "y,a\n0,1\n")
    with pytest.raises(DatasetError, match=r"test\.csv' \(columns \['y', 'a'\] differ from"):
        load("csv", path=train, label="y", test_path=test)


def test_csv_test_file_without_rows_is_refused(tmp_path):
    train = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n")
    test = _write_csv(tmp_path / "test.csv", "a,y\n\n")
    with pytest.raises(DatasetError, match=r"test\.csv' \(has a header but no data rows"):
        load("csv", path=train, label="y", test_path=test)


def test_csv_classes_option_must_cover_the_labels_of_both_files(tmp_path):
    train = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n2,1\n")
    test = _write_csv(tmp_path / "test.csv", "a,y\n3,4\n")
    with pytest.raises(DatasetError, match=r"Invalid classes: 4 \(must be an integer >= 5, the"):
        load("csv", path=train, label="y", test_path=test, classes=4)
    assert load("csv", path=train, label="y", test_path=test, classes=5).classes == 5


NEEDS_UTF8_LOCALE = pytest.mark.skipif(
    codecs.lookup(locale.getpreferredencoding(False)).name != "utf-8",
    reason="invalid UTF-8 is only unreadable where files are opened as UTF-8",
)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"a,y\n\xff\xfe,0\n", marks=NEEDS_UTF8_LOCALE),
        b"a,y\n" + b"1" * 200_000 + b",0\n",  # over csv.field_size_limit()
    ],
    ids=["not-utf8", "oversized-field"],
)
def test_csv_that_is_not_csv_text_is_refused(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=r"train\.csv' \(cannot be read as CSV text \("):
        load("csv", path=path, label="y")


# --- limits: sizes are checked before allocating, labels before they size the head ------------


def _npz_with_member(tmp_path, header: dict, data: bytes):
    """An archive whose 'x.npy' has the given .npy header and data (and a valid 'y.npy')."""
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member.getvalue() + data)
        labels = io.BytesIO()
        np.save(labels, np.array([0, 1]))
        archive.writestr("y.npy", labels.getvalue())
    return path


def test_npz_member_declaring_more_than_the_limit_is_refused_before_reading(tmp_path):
    # np.load would allocate the 800 GB its header declares (a MemoryError).
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**11,)}
    path = _npz_with_member(tmp_path, header, bytes(16))
    with pytest.raises(
        DatasetError,
        match=r"Invalid npz file: '.*data\.npz' \(member 'x\.npy' declares shape \(100000000000,\) "
        r"of float64 = 800000000000 data bytes, over the limit trainlab\.data\.limits\."
        r"MAX_ARRAY_BYTES = 2147483648; raise the limit if the file is genuine",
    ):
        load("npz", path=path)


def test_npz_header_must_agree_with_the_zip_directory(tmp_path):
    header = {"descr": "<f8", "fortran_order": False, "shape": (1000, 2)}
    path = _npz_with_member(tmp_path, header, bytes(16))
    with pytest.raises(
        DatasetError,
        match=r"member 'x\.npy' declares shape \(1000, 2\) of float64 = 16000 data bytes after a "
        r"128-byte header, but the zip directory gives it 144 bytes; the file is corrupted",
    ):
        load("npz", path=path)


def test_npz_arrays_are_limited_together(tmp_path, monkeypatch):
    x, y = np.ones((4, 3)), np.array([0, 1, 1, 0])  # 96 + 32 bytes
    path = _write_npz(tmp_path, x=x, y=y)
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 127)
    with pytest.raises(
        DatasetError, match=r"\(its 2 arrays declare 128 data bytes together, over the limit .*127"
    ):
        load("npz", path=path)
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 128)
    assert load("npz", path=path).x.tolist() == x.tolist()


def test_npz_arrays_read_like_np_load(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x": np.asfortranarray(rng.standard_normal((5, 3, 2))),
        "y": np.array([3, 0, 1, 2, 1], dtype=">i2"),
        "names": np.array(["a", "bc"]),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.float64(2.5),
    }
    path = tmp_path / "data.npz"
    np.savez_compressed(path, **arrays)
    read = read_npz(path)
    with np.load(path) as expected:
        assert sorted(read) == sorted(expected.files)
        for key in expected.files:
            assert read[key].dtype == expected[key].dtype and read[key].shape == expected[key].shape
            np.testing.assert_array_equal(read[key], expected[key])
    assert load("npz", path=path).classes == 4


def test_npz_running_out_of_memory_names_the_file_and_the_limit(tmp_path, monkeypatch):
    path = _write_npz(tmp_path, x=np.ones((2, 3)), y=np.array([0, 1]))
    monkeypatch.setattr(np, "empty", _no_memory)
    with pytest.raises(
        DatasetError,
        match=r"Invalid npz file: '.*data\.npz' \(out of memory while reading it \(what it "
        r"declares is within the limit trainlab\.data\.limits\.MAX_ARRAY_BYTES = 2147483648\)",
    ):
        load("npz", path=path)


def _no_memory(*args, **kwargs):
    raise MemoryError


def test_mnist1d_cache_declaring_a_huge_array_is_regenerated(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_module, "_generate_mnist1d", _fake_mnist1d)
    load("mnist1d", seed=7, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**15, 40)}
    cache.write_bytes(_npz_with_member(tmp_path, header, bytes(16)).read_bytes())
    data = load("mnist1d", seed=7, cache_dir=tmp_path)
    assert data.meta["cached"] is False and data.x.shape == (4000, 40)


REMAP = r"remap the labels to 0\.\.K-1 first, e\.g\. `_, y = np\.unique\(y, return_inverse=True\)`"


@pytest.mark.parametrize(
    ("y", "message"),
    [
        (
            np.array([0, 10**8, 1]),
            r"Invalid labels: '.*data\.npz' \(label 100000000 at index 1 of 'y' makes 100000001 "
            r"classes, over the limit trainlab\.data\.limits\.MAX_CLASSES = 100000; " + REMAP,
        ),
        (
            np.array([2**64 - 1, 0, 1], dtype=np.uint64),
            r"label 18446744073709551615 at index 0 of 'y' makes 18446744073709551616 classes",
        ),
    ],
    ids=["1e8", "uint64-max"],
)
def test_npz_labels_making_too_many_classes_are_refused(tmp_path, y, message):
    path = _write_npz(tmp_path, x=np.ones((3, 2)), y=y)
    with pytest.raises(DatasetError, match=message):
        load("npz", path=path)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        (
            "100000000",
            r"Invalid label: '100000000' \(.*train\.csv row 3, column 'y': label 100000000 makes "
            r"100000001 classes, over the limit trainlab\.data\.limits\.MAX_CLASSES = 100000; "
            + REMAP,
        ),
        (
            "1e20",
            r"Invalid label: '1e20' \(.*row 3, column 'y': label 100000000000000000000 makes "
            r"100000000000000000001 classes, over the limit",
        ),
    ],
    ids=["1e8", "1e20"],
)
def test_csv_labels_making_too_many_classes_are_refused(tmp_path, label, message):
    path = _write_csv(tmp_path / "train.csv", f"a,y\n1,0\n2,{label}\n")
    with pytest.raises(DatasetError, match=message):
        load("csv", path=path, label="y")


def test_labels_up_to_the_class_limit_load(tmp_path):
    path = _write_csv(tmp_path / "train.csv", "a,y\n1,0\n2,99999\n")
    assert load("csv", path=path, label="y").classes == 100_000
    path = _write_npz(tmp_path, x=np.ones((2, 1)), y=np.array([99_999, 0]))
    assert load("npz", path=path).classes == 100_000


def test_classes_option_over_the_limit_is_refused(tmp_path):
    path = _write_npz(tmp_path, x=np.ones((2, 1)), y=np.array([1, 0]))
    with pytest.raises(
        DatasetError,
        match=r"Invalid classes: 100001 \(100001 classes, over the limit trainlab\.data\.limits\."
        r"MAX_CLASSES = 100000; pass fewer\)",
    ):
        load("npz", path=path, classes=100_001)


def test_csv_with_more_columns_than_the_default_limit_is_refused(tmp_path):
    header = ",".join(f"c{i}" for i in range(100_000)) + ",y\n"
    path = _write_csv(tmp_path / "wide.csv", header + "0," * 100_000 + "0\n")
    with pytest.raises(
        DatasetError,
        match=r"Invalid CSV file: '.*wide\.csv' \(line 1 has 100001 comma-separated cells, over "
        r"the limit trainlab\.data\.limits\.MAX_CSV_COLUMNS = 100000; save large data as \.npz",
    ):
        load("csv", path=path, label="y")


CSV_3x3 = "a,b,y\n1,2,0\n3,4,1\n5,6,0\n"  # 24 characters, 3 columns, 3 rows, 24 feature bytes


@pytest.mark.parametrize(
    ("limit", "value", "message"),
    [
        (
            "MAX_CSV_BYTES",
            23,
            r"\(24 bytes, over the limit trainlab\.data\.limits\.MAX_CSV_BYTES = 23;",
        ),
        (
            "MAX_CSV_LINE_CHARS",
            5,
            r"\(line 1 has 6 characters or more, over the limit .*CHARS = 5;",
        ),
        ("MAX_CSV_COLUMNS", 2, r"\(line 1 has 3 comma-separated cells, over the limit .*MNS = 2;"),
        (
            "MAX_CSV_ROWS",
            2,
            r"\(3 data rows, over the limit trainlab\.data\.limits\.MAX_CSV_ROWS = 2;",
        ),
        (
            "MAX_ARRAY_BYTES",
            23,
            r"\(3 rows of 2 float32 features = 24 bytes, over the limit .*= 23;",
        ),
    ],
    ids=["bytes", "line", "columns", "rows", "features"],
)
def test_csv_limits_refuse_one_over_and_admit_the_limit(
    tmp_path, monkeypatch, limit, value, message
):
    path = _write_csv(tmp_path / "train.csv", CSV_3x3)
    monkeypatch.setattr(limits, limit, value)
    with pytest.raises(DatasetError, match=r"Invalid CSV file: '.*train\.csv' " + message):
        load("csv", path=path, label="y")
    monkeypatch.setattr(limits, limit, value + 1)
    assert load("csv", path=path, label="y").x.tolist() == [[1, 2], [3, 4], [5, 6]]


def test_csv_rows_are_parsed_in_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(user_files, "_CSV_BLOCK_CELLS", 4)  # 2 rows of 2 features a block
    path = _write_csv(tmp_path / "train.csv", CSV_3x3 + "7,8,1\n\n")
    data = load("csv", path=path, label="y")
    assert data.x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and data.y.tolist() == [0, 1, 0, 1]


def test_csv_running_out_of_memory_names_the_file_and_the_limit(tmp_path, monkeypatch):
    path = _write_csv(tmp_path / "train.csv", CSV_3x3)
    monkeypatch.setattr(np, "concatenate", _no_memory)
    with pytest.raises(
        DatasetError,
        match=r"Invalid CSV file: '.*train\.csv' \(out of memory while reading it \(what it "
        r"declares is within the limit trainlab\.data\.limits\.MAX_CSV_BYTES = 1073741824\)",
    ):
        load("csv", path=path, label="y")
