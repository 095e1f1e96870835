"""Events of the training loop, and the loggers and progress bar built on them.

A callback subclasses [`Callback`][trainlab.train.Callback] and overrides the events it needs; the
trainer calls only overridden methods, so an unused event costs nothing. The events:

- ``on_fit_start(trainer)`` — before the first step of ``fit`` (after a resume too);
- ``on_step_end(trainer, step)`` — after every optimizer step, with a [`Step`][trainlab.train.Step];
- ``on_record(trainer, record)`` — a record for the logs: every ``log_every`` steps the
  training loss, smoothed loss, learning rate, gradient norm, batch accuracy and the
  optimizer's ``track_stats``; each evaluation (``val_loss``, ``val_accuracy``, …); and
  events (``{"event": "resumed" | "rollback" | "skipped non-finite step", ...}``);
- ``on_checkpoint(trainer, path)`` — a checkpoint was submitted for writing;
- ``on_summary(trainer, summary)`` — the summary before it is written: add to it;
- ``on_fit_end(trainer, summary)`` — after the summary is written.

``close()`` is called when ``fit`` returns or raises, whatever happened. A callback adds
its own records to the logs with ``trainer.log(record)``.

A callback with state implements ``state_dict()`` → a tree of tensors, numbers, strings,
lists and dicts, and ``load_state_dict(state)``; the state is saved in every checkpoint
and handed back on resume, so a run with callbacks attached resumes exactly.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from torch import Tensor
from tqdm.auto import tqdm

from .. import _json as strict_json
from .run_folder import os_error_message

if TYPE_CHECKING:
    from .trainer import Trainer

EVENTS = (
    "on_fit_start",
    "on_step_end",
    "on_record",
    "on_checkpoint",
    "on_summary",
    "on_fit_end",
)


@dataclass
class Step:
    """What ``on_step_end`` sees: the step just taken and its batch.

    ``loss`` is the mini-batch loss (a float), ``smoothed_loss`` the bias-corrected
    exponential moving average of the mini-batch losses, ``grad_norm`` the global
    gradient norm before clipping, ``lr`` the first group's learning rate.
    """

    step: int
    epoch: int
    loss: float
    smoothed_loss: float
    grad_norm: float
    lr: float
    inputs: Tensor
    targets: Tensor
    outputs: Tensor


class Callback:
    """Base class of the trainer's callbacks: override the events you need."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step of ``fit``."""

    def on_step_end(self, trainer: Trainer, step: Step) -> None:
        """After every optimizer step."""

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """A record for the logs (training, evaluation or an event)."""

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        """A checkpoint was submitted; it is on disk once the writer has finished."""

    def on_summary(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """The summary before it is written to summary.json: add keys to it here."""

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the summary is written."""

    def close(self) -> None:
        """When ``fit`` returns or raises: release what the callback holds (hooks, files)."""

    def state_dict(self) -> Any:
        """State to save in checkpoints (None: nothing)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Restore what `state_dict` returned."""


def overriding(callbacks: list[Callback], event: str) -> list[Callback]:
    """The callbacks whose class overrides ``event``: the only ones the trainer calls."""
    base = getattr(Callback, event)
    return [cb for cb in callbacks if getattr(type(cb), event, base) is not base]


class _AppendLog(Callback):
    """A log file that is appended to and cut back to its length at a checkpoint on resume.

    A resumed run repeats the steps after its checkpoint; their records, written by the
    killed process, are cut so that they do not appear twice. With no checkpoint state
    (a run started afresh, or resumed from before any checkpoint) the file starts empty;
    state saved by an older trainlab, without the length, keeps the whole file.
    """

    filename = ""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.filename
        self._restored = False

    def on_fit_start(self, trainer: Trainer) -> None:
        if not self._restored:
            self._cut(0)
        self._restored = True  # a second fit() of one trainer appends

    def state_dict(self) -> Any:
        return {"bytes": _size(self.path)}

    def load_state_dict(self, state: Any) -> None:
        self._restored = True
        if isinstance(state, dict) and isinstance(state.get("bytes"), int):
            self._cut(state["bytes"])

    def _cut(self, length: int) -> None:
        if _size(self.path) > length:
            with open(self.path, "r+b") as file:
                file.truncate(length)


class JsonlLog(_AppendLog):
    """``metrics.jsonl``: one JSON object per record (always on)."""

    filename = "metrics.jsonl"

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        with open(self.path, "a") as file:
            file.write(strict_json.dumps(record) + "\n")


#: The longest metrics.jsonl read back; a run logs kilobytes per thousand steps.
MAX_METRICS_BYTES = 256 << 20
#: The longest line of metrics.jsonl: a record with the instruments' per-layer tables
#: takes kilobytes.
MAX_METRICS_LINE_BYTES = 1 << 20


def parse_json(data: bytes | str) -> Any:
    """The JSON in ``data``; nesting deeper than the parser's recursion is a ValueError too."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested deeper than the JSON reader's recursion limit") from None


class MetricsLog:
    """A run's ``metrics.jsonl``, read one line at a time: ``for record in MetricsLog(path)``.

    The log grows by whole lines, each written at once; a run killed mid-write leaves its
    last line cut short (no newline, not JSON). That line is skipped and `note` says so;
    damage anywhere else raises ValueError naming the file and the line. The file is
    refused unread over ``MAX_METRICS_BYTES`` (unless ``bounded`` is False: the run
    rebuilding its own table from its own log) and a line over ``MAX_METRICS_LINE_BYTES``,
    and nothing is kept between lines, so a reader that keeps little uses little memory.
    """

    def __init__(self, path: str | Path, *, bounded: bool = True) -> None:
        self.path = Path(path)
        self.bounded = bounded
        self.cut_line: int | None = None  # the number of the cut-short last line skipped

    @property
    def note(self) -> str | None:
        """What a person should know of a read that skipped a cut-short last line."""
        if self.cut_line is None:
            return None
        return (
            f"{self.path} line {self.cut_line} is cut short (the run stopped while writing it) "
            "and was skipped"
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record in order; nothing when the file does not exist.

        Raises:
            ValueError: the file cannot be read, is too large, or a line other than a
                cut-short last one is not a JSON object.
        """
        self.cut_line = None
        try:
            if not self.path.exists():
                return
            self._check_size()
            with open(self.path, "rb") as file:
                yield from self._records(file)
        except OSError as error:
            raise ValueError(f"Invalid run file: {os_error_message(error, 'read')}") from None

    def _check_size(self) -> None:
        info = os.stat(self.path)  # follows links: the file that would be read
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(
                f"Invalid run file: {self.path} is not a regular file (a device, pipe or folder)"
            )
        if self.bounded and info.st_size > MAX_METRICS_BYTES:
            raise ValueError(
                f"Invalid run file: {self.path} has {info.st_size:,} bytes, over the limit "
                f"{__name__}.MAX_METRICS_BYTES = {MAX_METRICS_BYTES:,} (raise it, or read the "
                "file line by line yourself)"
            )

    def _records(self, file: Any) -> Iterator[dict[str, Any]]:
        read = 0
        for number in itertools.count(1):
            line = file.readline(MAX_METRICS_LINE_BYTES + 1)
            read += len(line)
            if not line:
                return
            if self.bounded and read > MAX_METRICS_BYTES:
                raise ValueError(
                    f"Invalid run file: {self.path} grew past its limit as it was read"
                )
            if len(line) > MAX_METRICS_LINE_BYTES:
                raise ValueError(
                    f"Invalid run file: {self.path} line {number} is longer than "
                    f"{MAX_METRICS_LINE_BYTES:,} bytes (a record is a line of kilobytes)"
                )
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except ValueError as error:
                if not line.endswith(b"\n"):  # the last line, cut short: what a kill leaves
                    self.cut_line = number
                    return
                raise ValueError(
                    f"Invalid run file: {self.path} line {number} is not JSON ({error})"
                ) from None
            if not isinstance(record, dict):
                raise ValueError(
                    f"Invalid run file: {self.path} line {number} holds a JSON "
                    f"{type(record).__name__}, not an object"
                )
            yield record


class CsvLog(Callback):
    """``metrics.csv``: the training and evaluation records of ``metrics.jsonl`` as a table.

    Rewritten from ``metrics.jsonl`` at every checkpoint and at the end, so its header is
    the union of every key seen (a new statistic adds a column to every row, blank where
    a row lacks it) and a resume needs nothing of its own: it follows the cut log.
    Events and nested values (the instruments' per-layer tables) stay in the JSON log.
    """

    filename = "metrics.csv"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.filename
        self.source = Path(run_dir) / JsonlLog.filename

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        self.write()

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.write()

    def write(self) -> None:
        """Rewrite the table from the JSON log (a temporary file, then a rename)."""
        rows = [
            {k: v for k, v in record.items() if not isinstance(v, (dict, list))}
            # Line by line; the run's own log, however long it grew, is not refused.
            for record in MetricsLog(self.source, bounded=False)
            if "event" not in record
        ]
        columns = list(dict.fromkeys(key for row in rows for key in row))
        text = io.StringIO()
        writer = csv.writer(text)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(key)) for key in columns])
        temp = self.path.with_name(f".{self.filename}.tmp")
        temp.write_text(text.getvalue())
        temp.replace(self.path)


class TensorBoardLog(Callback):
    """TensorBoard event files in ``run_dir/tensorboard`` (needs the tensorboard package)."""

    def __init__(self, run_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError(
                "Invalid run.tensorboard: true, but the tensorboard package is not installed "
                "(pip install tensorboard, or set run.tensorboard=false; metrics.jsonl is "
                "always written)"
            ) from None
        self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(key, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class ProgressBar(Callback):
    """The live progress: a tqdm bar on a terminal or in a notebook, plain lines in a log (CI).

    In a Jupyter notebook ``tqdm.auto`` draws its widget bar (the text bar without
    ipywidgets): a notebook's stderr is no terminal, yet it shows a redrawn bar.

    Shows the epoch, the step, the smoothed training loss, the learning rate and — as soon
    as an evaluation has produced them — the validation loss and accuracy.
    """

    def __init__(self, stream: TextIO | None = None, every: int = 20) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.live = self.stream.isatty() or in_notebook()
        self.bar: Any = None
        self.latest: dict[str, Any] = {}
        self.records = 0
        self.start = time.perf_counter()

    def on_fit_start(self, trainer: Trainer) -> None:
        self.start = time.perf_counter()
        self.first = trainer.state.step
        if self.live:
            self.bar = tqdm(
                total=trainer.steps_total,
                initial=trainer.state.step,
                file=self.stream,
                unit="step",
                dynamic_ncols=True,
            )

    def on_step_end(self, trainer: Trainer, step: Step) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def on_record(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if "event" in record or "diagnostics" in record:
            return
        self.latest.update(record)
        shown = self._fields()
        if self.bar is not None:
            self.bar.set_postfix_str(shown, refresh=False)
            return
        self.records += 1
        if "val_loss" in record or (self.records - 1) % self.every == 0:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            rate = (trainer.state.step - self.first) / elapsed
            self.stream.write(
                f"epoch {self.latest.get('epoch', 0):>3} step {trainer.state.step:>6}/"
                f"{trainer.steps_total} {shown} {rate:6.1f} steps/s\n"
            )
            self.stream.flush()

    def _fields(self) -> str:
        parts = []
        for key, label, form in (
            ("smoothed_loss", "loss", ".4f"),
            ("lr", "lr", ".2e"),
            ("val_loss", "val_loss", ".4f"),
            ("val_accuracy", "val_acc", ".3f"),
        ):
            value = self.latest.get(key)
            if isinstance(value, (int, float)) and not math.isnan(value):
                parts.append(f"{label} {value:{form}}")
        return " ".join(parts)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_fit_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        self.close()


def in_notebook() -> bool:
    """True in a Jupyter kernel (the test ``tqdm.autonotebook`` makes): IPython is imported
    and its shell runs in an ``IPKernelApp``, not in a terminal."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


__all__ = [
    "EVENTS",
    "Callback",
    "CsvLog",
    "JsonlLog",
    "ProgressBar",
    "Step",
    "TensorBoardLog",
    "overriding",
]
