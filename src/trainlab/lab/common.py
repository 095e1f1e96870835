"""Helpers shared by the lab's experiments (part of every experiment's cache key)."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path
from typing import Any

from torch import nn

from ..train import Callback, NonFiniteError, Step, fit
from ..train.checkpoint import CHECKPOINTS_DIR


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def plain_log_labels(axis: Any) -> None:
    """Label a log y axis with plain numbers (0.2, 0.5, 1, 2) instead of 2 × 10⁻¹."""
    from matplotlib.ticker import FuncFormatter  # matplotlib only once there is a figure

    axis.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.yaxis.set_minor_formatter(
        FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "25" else "")
    )


class LossCurve(Callback):
    """Keeps every step's mini-batch loss (``raw``) or the trainer's smoothed loss."""

    def __init__(self, raw: bool = False) -> None:
        self.raw = raw
        self.losses: list[float] = []

    def on_step_end(self, trainer: Any, step: Step) -> None:
        self.losses.append(step.loss if self.raw else step.smoothed_loss)


def sgd_run(
    model: nn.Module,
    train: Any,
    *,
    val: Any,
    run_dir: Path,
    lr: float,
    momentum: float,
    batch_size: int,
    seed: int,
    raw: bool = False,
    settings: dict[str, Any] | None = None,
    **options: Any,
) -> tuple[list[float], dict[str, Any] | None]:
    """SGD with momentum through ``trainlab.fit``: (the loss of every step, the summary).

    The summary is None when the loss became non-finite (the curve stops there). A lab run
    is never resumed, so its checkpoints — most of a run folder's size — are deleted after.
    """
    curve = LossCurve(raw)
    try:
        summary = fit(
            model,
            train,
            val=val,
            run_dir=run_dir,
            callbacks=[curve],
            optimizer="sgd",
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            keep_best_by=None,
            settings={"optimizer.options": {"momentum": momentum}, **(settings or {})},
            progress=False,  # one of many runs inside an experiment: no bar of its own
            **options,
        )
    except NonFiniteError:
        summary = None
    finally:
        shutil.rmtree(Path(run_dir) / CHECKPOINTS_DIR, ignore_errors=True)
    return curve.losses, summary
