"""Coarse → fine: narrow a search space to the best region of a previous sweep.

The lecture's advice for random search: search coarsely, then again in a smaller range
around the best points. From the previous sweep's ``trials.csv`` take its best quarter of
complete trials (at least ``MIN_BEST``) and, for each parameter of the space,

    log-uniform  [min / 1.5, max × 1.5]            (a margin on the log scale)
    uniform      [min − 0.1 w, max + 0.1 w]        (w: the width of the original range)
    int          [⌊min − 0.1 w⌋, ⌈max + 0.1 w⌉]    (stays an integer)
    categorical  the choices seen among them

each clipped to the original range, so the narrowed space lies inside the original one and
holds every value of the best trials.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._checks import fail
from .space import Param, Space, read_bounded

MIN_BEST = 3
"""The fewest trials a refined region is estimated from; `refine` needs at least this many
complete trials in the previous sweep.
"""
#: The factor a log-uniform range is widened by, and the margin of a uniform or int one.
LOG_FACTOR = 1.5
MARGIN = 0.1
SWEEP_FILE = "sweep.json"
METRICS = {"val_accuracy": "maximize", "val_loss": "minimize"}
"""The metrics a sweep can optimize, and which way: metric name → ``"maximize"`` or
``"minimize"``.
"""


@dataclass(frozen=True)
class Refinement:
    """A narrowed space and where it came from."""

    space: Space
    source: str  # the previous sweep folder
    trials: tuple[int, ...]  # the numbers of the best trials it was narrowed to
    finished: int  # the previous sweep's complete trials
    metric: str

    def header(self) -> str:
        """A comment for the narrowed space.toml: where it came from."""
        return (
            f"# narrowed by trainlab sweep --refine {self.source}: the best {len(self.trials)} "
            f"of its {self.finished} complete trials by {self.metric} "
            f"(trials {', '.join(map(str, self.trials))})\n"
        )

    def to_dict(self) -> dict[str, Any]:
        """Where the space came from, as JSON values: the previous sweep folder (absolute), the
        best trials' numbers and the metric.
        """
        return {
            "refined_from": str(Path(self.source).resolve()),
            "trials": list(self.trials),
            "metric": self.metric,
        }


def _previous(folder: Path, metric: str) -> tuple[list[dict[str, str]], str]:
    """The complete rows of a sweep folder's trials.csv, and the metric they were ranked by."""
    table = folder / "trials.csv"
    if not table.is_file():
        raise fail(
            "--refine",
            str(folder),
            "not a sweep folder: no trials.csv (pass the --out of a finished trainlab sweep)",
        )
    try:
        reader = csv.DictReader(io.StringIO(read_bounded(table, "--refine"), newline=""))
        rows = list(reader)
    except csv.Error as error:
        raise fail("--refine", str(table), f"not a readable trials.csv: {error}") from None
    for line, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # a row longer or shorter than the header
            raise fail(
                "--refine",
                str(table),
                f"line {line} has {len(reader.fieldnames or [])} columns in its header but "
                "not in the row (a damaged trials.csv)",
            )
    missing = [c for c in ("number", "state", "value") if c not in (reader.fieldnames or [])]
    if missing:
        raise fail("--refine", str(table), f"has no column {', '.join(missing)}")
    rows = [row for row in rows if row["state"] == "COMPLETE"]
    for row in rows:
        try:
            int(row["number"])
            if not math.isfinite(float(row["value"])):
                raise ValueError
        except ValueError:
            raise fail(
                "--refine",
                str(table),
                f"trial {row['number']!r} has value {row['value']!r} (must be a finite number)",
            ) from None
    saved = folder / SWEEP_FILE
    if saved.exists():
        try:
            about = json.loads(read_bounded(saved, "--refine"))
        except (json.JSONDecodeError, RecursionError) as error:  # nested past the recursion
            raise fail("--refine", str(saved), f"not JSON: {error}") from None
        if not isinstance(about, dict):
            raise fail("--refine", str(saved), "must hold a JSON object (as trainlab writes it)")
        metric = about.get("metric", metric)
        if metric not in METRICS:
            raise fail(
                "--refine",
                str(saved),
                f"its metric {metric!r} is not one of {', '.join(METRICS)}",
            )
    return rows, metric


def _narrow(param: Param, cells: list[str], source: str) -> Param:
    """``param`` narrowed to the values ``cells`` (as trials.csv writes them) hold."""
    if param.kind == "categorical":
        seen = {str(cell) for cell in cells}
        kept = tuple(c for c, label in zip(param.choices, param.labels()) if str(label) in seen)
        if not kept:
            raise fail("--refine", source, f"its best trials have no choice of {param.key}")
        return replace(param, choices=kept)
    try:
        values = [float(cell) for cell in cells]
    except ValueError:
        raise fail("--refine", source, f"its trials.csv has a non-number {param.key}") from None
    low, high = min(values), max(values)
    if param.log:
        low, high = low / LOG_FACTOR, high * LOG_FACTOR
    else:
        margin = MARGIN * (param.high - param.low)
        low, high = low - margin, high + margin
    if param.kind == "int":
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, param.low), min(high, param.high)
    if low >= high:
        raise fail(
            "--refine", source, f"its best values of {param.key} lie outside the --space range"
        )
    return replace(param, low=low, high=high)


def refine(space: Space, previous: str | Path, metric: str) -> Refinement:
    """``space`` narrowed to the best quarter (at least ``MIN_BEST``) of the complete trials of
    the sweep folder ``previous``, ranked by its metric (``metric`` for a folder that does not
    say).

    Raises:
        ValueError: not a sweep folder, fewer than ``MIN_BEST`` complete trials, or a key
            of ``space`` that the previous sweep did not search.
    """
    source = str(previous)
    rows, metric = _previous(Path(previous), metric)
    if len(rows) < MIN_BEST:
        raise fail(
            "--refine",
            source,
            f"has {len(rows)} complete trial{'s' * (len(rows) != 1)}; at least {MIN_BEST} "
            "are needed to narrow the space (run more trials there first)",
        )
    missing = [p.key for p in space.params if p.key not in rows[0]]
    if missing:
        raise fail(
            "--space",
            ", ".join(missing),
            f"not a parameter of the sweep in {source} (its trials.csv has no such column)",
        )
    best = sorted(rows, key=lambda row: float(row["value"]), reverse=METRICS[metric] == "maximize")
    best = best[: max(MIN_BEST, math.ceil(len(rows) / 4))]
    params = tuple(_narrow(p, [row[p.key] for row in best], source) for p in space.params)
    numbers = tuple(sorted(int(row["number"]) for row in best))
    return Refinement(Space(params), source, numbers, len(rows), metric)


__all__ = ["LOG_FACTOR", "MARGIN", "METRICS", "MIN_BEST", "SWEEP_FILE", "Refinement", "refine"]
