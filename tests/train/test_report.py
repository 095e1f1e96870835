"""The progress line: printed every `every` calls when the stream is not a terminal."""

from __future__ import annotations

import io

from trainlab.train.report import ProgressLine


def record(step: int) -> dict:
    return {"step": step, "total_steps": 10, "epoch": 0, "loss": 1.0, "accuracy": 0.5, "lr": 0.1}


def printed_steps(every: int, calls: int) -> list[int]:
    stream = io.StringIO()
    progress = ProgressLine(stream, every=every)
    for step in range(1, calls + 1):
        progress(record(step))
    return [int(line.split("]")[1].split("/")[0]) for line in stream.getvalue().splitlines()]


def test_a_log_gets_the_first_call_and_every_every_th_after_it():
    assert printed_steps(every=1, calls=4) == [1, 2, 3, 4]
    assert printed_steps(every=3, calls=7) == [1, 4, 7]
