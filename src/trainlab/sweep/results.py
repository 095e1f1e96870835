"""A sweep's results: ``trials.csv``, ``best.toml`` and the plots, from the study's trials."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..train.config import dump_toml
from ..train.trainer import write_atomic
from .refine import SWEEP_FILE
from .space import Param, trial_config

if TYPE_CHECKING:
    from .study import Sweep

TRIALS_FILE = "trials.csv"
"""The table of every trial (number, state, parameters, metric) written in the sweep folder."""
BEST_FILE = "best.toml"
"""The best trial's complete config, written in the sweep folder: ``trainlab train`` runs it."""
PLOTS_DIR = "plots"


def rows(sweep: Sweep, study: Any) -> list[dict[str, Any]]:
    """One row per trial, by number: state, value, each parameter, run folder, seconds."""
    found = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        attrs = trial.user_attrs
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        row["value"] = trial.value if trial.value is not None else ""
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            row["value"] = trial.intermediate_values[max(trial.intermediate_values)]
        for param in sweep.space.params:
            row[param.key] = trial.params.get(param.key, "")
        row["run_dir"] = attrs.get("run_dir", "")
        row["seconds"] = round(attrs["seconds"], 2) if "seconds" in attrs else ""
        row["note"] = attrs.get("error", attrs.get("failed", ""))
        found.append(row)
    return found


def write_results(sweep: Sweep, study: Any, *, plots: bool = True) -> dict[str, Any]:
    """Write trials.csv, sweep.json (study, storage, metric, space, best trial, where a
    refined space came from), best.toml and the plots (``plots``), all from the same trials.

    Without a complete trial there is no best.toml: one left from earlier is removed, so it
    never names a trial that trials.csv does not hold.
    """
    out = Path(sweep.out)
    table = rows(sweep, study)
    text = io.StringIO()
    columns = ["number", "state", "value", *(p.key for p in sweep.space.params)]
    writer = csv.DictWriter(text, [*columns, "run_dir", "seconds", "note"])
    writer.writeheader()
    writer.writerows(table)
    write_atomic(out / TRIALS_FILE, text.getvalue())
    complete = [row for row in table if row["state"] == "COMPLETE"]
    best = None
    if complete:
        pick = max if sweep.metric == "val_accuracy" else min
        best = pick(complete, key=lambda row: row["value"])
        params = {p.key: p.value(best[p.key]) for p in sweep.space.params}
        config = trial_config(sweep.config, list(sweep.sets), params)
        header = (
            f"# trainlab sweep {sweep.study!r}: the best of {len(table)} trials, trial "
            f"{best['number']} ({sweep.metric} = {best['value']:.4f}); train it with\n"
            f"# trainlab train {out / BEST_FILE}\n"
        )
        write_atomic(out / BEST_FILE, header + dump_toml(config))
        if plots:
            plot(sweep, table, out / PLOTS_DIR)
    else:
        (out / BEST_FILE).unlink(missing_ok=True)
    about = {
        "study": sweep.study,
        "storage": sweep.storage_id,  # None: the sweep folder's study.journal
        "metric": sweep.metric,
        "space": sweep.space.to_dict(),
        "best": best,
        **(sweep.refinement.to_dict() if sweep.refinement else {}),
    }
    write_atomic(out / SWEEP_FILE, json.dumps(about, indent=2, default=str) + "\n")
    return {"out": str(out), "trials": table, "best": best}


def _axis(param: Param, values: list[Any]) -> tuple[list[float], list[str] | None]:
    """Positions on the axis of ``param`` (categories as 0, 1, …) and their labels."""
    if param.kind == "categorical":
        labels = [str(c) for c in param.labels()]
        return [labels.index(str(v)) for v in values], labels
    return [float(v) for v in values], None


def plot(sweep: Sweep, table: list[dict[str, Any]], folder: Path) -> None:
    """``params.png`` (the metric against each parameter, log axes for log-uniform ones),
    ``history.png`` (each trial's value and the best so far) and ``parallel.png``
    (parallel coordinates, each line one trial, coloured by its value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(exist_ok=True)
    done = [r for r in table if r["state"] in ("COMPLETE", "PRUNED") and r["value"] != ""]
    params = sweep.space.params
    label = sweep.metric.replace("_", " ")

    figure, axes = plt.subplots(1, len(params), figsize=(3.6 * len(params), 3.2), squeeze=False)
    for axis, param in zip(axes[0], params):
        for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
            chosen = [r for r in done if r["state"] == state]
            x, labels = _axis(param, [r[param.key] for r in chosen])
            axis.scatter(x, [r["value"] for r in chosen], marker=marker, label=state.lower())
        if param.log:
            axis.set_xscale("log")
        _, labels = _axis(param, [])
        if labels:
            axis.set_xticks(range(len(labels)), labels)
        axis.set_xlabel(param.key)
        axis.set_ylabel(label)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "params.png", dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(5, 3.2))
    finished = sorted(done, key=lambda r: r["number"])
    better = max if sweep.metric == "val_accuracy" else min
    best, best_so_far = math.nan, []
    for row in finished:
        if row["state"] == "COMPLETE":
            best = row["value"] if math.isnan(best) else better(best, row["value"])
        best_so_far.append(best)
    axis.scatter([r["number"] for r in finished], [r["value"] for r in finished], s=12)
    axis.step(
        [r["number"] for r in finished], best_so_far, where="post", color="C3", label="best so far"
    )
    axis.set_xlabel("trial")
    axis.set_ylabel(label)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(folder / "history.png", dpi=80)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(1.8 * (len(params) + 1) + 1, 3.2))
    values = [r["value"] for r in done]
    low, high = min(values, default=0.0), max(values, default=1.0)
    colours = plt.get_cmap("viridis")
    for row in done:
        ys = []
        for param in params:
            x, labels = _axis(param, [row[param.key]])
            if labels:
                ys.append(x[0] / max(len(labels) - 1, 1))
            else:
                lo, hi, v = float(param.low), float(param.high), x[0]
                if param.log:
                    lo, hi, v = math.log(lo), math.log(hi), math.log(v)
                ys.append((v - lo) / (hi - lo))
        ys.append((row["value"] - low) / (high - low) if high > low else 0.5)
        shade = ys[-1] if sweep.metric == "val_accuracy" else 1 - ys[-1]
        axis.plot(
            range(len(ys)),
            ys,
            color=colours(shade),
            alpha=0.8,
            linestyle="-" if row["state"] == "COMPLETE" else ":",
        )
    names = [p.key + (" (log)" if p.log else "") for p in params]
    axis.set_xticks(range(len(params) + 1), [*names, label], fontsize=8)
    axis.set_yticks([0, 1], ["low", "high"])
    axis.set_title("parallel coordinates (dotted: pruned)", fontsize=9)
    figure.tight_layout()
    figure.savefig(folder / "parallel.png", dpi=80)
    plt.close(figure)


__all__ = ["BEST_FILE", "SWEEP_FILE", "TRIALS_FILE", "plot", "rows", "write_results"]
