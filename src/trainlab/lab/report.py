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
import json
import math
from pathlib import Path
from typing import Any

from .experiment import RESULTS_FILE

REPORT_FILE = "report.html"
SWEEP_TRIALS = "trials.csv"  # what trainlab sweep writes (trainlab.sweep.TRIALS_FILE)
SWEEP_PLOTS = ("params.png", "history.png", "parallel.png")
SEEDS_RECORD = "seeds.json"  # what trainlab train --seeds writes (trainlab.train.runs.SEEDS_FILE)

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
    path.write_text(page, encoding="utf-8")
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
    found = []
    for child in sorted(p for p in source.iterdir() if p.is_dir()):
        if (child / RESULTS_FILE).is_file():
            found.append(_experiment(child))
        elif (child / SWEEP_TRIALS).is_file():
            found.append(_sweep(child))
        elif (child / SEEDS_RECORD).is_file():
            found.extend(_seeds(child))
        elif (child / "config.toml").is_file():
            found.append(_run(child))
    return found


def _experiment(folder: Path) -> tuple[str, str, str]:
    results = json.loads((folder / RESULTS_FILE).read_text())
    name = results.get("name", folder.name)
    verdict = results.get("verdict", "fails")
    parts = [
        f"<h2 id='{html.escape(name)}'>{html.escape(name)} "
        f"<span class='verdict {html.escape(verdict)}'>{html.escape(verdict)}</span></h2>",
        f"<p class='claim'>{html.escape(results.get('claim', ''))}</p>",
        f"<p class='rule'>Rule: {html.escape(results.get('rule', ''))} — lecture seed "
        f"{html.escape(str(results.get('seed', '')))}</p>",
        f"<p><b>Evidence.</b> {html.escape(results.get('evidence', ''))}</p>",
    ]
    for figure in results.get("figures", []):
        parts.append(_image(folder / figure, f"{name}: {figure}"))
    for table_name, rows in (results.get("tables") or {}).items():
        parts.append(f"<h3>{html.escape(table_name)}</h3>{_table(rows)}")
    mode, seconds = results.get("mode", ""), results.get("seconds")
    if isinstance(seconds, (int, float)):
        parts.append(f"<p class='rule'>{html.escape(mode)} mode, {seconds:.1f} s</p>")
    return name, name, "".join(parts)


def _run(folder: Path, name: str | None = None) -> tuple[str, str, str]:
    name = name or folder.name
    parts = [f"<h2 id='{html.escape(name)}'>run {html.escape(name)}</h2>"]
    summary = _json(folder / "summary.json")
    if summary:
        scalars = [
            {"metric": k, "value": v}
            for k, v in summary.items()
            if isinstance(v, (int, float, str)) and k != "run_dir"
        ]
        parts.append(_table(scalars))
        for verdict in summary.get("verdicts", []):
            status = html.escape(verdict.get("status", ""))
            parts.append(
                f"<p class='{status}'><b>[{status}] {html.escape(verdict.get('name', ''))}</b>: "
                f"{html.escape(verdict.get('evidence', ''))}<br><i>fix:</i> "
                f"{html.escape(verdict.get('fix', ''))}</p>"
            )
    else:
        parts.append("<p>The run has not finished: no summary.json yet.</p>")
    curves = folder / "curves.png"
    if not curves.is_file() and (folder / "metrics.jsonl").is_file():
        from ..diagnose.plots import curves as draw_curves

        metrics = [
            json.loads(line)
            for line in (folder / "metrics.jsonl").read_text().splitlines()
            if line.strip()
        ]
        curves = draw_curves(metrics, folder / "curves.png")
    for figure in ("curves.png", "layers.png", "histograms.png"):
        if (folder / figure).is_file():
            parts.append(_image(folder / figure, f"{name}: {figure}"))
    parts.append(
        f"<h3>config.toml</h3><pre>{html.escape((folder / 'config.toml').read_text())}</pre>"
    )
    return name, f"run {name}", "".join(parts)


def _seeds(folder: Path) -> list[tuple[str, str, str]]:
    """A seeds run: its members' table, their mean ± std and the ensemble (from the
    parent's summary.json), then each member's own run section."""
    from ..train.runs import read_seeds

    record = read_seeds(folder)
    name = folder.name
    parts = [
        f"<h2 id='{html.escape(name)}'>seeds {html.escape(name)}</h2>",
        f"<p class='rule'>{len(record.seeds)} members, run.seed = "
        f"{html.escape(', '.join(map(str, record.seeds)))}</p>",
    ]
    summary = _json(folder / "summary.json")
    if summary:
        parts.append(_seeds_summary(folder, summary))
    else:
        parts.append("<p>The seeds run has not finished: no summary.json yet.</p>")
    members = [
        _run(member, f"{name}/{member.name}")
        for member in record.members
        if (member / "config.toml").is_file()
    ]
    return [(name, f"seeds {name}", "".join(parts)), *members]


def _seeds_summary(folder: Path, summary: dict[str, Any]) -> str:
    """The members' table, the mean ± sample std line and the ensemble's numbers."""
    rows = []
    for member in summary.get("members", []):
        own = _json(folder / str(member.get("dir")) / "summary.json") or {}
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
        parts.append(
            f"<p class='rule'>Space narrowed from the sweep {html.escape(about['refined_from'])} "
            f"(its trials {html.escape(', '.join(map(str, about.get('trials', []))))}).</p>"
        )
    with open(folder / SWEEP_TRIALS, newline="") as file:
        rows = [
            {k: _number(v) for k, v in row.items() if k != "run_dir"}
            for row in csv.DictReader(file)
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
            parts.append(_image(folder / "plots" / figure, f"{name}: {figure}"))
    parts.append(f"<h3>trials ({len(rows)})</h3>{_table(rows)}")
    for text in ("best.toml", "space.toml"):
        if (folder / text).is_file():
            parts.append(f"<h3>{text}</h3><pre>{html.escape((folder / text).read_text())}</pre>")
    return name, f"sweep {name}", "".join(parts)


def _number(text: str) -> Any:
    """A CSV cell as a number when it is one (shown to 4 digits), else the text."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


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
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
