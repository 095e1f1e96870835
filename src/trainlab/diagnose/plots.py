"""Figures of a run, drawn with matplotlib's Agg canvas (no display, nothing global changed).

Each function writes PNG files and returns their paths; the figures are sized and labelled
to be read on their own or embedded in an HTML report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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


def curves(metrics: list[dict[str, Any]], path: Path) -> Path:
    """Loss (raw and smoothed) and accuracy against the step, training and validation."""
    figure, axes = _figure(rows=1, columns=2, width=10)
    loss_ax, acc_ax = axes[0]
    train = [r for r in metrics if "loss" in r and "event" not in r]
    val = [r for r in metrics if "val_loss" in r]
    if train:
        steps = [r["step"] for r in train]
        loss_ax.plot(steps, [r["loss"] for r in train], alpha=0.3, label="mini-batch loss")
        loss_ax.plot(steps, [r["smoothed_loss"] for r in train], label="smoothed loss")
    if val:
        loss_ax.plot(
            [r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss"
        )
    loss_ax.set(xlabel="step", ylabel="loss", title="Loss")
    positive = [r["loss"] for r in train if _positive(r.get("loss"))]
    if positive and max(positive) > 20 * min(positive):  # spans decades: a log scale reads it
        loss_ax.set_yscale("log")
    loss_ax.legend()
    if any("accuracy" in r for r in train):
        acc_ax.plot(
            [r["step"] for r in train if "accuracy" in r],
            [r["accuracy"] for r in train if "accuracy" in r],
            alpha=0.4,
            label="mini-batch accuracy",
        )
    if any("val_accuracy" in r for r in val):
        acc_ax.plot(
            [r["step"] for r in val],
            [r["val_accuracy"] for r in val],
            "o-",
            label="validation accuracy",
        )
    acc_ax.set(xlabel="step", ylabel="accuracy", title="Accuracy")
    if acc_ax.lines:
        acc_ax.legend()
    figure.savefig(path)
    return path


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
    return isinstance(value, (int, float)) and value > 0
