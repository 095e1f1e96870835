"""Run folders owned by one process: an OS lock, never a foreign file overwritten.

A run folder is what a user trusts with hours of work, so trainlab claims it before
writing anything:

- **One owner.** ``run.lock`` holds an OS file lock (``fcntl.flock`` on POSIX,
  ``msvcrt.locking`` on Windows) for as long as a trainer has the folder, and the owner's
  PID as text. A second process — another ``trainlab train --run-dir`` or a ``--resume``
  while the first still trains — is refused with that PID. The OS drops the lock when its
  process dies, however it dies, so a crashed run never blocks its own resume.
- **Only trainlab's files.** A new run takes a folder that does not exist or is empty. A
  folder that holds a run (it has ``run.lock`` or ``config.toml``) is continued with
  ``--resume``; anything else in it belongs to someone else and is never overwritten.
- **Unique default names.** ``runs/<stem>-<time>`` gets ``-2``, ``-3``, … when a run
  started in the same second holds the name; ``mkdir`` without ``exist_ok`` decides,
  atomically, which process gets which.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

LOCK_FILE = "run.lock"
CONFIG_FILE = "config.toml"


class RunFolderError(ValueError):
    """A run folder that cannot be claimed; the message names the cause and the fix."""


def os_error_message(error: OSError, doing: str) -> str:
    """One paragraph for an operating-system error while ``doing`` something: cause and fix."""
    where = f" {error.filename!r}" if error.filename else ""
    reason = error.strerror or str(error)
    fixes = {
        errno.ENOSPC: "the disk is full: free some space, or use a folder on another disk",
        errno.EDQUOT: "the disk quota is used up: free some space, or use another disk",
        errno.EROFS: "the file system is read-only: choose a writable folder",
        errno.EACCES: "permission denied: choose a folder you can write to",
        errno.EPERM: "operation not permitted: choose a folder you can write to",
        errno.ENAMETOOLONG: "the path is too long for this file system: choose a shorter one",
        errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
        errno.EEXIST: "a file of that name is in the way: choose another path",
        errno.EFBIG: "the file exceeds the size this process or file system allows",
    }
    fix = fixes.get(error.errno or 0, "check the path and the disk, then try again")
    return f"cannot {doing}{where}: {reason} ({fix})"


def _lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False if it is held."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class RunFolder:
    """A run folder claimed by this process until `release` (or the process ends).

    Use `claim_new` for a new run and `claim_existing` to resume one.
    """

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path = path
        self._fd: int | None = fd
        self.created = created  # True when this claim made the folder

    # -- claiming ------------------------------------------------------------------------
    @classmethod
    def claim_new(cls, path: str | Path) -> RunFolder:
        """Claim ``path`` for a new run: it must not exist, or be empty.

        Raises:
            RunFolderError: the folder is in use, holds a run (resume it) or holds files
                trainlab did not create (nothing is written then).
        """
        path = Path(path)
        existed = path.exists()
        if existed and not path.is_dir():
            raise RunFolderError(
                f"Invalid --run-dir: {str(path)!r} is a file, not a folder (choose a new "
                "folder; nothing was written)"
            )
        if existed and not _holds_run(path) and _entries(path) - {LOCK_FILE}:
            _refuse_occupied(path)  # someone else's files: refused before anything is written
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise RunFolderError(
                "Invalid --run-dir: " + os_error_message(error, "create the run folder")
            ) from None
        folder = cls(path, _open_lock(path), created=not existed)
        try:
            folder._acquire()
            if _entries(path) - {LOCK_FILE}:  # another process filled it meanwhile
                _refuse_occupied(path)
        except BaseException:
            folder.release(remove_if_unused=True)
            raise
        return folder

    @classmethod
    def claim_unique(cls, parent: str | Path, stem: str) -> RunFolder:
        """Claim a new folder ``parent/<stem>``, or ``<stem>-2``, ``<stem>-3``, … if taken."""
        parent = Path(parent)
        for attempt in range(1, 10_000):
            path = parent / (stem if attempt == 1 else f"{stem}-{attempt}")
            try:
                parent.mkdir(parents=True, exist_ok=True)
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as error:
                raise RunFolderError(
                    "Invalid run folder: " + os_error_message(error, "create the run folder")
                ) from None
            folder = cls(path, _open_lock(path), created=True)
            folder._acquire()
            return folder
        raise RunFolderError(f"Invalid run folder: every name {parent / stem}-N is taken")

    @classmethod
    def claim_existing(cls, path: str | Path) -> RunFolder:
        """Claim the folder of an earlier run to continue it.

        Raises:
            RunFolderError: it is not a run folder, or another process has it.
        """
        path = Path(path)
        check_is_run("--resume", path)
        folder = cls(path, _open_lock(path), created=False)
        folder._acquire()
        return folder

    def _acquire(self) -> None:
        if self._fd is None:
            self._fd = _open_lock(self.path)
        if not _lock(self._fd):
            holder = _holder(self.path)
            os.close(self._fd)
            self._fd = None
            raise RunFolderError(
                f"Invalid run folder: {str(self.path)!r} is in use by {holder} (a run folder "
                "belongs to one process at a time: wait for that run to end, stop it, or "
                "choose another folder)"
            )
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, f"{os.getpid()}\n".encode())
        except OSError as error:
            self.release()
            raise RunFolderError(
                "Invalid run folder: " + os_error_message(error, "write the run's lock file")
            ) from None

    def acquire(self) -> None:
        """Take the lock again after `release` (a second ``fit`` of one trainer)."""
        if self._fd is None:
            self._acquire()

    def release(self, *, remove_if_unused: bool = False) -> None:
        """Drop the lock; ``remove_if_unused`` also deletes what the claim itself created.

        Only a holder removes anything: a claim refused because another process holds the
        folder never touches that process's lock file or folder.
        """
        held = self._fd is not None
        if held:
            os.close(self._fd)  # closing the descriptor drops the OS lock
            self._fd = None
        if remove_if_unused and held and not (_entries(self.path) - {LOCK_FILE}):
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            if self.created:
                shutil.rmtree(self.path, ignore_errors=True)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # type: ignore[arg-type]


def _entries(path: Path) -> set[str]:
    try:
        return {child.name for child in path.iterdir()}
    except OSError:
        return set()


def _open_lock(path: Path) -> int:
    try:
        return os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise RunFolderError(
            "Invalid run folder: " + os_error_message(error, "create the run's lock file")
        ) from None


def _holder(path: Path) -> str:
    """Who holds the lock, in words: the PID its owner wrote, when it did."""
    try:
        text = (path / LOCK_FILE).read_text()[:32].strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


def check_is_run(option: str, path: Path) -> None:
    """Refuse a folder without ``config.toml``: trainlab did not make a run there."""
    if not (Path(path) / CONFIG_FILE).is_file():
        raise RunFolderError(
            f"Invalid {option}: {str(path)!r} has no {CONFIG_FILE} (it is not a trainlab run "
            "folder; pass a folder that `trainlab train` or trainlab.fit created)"
        )


def _holds_run(path: Path) -> bool:
    return bool({LOCK_FILE, CONFIG_FILE} & _entries(path))


def holder(path: str | Path) -> int | None:
    """The PID of the process training in the run folder ``path``, or None when none is.

    Probes the lock with a shared, non-blocking request released at once; where the OS
    has no ``flock`` (Windows) it answers None.
    """
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fd = os.open(Path(path) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = _holder(Path(path))
        return int(text.split()[-1]) if text.split()[-1].isdigit() else -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _refuse_occupied(path: Path) -> None:
    names = sorted(_entries(path) - {LOCK_FILE})
    if _holds_run(path):
        raise RunFolderError(
            f"Invalid --run-dir: {str(path)!r} already holds a run (nothing was overwritten; "
            f"continue it with `trainlab train --resume {path}` or choose another --run-dir)"
        )
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise RunFolderError(
        f"Invalid --run-dir: {str(path)!r} holds files trainlab did not create ({shown}); "
        "a run never writes into a folder of someone else's files (choose a new or empty "
        "folder; nothing was written)"
    )


def default_stem(stem: str) -> str:
    """``<stem>-<local time>``, the default run folder name under ``runs/``."""
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "RunFolder",
    "RunFolderError",
    "check_is_run",
    "default_stem",
    "holder",
    "os_error_message",
]
