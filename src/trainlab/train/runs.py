"""``trainlab runs``: the run folders under a folder, each with its status and key numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .checkpoint import latest_checkpoint
from .run_folder import CONFIG_FILE, LOCK_FILE, holder

SUMMARY_KEYS = ("steps", "epochs", "seconds", "task", "test_accuracy", "test_loss", "val_loss")


def list_runs(folder: str | Path) -> list[dict[str, Any]]:
    """Every run folder directly under ``folder`` (or ``folder`` itself), oldest first.

    Each entry: ``name``, ``path``, ``status`` (``finished``, ``running (pid N)`` while
    a process holds its lock, or ``stopped at step N`` for a run to resume)
    and, for finished runs, the numbers of its ``summary.json``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"Invalid folder: {str(folder)!r} does not exist (pass a folder of runs)")
    candidates = [folder] if (folder / CONFIG_FILE).is_file() else sorted(folder.iterdir())
    found = []
    for path in candidates:
        if path.is_dir() and (path / CONFIG_FILE).is_file():
            found.append(_describe(path))
    return sorted(found, key=lambda run: run["modified"])


def _describe(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": path.name, "path": str(path)}
    summary = _summary(path)
    pid = holder(path)
    if pid is not None:
        entry["status"] = f"running (pid {pid})" if pid > 0 else "running"
    elif summary is not None:
        entry["status"] = "finished"
    else:
        last = latest_checkpoint(path)
        step = int(last.name.split("-")[-1]) if last is not None else 0
        entry["status"] = f"stopped at step {step}"
        entry["steps"] = step
    for key in SUMMARY_KEYS:
        if summary is not None and key in summary:
            entry[key] = summary[key]
    entry["modified"] = max(
        (p.stat().st_mtime for p in path.iterdir() if p.name != LOCK_FILE),
        default=path.stat().st_mtime,
    )
    return entry


def _summary(path: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None
