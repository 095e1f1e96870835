"""Figures of a run, drawn with matplotlib's Agg canvas (no display, nothing global changed).

Each function writes PNG files and returns their paths; the figures are sized and labelled
to be read on their own or embedded in an HTML report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

CURVES_FILE = "curves.png"
LAYERS_FILE = "layers.png"
HISTOGRAMS_FILE = "histograms.png"


def _figure(width: float = 7.0, height: float = 4.0, rows: int = 1, columns: int = 1) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


#: Points drawn per line of the curves: a figure 1,200 pixels wide shows no more, and a log of
#: millions of steps is then drawn in bounded time and memory (evenly spaced records).
MAX_CURVE_POINTS = 2000
#: What the curves keep of a training record and of an evaluation record.
TRAIN_KEYS = ("step", "loss", "smoothed_loss", "accuracy")
VAL_KEYS = ("step", "val_loss", "val_accuracy")


def curves(metrics: Iterable[dict[str, Any]], path: Path | IO[bytes]) -> Path | IO[bytes]:
    """Loss (raw and smoothed) and accuracy against the step, training and validation.

    ``metrics`` is read once, in order (a list, or a `trainlab.train.runs.MetricsLog`);
    ``path`` is a file name or a binary stream, written as PNG. A value that is not a
    number (null for a NaN) leaves a gap.
    """
    train, val = _sampled(metrics)
    figure, axes = _figure(rows=1, columns=2, width=10)
    loss_ax, acc_ax = axes[0]
    _plot(loss_ax, train, "loss", alpha=0.3, label="mini-batch loss")
    _plot(loss_ax, train, "smoothed_loss", label="smoothed loss")
    _plot(loss_ax, val, "val_loss", "o-", label="validation loss")
    loss_ax.set(xlabel="step", ylabel="loss", title="Loss")
    positive = [r["loss"] for r in train if _positive(r.get("loss"))]
    if positive and max(positive) > 20 * min(positive):  # spans decades: a log scale reads it
        loss_ax.set_yscale("log")
    if loss_ax.lines:
        loss_ax.legend()
    _plot(acc_ax, train, "accuracy", alpha=0.4, label="mini-batch accuracy")
    _plot(acc_ax, val, "val_accuracy", "o-", label="validation accuracy")
    acc_ax.set(xlabel="step", ylabel="accuracy", title="Accuracy")
    if acc_ax.lines:
        acc_ax.legend()
    figure.savefig(path, format="png")
    return path


def _sampled(metrics: Iterable[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """The training and the evaluation records, each at most ``2 * MAX_CURVE_POINTS``."""
    train, val = _EvenSample(), _EvenSample()
    for record in metrics:
        if "event" in record or not _number(record.get("step")):
            continue
        if "loss" in record:
            train.add({key: record.get(key) for key in TRAIN_KEYS})
        if "val_loss" in record:
            val.add({key: record.get(key) for key in VAL_KEYS})
    return train.items, val.items


class _EvenSample:
    """Evenly spaced items of a stream of unknown length, and its last: every item while
    there are at most ``2 * MAX_CURVE_POINTS``, then every 2nd, every 4th, … (the stride
    doubles)."""

    def __init__(self) -> None:
        self.kept: list[dict[str, Any]] = []
        self.last: dict[str, Any] | None = None
        self.stride, self.seen = 1, 0

    def add(self, item: dict[str, Any]) -> None:
        if self.seen % self.stride == 0:
            self.kept.append(item)
            if len(self.kept) > 2 * MAX_CURVE_POINTS:
                self.kept = self.kept[::2]
                self.stride *= 2
        self.last = item
        self.seen += 1

    @property
    def items(self) -> list[dict[str, Any]]:
        """The kept items, ending with the stream's last: where a curve ended matters."""
        ends = self.last is None or (self.kept and self.kept[-1] is self.last)
        return self.kept if ends else [*self.kept, self.last]


def _plot(ax: Any, records: list[dict[str, Any]], key: str, *style: str, **options: Any) -> None:
    """``key`` against the step, where it is a number; nothing when it never is."""
    points = [(r["step"], r[key]) for r in records if _number(r.get(key))]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, *style, **options)


def layer_traces(history: list[dict[str, Any]], path: Path) -> Path:
    """Per layer: activation std, dead/saturated fraction; per tensor: update/weight ratio."""
    figure, axes = _figure(rows=1, columns=3, width=14)
    std_ax, unit_ax, ratio_ax = axes[0]
    steps = [sample["step"] for sample in history]
    layers = list(history[-1]["layers"]) if history else []
    for name in layers:
        std = [sample["layers"].get(name, {}).get("std", math.nan) for sample in history]
        std_ax.plot(steps, std, label=name)
        for key in ("dead", "saturated"):
            if key in history[-1]["layers"][name]:
                values = [s["layers"].get(name, {}).get(key, math.nan) for s in history]
                unit_ax.plot(steps, values, label=f"{name} {key}")
    std_ax.set(xlabel="step", ylabel="activation std", title="Activations per layer")
    if any(s > 0 for line in std_ax.lines for s in line.get_ydata() if math.isfinite(s)):
        std_ax.set_yscale("log")
    unit_ax.set(
        xlabel="step",
        ylabel="fraction of units",
        title="Dead / saturated units",
        ylim=(-0.02, 1.02),
    )
    for name in list(history[-1]["parameters"]) if history else []:
        ratios = [s["parameters"].get(name, {}).get("update_ratio", math.nan) for s in history]
        ratio_ax.plot(steps, ratios, label=name)
    ratio_ax.axhline(1e-3, color="black", linestyle="--", linewidth=1, label="1e-3 (rule of thumb)")
    ratio_ax.set(xlabel="step", ylabel="‖Δθ‖ / ‖θ‖", title="Update / weight ratio", yscale="log")
    for ax in (std_ax, unit_ax, ratio_ax):
        if ax.lines and len(ax.lines) <= 12:
            ax.legend(fontsize=6)
    figure.savefig(path)
    return path


def histograms(sample: dict[str, Any], path: Path) -> Path:
    """One sample's activation histograms (per layer) and gradient histograms (per tensor)."""
    panels = [
        (f"{name} activations", stats["histogram"])
        for name, stats in sample["layers"].items()
        if stats.get("histogram")
    ][:8]
    panels += [
        (f"{name} gradient", stats["grad_histogram"])
        for name, stats in sample["parameters"].items()
        if stats.get("grad_histogram")
    ][:8]
    columns = min(4, max(1, len(panels)))
    rows = max(1, -(-len(panels) // columns))
    figure, axes = _figure(width=3 * columns, height=2.4 * rows, rows=rows, columns=columns)
    for ax, (title, histogram) in zip(axes.flat, panels):
        counts = histogram["counts"]
        if counts:
            width = (histogram["high"] - histogram["low"]) / len(counts) or 1.0
            edges = [histogram["low"] + i * width for i in range(len(counts))]
            ax.bar(edges, counts, width=width, align="edge")
        ax.set_title(f"{title} (step {sample['step']})", fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    figure.savefig(path)
    return path


def diagnostics_figures(
    run_dir: Path, history: list[dict[str, Any]], metrics: list[dict[str, Any]]
) -> list[Path]:
    """The run's figures: curves, layer traces and (when kept) the last histograms."""
    run_dir = Path(run_dir)
    paths = [curves(metrics, run_dir / CURVES_FILE), layer_traces(history, run_dir / LAYERS_FILE)]
    last = history[-1] if history else {"layers": {}, "parameters": {}}
    kept = [*last["layers"].values(), *last["parameters"].values()]
    if any(s.get("histogram") or s.get("grad_histogram") for s in kept):
        paths.append(histograms(last, run_dir / HISTOGRAMS_FILE))
    return paths


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
