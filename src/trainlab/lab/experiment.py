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

This module owns the experiment folder's files. Each is written whole (a temporary file,
fsync, rename), so a run killed while it writes leaves the previous file, never half of
one; and each is read back with bounds and checked (`read_results`, `read_figure`), so a
damaged file is a cache miss that is redone, and a ``results.json`` naming a file outside
its folder gets nothing read.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal
from xml.etree import ElementTree

import torch

from .. import _json as strict_json
from ..train.checkpoint import _read_regular
from ..train.state_tree import _Invalid
from ..train.trainer import write_atomic

RESULTS_FILE = "results.json"
#: The kinds of figure an experiment saves (each figure as both); nothing else is read.
FIGURE_TYPES = (".png", ".svg")
#: The largest results.json read back: a verdict, numbers and small tables (kilobytes).
MAX_RESULTS_BYTES = 16 << 20
#: The largest figure read back: the lab's PNGs and SVGs take a few hundred kilobytes.
MAX_FIGURE_BYTES = 32 << 20
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_ROOT = "{http://www.w3.org/2000/svg}svg"
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
        """Write ``figure`` as ``<name>.png`` and ``<name>.svg`` into the experiment folder.

        Drawn in memory first, then written atomically: a run killed meanwhile leaves the
        previous figure whole, never a truncated one for the cache to serve.
        """
        name = figure.trainlab_name
        for suffix in FIGURE_TYPES:
            drawn = io.BytesIO()
            figure.savefig(drawn, format=suffix[1:])
            write_atomic(self.out / f"{name}{suffix}", drawn.getvalue())
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
    previous = None if fresh else _cached(folder, key)
    if previous is not None:
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
    write_atomic(folder / RESULTS_FILE, strict_json.dumps(results, indent=1))
    return {**results, "cached": False}


def _cached(folder: Path, key: str) -> dict[str, Any] | None:
    """The saved results when they have ``key`` and every figure (PNG and SVG) is whole;
    otherwise None: unreadable, stale or damaged files are redone, not served."""
    try:
        previous = read_results(folder)
        if previous.get("cache_key") != key:
            return None
        for figure in previous["figures"]:
            read_figure(folder, figure)
            read_figure(folder, str(PurePath(figure).with_suffix(".svg")))
    except ValueError:
        return None
    return previous


def read_results(folder: Path) -> dict[str, Any]:
    """The ``results.json`` of the experiment folder ``folder``, read with a bound.

    Raises:
        ValueError: it is missing, not a regular file, over ``MAX_RESULTS_BYTES``, not
            UTF-8 JSON, nested deeper than Python parses, not an object, or its
            ``figures`` is not a list of file names; the message says which.
    """
    path = folder / RESULTS_FILE
    try:
        results = json.loads(_read_regular(path, MAX_RESULTS_BYTES).decode("utf-8"))
    except RecursionError:
        problem = "it nests deeper than any results.json the lab writes"
        raise ValueError(f"{path} cannot be read ({problem})") from None
    except (_Invalid, OSError, ValueError) as error:  # ValueError: JSON and UTF-8 errors
        raise ValueError(f"{path} cannot be read ({error})") from None
    if not isinstance(results, dict):
        kind = type(results).__name__
        raise ValueError(f"{path} cannot be read (it holds a JSON {kind}, not an object)")
    figures = results.setdefault("figures", [])
    if not isinstance(figures, list) or not all(isinstance(name, str) for name in figures):
        raise ValueError(f"{path} cannot be read (its figures are not a list of file names)")
    return results


def read_figure(folder: Path, name: str, types: tuple[str, ...] = FIGURE_TYPES) -> bytes:
    """The bytes of the figure file ``name`` in ``folder``, checked whole.

    Only a regular file of one of ``types`` that stays inside ``folder`` once links are
    followed, of at most ``MAX_FIGURE_BYTES``, is read: a file name taken from
    ``results.json`` can point anywhere (``../../etc/passwd``, ``/dev/zero``).

    Raises:
        ValueError: why the file is refused; nothing outside ``folder`` has been read.
    """
    path = folder / name
    suffix = PurePath(name).suffix.lower()
    if suffix not in types:
        raise ValueError(f"not a figure file (its name must end in {' or '.join(types)})")
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError("it lies outside the experiment folder")
    try:
        data = _read_regular(path, MAX_FIGURE_BYTES)
    except FileNotFoundError:
        raise ValueError("the file is missing") from None
    except (_Invalid, OSError) as error:
        raise ValueError(str(error)) from None
    problem = _png_problem(data) if suffix == ".png" else _svg_problem(data)
    if problem is not None:
        raise ValueError(problem)
    return data


def _png_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole PNG: the signature, then chunks (length, type, data,
    CRC-32 of type and data) up to the IEND chunk that ends the file (PNG spec, 5.2-5.3)."""
    if not data.startswith(PNG_SIGNATURE):
        return "not a PNG file (no PNG signature)"
    at = len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        end = at + 12 + length
        kind, crc = data[at + 4 : at + 8], data[end - 4 : end]
        if end > len(data) or struct.pack(">I", zlib.crc32(data[at + 4 : end - 4])) != crc:
            break
        if kind == b"IEND":
            return None if end == len(data) else "a PNG file with data after its end"
        at = end
    return "a truncated or damaged PNG file (its chunks do not reach IEND)"


def _svg_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole SVG document (an XML document whose root is ``<svg>``)."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as error:
        return f"a truncated or damaged SVG file ({error})"
    return None if root.tag == SVG_ROOT else f"not an SVG file (its root is {root.tag!r})"
