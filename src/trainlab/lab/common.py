"""Helpers shared by the lab's experiments (part of every experiment's cache key)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Small matrices: more threads only add overhead, and results depend less on the host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def plain_log_labels(axis: Any) -> None:
    """Label a log y axis with plain numbers (0.2, 0.5, 1, 2) instead of 2 × 10⁻¹."""
    from matplotlib.ticker import FuncFormatter  # matplotlib only once there is a figure

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else "")
    )
