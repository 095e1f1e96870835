"""What a person sees while and after training: a live progress line and a summary table."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class ProgressLine:
    """A one-line progress bar: epoch, steps, loss, accuracy, learning rate, steps/s.

    On a terminal the line is redrawn in place; elsewhere (a log file, CI) a line is
    printed every ``every`` calls, so logs stay readable.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 24, every: int = 20) -> None:
        self.stream = stream or sys.stderr
        self.width, self.every, self.calls = width, every, 0
        self.live = self.stream.isatty()
        self.start = time.perf_counter()
        self.first_step: int | None = None

    def __call__(self, record: dict[str, Any]) -> None:
        self.calls += 1
        if self.first_step is None:
            self.first_step, self.start = record["step"], time.perf_counter()
        if not self.live and (self.calls - 1) % self.every:  # calls 1, 1 + every, ...
            return
        total = max(record["total_steps"], 1)
        done = min(record["step"] / total, 1.0)
        filled = int(done * self.width)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = (record["step"] - self.first_step) / elapsed
        line = (
            f"epoch {record['epoch']:>3} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{record['step']:>6}/{total} loss {record['loss']:.4f} "
            f"acc {record['accuracy']:.3f} lr {record['lr']:.2e} {rate:6.1f} steps/s"
        )
        if self.live:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


def summary_table(summary: dict[str, Any], run_dir: str) -> str:
    """The end-of-run table: accuracy and loss per split, generalization gap, time, folder."""
    rows = [f"{'':<8}{'accuracy':>10}{'loss':>10}"]
    for split in ("train", "val", "test"):
        accuracy, loss = summary[f"{split}_accuracy"] * 100, summary[f"{split}_loss"]
        rows.append(f"{split:<8}{accuracy:>9.1f}%{loss:>10.4f}")
    if "ema_test_accuracy" in summary:
        rows.append(f"{'test EMA':<8}{summary['ema_test_accuracy'] * 100:>9.1f}%")
    gap = summary["generalization_gap"] * 100
    rows.append(f"generalization gap (train − test accuracy): {gap:.1f} points")
    rows.append(
        f"{summary['steps']} steps, {summary['epochs']:g} epochs in {summary['seconds']:.1f} s"
        + (
            f"; {summary['skipped_steps']} non-finite steps skipped"
            if summary["skipped_steps"]
            else ""
        )
        + (f"; {summary['rollbacks']} rollbacks" if summary["rollbacks"] else "")
    )
    rows.append(f"run folder: {run_dir}")
    return "\n".join(rows)
