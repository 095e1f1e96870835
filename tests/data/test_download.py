"""download(): SHA-256 verified before the file is renamed into place; offline by default."""

from __future__ import annotations

import hashlib
import re
import urllib.request
from typing import ClassVar

import pytest

from trainlab.data import DatasetError, limits, load
from trainlab.data import download as download_module
from trainlab.data.download import REMOTE_FILES, RemoteFile, download, sha256_of

from .test_idx import MNIST_NAMES, write_mnist_dir

CONTENT = b"trainlab test payload\n" * 100


@pytest.fixture
def served(tmp_path):
    """A local file to download, its file:// URL and its digest."""
    source = tmp_path / "served" / "file.bin"
    source.parent.mkdir()
    source.write_bytes(CONTENT)
    return source.as_uri(), hashlib.sha256(CONTENT).hexdigest()


def leftovers(directory):
    return sorted(path.name for path in directory.iterdir() if path.name.endswith(".part"))


def test_download_writes_the_verified_file(tmp_path, served):
    url, digest = served
    destination = tmp_path / "out" / "file.bin"
    assert download(url, destination, digest.upper()) == destination
    assert destination.read_bytes() == CONTENT
    assert sha256_of(destination) == digest
    assert leftovers(destination.parent) == []


def test_digest_mismatch_deletes_the_file_and_names_url_and_digests(tmp_path, served):
    url, digest = served
    wrong = "0" * 64
    destination = tmp_path / "out" / "file.bin"
    message = (
        rf"Invalid download: '{re.escape(url)}' \(SHA-256 mismatch: expected {wrong}, got {digest}"
    )
    with pytest.raises(DatasetError, match=message):
        download(url, destination, wrong)
    assert not destination.exists()
    assert leftovers(destination.parent) == []


def test_unknown_digest_is_refused_not_skipped(tmp_path, served):
    url, _ = served
    destination = tmp_path / "out" / "file.bin"
    with pytest.raises(
        DatasetError, match=r"no known checksum for file\.bin; download it yourself and place it in"
    ):
        download(url, destination, None)
    assert not destination.parent.exists()


@pytest.mark.parametrize(
    ("url", "digest", "message"),
    [
        ("file:///x", "abc", r"Invalid sha256: 'abc' \(must be 64 hexadecimal digits\)"),
        ("ftp://host/x", "0" * 64, r"Invalid URL: 'ftp://host/x' \(scheme 'ftp' is not one of"),
    ],
    ids=["digest", "scheme"],
)
def test_malformed_digest_or_url_is_refused(tmp_path, url, digest, message):
    with pytest.raises(DatasetError, match=message):
        download(url, tmp_path / "file.bin", digest)


def test_failed_fetch_names_the_url_and_leaves_nothing(tmp_path):
    url = (tmp_path / "absent.bin").as_uri()
    with pytest.raises(DatasetError, match=rf"'{re.escape(url)}' \(fetch failed"):
        download(url, tmp_path / "out.bin", "0" * 64)
    assert leftovers(tmp_path) == []


def test_existing_verified_file_is_kept_without_fetching(tmp_path, monkeypatch):
    destination = tmp_path / "file.bin"
    destination.write_bytes(CONTENT)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    digest = hashlib.sha256(CONTENT).hexdigest()
    assert download("https://example.invalid/file.bin", destination, digest) == destination


def test_official_table_has_https_urls_and_full_or_no_digests():
    assert set(REMOTE_FILES) == {"mnist", "fashion-mnist", "cifar10"}
    for files in REMOTE_FILES.values():
        for file in files:
            assert file.url.startswith("https://") and file.url.endswith("/" + file.name)
            assert file.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", file.sha256)


def test_loaders_are_offline_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DatasetError, match=r"missing .*pass download=True to fetch them"):
        load("mnist", root=tmp_path)
    with pytest.raises(DatasetError, match=r"missing .*pass download=True to fetch them"):
        load("cifar10", root=tmp_path)


def test_mnist_download_fetches_the_published_gz_files(tmp_path, monkeypatch):
    served = tmp_path / "served"
    arrays = write_mnist_dir(served, gz=True)
    remote = tuple(
        RemoteFile(f"{name}.gz", (served / f"{name}.gz").as_uri(), sha256_of(served / f"{name}.gz"))
        for name in MNIST_NAMES.values()
    )
    monkeypatch.setitem(download_module.REMOTE_FILES, "mnist", remote)
    root = tmp_path / "root"
    data = load("mnist", root=root, download=True)
    assert sorted(path.name for path in root.iterdir()) == sorted(file.name for file in remote)
    assert data.y.tolist() == arrays["train_labels"].tolist()


def test_fashion_download_with_a_wrong_digest_keeps_nothing(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_mnist_dir(served, gz=True)
    remote = tuple(
        RemoteFile(f"{name}.gz", (served / f"{name}.gz").as_uri(), "f" * 64)
        for name in MNIST_NAMES.values()
    )
    monkeypatch.setitem(download_module.REMOTE_FILES, "fashion-mnist", remote)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match=r"SHA-256 mismatch: expected f{64}"):
        load("fashion-mnist", root=root, download=True)
    assert list(root.iterdir()) == []


def _no_network(*args, **kwargs):
    raise AssertionError("no network access expected")


# --- limits: a download is capped before the digest is checked -------------------------------


def test_download_announcing_more_than_the_limit_is_refused_before_reading(tmp_path):
    source = tmp_path / "served" / "huge.bin"
    source.parent.mkdir()
    with open(source, "wb") as file:
        file.truncate((256 << 20) + 1)  # sparse; file:// announces its Content-Length
    destination = tmp_path / "out" / "huge.bin"
    with pytest.raises(
        DatasetError,
        match=rf"Invalid download: '{re.escape(source.as_uri())}' \(the server announces "
        r"268435457 bytes, over the limit trainlab\.data\.limits\.MAX_DOWNLOAD_BYTES = "
        r"268435456; fetch the file yourself from a trusted mirror into .*out\)",
    ):
        download(source.as_uri(), destination, "0" * 64)
    assert not destination.exists() and leftovers(destination.parent) == []


class EndlessResponse:
    """A response without Content-Length whose body goes on (up to 64 MiB), counting reads."""

    headers: ClassVar[dict] = {}

    def __init__(self):
        self.sent = 0

    def read(self, size):
        size = min(size, (64 << 20) - self.sent)
        self.sent += size
        return bytes(size)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_download_running_past_the_limit_is_cut_off(tmp_path, monkeypatch):
    response = EndlessResponse()
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: response)
    monkeypatch.setattr(limits, "MAX_DOWNLOAD_BYTES", 3 << 20)
    destination = tmp_path / "file.bin"
    with pytest.raises(
        DatasetError,
        match=r"'https://example\.invalid/file\.bin' \(more than 3145728 bytes received, over the "
        r"limit trainlab\.data\.limits\.MAX_DOWNLOAD_BYTES = 3145728;",
    ):
        download("https://example.invalid/file.bin", destination, "0" * 64)
    assert response.sent == (3 << 20) + 1  # not a byte more than needed to know
    assert not destination.exists() and leftovers(tmp_path) == []


def test_download_of_exactly_the_limit_is_accepted(tmp_path, served, monkeypatch):
    url, digest = served
    monkeypatch.setattr(limits, "MAX_DOWNLOAD_BYTES", len(CONTENT))
    assert download(url, tmp_path / "file.bin", digest).read_bytes() == CONTENT
