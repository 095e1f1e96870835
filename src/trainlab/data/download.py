"""Fetch dataset files, verified by SHA-256 before anything reads them.

Loaders are offline: they download only when the caller passes ``download=True``. A file
is fetched to a temporary name beside its destination, its SHA-256 digest compared with
the known one, and only then renamed into place; a mismatch deletes the temporary file.
A file without a known digest is refused rather than fetched unverified.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import limits
from ._errors import DatasetError, invalid

_CHUNK = 1 << 20
_TIMEOUT_S = 60
_SCHEMES = ("https", "http", "file")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name on disk, where it lives, and its SHA-256 (None: unknown)."""

    name: str
    url: str
    sha256: str | None


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"

# Digests of the files as published (the gzipped IDX files; the CIFAR-10 python archive).
REMOTE_FILES: dict[str, tuple[RemoteFile, ...]] = {
    "mnist": (
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            _MNIST + "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            _MNIST + "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            _MNIST + "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            _MNIST + "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        ),
    ),
    "fashion-mnist": (
        RemoteFile(
            "train-images-idx3-ubyte.gz",
            _FASHION + "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        ),
        RemoteFile(
            "train-labels-idx1-ubyte.gz",
            _FASHION + "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        ),
        RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            _FASHION + "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        ),
        RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            _FASHION + "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
        ),
    ),
    "cifar10": (
        RemoteFile(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
}


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: str | Path, sha256: str | None) -> Path:
    """Fetch ``url`` to ``destination`` (a file path), verified against ``sha256``.

    A destination that already exists with the right digest is kept as is. Otherwise the
    bytes go to a temporary file in the same directory; digest(temporary) must equal
    ``sha256`` before it is renamed to ``destination``.

    Raises:
        DatasetError: unknown digest (None), malformed digest or URL, a failed fetch, or a
            digest mismatch (naming the URL, the expected and the actual digest).
    """
    destination = Path(destination)
    if sha256 is None:
        raise invalid(
            "download",
            url,
            f"no known checksum for {destination.name}; download it yourself and place it "
            f"in {destination.parent}",
        )
    expected = sha256.lower()
    if not _HEX64.fullmatch(expected):
        raise invalid("sha256", sha256, "must be 64 hexadecimal digits")
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in _SCHEMES:
        raise invalid("URL", url, f"scheme {scheme!r} is not one of {', '.join(_SCHEMES)}")
    if destination.is_file() and sha256_of(destination) == expected:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = _fetch(url, destination)
    actual = sha256_of(temporary)
    if actual != expected:
        temporary.unlink()
        raise invalid(
            "download",
            url,
            f"SHA-256 mismatch: expected {expected}, got {actual}; the file was deleted — "
            "retry, or fetch it yourself from a trusted mirror",
        )
    os.replace(temporary, destination)
    return destination


def _fetch(url: str, destination: Path) -> Path:
    """Stream ``url`` into a new temporary file beside ``destination``; return its path.

    At most ``limits.MAX_DOWNLOAD_BYTES`` are written: a response announcing more is refused
    before its body is read, one that runs longer is cut off there (the digest is checked
    only afterwards, so without the cap a wrong URL could fill the disk first).
    """
    handle, name = tempfile.mkstemp(
        prefix=f".{destination.name}.", suffix=".part", dir=destination.parent
    )
    temporary = Path(name)
    fix = f"fetch the file yourself from a trusted mirror into {destination.parent}"
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
        ):
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.strip().isdigit():
                size = int(announced)
                problem = f"the server announces {size} bytes"
                limits.check("MAX_DOWNLOAD_BYTES", size, "download", url, problem, fix)
            received = 0
            limit = limits.MAX_DOWNLOAD_BYTES
            while chunk := response.read(min(_CHUNK, limit + 1 - received)):
                received += len(chunk)
                if received > limit:
                    problem = f"more than {limit} bytes received"
                    limits.check("MAX_DOWNLOAD_BYTES", received, "download", url, problem, fix)
                out.write(chunk)
    except DatasetError:
        temporary.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as error:
        temporary.unlink(missing_ok=True)
        reason = getattr(error, "reason", None) or error
        raise invalid("download", url, f"fetch failed: {reason}") from error
    return temporary


def fetch_dataset(dataset: str, directory: str | Path) -> list[Path]:
    """Download every published file of ``dataset`` (a ``REMOTE_FILES`` key) into ``directory``."""
    files = REMOTE_FILES.get(dataset)
    if files is None:
        raise invalid("dataset to download", dataset, f"one of {', '.join(REMOTE_FILES)}")
    directory = Path(directory)
    return [download(file.url, directory / file.name, file.sha256) for file in files]
