"""A sweep folder belongs to one study: another study at its --out is refused and nothing of
the first is overwritten, two sweeps started together on one --out are checked one after the
other, a sweep whose trials all failed exits 1 and leaves no stale best.toml, and a killed
worker's trial is replaced without failing a sweep whose trials all finished."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from trainlab.cli import main
from trainlab.sweep import run_sweep
from trainlab.sweep import study as study_module

from .test_sweep import GOOD_TABLE, SPACE, TINY, trials_csv, write

RESULTS = ("trials.csv", "sweep.json", "best.toml", "study.journal")


def _files(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in RESULTS}


def _sweep(config: str, space: str, out: Path, *more: str) -> int:
    return main(["sweep", config, "--space", space, "--out", str(out), "--trials", "1", *more])


def test_another_study_at_an_existing_out_is_refused_and_overwrites_nothing(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    assert _sweep(config, space, out, "--study", "a") == 0
    before = _files(out)
    capsys.readouterr()
    assert _sweep(config, space, out, "--study", "b") == 2
    err = capsys.readouterr().err
    assert re.search(r"Invalid --out: .* \(holds study 'a'.*another --out", err), err
    assert _files(out) == before
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0"]
    # the advice works: study b in a folder of its own
    assert _sweep(config, space, tmp_path / "b", "--study", "b") == 0
    assert json.loads((tmp_path / "b" / "sweep.json").read_text())["study"] == "b"


def test_a_changed_space_error_advises_a_fix_that_works(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    assert _sweep(config, space, out, "--study", "a") == 0
    wider = write(tmp_path, "wider.toml", SPACE.replace("high = 1e-1", "high = 0.5"))
    capsys.readouterr()
    assert _sweep(config, wider, out, "--study", "a") == 2
    err = capsys.readouterr().err
    assert re.search(r"Invalid --space: .*differs from study 'a'.*use another --out", err), err
    assert "another --study" not in err  # a new study at this --out would be refused
    assert _sweep(config, wider, tmp_path / "wider", "--study", "a") == 0


def test_the_same_study_name_in_another_storage_is_refused_at_its_out(
    tmp_path, capsys, postgresql_url
):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out, database = tmp_path / "sweep", ("--storage", postgresql_url)
    assert _sweep(config, space, out, "--study", "safety") == 0  # in out/study.journal
    before = _files(out)
    capsys.readouterr()
    assert _sweep(config, space, out, "--study", "safety", *database) == 2
    err = capsys.readouterr().err
    assert re.search(r"Invalid --out: .*holds study 'safety' stored in .*study\.journal", err)
    assert _files(out) == before
    assert _sweep(config, space, tmp_path / "db", "--study", "safety", *database) == 0
    # in a shared storage a changed space needs a new study name as well as a new folder
    wider = write(tmp_path, "wider.toml", SPACE.replace("high = 1e-1", "high = 0.5"))
    capsys.readouterr()
    assert _sweep(config, wider, tmp_path / "db2", "--study", "safety", *database) == 2
    err = capsys.readouterr().err
    assert re.search(r"differs from study 'safety'.*use another --study and another --out", err)
    assert not (tmp_path / "db2").exists()
    assert _sweep(config, wider, tmp_path / "db2", "--study", "safety-wider", *database) == 0


# An SGD step with this rate turns the loss into NaN at once: every trial fails on its own.
DIVERGING = TINY.replace('name = "adam"', 'name = "sgd"')
DIVERGING_SPACE = '"optimizer.lr" = {type = "categorical", choices = [1e30, 1e35]}\n'


def test_a_sweep_whose_trials_all_failed_exits_1_and_keeps_no_stale_best(tmp_path, capsys):
    config = write(tmp_path, "tiny.toml", DIVERGING)
    space = write(tmp_path, "space.toml", DIVERGING_SPACE)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "best.toml").write_text("# a best.toml no trial of this study produced\n")
    assert main(["sweep", config, "--space", space, "--out", str(out), "--trials", "2"]) == 1
    err = capsys.readouterr().err.splitlines()
    errors = [line for line in err if line.startswith("trainlab: error:")]
    assert len(errors) == 1, err
    assert re.fullmatch(
        r"trainlab: error: every trial of study 'tiny' failed \(2 trials; trial 0: "
        r"NonFiniteError: Non-finite loss.*",
        errors[0],
    )
    assert [r["state"] for r in trials_csv(out)] == ["FAIL", "FAIL"]
    assert json.loads((out / "sweep.json").read_text())["best"] is None
    assert not (out / "best.toml").exists()


def _meet_inside_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each sweep wait, inside the identity check, for the other to arrive there too.

    Sweeps that check outside the lock both arrive, each before the other has recorded its
    study: both are accepted. Under the lock the second never arrives while the first
    waits; the first goes on after the timeout.
    """
    barrier, identity = threading.Barrier(2), study_module._identity

    def waiting(sweep):
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=3)
        return identity(sweep)

    monkeypatch.setattr(study_module, "_identity", waiting)


@pytest.mark.parametrize(
    ("second", "refusal"),
    [
        ({"study": "s", "space": "wider"}, r"Invalid --space: .*differs from study 's'"),
        ({"study": "t", "space": "space"}, r"Invalid --out: .*\(holds study '[st]'"),
    ],
    ids=["same-study-another-space", "another-study"],
)
def test_two_sweeps_started_together_on_one_out_are_checked_one_after_the_other(
    second, refusal, tmp_path, monkeypatch
):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    write(tmp_path, "wider.toml", SPACE.replace("high = 1e-1", "high = 0.5"))
    out = tmp_path / "sweep"
    _meet_inside_the_check(monkeypatch)
    outcomes: dict[str, object] = {}

    def start(name: str, study: str, space: str) -> None:
        try:
            outcomes[name] = run_sweep(
                config, space, out=str(out), trials=1, study=study, pruner="none"
            )
        except ValueError as error:
            outcomes[name] = error

    other = threading.Thread(
        target=start, args=("second", second["study"], str(tmp_path / f"{second['space']}.toml"))
    )
    other.start()
    start("first", "s", space)
    other.join()
    refused = [o for o in outcomes.values() if isinstance(o, ValueError)]
    accepted = [o for o in outcomes.values() if isinstance(o, dict)]
    assert len(refused) == 1 and len(accepted) == 1, outcomes
    assert re.search(refusal, str(refused[0]))
    assert accepted[0]["exit_code"] == 0
    about = json.loads((out / "sweep.json").read_text())
    assert len(trials_csv(out)) == 1 and about["best"] is not None
    assert sorted(p.name for p in (out / "trials").iterdir()) == ["0"]


def _killed_while_training(sweep) -> None:
    """A worker that asks for a trial, as `work` does, and is killed (SIGKILL) before it
    tells the study anything: the trial stays RUNNING with this dead process's id."""
    storage = study_module.open_storage(sweep.storage_url)
    study = study_module._study(sweep, storage)
    with study_module._quota_lock(sweep, storage):
        trial = study.ask()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("process", study_module._process_id(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_is_replaced_and_a_finished_sweep_exits_0(tmp_path, monkeypatch):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    monkeypatch.setattr(study_module, "_work_in_process", _killed_while_training)
    result = run_sweep(config, space, out=str(out), trials=2, workers=2, pruner="none")
    assert result["exit_code"] == 0
    states = [r["state"] for r in trials_csv(out)]
    assert sorted(states) == ["COMPLETE", "COMPLETE", "FAIL"], states
    died = next(r for r in trials_csv(out) if r["state"] == "FAIL")
    assert died["note"] == "its worker died"


def test_a_sweep_stored_in_sqlite_runs_and_locks_beside_the_database(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    database = tmp_path / "db" / "studies.db"
    database.parent.mkdir()
    url = f"sqlite:///{database}"
    out = tmp_path / "sweep"
    assert _sweep(config, space, out, "--storage", url, "--study", "lite", "--pruner", "none") == 0
    assert [r["state"] for r in trials_csv(out)] == ["COMPLETE"]
    assert json.loads((out / "sweep.json").read_text())["storage"] == url
    # Every sweep folder whose study lives in this database counts under one lock, as with
    # a journal file: the lock file sits beside the database, not in one sweep folder.
    sweep = study_module.prepare(config, space, out=str(tmp_path / "other"), storage=url)
    assert study_module._quota_lock_file(sweep) == database.parent / ".ask.lock"
    assert (database.parent / ".ask.lock").is_file()


# Nested deeper than Python's JSON reader recurses: json.loads raises RecursionError.
NESTED = "[" * 100_000 + "]" * 100_000


def test_a_nested_sweep_json_at_out_is_named_and_left_as_it_is(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text(NESTED)
    assert _sweep(config, space, out) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"trainlab: error: Invalid --out: .*\(\S*sweep\.json cannot be read \(nested deeper "
        r"than the JSON reader's recursion limit\); not a sweep.json trainlab wrote; "
        r"use another --out\)\n",
        err,
    ), err
    assert (out / "sweep.json").read_text() == NESTED
    assert not (out / "trials").exists()


def test_a_nested_sweep_json_of_the_refined_sweep_is_named(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    coarse = tmp_path / "coarse"
    coarse.mkdir()
    (coarse / "trials.csv").write_text(GOOD_TABLE)
    (coarse / "sweep.json").write_text(NESTED)
    out = tmp_path / "fine"
    argv = ["sweep", config, "--space", space, "--out", str(out), "--refine", str(coarse)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(
        r"trainlab: error: Invalid --refine: .*sweep\.json' \(not JSON: .*\)\n", err
    )
    assert not out.exists()


def test_a_sweep_report_shows_odd_sweep_json_values_and_huge_cells_as_written(tmp_path, capsys):
    """A refined_from that is no string, trials that are no list, and trials.csv cells too
    large for a float are shown as written, not a traceback or an infinity."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    huge = "9" * 400
    (folder / "trials.csv").write_text(
        f"number,state,value,optimizer.lr,run_dir\n0,COMPLETE,1e400,{huge},trials/0\n"
    )
    about = {"study": "s", "metric": "val_loss", "refined_from": 7, "trials": 3, "best": None}
    (folder / "sweep.json").write_text(json.dumps(about))
    page = tmp_path / "report.html"
    assert main(["report", str(folder), "-o", str(page)]) == 0
    text = html.unescape(page.read_text())
    assert "Space narrowed from the sweep 7." in text
    cells = re.findall(r"<td>([^<]*)</td>", text.split("<h3>trials (1)</h3>")[1])
    assert cells[:4] == ["0", "COMPLETE", "1e400", huge], cells
    # A list of trials, as trainlab writes it, is named; an object as refined_from is text.
    about.update(refined_from={"a": 1}, trials=[4, 5])
    (folder / "sweep.json").write_text(json.dumps(about))
    assert main(["report", str(folder), "-o", str(page)]) == 0
    text = html.unescape(page.read_text())
    assert "Space narrowed from the sweep {'a': 1} (its trials 4, 5)." in text
