"""What a person reads after training: the summary, evaluation and run tables."""

from __future__ import annotations

import math
from typing import Any


def summary_table(summary: dict[str, Any], run_dir: str) -> str:
    """The end-of-run table: metrics per split, generalization gap, time, folder."""
    classification = summary.get("task", "classification") == "classification"
    results = {
        split: {
            key[len(split) + 1 :]: value
            for key, value in summary.items()
            if key.startswith(f"{split}_") and isinstance(value, (int, float))
        }
        for split in ("train", "val", "test")
    }
    rows = [_table(results)]
    if "ema_test_accuracy" in summary:
        rows.append(f"{'test EMA':<8}{summary['ema_test_accuracy'] * 100:>9.1f}%")
    if classification:
        gap = summary["generalization_gap"] * 100
        rows.append(f"generalization gap (train − test accuracy): {gap:.1f} points")
    else:
        rows.append(f"generalization gap (test − train loss): {summary['generalization_gap']:.4g}")
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


def metrics_table(results: dict[str, dict[str, float]], title: str) -> str:
    """``trainlab evaluate``'s table: one row per split, one column per metric."""
    return f"{title}\n{_table(results)}"


def _table(results: dict[str, dict[str, float]]) -> str:
    metrics = list(next(iter(results.values())))
    rows = [f"{'':<8}" + "".join(f"{m:>10}" for m in metrics)]
    for split, values in results.items():
        cells = []
        for metric in metrics:
            value = values.get(metric, math.nan)
            cells.append(f"{value * 100:>9.1f}%" if metric == "accuracy" else f"{value:>10.4f}")
        rows.append(f"{split:<8}" + "".join(cells))
    return "\n".join(rows)


def runs_table(runs: list[dict[str, Any]]) -> str:
    """``trainlab runs``: one line per run folder."""
    header = (
        f"{'run':<32} {'status':<16} {'steps':>7} {'test acc':>9} {'test loss':>10} {'time':>8}"
    )
    rows = [header, "-" * len(header)]
    for run in runs:
        accuracy = run.get("test_accuracy")
        loss = run.get("test_loss")
        seconds = run.get("seconds")
        rows.append(
            f"{run['name'][:32]:<32} {run['status'][:16]:<16} {run.get('steps') or 0:>7} "
            + (f"{accuracy * 100:>8.1f}%" if isinstance(accuracy, float) else f"{'—':>9}")
            + (f" {loss:>10.4f}" if isinstance(loss, float) else f" {'—':>10}")
            + (f" {seconds:>7.1f}s" if isinstance(seconds, (int, float)) else f" {'—':>8}")
        )
    return "\n".join(rows)
