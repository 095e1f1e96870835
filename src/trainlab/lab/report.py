"""``trainlab report``: one self-contained HTML file for experiments or training runs.

The report embeds everything — figures as base64 PNG, tables as HTML, the claim, the
verdict and its evidence, the config, timings — and loads nothing from the network, so it
opens anywhere, offline. It takes an experiment folder (``results.json``), a folder of
experiments (``trainlab lab all``'s), a run folder (``config.toml``), a folder of runs, a
seeds run (``seeds.json``: its members' table, their mean ± std, the ensemble, then each
member as a run) or a sweep folder (``trials.csv``: its plots, trials, best parameters and
``best.toml``).

A small inline script records, in the page's own attributes, whether every figure loaded
with a non-zero size and whether any script error happened; the tests read them from a
real headless browser.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..diagnose.plots import CURVES_FILE, HISTOGRAMS_FILE, LAYERS_FILE
from ..diagnose.plots import curves as draw_curves
from ..train.run_folder import os_error_message
from ..train.runs import (
    METRICS_FILE,
    MetricsLog,
    describe_run,
    read_record,
    read_run_text,
    read_seeds,
    read_summary,
)
from ..train.trainer import SUMMARY_FILE, write_atomic
from .experiment import RESULTS_FILE, read_figure, read_results

REPORT_FILE = "report.html"
SWEEP_TRIALS = "trials.csv"  # what trainlab sweep writes (trainlab.sweep.TRIALS_FILE)
SWEEP_PLOTS = ("params.png", "history.png", "parallel.png")
#: At most this many figures of one experiment are embedded (the lab's draw a handful),
#: and at most this many bytes of them.
MAX_FIGURES_SHOWN = 24
MAX_FIGURE_BYTES_SHOWN = 64 << 20
#: Largest trials.csv shown (a row is a few hundred bytes: tens of thousands of trials).
MAX_TRIALS_BYTES = 16 << 20
SEEDS_RECORD = "seeds.json"  # what trainlab train --seeds writes (trainlab.train.runs.SEEDS_FILE)
#: A folder of more runs than this is reported as one table of them all and its best runs
#: in full: each run in full costs a drawing (~0.2 s) and an embedded figure (~60 KB).
MAX_RUNS_IN_FULL = 20
#: How many runs of such a folder are shown in full: the best by test accuracy (or loss).
BEST_RUNS_SHOWN = 5

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.claim { font-size: 1.05em; } .rule { color: #555; font-size: 0.9em; }
.verdict { display: inline-block; padding: 0.1em 0.6em; border-radius: 0.3em;
           font-weight: bold; color: white; }
.holds { background: #2e7d32; } .fails { background: #c62828; }
.pass { color: #2e7d32; } .warn { color: #b26a00; } .fail { color: #c62828; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
nav a { margin-right: 1em; }
"""

CHECK_SCRIPT = """
window.trainlabErrors = [];
window.addEventListener('error', function (e) { window.trainlabErrors.push(String(e.message)); });
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var empty = images.filter(function (i) { return !(i.naturalWidth > 0 && i.naturalHeight > 0); });
  document.body.setAttribute('data-figures', String(images.length));
  document.body.setAttribute('data-empty-figures', String(empty.length));
  document.body.setAttribute('data-errors', String(window.trainlabErrors.length));
});
"""


def write_report(source: str | Path, output: str | Path | None = None) -> Path:
    """Write the report of ``source`` to ``output`` (default: ``source/report.html``)."""
    source = Path(source)
    if not source.is_dir():
        raise ValueError(f"Invalid report source: {str(source)!r} is not a folder")
    sections = _sections(source)
    if not sections:
        raise ValueError(
            f"Invalid report source: {str(source)!r} holds no experiment (results.json), no "
            "run (config.toml) and no sweep (trials.csv) (pass what trainlab lab, trainlab "
            "train or trainlab sweep wrote)"
        )
    title = f"trainlab report — {source.name}"
    nav = "".join(
        f'<a href="#{html.escape(anchor)}">{html.escape(name)}</a>' for anchor, name, _ in sections
    )
    body = "".join(content for _, _, content in sections)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style>"
        f"<script>{CHECK_SCRIPT}</script></head><body>"
        f"<h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}</body></html>"
    )
    path = Path(output) if output is not None else source / REPORT_FILE
    write_atomic(path, page.encode("utf-8"))  # a report stopped midway leaves the last one whole
    return path


def _sections(source: Path) -> list[tuple[str, str, str]]:
    if (source / RESULTS_FILE).is_file():
        return [_experiment(source)]
    if (source / SEEDS_RECORD).is_file():
        return _seeds(source)
    if (source / "config.toml").is_file():
        return [_run(source)]
    if (source / SWEEP_TRIALS).is_file():
        return [_sweep(source)]
    found, runs = [], []
    for child in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (child / RESULTS_FILE).is_file():
            found.append(_experiment(child))
        elif (child / SWEEP_TRIALS).is_file():
            found.append(_sweep(child))
        elif (child / SEEDS_RECORD).is_file():
            found.extend(_or_failed(child, "seeds", _seeds))
        elif (child / "config.toml").is_file():
            runs.append(child)
    return found + _runs(runs)


def _experiment(folder: Path) -> tuple[str, str, str]:
    """An experiment: its claim, verdict, evidence, figures and tables.

    Only the figures `read_figure` accepts are embedded (PNGs inside ``folder``, of
    bounded size, whole); any other file ``results.json`` names is left unread, with a note.
    """
    try:
        results = read_results(folder)
    except ValueError as error:
        name = folder.name
        note = _note("fail", f"{error} (run it again: trainlab lab run {name} --fresh)")
        return name, name, f"<h2 id='{html.escape(name)}'>{html.escape(name)}</h2>{note}"
    name = str(results.get("name", folder.name))
    verdict = str(results.get("verdict", "fails"))
    parts = [
        f"<h2 id='{html.escape(name)}'>{html.escape(name)} "
        f"<span class='verdict {html.escape(verdict)}'>{html.escape(verdict)}</span></h2>",
        f"<p class='claim'>{html.escape(str(results.get('claim', '')))}</p>",
        f"<p class='rule'>Rule: {html.escape(str(results.get('rule', '')))} — lecture seed "
        f"{html.escape(str(results.get('seed', '')))}</p>",
        f"<p><b>Evidence.</b> {html.escape(str(results.get('evidence', '')))}</p>",
    ]
    parts.extend(_figures(folder, name, results["figures"]))
    tables = results.get("tables")
    for table_name, rows in tables.items() if isinstance(tables, dict) else ():
        if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
            parts.append(f"<h3>{html.escape(table_name)}</h3>{_table(rows)}")
        else:
            parts.append(_note("warn", f"Table {table_name!r} not shown: not a list of rows"))
    mode, seconds = str(results.get("mode", "")), results.get("seconds")
    if isinstance(seconds, (int, float)):
        parts.append(f"<p class='rule'>{html.escape(mode)} mode, {seconds:.1f} s</p>")
    return name, name, "".join(parts)


def _runs(folders: list[Path]) -> list[tuple[str, str, str]]:
    """Each run in full; over ``MAX_RUNS_IN_FULL`` runs, a table of all and the best few."""
    if len(folders) <= MAX_RUNS_IN_FULL:
        return [section for folder in folders for section in _or_failed(folder, "run", _one_run)]
    entries = [_entry(folder) for folder in folders]
    ranked = sorted(entries, key=_rank)
    best = [entry for entry in ranked if _rank(entry)[0] < 2][:BEST_RUNS_SHOWN]
    rows = [
        {
            "run": entry["name"],
            "status": entry["status"],
            "test accuracy": entry.get("test_accuracy"),
            "test loss": entry.get("test_loss"),
            "steps": entry.get("steps"),
            "seconds": entry.get("seconds"),
            "in full below": entry in best,
        }
        for entry in ranked
    ]
    overview = (
        f"<h2 id='all-runs'>{len(folders)} runs</h2><p class='rule'>More than "
        f"{MAX_RUNS_IN_FULL} runs: every run in this table, best first, and the "
        f"{len(best)} best in full below.</p>{_table(rows)}"
    )
    shown = [s for e in best for s in _or_failed(Path(e["path"]), "run", _one_run)]
    return [("all-runs", f"{len(folders)} runs", overview), *shown]


def _entry(folder: Path) -> dict[str, Any]:
    """A run's row of the table: `trainlab runs`'s entry, or the error that stopped it."""
    try:
        entry = describe_run(folder)
    except (ValueError, OSError) as error:
        return {"name": folder.name, "path": str(folder), "status": _reason(error)}
    if entry.get("note"):  # summary.json is there, but damaged
        entry["status"] = f"{SUMMARY_FILE} is damaged ({entry['note']})"
    return entry


def _rank(entry: dict[str, Any]) -> tuple[int, float]:
    """Best first: by test accuracy, then by test loss; runs without either last."""
    accuracy, loss = entry.get("test_accuracy"), entry.get("test_loss")
    if _finite(accuracy) is not None and not isinstance(accuracy, bool):
        return 0, -accuracy
    if _finite(loss) is not None and not isinstance(loss, bool):
        return 1, loss
    return 2, 0.0


def _or_failed(
    folder: Path, kind: str, section: Callable[[Path], list[tuple[str, str, str]]]
) -> list[tuple[str, str, str]]:
    """``section(folder)``, or one section saying why it failed: in a folder, one damaged
    run does not stop the report of the others."""
    try:
        return section(folder)
    except (ValueError, OSError) as error:
        name = folder.name
        return [
            (
                name,
                f"{kind} {name}",
                f"<h2 id='{html.escape(name)}'>{kind} {html.escape(name)}</h2>"
                f"<p class='fail'>{html.escape(_reason(error))}</p>",
            )
        ]


def _reason(error: Exception) -> str:
    return os_error_message(error, "read") if isinstance(error, OSError) else str(error)


def _one_run(folder: Path) -> list[tuple[str, str, str]]:
    return [_run(folder)]


def _run(folder: Path, name: str | None = None) -> tuple[str, str, str]:
    """A run in full: its summary and verdicts, its curves, its figures and its config.

    Reads the run and writes nothing into it; every file it reads is bounded, and a
    damaged one is named in the section instead of stopping the report.
    """
    name = name or folder.name
    parts = [f"<h2 id='{html.escape(name)}'>run {html.escape(name)}</h2>"]
    summary, problem = read_summary(folder)
    if problem is not None:
        parts.append(_note("fail", f"{SUMMARY_FILE} is damaged ({problem})"))
    elif summary is not None:
        scalars = [
            {"metric": k, "value": v}
            for k, v in summary.items()
            if isinstance(v, (int, float, str)) and k != "run_dir"
        ]
        parts.append(_table(scalars))
        parts.extend(_verdicts(summary.get("verdicts", []), folder / SUMMARY_FILE))
    else:
        parts.append("<p>The run has not finished: no summary.json yet.</p>")
    parts.extend(_run_figures(folder, name))
    try:
        config = f"<pre>{html.escape(read_run_text(folder / 'config.toml'))}</pre>"
    except ValueError as error:
        config = _note("fail", str(error))
    parts.append(f"<h3>config.toml</h3>{config}")
    return name, f"run {name}", "".join(parts)


def _verdicts(verdicts: Any, file: Path) -> list[str]:
    """The verdicts of a summary, each a paragraph; malformed entries skipped, with a note."""
    entries = verdicts if isinstance(verdicts, list) else [verdicts]
    valid = [v for v in entries if _well_formed(v)]
    parts = [
        f"<p class='{html.escape(v['status'])}'><b>[{html.escape(v['status'])}] "
        f"{html.escape(v['name'])}</b>: {html.escape(v['evidence'])}<br><i>fix:</i> "
        f"{html.escape(v['fix'])}</p>"
        for v in valid
    ]
    if len(valid) < len(entries):
        parts.append(
            _note(
                "warn",
                f"{file}: {len(entries) - len(valid)} malformed verdict entries skipped "
                '("verdicts" is a list of objects whose name, status, evidence and fix are text)',
            )
        )
    return parts


def _run_figures(folder: Path, name: str) -> list[str]:
    """The curves drawn now from metrics.jsonl, never a curves.png saved earlier (a resume
    makes it stale, and the report writes nothing into the run), then the figures the
    instruments saved at the run's end."""
    parts = []
    log = MetricsLog(folder / METRICS_FILE)
    if log.path.exists():
        try:
            png = io.BytesIO()
            draw_curves(log, png)
            parts.append(_png(png.getvalue(), f"{name}: {CURVES_FILE}"))
        except ValueError as error:
            parts.append(_note("fail", f"No curves: {error}"))
        if log.note is not None:
            parts.append(_note("warn", log.note))
    elif (folder / CURVES_FILE).is_file():
        parts.append(_saved_figure(folder, CURVES_FILE, name))
    for figure in (LAYERS_FILE, HISTOGRAMS_FILE):
        if (folder / figure).is_file():
            parts.append(_saved_figure(folder, figure, name))
    return parts


def _saved_figure(folder: Path, figure: str, name: str) -> str:
    """A PNG the run saved, embedded when `read_figure` accepts it (bounded, whole)."""
    try:
        return _png(read_figure(folder, figure, (".png",)), f"{name}: {figure}")
    except ValueError as error:
        return _note("warn", f"Figure {figure!r} not shown: {error}")


def _well_formed(verdict: Any) -> bool:
    """A verdict as trainlab writes it: an object whose four fields shown are text."""
    fields = ("name", "status", "evidence", "fix")
    return isinstance(verdict, dict) and all(isinstance(verdict.get(f), str) for f in fields)


def _figures(folder: Path, name: str, figures: list[str]) -> list[str]:
    """An experiment's figures, each named once, at most ``MAX_FIGURES_SHOWN`` of them and
    ``MAX_FIGURE_BYTES_SHOWN`` bytes in all: a results.json that names one large file a
    hundred thousand times must not make a report of gigabytes."""
    parts, total = [], 0
    names = list(dict.fromkeys(figures))
    for figure in names[:MAX_FIGURES_SHOWN]:
        try:
            data = read_figure(folder, figure, (".png",))
        except ValueError as error:
            parts.append(_note("warn", f"Figure {figure!r} not shown: {error}"))
            continue
        total += len(data)
        if total > MAX_FIGURE_BYTES_SHOWN:
            parts.append(
                _note(
                    "warn",
                    f"Figure {figure!r} and any after it not shown: "
                    f"the figures pass {MAX_FIGURE_BYTES_SHOWN:,} bytes",
                )
            )
            return parts
        parts.append(_png(data, f"{name}: {figure}"))
    if len(names) > MAX_FIGURES_SHOWN:
        left = len(names) - MAX_FIGURES_SHOWN
        parts.append(
            _note(
                "warn", f"{left:,} more figures not shown (at most {MAX_FIGURES_SHOWN} a section)"
            )
        )
    return parts


def _note(status: str, text: str) -> str:
    return f"<p class='{status}'>{html.escape(text)}</p>"


def _png(data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{encoded}'>"


def _seeds(folder: Path) -> list[tuple[str, str, str]]:
    """A seeds run: its members' table, their mean ± std and the ensemble (from the
    parent's summary.json), then each member's own run section."""
    record = read_seeds(folder)
    name = folder.name
    parts = [
        f"<h2 id='{html.escape(name)}'>seeds {html.escape(name)}</h2>",
        f"<p class='rule'>{len(record.seeds)} members, run.seed = "
        f"{html.escape(', '.join(map(str, record.seeds)))}</p>",
    ]
    summary, problem = read_summary(folder)
    if problem is not None:
        parts.append(_note("fail", f"{SUMMARY_FILE} is damaged ({problem})"))
    elif summary is not None:
        parts.append(_seeds_summary(folder, summary, [m.name for m in record.members]))
    else:
        parts.append("<p>The seeds run has not finished: no summary.json yet.</p>")
    members = [
        _run(member, f"{name}/{member.name}")
        for member in record.members
        if (member / "config.toml").is_file()
    ]
    return [(name, f"seeds {name}", "".join(parts)), *members]


def _seeds_summary(folder: Path, summary: dict[str, Any], names: list[str]) -> str:
    """The members' table, the mean ± sample std line and the ensemble's numbers.

    Only the member folders of ``seeds.json`` (``names``) are read: a ``dir`` in the
    summary names no other file.
    """
    rows = []
    members = summary.get("members")
    for member in members if isinstance(members, list) else []:
        if not isinstance(member, dict):
            continue
        known = member.get("dir") in names
        own = (read_summary(folder / member["dir"])[0] if known else None) or {}
        ece = member.get("test_ece", own.get("test_ece"))
        rows.append(
            {
                "member": member.get("dir"),
                "run.seed": member.get("seed"),
                "test accuracy": member.get("test_accuracy"),
                "test loss": member.get("test_loss"),
                "test ECE": ece,
                "seconds": member.get("seconds"),
            }
        )
    # A column no member has (accuracy for regression, ECE when not recorded) is left out.
    shown = [c for c in dict.fromkeys(k for row in rows for k in row) if _any(rows, c)]
    parts = [_table([{c: row[c] for c in shown} for row in rows])]
    spreads = [
        f"{label} {_cell(summary[f'{key}_mean'])} ± {_cell(_finite(summary.get(f'{key}_std')))}"
        for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss"))
        if isinstance(summary.get(f"{key}_mean"), (int, float))
    ]
    parts.append(f"<p><b>Members, mean ± sample std:</b> {html.escape(', '.join(spreads))}</p>")
    ensemble = summary.get("ensemble")
    if isinstance(ensemble, dict):
        gain = ensemble.get("gain")
        numbers = [
            {"ensemble": "test accuracy", "value": ensemble.get("test_accuracy")},
            {"ensemble": "test loss", "value": ensemble.get("test_loss")},
            {"ensemble": "test ECE", "value": ensemble.get("test_ece")},
            {
                "ensemble": "gain over the mean member",
                "value": f"{gain * 100:+.2f} points" if isinstance(gain, (int, float)) else None,
            },
            {"ensemble": "combine", "value": ensemble.get("combine")},
        ]
        parts.append(f"<h3>ensemble of {_cell(ensemble.get('size'))} members</h3>{_table(numbers)}")
    else:
        note = summary.get("ensemble_note") or "no ensemble recorded"
        parts.append(f"<p class='warn'><b>No ensemble:</b> {html.escape(str(note))}</p>")
    return "".join(parts)


def _any(rows: list[dict[str, Any]], column: str) -> bool:
    return any(row.get(column) is not None for row in rows)


def _finite(value: Any) -> Any:
    """A number, or None (shown as —) for NaN: the std of one member."""
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _sweep(folder: Path) -> tuple[str, str, str]:
    """A sweep folder: where its space came from, the best trial, the plots, every trial,
    best.toml and (for a refined sweep) the narrowed space.toml."""
    about = _json(folder / "sweep.json") or {}
    name = str(about.get("study", folder.name))
    metric = str(about.get("metric", "value"))
    parts = [f"<h2 id='{html.escape(name)}'>sweep {html.escape(name)}</h2>"]
    if about.get("refined_from"):
        parts.append(f"<p class='rule'>{html.escape(_refined_from(about))}</p>")
    try:
        trials = read_run_text(folder / SWEEP_TRIALS, MAX_TRIALS_BYTES)
    except ValueError as error:
        parts.append(_note("fail", f"No trials: {error}"))
        return name, f"sweep {name}", "".join(parts)
    rows = [
        {k: _number(v) for k, v in row.items() if k != "run_dir"}
        for row in csv.DictReader(io.StringIO(trials, newline=""))
    ]
    best = about.get("best")
    if isinstance(best, dict):
        skip = ("state", "run_dir", "seconds", "note")
        shown = [
            {"": metric if k == "value" else k, "best": _number(str(v))}
            for k, v in best.items()
            if k not in skip
        ]
        parts.append(f"<h3>best trial</h3>{_table(shown)}")
    for figure in SWEEP_PLOTS:
        if (folder / "plots" / figure).is_file():
            parts.append(_saved_figure(folder / "plots", figure, name))
    parts.append(f"<h3>trials ({len(rows)})</h3>{_table(rows)}")
    for text in ("best.toml", "space.toml"):
        if (folder / text).is_file():
            try:
                shown = f"<pre>{html.escape(read_run_text(folder / text))}</pre>"
            except ValueError as error:
                shown = _note("fail", str(error))
            parts.append(f"<h3>{text}</h3>{shown}")
    return name, f"sweep {name}", "".join(parts)


def _refined_from(about: dict[str, Any]) -> str:
    """Where a refined sweep's space came from, as its ``sweep.json`` says; values of another
    type than trainlab writes (a damaged or hand-edited file) are shown as text or left out."""
    trials = about.get("trials")
    shown = f" (its trials {', '.join(map(str, trials))})" if isinstance(trials, list) else ""
    return f"Space narrowed from the sweep {about['refined_from']}{shown}."


def _number(text: str) -> Any:
    """A CSV cell as a finite number when it is one (shown to 4 digits), else the text as
    written: a cell beyond a float's range (``1e400``, 400 digits) is not shown as inf."""
    try:
        value = float(text)
    except ValueError:
        return text
    if not math.isfinite(value):
        return text
    try:
        return int(text)
    except ValueError:
        return value


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c)))}</td>" for c in columns) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)[:80]
    return str(value)


def _json(path: Path) -> dict[str, Any] | None:
    """A small JSON record read within its bound; None when it is missing or damaged."""
    try:
        value = read_record(path)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
