"""`trainlab report` on runs, and damaged run files read back: bounded, named, never fatal
to the rest of a folder, and nothing written into the runs reported on."""

from __future__ import annotations

import base64
import hashlib
import html
import io
import itertools
import json
import re
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainlab.cli import main
from trainlab.diagnose import plots
from trainlab.lab import report as html_report
from trainlab.train import callbacks, runs
from trainlab.train.api import load_run

from .test_trainer import TINY, set_args

CUT_LINE = b'{"step": 99, "epoch": 0, "loss": 0.'  # what a kill mid-write leaves


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--run-dir", str(run_dir), *set_args([*TINY, "run.epochs=1"])]) == 0
    return run_dir


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run, alone in a folder of runs."""
    copy = tmp_path / "runs" / "run"
    shutil.copytree(trained, copy)
    return copy


def write_report(source: Path, tmp_path: Path, capsys) -> tuple[int, str, str]:
    """The exit code, the page's text (unescaped) and stderr of `trainlab report`."""
    out = tmp_path / "report.html"
    code = main(["report", str(source), "-o", str(out)])
    page = html.unescape(out.read_text()) if out.is_file() else ""
    return code, page, capsys.readouterr().err


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"data:image/png;base64,([^']*)'", page)]


def metrics_lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines(keepends=True)


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, by its path, with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def set_summary(run: Path, **values) -> None:
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, **values}))


# --- D3: figures drawn from their inputs as they are now -----------------------------------------


def test_the_curves_are_drawn_from_the_metrics_as_they_are_now(run, tmp_path, capsys):
    stale = io.BytesIO()
    plots.curves([], stale)  # what a curves.png of an earlier segment shows: not this log
    (run / "curves.png").write_bytes(stale.getvalue())
    now = io.BytesIO()
    plots.curves([json.loads(line) for line in metrics_lines(run)], now)
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0
    assert embedded_pngs(page) == [now.getvalue()]


# --- D8: bounded reads, large folders summarised, nothing written into the runs ------------------


def test_the_report_writes_nothing_into_the_runs_it_reports_on(run, capsys):
    unfinished = run.parent / "unfinished"
    shutil.copytree(run, unfinished)
    (unfinished / "summary.json").unlink()
    before = {folder.name: digest(folder) for folder in (run, unfinished)}
    assert main(["report", str(run.parent)]) == 0  # the default output: beside the runs
    assert (run.parent / "report.html").is_file()
    assert {folder.name: digest(folder) for folder in (run, unfinished)} == before


def test_a_folder_of_many_runs_is_one_table_and_the_best_runs_in_full(
    run, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(html_report, "MAX_RUNS_IN_FULL", 3, raising=False)
    monkeypatch.setattr(html_report, "BEST_RUNS_SHOWN", 2, raising=False)
    for k, accuracy in enumerate([0.3, 0.9, 0.5, 0.7], start=1):
        shutil.copytree(run, run.parent / f"run-{k}")
        set_summary(run.parent / f"run-{k}", test_accuracy=accuracy)
    (run / "summary.json").write_text('{"steps": ')  # damaged: listed, with why
    code, page, _ = write_report(run.parent, tmp_path, capsys)
    assert code == 0
    assert re.findall(r"<h2 id='([^']*)'>", page) == ["all-runs", "run-2", "run-4"]  # best two
    table = page.split("<table>")[1]
    assert re.findall(r"<tr><td>([^<]*)</td>", table) == [
        "run-2",
        "run-4",
        "run-3",
        "run-1",
        "run",
    ]
    assert re.search(r"<td>summary.json is damaged \([^<]*summary.json cannot be read", table)


def test_a_metrics_log_over_the_limit_is_named_and_left_unread(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(callbacks, "MAX_METRICS_BYTES", 100)
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0 and embedded_pngs(page) == []
    size = (run / "metrics.jsonl").stat().st_size
    assert f"metrics.jsonl has {size:,} bytes, over the limit " in page
    assert "trainlab.train.callbacks.MAX_METRICS_BYTES = 100 " in page


def test_the_curves_of_a_long_log_are_drawn_from_evenly_spaced_records(monkeypatch):
    monkeypatch.setattr(plots, "MAX_CURVE_POINTS", 10, raising=False)
    drawn = []
    figure = plots._figure

    def keep(*args, **options):
        drawn.append(figure(*args, **options))
        return drawn[-1]

    monkeypatch.setattr(plots, "_figure", keep)
    records = ({"step": s, "loss": 1.0, "smoothed_loss": 1.0} for s in range(1, 1001))
    plots.curves(records, io.BytesIO())
    _, axes = drawn[0]
    steps = list(axes[0][0].lines[0].get_xdata())  # the mini-batch loss
    assert len(steps) <= 2 * 10 + 1 and steps[0] == 1 and steps[-1] == 1000  # and the last
    assert len({b - a for a, b in itertools.pairwise(steps[:-1])}) == 1  # evenly spaced


# --- D9, D11, D13: damaged summary.json --------------------------------------------------------


def test_deeply_nested_json_is_named_not_a_traceback(run, tmp_path, capsys):
    (run / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    lines = metrics_lines(run)
    lines.insert(1, "[" * 100_000 + "]" * 100_000 + "\n")
    (run / "metrics.jsonl").write_text("".join(lines))
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0
    assert re.search(r"summary.json is damaged \([^<]*summary.json cannot be read \(nested", page)
    assert re.search(r"metrics.jsonl line 2 is not JSON \(nested deeper", page)


def test_malformed_verdicts_are_skipped_with_a_note_naming_the_file(run, tmp_path, capsys):
    verdict = {"name": "overfitting", "status": "warn", "evidence": "gap 30", "fix": "data"}
    set_summary(run, verdicts=[5, {"name": 1, "status": "warn"}, verdict])
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0
    assert "<b>[warn] overfitting</b>: gap 30<br><i>fix:</i> data" in page
    assert re.search(r"run/summary.json: 2 malformed verdict entries skipped", page)


def test_an_invalid_summary_is_reported_as_damaged_not_as_unfinished(run, tmp_path, capsys):
    (run / "summary.json").write_text('{"steps": 3,')
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0 and "not finished" not in page
    assert re.search(r"summary.json is damaged \([^<]*summary.json cannot be read \(Expect", page)


# --- D12: a cut last line of metrics.jsonl, damage elsewhere ------------------------------------


def test_a_cut_last_line_is_skipped_and_the_report_says_so(run, tmp_path, capsys):
    with open(run / "metrics.jsonl", "ab") as file:
        file.write(CUT_LINE)
    code, page, _ = write_report(run, tmp_path, capsys)
    assert code == 0 and len(embedded_pngs(page)) == 1  # the curves, of the whole lines
    number = len(metrics_lines(run))
    assert re.search(rf"metrics.jsonl line {number} is cut short \(.*\) and was skipped", page)


def test_one_damaged_run_is_named_and_the_others_are_reported(run, tmp_path, capsys):
    shutil.copytree(run, run.parent / "good")
    lines = metrics_lines(run)
    lines[1] = "not json\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    code, page, _ = write_report(run.parent, tmp_path, capsys)
    assert code == 0
    assert re.findall(r"<h2 id='([^']*)'>", page) == ["good", "run"]
    assert len(embedded_pngs(page)) == 1  # the good run's curves
    assert re.search(r"No curves: Invalid run file: \S*run/metrics.jsonl line 2 is not JSON", page)


def test_load_run_skips_a_cut_last_line(run):
    whole = [json.loads(line) for line in metrics_lines(run)]
    with open(run / "metrics.jsonl", "ab") as file:
        file.write(CUT_LINE)
    assert load_run(run).metrics == whole


def test_load_run_loads_the_weights_of_a_run_whose_log_is_damaged(run):
    lines = metrics_lines(run)
    lines[1] = "{oops\n"
    (run / "metrics.jsonl").write_text("".join(lines))
    with pytest.warns(UserWarning, match=r"metrics.jsonl line 2 is not JSON .*1 record"):
        loaded = load_run(run)
    assert loaded.metrics == [json.loads(lines[0])]
    saved = safetensors.torch.load_file(str(run / "model.safetensors"))
    assert all(loaded.model.state_dict()[k].equal(v) for k, v in saved.items())


def test_evaluate_a_run_whose_log_was_cut(run, capsys):
    with open(run / "metrics.jsonl", "ab") as file:
        file.write(CUT_LINE)
    assert main(["evaluate", str(run)]) == 0
    assert "test" in capsys.readouterr().out


def test_a_seeds_summary_with_malformed_members_reads_only_its_member_folders(
    run, tmp_path, capsys
):
    parent = run.parent / "seeds"
    shutil.copytree(run, parent / "member-1")
    shutil.copy(run / "config.toml", parent / "config.toml")
    record = {"format": "trainlab-seeds", "version": 1, "seeds": [7], "members": ["member-1"]}
    (parent / "seeds.json").write_text(json.dumps(record))
    set_summary(run, test_ece=0.0123)  # a run beside the seeds run: not a member
    members = [5, {"dir": "../run", "seed": 8}, {"dir": "member-1", "seed": 7}]
    summary = {"task": "classification", "seeds": [7], "members": members, "ensemble": None}
    (parent / "summary.json").write_text(json.dumps(summary))
    code, page, _ = write_report(parent, tmp_path, capsys)
    assert code == 0
    members_table = page.split("<table>")[1]
    rows = re.findall(r"<tr><td>([^<]*)</td><td>(\d+)</td>", members_table)
    assert rows == [("../run", "8"), ("member-1", "7")]  # the int entry skipped
    assert "0.0123" not in page  # ../run/summary.json was not read


def test_load_run_names_a_nested_or_oversized_summary_and_loads_the_run(run):
    """summary.json only reports numbers: damage there warns and the weights still load."""
    intact = load_run(run).model.state_dict()
    (run / "summary.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.warns(UserWarning, match=r"summary.json cannot be read \(nested deeper"):
        loaded = load_run(run)
    assert loaded.summary == {}
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in intact.items())
    (run / "summary.json").write_text(" " * (runs.MAX_RECORD_BYTES + 1))
    with pytest.warns(UserWarning, match=r"summary.json cannot be read \(.*more than the"):
        assert load_run(run).summary == {}


def test_a_sweep_folders_files_are_read_within_bounds(tmp_path, capsys, monkeypatch):
    """A sweep folder's trials.csv, sweep.json, best.toml and plots are read bounded: a
    plot that is no PNG is a note, an oversized trials.csv is named, nothing is a traceback."""
    sweep = tmp_path / "sweep"
    (sweep / "plots").mkdir(parents=True)
    (sweep / "trials.csv").write_text("number,state,value,run_dir\n0,COMPLETE,0.5,trials/0\n")
    (sweep / "sweep.json").write_text("[" * 100_000 + "]" * 100_000)
    (sweep / "best.toml").write_bytes(b"\xff\xfe not UTF-8")
    (sweep / "plots" / "history.png").write_bytes(b"not a PNG")
    code, page, err = write_report(sweep, tmp_path, capsys)
    assert code == 0 and "Traceback" not in err
    assert "Figure 'history.png' not shown" in page
    assert re.search(r"best.toml cannot be read", page)
    assert "<h3>trials (1)</h3>" in page
    monkeypatch.setattr(html_report, "MAX_TRIALS_BYTES", 10)
    code, page, err = write_report(sweep, tmp_path, capsys)
    assert code == 0 and re.search(r"No trials: .*trials.csv has \d+ bytes, more than the 10", page)


def test_the_csv_table_follows_a_log_whose_last_line_was_cut(run):
    """metrics.csv is rebuilt from metrics.jsonl through the bounded reader: a cut-short
    last line (a kill mid-write) is skipped instead of stopping the rewrite."""
    lines = metrics_lines(run)
    (run / "metrics.jsonl").write_text("".join(lines) + '{"step": 99, "lo')
    callbacks.CsvLog(run).write()
    table = (run / "metrics.csv").read_text().splitlines()
    training = [line for line in lines if '"event"' not in line]
    assert len(table) == 1 + len(training)  # the header and one row per training record


def test_the_csv_table_of_a_log_past_the_readers_limit_is_still_rebuilt(run, monkeypatch):
    """The report's size limit is for reading other runs; a long run rebuilding metrics.csv
    from its own log at every checkpoint must not die when the log passes it."""
    monkeypatch.setattr(callbacks, "MAX_METRICS_BYTES", 100)
    callbacks.CsvLog(run).write()
    training = [line for line in metrics_lines(run) if '"event"' not in line]
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + len(training)
