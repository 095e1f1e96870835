"""Safe checkpoints: safetensors + JSON, written atomically, no pickle anywhere.

A checkpoint is one directory ``run_dir/checkpoints/<name>/`` holding

- ``weights.safetensors``: the model's ``state_dict`` tensors;
- ``state.safetensors`` + ``state.json``: everything else (optimizer state, RNG states,
  counters, metric history) as one tree, its tensors in safetensors and its structure in
  JSON (`flatten` / `unflatten`);
- ``meta.json``: format version, name, step, metrics, the SHA-256 of every other file and
  ``"complete": true`` — the last file written.

Why no pickle: unpickling runs arbitrary code, so ``torch.load`` of a shared or corrupted
file is a security hole; safetensors and JSON are data only.

Why crash-safe: files are written into ``checkpoints/.tmp-<name>-<pid>-<random>/``, each
fsynced, then the directory is fsynced, renamed to its final name, and ``checkpoints/`` is
fsynced. A directory under a final name is therefore always complete; readers skip every
dot-directory and every directory without a complete ``meta.json``. A checkpoint being
replaced or deleted is first renamed to a ``.tmp-`` name, for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import stat
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor

from trainlab import _checks

from .run_folder import os_error_message
from .state_tree import (
    CheckpointError,
    _compact_copy,
    _Invalid,
    flatten,
    unflatten,
)

FORMAT = "trainlab-checkpoint"
FORMAT_VERSION = 1
CHECKPOINTS_DIR = "checkpoints"
TEMP_PREFIX = ".tmp-"
WEIGHTS_FILE = "weights.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
META_FILE = "meta.json"
DATA_FILES = (WEIGHTS_FILE, STATE_TENSORS_FILE, STATE_JSON_FILE)
#: The final weights of a run, as ``init_from`` reads them from a run directory.
RUN_WEIGHTS_FILE = "model.safetensors"
#: Largest ``meta.json`` read (it holds names, hashes and a few numbers: kilobytes).
MAX_META_BYTES = 1 << 20
#: Largest safetensors header read (a JSON table of tensor names, dtypes and offsets).
MAX_HEADER_BYTES = 100 << 20

# --- saving ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint."""

    path: Path
    weights: dict[str, Tensor]
    state: dict[str, Any]
    meta: dict[str, Any]

    @property
    def step(self) -> int | None:
        return self.meta["step"]


def save_checkpoint(
    run_dir: Path,
    name: str,
    *,
    weights: dict[str, Tensor],
    state: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/checkpoints/<name>/`` atomically and return its path.

    Args:
        run_dir: the run's directory; ``checkpoints/`` is created in it when missing.
        name: the checkpoint's directory name (e.g. ``"step-001000"``); an existing
            checkpoint of that name is replaced.
        weights: the model's ``state_dict()``.
        state: everything else needed to resume, a tree `flatten` takes.
        metrics: plain numbers and strings to record in ``meta.json``; its ``"step"``
            (an int) orders the checkpoints (default: None).
    """
    return _write_snapshot(Path(run_dir), _snapshot(name, weights, state, metrics))


@dataclass(frozen=True)
class _Snapshot:
    """A checkpoint's contents, copied: later training steps cannot change it."""

    name: str
    weights: dict[str, Tensor]
    state_tensors: dict[str, Tensor]
    skeleton: Any
    metrics: Any
    step: int | None


def _snapshot(
    name: str, weights: dict[str, Tensor], state: dict[str, Any], metrics: dict[str, Any] | None
) -> _Snapshot:
    """Check the inputs and copy every tensor (the only part that must block training)."""
    _check_name(name)
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(
            "Invalid weights: must be a dict of str -> tensor, such as model.state_dict()"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"Invalid state: a {type(state).__name__} (must be a dict)")
    metrics = {} if metrics is None else metrics
    metric_tensors, encoded = flatten(metrics) if isinstance(metrics, dict) else ({}, None)
    if not isinstance(metrics, dict) or metric_tensors:
        raise CheckpointError(
            f"Invalid metrics: {metrics!r} (must be a dict of plain numbers and strings; "
            "convert tensors with .item())"
        )
    step = metrics.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
        raise CheckpointError(f"Invalid step in metrics: {step!r} (must be an int >= 0)")
    state_tensors, skeleton = flatten(state)  # tensors come out as compact copies
    copies = {k: _compact_copy(v, k) for k, v in weights.items()}
    return _Snapshot(name, copies, state_tensors, skeleton, encoded, step)


def _write_snapshot(run_dir: Path, snapshot: _Snapshot, resume: str | None = None) -> Path:
    """Serialize and write a snapshot: temp directory, fsync, rename.

    ``resume`` is how the run continues, for the message of a failed write (default: the
    command line's ``trainlab train --resume``).
    """
    files = {
        WEIGHTS_FILE: safetensors.torch.save(snapshot.weights),
        STATE_TENSORS_FILE: safetensors.torch.save(snapshot.state_tensors),
        STATE_JSON_FILE: _json_bytes(snapshot.skeleton),
    }
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": snapshot.name,
        "step": snapshot.step,
        "saved_at": time.time(),
        "metrics": snapshot.metrics,
        "files": {
            filename: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for filename, data in files.items()
        },
        "complete": True,
    }
    directory = run_dir / CHECKPOINTS_DIR
    temp = directory / f"{TEMP_PREFIX}{snapshot.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        _make_dir(directory)
        temp.mkdir()
        for filename, data in files.items():
            _write_file(temp / filename, data)
        _write_file(temp / META_FILE, _json_bytes(meta))  # last: its presence means complete
        _fsync_dir(temp)
        _move_into_place(temp, directory / snapshot.name)
    except OSError as error:
        _remove_tree(temp)
        needed = sum(len(data) for data in files.values())
        try:
            free = f"{shutil.disk_usage(directory if directory.is_dir() else run_dir).free:,}"
        except OSError:
            free = "an unknown number of"
        raise CheckpointError(
            f"Cannot save checkpoint {snapshot.name}: "
            + os_error_message(error, "write")
            + f". It needs {needed:,} bytes in {directory}, where {free} bytes are free; "
            "the checkpoints saved before it are intact (resume from them with "
            f"{resume or f'`trainlab train --resume {run_dir}`'} once the problem is fixed)"
        ) from None
    except BaseException:
        _remove_tree(temp)
        raise
    return directory / snapshot.name


class CheckpointWriter:
    """Writes checkpoints on a background thread, so training does not wait for the disk.

    `submit` checks its inputs and copies every tensor before it returns (a few
    milliseconds for a small model); serializing, hashing, writing, fsyncing and renaming
    happen on the writer thread, one checkpoint at a time, in order. A crash while a
    checkpoint is in flight leaves the previous ones complete, as with
    [`save_checkpoint`][trainlab.train.save_checkpoint]. Call `wait` before reading checkpoints
    back; it re-raises an error from the writer thread.
    """

    def __init__(self, resume: str | None = None) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.resume = resume  # how the run continues, for a failed write's message

    def submit(
        self,
        run_dir: Path,
        name: str,
        *,
        weights: dict[str, Tensor],
        state: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        then: Callable[[], Any] | None = None,
    ) -> Path:
        """Start writing a checkpoint (after the previous one is done); ``then`` runs after."""
        snapshot = _snapshot(name, weights, state, metrics)
        self.wait()
        run_dir = Path(run_dir)

        def write() -> None:
            try:
                _write_snapshot(run_dir, snapshot, self.resume)
                if then is not None:
                    then()
            except BaseException as error:  # re-raised on the training thread by wait()
                self._error = error

        self._thread = threading.Thread(target=write, name="trainlab-checkpoint")
        self._thread.start()
        return run_dir / CHECKPOINTS_DIR / name

    def wait(self, *, raise_errors: bool = True) -> None:
        """Block until the checkpoint in flight is on disk; raise what writing it raised.

        With ``raise_errors=False`` (while another exception is on its way) a write error
        becomes a RuntimeWarning instead, so that it is not lost.
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is None:
            return
        if raise_errors:
            raise error
        warnings.warn(
            f"trainlab: writing a checkpoint failed too ({type(error).__name__}: {error})",
            RuntimeWarning,
            stacklevel=2,
        )

    def raise_if_failed(self) -> None:
        """Raise a write error as soon as it happened (without waiting for a write)."""
        if self._error is not None:
            self.wait()


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name or name.startswith(".") or {"/", os.sep} & {*name}:
        raise CheckpointError(
            f"Invalid checkpoint name: {name!r} (must be a non-empty str without '/' "
            "that does not start with '.')"
        )


def _json_bytes(tree: Any) -> bytes:
    return json.dumps(tree, allow_nan=False, indent=1).encode()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed files) durable."""
    if os.name == "nt":  # directories cannot be opened on Windows; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dir(directory: Path) -> None:
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        _fsync_dir(directory.parent)


def _move_into_place(temp: Path, final: Path) -> None:
    """Rename the finished temp directory to ``final``, replacing an older one.

    The old one is renamed aside first (directories cannot be replaced in one step) and
    deleted only after the new one is in place: a crash in between leaves both complete,
    under ``.tmp-`` names.
    """
    aside = None
    if final.exists():
        aside = _hidden_name(final, "old")
        os.replace(final, aside)
    os.replace(temp, final)
    _fsync_dir(final.parent)
    if aside is not None:
        _remove_tree(aside)


def _hidden_name(path: Path, why: str) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{why}-{path.name}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


# --- loading and listing --------------------------------------------------------------------


def load_checkpoint(path: Path) -> Checkpoint:
    """Load a checkpoint directory after checking it is complete and every file's SHA-256.

    Raises:
        CheckpointError: naming the checkpoint, the problem and the checkpoints to resume
            from instead.
    """
    path = Path(path)
    try:
        meta = _read_meta(path)
        data = {name: _read_verified(path, name, meta["files"][name]) for name in DATA_FILES}
        weights = _parse_safetensors(data[WEIGHTS_FILE], WEIGHTS_FILE)
        state_tensors = _parse_safetensors(data[STATE_TENSORS_FILE], STATE_TENSORS_FILE)
        state = unflatten(state_tensors, _parse_json(data[STATE_JSON_FILE], STATE_JSON_FILE))
        meta["metrics"] = unflatten({}, meta["metrics"])
    except RecursionError:
        problem = "state.json nests deeper than any checkpoint trainlab writes"
        raise CheckpointError(
            f"Cannot load checkpoint {path}: {problem}. Fix: delete it or resume from an "
            f"earlier checkpoint: {_alternatives(path)}"
        ) from None
    except (_Invalid, CheckpointError) as problem:
        raise CheckpointError(
            f"Cannot load checkpoint {path}: {problem}. Fix: delete it or resume from an "
            f"earlier checkpoint: {_alternatives(path)}"
        ) from None
    return Checkpoint(path=path, weights=weights, state=state, meta=meta)


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first (by step, then by time saved).

    Skips ``.tmp-*`` (and all other dot-) directories and directories whose ``meta.json``
    is missing, unreadable or not marked complete. File hashes are checked on load only.
    """
    directory = Path(run_dir) / CHECKPOINTS_DIR
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        if child.name.startswith("."):
            continue
        try:
            meta = _read_meta(child)
        except _Invalid:
            continue
        step = -1 if meta["step"] is None else meta["step"]
        found.append((step, meta["saved_at"], child.name, child))
    return [entry[-1] for entry in sorted(found)]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None when there is none."""
    checkpoints = list_checkpoints(run_dir)
    return checkpoints[-1] if checkpoints else None


def _read_meta(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise _Invalid("it is not a directory")
    try:
        meta = _parse_json(_read_regular(path / META_FILE, MAX_META_BYTES), META_FILE)
    except FileNotFoundError:
        raise _Invalid(f"{META_FILE} is missing, so its save never finished") from None
    if not isinstance(meta, dict) or meta.get("complete") is not True:
        raise _Invalid(f'{META_FILE} lacks "complete": true, so its save never finished')
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise _Invalid(
            f"it has format {meta.get('format')!r} version {meta.get('format_version')!r}, "
            f"this trainlab reads {FORMAT!r} version {FORMAT_VERSION} (load it with the "
            "trainlab that wrote it)"
        )
    files = meta.get("files")
    step = meta.get("step")
    valid = (
        isinstance(files, dict)
        and all(isinstance(files.get(name), dict) for name in DATA_FILES)
        and (step is None or (isinstance(step, int) and not isinstance(step, bool)))
        and isinstance(meta.get("saved_at"), (int, float))
    )
    if not valid:
        raise _Invalid(f"{META_FILE} lacks entries it must have (files, step, saved_at)")
    return meta


def _read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, refused before reading when over ``limit``.

    Devices, pipes and sockets (``/dev/zero``, or a link to it) never end or lie about
    their size, so they are refused rather than read.
    """
    info = os.stat(path)  # follows links: the file that would be read
    if not stat.S_ISREG(info.st_mode):
        raise _Invalid(f"{path.name} is not a regular file (a device, pipe or folder)")
    if info.st_size > limit:
        raise _Invalid(f"{path.name} has {info.st_size:,} bytes, more than the {limit:,} expected")
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise _Invalid(f"{path.name} grew past {limit:,} bytes while it was read")
    return data


def _read_verified(path: Path, filename: str, expected: dict[str, Any]) -> bytes:
    size = expected.get("bytes")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _Invalid(f"{META_FILE} gives no valid size for {filename}")
    try:
        data = _read_regular(path / filename, size)
    except FileNotFoundError:
        raise _Invalid(f"{filename} is missing") from None
    except OSError as error:
        raise _Invalid(os_error_message(error, "read")) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected.get("sha256"):
        size = expected.get("bytes")
        detail = f"{len(data)} of {size} bytes" if len(data) != size else f"got {digest}"
        raise _Invalid(f"{filename} fails its SHA-256 check ({detail}): it is corrupt")
    return data


def _parse_json(data: bytes, filename: str) -> Any:
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _Invalid(f"{filename} is not valid JSON ({error})") from None
    except RecursionError:
        raise _Invalid(f"{filename} nests deeper than any file trainlab writes") from None


def _parse_safetensors(data: bytes, filename: str) -> dict[str, Tensor]:
    try:
        return safetensors.torch.load(data)
    except SafetensorError as error:
        raise _Invalid(f"{filename} is not a valid safetensors file ({error})") from None


def _alternatives(path: Path) -> str:
    if path.parent.name != CHECKPOINTS_DIR:
        return "(none found)"
    others = [str(p) for p in list_checkpoints(path.parent.parent) if p.name != path.name]
    return ", ".join(others) or "(none found)"


# --- retention ------------------------------------------------------------------------------


def prune_checkpoints(run_dir: Path, keep_last: int, best: str | None = None) -> list[Path]:
    """Delete all complete checkpoints but the last ``keep_last`` (by step) and ``best``.

    Also deletes stale ``.tmp-*`` directories — left by crashed saves — that are older
    than the newest complete checkpoint (younger ones may be a save in progress).
    Directories that are neither are left alone. Returns the paths deleted.

    Args:
        run_dir: the run's directory.
        keep_last: how many of the most recent checkpoints to keep (at least 1, so the
            newest complete checkpoint always survives).
        best: the name of a checkpoint to keep as well, e.g. the best by validation loss
            (default: None).
    """
    _checks.positive_int("keep_last", keep_last)
    directory = Path(run_dir) / CHECKPOINTS_DIR
    complete = list_checkpoints(run_dir)
    names = [p.name for p in complete]
    if best is not None and best not in names:
        raise CheckpointError(
            f"Invalid best checkpoint: {best!r} (must be one of the complete checkpoints in "
            f"{directory}: {names})"
        )
    if not complete:
        return []
    newest = max((p / META_FILE).stat().st_mtime for p in complete)
    keep = {*names[-keep_last:], best}
    deleted = [p for p in complete if p.name not in keep]
    for path in deleted:
        aside = _hidden_name(path, "deleted")
        os.replace(path, aside)  # never a half-deleted directory under a final name
        _remove_tree(aside)
    for child in directory.iterdir():
        stale = child.name.startswith(TEMP_PREFIX) and child.stat().st_mtime < newest
        if stale and child.is_dir():
            _remove_tree(child)
            deleted.append(child)
    _fsync_dir(directory)
    return deleted


# --- weights for init_from ------------------------------------------------------------------


def load_weights_file(path: Path) -> dict[str, Tensor]:
    """Load model weights from a ``.safetensors`` file, a run directory or a checkpoint.

    A run directory gives its ``model.safetensors``; a checkpoint directory (one with a
    ``meta.json``) its verified weights. A file is read only after its safetensors header
    parses and declares exactly the file's size (`safetensors_problem`); anything else is
    refused without being unpickled: loading pickle-based files (.pt, .pth, .bin, .ckpt)
    can run arbitrary code.
    """
    path = Path(path)
    if path.is_dir():
        if (path / META_FILE).exists():
            return load_checkpoint(path).weights
        if not (path / RUN_WEIGHTS_FILE).is_file():
            raise CheckpointError(
                f"Cannot load weights from {path}: the directory has no {RUN_WEIGHTS_FILE} "
                "(pass a .safetensors file, a finished run's directory or a checkpoint)"
            )
        path = path / RUN_WEIGHTS_FILE
    try:
        problem = safetensors_problem(path)
        data = b"" if problem else _read_regular(path, path.stat().st_size)
    except _Invalid as error:
        raise CheckpointError(
            f"Cannot load weights from {path}: {error} (pass a .safetensors file)"
        ) from None
    except OSError as error:
        raise CheckpointError(
            f"Cannot load weights from {path}: {os_error_message(error, 'read')}"
        ) from None
    if problem is None:
        try:
            return safetensors.torch.load(data)
        except SafetensorError as error:
            if "unknown variant" in str(error):  # a dtype newer than this library
                raise CheckpointError(
                    f"Cannot load weights from {path}: it holds a tensor type this "
                    f"safetensors {safetensors.__version__} does not know ({error}). Fix: "
                    "upgrade safetensors (pip install -U safetensors), or save the weights "
                    "in a common dtype (float32, bfloat16, float16)"
                ) from None
            problem = f"the safetensors library refuses it ({error})"
    fix = _conversion_hint(path) if problem.endswith(_FOREIGN) else _damage_hint(path)
    raise CheckpointError(f"Cannot load weights from {path}: {problem}. {fix}")


def _damage_hint(path: Path) -> str:
    """The fix for a file that neither parses as safetensors nor looks like another format:
    a copy cut short or altered, which no conversion mends."""
    return (
        "The file is damaged or is not a weights file. Fix: copy it again from where it "
        "came from, or load a checkpoint of the same run instead (a folder under "
        f"{CHECKPOINTS_DIR}/, which keeps its own verified copy of the weights)"
    )


def _conversion_hint(path: Path) -> str:
    """The fix for a weights file that is not safetensors: a conversion the user runs once.

    ``torch.load(..., weights_only=True)`` refuses arbitrary objects, ``.get("state_dict",
    ...)`` unwraps the checkpoints of Lightning-style trainers, and ``.clone()`` lets
    ``save_file`` write tensors that shared storage in the original file.
    """
    target = path.with_suffix(".safetensors")
    if target == path:
        target = path.with_name(path.stem + "-converted.safetensors")
    return (
        "Only safetensors files are accepted, because loading a pickle-based file (.pt, "
        ".pth, .bin, .ckpt) can run arbitrary code. Fix: convert it once, in a Python "
        "session you trust: import torch, safetensors.torch; "
        f"w = torch.load({str(path)!r}, weights_only=True); w = w.get('state_dict', w); "
        "safetensors.torch.save_file({k: v.detach().clone().contiguous() for k, v in "
        f"w.items()}}, {str(target)!r})"
    )


#: Bytes per element of each safetensors dtype, for the check that every tensor's offsets
#: span exactly its shape. A dtype missing here (a newer one) has its span checked for
#: tiling only.
SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "C64": 8,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip


def safetensors_problem(path: Path) -> str | None:
    """Why the file ``path`` is not a safetensors file, or None when it is one.

    Parses the header as the format defines it, before the data is read: 8 bytes giving
    the header's length N (unsigned, little-endian), then N bytes of UTF-8 JSON — an
    object mapping each tensor's name to its ``dtype``, ``shape`` and ``data_offsets``
    (plus an optional ``__metadata__`` of strings) — whose offsets tile the data that
    follows exactly, to the last byte of the file. Only when the header does not parse is
    the file named by what it looks like instead (a pickle, a zip archive).

    Raises:
        _Invalid: ``path`` is not a regular file (a device, pipe or folder).
        OSError: it cannot be read.
    """
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise _Invalid("it is not a regular file (a device, pipe or folder)")
    with open(path, "rb") as file:
        head = file.read(8)
        problem = _header_problem(file, head, info.st_size)
    if problem is None:
        return None
    looks_like = _looks_like(head)
    return f"{looks_like}{_FOREIGN}" if looks_like else problem


_FOREIGN = ", not a safetensors file"  # how a file of another known format is described


def _header_problem(file: Any, head: bytes, size: int) -> str | None:
    """Why the header at ``file``'s position 8 does not describe a file of ``size`` bytes."""
    if len(head) < 8:
        return f"it is too short to be a safetensors file ({size} bytes)"
    header_size = int.from_bytes(head, "little")
    if header_size > min(MAX_HEADER_BYTES, size - 8):
        return (
            f"its first 8 bytes give a header of {header_size:,} bytes, more than the "
            f"file's {size:,} bytes or the {MAX_HEADER_BYTES:,} allowed: not a safetensors "
            "header"
        )
    try:
        header = json.loads(file.read(header_size).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "its first 8 bytes are not followed by a safetensors header (JSON)"
    if not isinstance(header, dict):
        return "its safetensors header is not a JSON object"
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return "its safetensors __metadata__ is not a table of strings"
            continue
        span = _tensor_span(entry)
        if isinstance(span, str):
            return f"its safetensors header describes tensor {name!r} wrongly ({span})"
        spans.append(span)
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            return f"its tensors' data offsets leave a gap or overlap at byte {end:,}"
        end = stop
    if 8 + header_size + end != size:
        return (
            f"its header declares {8 + header_size + end:,} bytes in all, but the file has "
            f"{size:,} (truncated or extended)"
        )
    return None


def _tensor_span(entry: Any) -> tuple[int, int] | str:
    """A header entry's ``(begin, end)`` data offsets, or why the entry is malformed."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        return "no dtype"

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(shape, list) or not all(whole(d) for d in shape):
        return "its shape is not a list of sizes"
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(whole, offsets)):
        return "its data_offsets are not two byte offsets"
    begin, end = offsets
    itemsize = SAFETENSORS_DTYPE_BYTES.get(dtype)
    expected = None if itemsize is None else itemsize * math.prod(shape)
    if end < begin or (expected is not None and end - begin != expected):
        return f"data_offsets {offsets} do not span a {dtype} tensor of shape {shape}"
    return begin, end


def _looks_like(head: bytes) -> str | None:
    """What a file that is not safetensors looks like, from its first bytes, if known."""
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (the format of torch.save)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "it is a pickle file"
    return None
