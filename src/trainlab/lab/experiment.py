"""The lab's experiments: a lecture's claim, a run, figures, numbers and a verdict.

An experiment is a function registered with `experiment`: it gets a
`Context` (output folder, quick or full mode, seed), runs trainlab's own
optimizers, trainer, models and data, draws its figures with ``ctx.figure`` and returns
an `Outcome` — the verdict computed from the numbers by the rule written beside the
claim, the evidence in one sentence, and the numbers. `run` writes them to
``results.json`` next to the figures (PNG and SVG). A claim that does not hold in a run is
reported as ``"fails"`` with its numbers, never hidden.

Runs are cached: ``results.json`` records a key made of the experiment's name, mode, seed
and the source code of its module and of this one; a later run with the same key reuses
it unless ``fresh=True``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from .. import _json as strict_json

RESULTS_FILE = "results.json"
Verdict = Literal["holds", "fails"]


@dataclass(frozen=True)
class Outcome:
    """What an experiment found: the verdict on its claim, the evidence, the numbers."""

    verdict: Verdict
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @staticmethod
    def judge(holds: bool, evidence: str, **numbers: Any) -> Outcome:
        """The outcome of a rule: ``holds`` decides the verdict."""
        return Outcome("holds" if holds else "fails", evidence, numbers)


@dataclass
class Context:
    """What an experiment runs with, and where its figures go."""

    out: Path
    quick: bool
    seed: int = 0
    threads: int = 1  # torch threads it runs with (set by run)
    figures: list[str] = field(default_factory=list)

    def figure(
        self, name: str, width: float = 7.0, height: float = 4.5, rows: int = 1, columns: int = 1
    ) -> tuple[Any, Any]:
        """A new matplotlib figure (Agg canvas) and its axes; `save` writes it."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
        FigureCanvasAgg(figure)
        figure.trainlab_name = name  # type: ignore[attr-defined]
        axes = figure.subplots(rows, columns, squeeze=False)
        return figure, axes

    def save(self, figure: Any) -> None:
        """Write ``figure`` as ``<name>.png`` and ``<name>.svg`` into the experiment folder."""
        name = figure.trainlab_name
        for suffix in ("png", "svg"):
            figure.savefig(self.out / f"{name}.{suffix}")
        self.figures.append(f"{name}.png")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its claim, the lecture it comes from, and its function."""

    name: str
    claim: str
    seed: str  # the lecture file the claim comes from, e.g. "003"
    rule: str  # how the verdict is computed from the numbers
    function: Callable[[Context], Outcome]
    timed: bool = False  # it measures wall-clock time: run it alone, never beside another

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "claim": self.claim, "seed": self.seed, "rule": self.rule}


EXPERIMENTS: dict[str, Experiment] = {}
"""The registry: every experiment, in the order the modules register them."""


def experiment(
    name: str, *, claim: str, seed: str, rule: str, timed: bool = False
) -> Callable[..., Any]:
    """Register the decorated ``function(ctx) -> Outcome`` as experiment ``name``;
    ``timed=True``: its numbers are wall-clock times, so it runs alone."""

    def register(function: Callable[[Context], Outcome]) -> Callable[[Context], Outcome]:
        if name in EXPERIMENTS:
            raise ValueError(f"Invalid experiment name: {name!r} (registered twice)")
        EXPERIMENTS[name] = Experiment(name, claim, seed, rule, function, timed)
        return function

    return register


def cache_key(entry: Experiment, quick: bool, seed: int, threads: int = 1) -> str:
    """What a cached result must match: name, mode, seed, threads and the code that
    produced it."""
    from . import common  # the helpers experiments share count as their code too

    module = sys.modules[entry.function.__module__]
    code = "".join(inspect.getsource(m) for m in (module, sys.modules[__name__], common))
    text = json.dumps([entry.name, quick, seed, threads, hashlib.sha256(code.encode()).hexdigest()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(
    name: str,
    out: str | Path,
    *,
    quick: bool = False,
    seed: int = 0,
    fresh: bool = False,
    threads: int = 1,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out/<name>/`` and return its results.json contents.

    torch runs with ``threads`` threads meanwhile (default 1: the lab's models are small,
    and one thread per process lets ``lab all --workers 2`` use two cores without the two
    processes' threads fighting over them), restored after.
    """
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"Invalid threads: {threads!r} (must be an integer >= 1)")
    if name not in EXPERIMENTS:
        import difflib

        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(
            f"Invalid experiment: {name!r} (unknown; {hint}trainlab lab list shows them all)"
        )
    entry = EXPERIMENTS[name]
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(entry, quick, seed, threads)
    saved = folder / RESULTS_FILE
    if not fresh and saved.is_file():
        try:
            previous = json.loads(saved.read_text())
        except ValueError:
            previous = {}
        if previous.get("cache_key") == key and all(
            (folder / figure).is_file() for figure in previous.get("figures", [])
        ):
            return {**previous, "cached": True}
    ctx = Context(folder, quick, seed, threads)
    start = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outcome = entry.function(ctx)
    finally:
        torch.set_num_threads(before)
    results = {
        **entry.describe(),
        "verdict": outcome.verdict,
        "evidence": outcome.evidence,
        "numbers": outcome.numbers,
        "tables": outcome.tables,
        "figures": ctx.figures,
        "mode": "quick" if quick else "full",
        "threads": threads,
        "seconds": time.perf_counter() - start,
        "cache_key": key,
    }
    temp = saved.with_name(f".{RESULTS_FILE}.tmp")
    temp.write_text(strict_json.dumps(results, indent=1))
    temp.replace(saved)
    return {**results, "cached": False}
