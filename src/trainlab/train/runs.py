"""``trainlab runs``: the run folders under a folder; seeds runs: K members of one config.

A **seeds run** (``trainlab train CONFIG --seeds K``) trains the config K times, with
``run.seed`` = s, s + 1, …, s + K − 1, each member a normal run folder of its own::

    runs/my-20261201-101500/        the parent: config.toml (run.seed = s), run.lock
        seeds.json                  {"format": "trainlab-seeds", "seeds": [...], "members": [...]}
        member-1/ … member-K/       run folders: resumable, loadable, evaluable alone
        summary.json                when every member has finished: each member's numbers,
                                    mean ± std of test accuracy and loss, the ensemble's

The members train one after another: each run already uses ``run.threads`` of the
machine's cores, so members trained side by side would only take turns on them.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import _json as strict_json
from .callbacks import (
    MAX_METRICS_BYTES,
    MAX_METRICS_LINE_BYTES,
    JsonlLog,
    MetricsLog,
    parse_json,
)
from .checkpoint import _read_regular, latest_checkpoint
from .config import Config, dump_toml
from .run_folder import CONFIG_FILE, LOCK_FILE, holder, os_error_message
from .state_tree import _Invalid
from .trainer import SUMMARY_FILE, write_atomic

SUMMARY_KEYS = ("steps", "epochs", "seconds", "task", "test_accuracy", "test_loss", "val_loss")
SEEDS_FILE = "seeds.json"
SEEDS_FORMAT = "trainlab-seeds"
#: The most members one seeds run trains: each is a whole training run, one after another.
MAX_SEEDS = 64
#: Largest seeds.json or summary.json read: they hold a few numbers per member (kilobytes).
MAX_RECORD_BYTES = 1 << 20
#: Numbers of each member's summary.json that the seeds summary averages, by task.
AVERAGED = {"classification": ("test_accuracy", "test_loss"), "regression": ("test_loss",)}
#: A run's log, one JSON record a line, appended as it trains (`callbacks.JsonlLog`).
METRICS_FILE = JsonlLog.filename


def list_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run folder directly under ``folder`` (or ``folder`` itself), oldest first.

    Each entry: ``name``, ``path``, ``status`` (``finished``, ``running (pid N)`` while
    a process holds its lock, or ``stopped at step N`` for a run to resume)
    and, for finished runs, the numbers of its ``summary.json``. A seeds run is one entry
    (status ``seeds k/K done``, the members' mean test accuracy and loss, their total steps
    and time); given as ``folder`` itself, its members are listed first.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Invalid folder: {str(folder)!r} does not exist (pass a folder of runs)")
    if (folder / CONFIG_FILE).is_file():
        seeds = read_seeds(folder)
        members = [] if seeds is None else [m for m in seeds.members if m.is_dir()]
        return [
            *(describe_run(m) for m in members if (m / CONFIG_FILE).is_file()),
            describe_run(folder),
        ]
    found = []
    for path in sorted(folder.iterdir()):
        # a hidden folder is no run: fit(overwrite=True) parks the replaced run in
        # ".<name>.replaced-*" until the new one starts, and a killed process leaves it
        if not path.name.startswith(".") and path.is_dir() and (path / CONFIG_FILE).is_file():
            found.append(describe_run(path))
    return sorted(found, key=lambda run: run["modified"])


def describe_run(path: Path) -> dict[str, Any]:
    """One entry of `list_runs`: the run folder ``path``'s name, status and numbers."""
    entry: dict[str, Any] = {"name": path.name, "path": str(path)}
    summary, problem = read_summary(path)
    seeds = read_seeds(path)
    pid = holder(path)
    if seeds is not None:
        entry.update(_describe_seeds(seeds, summary))
    elif summary is not None:
        entry["status"] = "finished"
    elif problem is not None:  # listed without its numbers, with why
        entry["status"] = f"bad {SUMMARY_FILE}"
    else:
        last = latest_checkpoint(path)
        step = int(last.name.split("-")[-1]) if last is not None else 0
        entry["status"] = f"stopped at step {step}"
        entry["steps"] = step
    if pid is not None:
        entry["status"] = f"running (pid {pid})" if pid > 0 else "running"
    if problem is not None:
        entry["note"] = problem
    for key in SUMMARY_KEYS:
        if seeds is None and summary is not None and key in summary:
            entry[key] = summary[key]
    entry["modified"] = max(
        (p.stat().st_mtime for p in path.iterdir() if p.name != LOCK_FILE),
        default=path.stat().st_mtime,
    )
    return entry


def _describe_seeds(seeds: SeedsRun, summary: dict[str, Any] | None) -> dict[str, Any]:
    """A seeds run's entry: members done, their mean test numbers, the ensemble's."""
    done = sum((member / SUMMARY_FILE).is_file() for member in seeds.members)
    entry: dict[str, Any] = {
        "status": f"seeds {done}/{len(seeds.seeds)} done",
        "seeds": list(seeds.seeds),
        "members": [str(member) for member in seeds.members],
    }
    if summary is None or len(summary.get("members", ())) != len(seeds.seeds):
        return entry  # not finished, or a summary of fewer members before the run grew
    for key in AVERAGED.get(summary.get("task", "classification"), ()):
        entry[key] = summary.get(f"{key}_mean")
        entry[f"{key}_std"] = summary.get(f"{key}_std")
    for key in ("steps", "seconds", "task"):
        entry[key] = summary.get(key)
    ensemble = summary.get("ensemble")
    if isinstance(ensemble, dict):
        entry["ensemble_test_accuracy"] = ensemble.get("test_accuracy")
    return entry


def read_summary(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run's ``summary.json`` and None, or None and why it cannot be read (None when
    there is none: the run has not finished)."""
    file = path / SUMMARY_FILE
    if not file.exists():
        return None, None
    try:
        summary = read_record(file)
    except ValueError as error:
        return None, str(error)
    if not isinstance(summary, dict):
        return None, f"{file} holds a JSON {type(summary).__name__}, not an object"
    return summary, None


def read_record(file: Path) -> Any:
    """The JSON in ``file``, refused unread when it is larger than ``MAX_RECORD_BYTES``.

    Raises:
        ValueError: ``file`` cannot be read, is too large, or is not JSON.
    """
    try:
        return parse_json(_read_regular(file, MAX_RECORD_BYTES))
    except (_Invalid, OSError, ValueError) as error:  # JSON or UTF-8 errors
        raise ValueError(f"{file} cannot be read ({error})") from None


def read_run_text(file: Path, limit: int = MAX_RECORD_BYTES) -> str:
    """The text of a run's small file (``config.toml``), refused unread over ``limit`` bytes.

    Raises:
        ValueError: ``file`` cannot be read, is not a regular file, is too large, or is
            not UTF-8.
    """
    try:
        return _read_regular(file, limit).decode("utf-8")
    except (_Invalid, UnicodeDecodeError) as error:
        raise ValueError(f"{file} cannot be read ({error})") from None
    except OSError as error:
        raise ValueError(os_error_message(error, "read")) from None


# --- metrics.jsonl ------------------------------------------------------------------------------


# --- seeds runs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedsRun:
    """A seeds run's record (``seeds.json``): its folder and the seed of each member."""

    path: Path
    seeds: tuple[int, ...]

    @property
    def members(self) -> list[Path]:
        """The member folders, ``member-1`` … ``member-K``, in the order of ``seeds``."""
        return [self.path / member_name(k) for k in range(1, len(self.seeds) + 1)]


def member_name(k: int) -> str:
    """The folder of the k-th member (from 1) of a seeds run."""
    return f"member-{k}"


def read_seeds(path: str | Path) -> SeedsRun | None:
    """The seeds run in ``path``, or None when ``path`` holds no ``seeds.json``.

    Raises:
        ValueError: ``seeds.json`` is there but is not one trainlab wrote.
    """
    path = Path(path)
    file = path / SEEDS_FILE
    if not file.is_file():
        return None
    try:
        record = read_record(file)
    except ValueError as error:
        raise ValueError(f"Invalid seeds file: {error}") from None
    seeds = record.get("seeds") if isinstance(record, dict) else None
    valid = (
        isinstance(record, dict)
        and record.get("format") == SEEDS_FORMAT
        and isinstance(seeds, list)
        and 1 <= len(seeds) <= MAX_SEEDS
        and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
    )
    if not valid:
        raise ValueError(
            f"Invalid seeds file: {file} is not a trainlab seeds record (it must hold "
            f'"format": {SEEDS_FORMAT!r} and 1 to {MAX_SEEDS} seeds in [0, 2**32))'
        )
    return SeedsRun(path, tuple(seeds))


def write_seeds(path: str | Path, seeds: list[int], config: Config | None = None) -> SeedsRun:
    """Record a seeds run of ``seeds`` in ``path/seeds.json`` and, for a new one, its
    ``config`` (run.seed = the first member's) in ``path/config.toml``; each atomically."""
    run = SeedsRun(Path(path), tuple(seeds))
    if config is not None:
        write_atomic(run.path / CONFIG_FILE, dump_toml(config))
    record = {
        "format": SEEDS_FORMAT,
        "version": 1,
        "seeds": list(seeds),
        "members": [member.name for member in run.members],
    }
    write_atomic(run.path / SEEDS_FILE, strict_json.dumps(record, indent=1))
    return run


def write_seeds_summary(
    run: SeedsRun, ensemble: dict[str, Any] | None, ensemble_note: str | None = None
) -> dict[str, Any]:
    """The parent's summary: each member's numbers, their mean ± std, and the ensemble's.

    The std is the sample standard deviation (divided by K − 1; null for one member).
    ``ensemble`` is the ``"ensemble"`` part of `trainlab.ensemble`'s result, or None
    with ``ensemble_note`` saying why there is none.
    """
    summaries = []
    for path in run.members:
        summary, problem = read_summary(path)
        if problem is not None:
            raise ValueError(f"Invalid seeds run: member {problem}")
        if summary is None:
            raise ValueError(
                f"Invalid seeds run: {path} has not finished (no {SUMMARY_FILE}; continue "
                f"with `trainlab train --resume {run.path}`)"
            )
        summaries.append(summary)
    task = _task(run, summaries)
    members = []
    for seed, path, summary in zip(run.seeds, run.members, summaries):
        numbers = {key: summary.get(key) for key in ("steps", "seconds", *AVERAGED[task])}
        members.append({"dir": path.name, "seed": seed, **numbers})
    result: dict[str, Any] = {"task": task, "seeds": list(run.seeds)}
    for key in AVERAGED[task]:
        values = [m[key] for m in members if isinstance(m[key], (int, float))]
        result[f"{key}_mean"] = statistics.fmean(values) if values else math.nan
        result[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
    result["steps"] = sum(m["steps"] or 0 for m in members)
    result["seconds"] = sum(m["seconds"] or 0.0 for m in members)
    result["members"] = members
    result["ensemble"] = ensemble
    if ensemble is None:
        result["ensemble_note"] = ensemble_note
    write_atomic(run.path / SUMMARY_FILE, strict_json.dumps(result, indent=1))
    return result


def _task(run: SeedsRun, summaries: list[dict[str, Any]]) -> str:
    """The task the members were trained for: the one their summaries name."""
    tasks = [summary.get("task", "classification") for summary in summaries]
    if len(set(tasks)) > 1 or tasks[0] not in AVERAGED:
        named = ", ".join(f"{path.name} {task!r}" for path, task in zip(run.members, tasks))
        raise ValueError(
            f"Invalid seeds run: {run.path} has members of tasks {named} (the members of a "
            f"seeds run share one config: one of {', '.join(AVERAGED)})"
        )
    return tasks[0]


__all__ = [
    "MAX_METRICS_BYTES",
    "MAX_METRICS_LINE_BYTES",
    "MAX_SEEDS",
    "METRICS_FILE",
    "SEEDS_FILE",
    "MetricsLog",
    "SeedsRun",
    "describe_run",
    "list_runs",
    "member_name",
    "read_run_text",
    "read_seeds",
    "read_summary",
    "write_seeds",
    "write_seeds_summary",
]
