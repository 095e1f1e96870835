"""Sweeps: trials counted once by parallel workers (journal file and a real PostgreSQL),
bad spaces refused before anything is created, a changed space refused, a killed worker's
trial replaced, pruning that stops hopeless trials early."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from trainlab.cli import main
from trainlab.sweep import load_space, open_storage, run_sweep
from trainlab.sweep.study import _alive, _process_id
from trainlab.train.config import load_config

# An MLP on scikit-learn's digits: a trial takes a fraction of a second.
TINY = """
[data]
name = "digits"
batch_size = 64
[model]
kind = "mlp"
hidden = [32]
[optimizer]
name = "adam"
[run]
epochs = 2
threads = 1
checkpoint_seconds = 0
"""
SPACE = """
"optimizer.lr" = {type = "log-uniform", low = 1e-3, high = 1e-1}
"model.hidden" = {type = "categorical", choices = [[16], [32]]}
"""


def write(folder: Path, name: str, text: str) -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def trials_csv(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv") as file:
        return list(csv.DictReader(file))


def check_counted_once(out: Path, storage: str, study: str, n: int) -> None:
    """N finished trials in the storage, N rows in trials.csv, N distinct run folders."""
    trials = optuna.load_study(study_name=study, storage=open_storage(storage)).get_trials()
    assert len(trials) == n
    assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    rows = trials_csv(out)
    assert sorted(int(r["number"]) for r in rows) == sorted(t.number for t in trials)
    folders = {r["run_dir"] for r in rows}
    assert len(folders) == n
    for folder in folders:
        assert (Path(folder) / "summary.json").is_file()


@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_two_workers_record_every_trial_once(backend, tmp_path, request):
    storage = request.getfixturevalue("postgresql_url") if backend == "postgresql" else None
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    study = f"two-workers-{backend}"
    result = run_sweep(
        config, space, out=str(out), trials=4, workers=2, storage=storage, study=study
    )
    assert result["exit_code"] == 0
    check_counted_once(out, storage or str(out / "study.journal"), study, 4)
    # best.toml is the config with the best trial's values, ready for `trainlab train`
    best = result["best"]
    complete = [r for r in trials_csv(out) if r["state"] == "COMPLETE"]
    accuracy = {
        int(r["number"]): json.loads(Path(r["run_dir"], "summary.json").read_text())["val_accuracy"]
        for r in complete
    }
    assert int(best["number"]) == max(accuracy, key=accuracy.get)  # maximized, not minimized
    assert float(best["value"]) == pytest.approx(max(accuracy.values()))
    trained = load_config(out / "best.toml")
    assert trained.optimizer.lr == pytest.approx(float(best["optimizer.lr"]))
    assert list(trained.model.hidden) == json.loads(best["model.hidden"])
    for plot in ("params.png", "history.png", "parallel.png"):
        assert (out / "plots" / plot).stat().st_size > 1000


@pytest.mark.parametrize(
    ("space", "message"),
    [
        (
            '"optimizer.lrr" = {type = "uniform", low = 0.1, high = 0.2}',
            r"did you mean 'optimizer\.lr'",
        ),
        ('"optimizer.lr" = {type = "uniform", low = 0.1, high = 0.1}', r"empty range"),
        ('"optimizer.lr" = {type = "uniform", low = 0.2, high = 0.1}', r"inverted range"),
        ('"optimizer.lr" = {type = "log-uniform", low = 0, high = 0.1}', r"must be > 0"),
        (
            '"optimizer.lr" = {type = "log_uniform", low = 1, high = 2}',
            r"did you mean 'log-uniform'",
        ),
        ('"model.hidden" = {type = "categorical", choices = []}', r"non-empty list"),
        ('"optimizer.lr" = {type = "uniform", low = -1, high = 0.1}', r"Invalid optimizer\.lr"),
    ],
)
def test_bad_space_exits_2_and_creates_nothing(space, message, tmp_path, capsys):
    config, space_file = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "s.toml", space)
    out = tmp_path / "sweep"
    assert main(["sweep", config, "--space", space_file, "--out", str(out)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()


def test_unreachable_storage_exits_2_and_creates_nothing(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    url = "postgresql://someone:secret@127.0.0.1:1/nowhere"
    assert main(["sweep", config, "--space", space, "--out", str(out), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "Invalid --storage" in err and "cannot connect" in err and "secret" not in err
    assert not out.exists()


def test_a_changed_space_is_refused_naming_the_difference(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    assert main(["sweep", config, "--space", space, "--out", str(out), "--trials", "1"]) == 0
    wider = write(tmp_path, "wider.toml", SPACE.replace("high = 1e-1", "high = 0.5"))
    before = (out / "study.journal").read_bytes()
    assert main(["sweep", config, "--space", wider, "--out", str(out), "--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "Invalid --space" in err and "optimizer.lr was" in err and "'high': 0.5" in err
    assert (out / "study.journal").read_bytes() == before  # no trial was added


def test_resume_after_a_killed_worker_counts_no_trial_twice(tmp_path):
    slow = TINY.replace("epochs = 2", "epochs = 25")  # a trial lasts about a second
    config, space = write(tmp_path, "tiny.toml", slow), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "trainlab", "sweep", config, "--space", space]
    command += ["--out", str(out), "--trials", "2", "--pruner", "none", "--study", "s"]
    worker = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (out / "trials" / "1" / "config.toml").exists():  # trial 0 done, 1 training
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    rerun = subprocess.run(command, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 1: its worker died; marked FAIL" in rerun.stderr
    rows = trials_csv(out)
    states = {int(r["number"]): r["state"] for r in rows}
    assert states[1] == "FAIL" and sum(s == "COMPLETE" for s in states.values()) == 2
    assert len(rows) == 3 and len({r["run_dir"] for r in rows}) == 3
    assert next(r for r in rows if r["number"] == "1")["note"] == "its worker died"


def test_median_pruner_stops_hopeless_trials_early(tmp_path):
    longer = TINY.replace("epochs = 2", "epochs = 4")
    space = """
"optimizer.lr" = {type = "categorical", choices = [1e-7, 0.01]}
"run.checkpoint_every" = {type = "categorical", choices = [5, 10, 15, 20]}
"""  # checkpoint_every changes no number: the four good trials learn exactly alike
    config, space = write(tmp_path, "tiny.toml", longer), write(tmp_path, "space.toml", space)
    out = tmp_path / "sweep"
    result = run_sweep(config, space, out=str(out), trials=8, sampler="grid", seed=1)
    rows = result["trials"]
    assert len(rows) == 8
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(r["optimizer.lr"] == 1e-7 for r in pruned)
    full = max(json.loads(Path(r["run_dir"], "summary.json").read_text())["steps"] for r in rows)
    for row in pruned:
        summary = json.loads(Path(row["run_dir"], "summary.json").read_text())
        assert summary["steps"] < full
        assert summary["stop_reason"] == "pruned by the median pruner"


def test_refine_narrows_the_space_to_the_best_trials_and_records_where_from(tmp_path):
    space = SPACE.replace(
        '"model.hidden"', '"data.batch_size" = {type = "int", low = 16, high = 128}\n"model.hidden"'
    )
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", space)
    coarse = tmp_path / "coarse"
    first = run_sweep(config, space, out=str(coarse), trials=6, sampler="random", pruner="none")
    best = first["best"]
    out = tmp_path / "fine"
    argv = ["sweep", config, "--space", space, "--refine", str(coarse), "--out", str(out)]
    assert main([*argv, "--trials", "2", "--pruner", "none"]) == 0
    old, new = load_space(space, config, []), load_space(out / "space.toml", config, [])
    stored = optuna.load_study(
        study_name="tiny-refined", storage=open_storage(str(out / "study.journal"))
    )
    assert stored.user_attrs["trainlab"]["space"] == new.to_dict()  # the file is the study's space
    assert stored.user_attrs["trainlab"]["refined_from"] == str(coarse.resolve())
    assert json.loads((out / "sweep.json").read_text())["refined_from"] == str(coarse.resolve())
    for param in old.params:
        narrowed = new.by_key()[param.key]
        if param.kind == "categorical":
            assert all(choice in param.choices for choice in narrowed.choices)
            assert param.value(best[param.key]) in narrowed.choices
            continue
        assert param.low <= narrowed.low < narrowed.high <= param.high
        assert (narrowed.low, narrowed.high) != (param.low, param.high)
        assert narrowed.low <= best[param.key] <= narrowed.high
        assert type(narrowed.low) is type(param.low) and type(narrowed.high) is type(param.high)
    assert trials_csv(out) and all(
        new.by_key()["optimizer.lr"].low
        <= float(r["optimizer.lr"])
        <= new.by_key()["optimizer.lr"].high
        for r in trials_csv(out)
    )


def test_refine_refuses_a_folder_that_is_not_a_sweep_or_has_too_few_trials(tmp_path, capsys):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    coarse, out = tmp_path / "coarse", tmp_path / "fine"
    assert main(["sweep", config, "--space", space, "--out", str(coarse), "--trials", "2"]) == 0
    capsys.readouterr()
    argv = ["sweep", config, "--space", space, "--out", str(out), "--refine"]
    assert main([*argv, str(tmp_path)]) == 2
    assert re.search(
        r"Invalid --refine: .*not a sweep folder: no trials\.csv", capsys.readouterr().err
    )
    assert main([*argv, str(coarse)]) == 2
    assert re.search(
        r"Invalid --refine: .*has 2 complete trials; at least 3 are needed", capsys.readouterr().err
    )
    assert not out.exists()


def test_hyperband_pruner_stops_hopeless_trials_early(tmp_path, capsys):
    longer = TINY.replace("epochs = 2", "epochs = 4")
    space = """
"optimizer.lr" = {type = "categorical", choices = [1e-7, 0.01]}
"run.checkpoint_every" = {type = "categorical", choices = [5, 10, 15, 20]}
"""  # as for the median pruner: the four good trials learn exactly alike
    config, space = write(tmp_path, "tiny.toml", longer), write(tmp_path, "space.toml", space)
    out = tmp_path / "sweep"
    argv = ["sweep", config, "--space", space, "--out", str(out), "--trials", "8"]
    assert main([*argv, "--sampler", "grid", "--pruner", "hyperband", "--seed", "1"]) == 0
    assert "trials: " in capsys.readouterr().out
    rows = trials_csv(out)
    assert len(rows) == 8
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned and all(float(r["optimizer.lr"]) == 1e-7 for r in pruned)
    full = max(json.loads(Path(r["run_dir"], "summary.json").read_text())["steps"] for r in rows)
    for row in pruned:
        summary = json.loads(Path(row["run_dir"], "summary.json").read_text())
        assert summary["steps"] < full
        assert summary["stop_reason"] == "pruned by the hyperband pruner"


def test_random_sampler_minimizing_val_loss_keeps_the_lowest_in_best_toml(tmp_path):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    argv = ["sweep", config, "--space", space, "--out", str(out), "--trials", "5"]
    assert main([*argv, "--sampler", "random", "--metric", "val_loss", "--pruner", "none"]) == 0
    rows = trials_csv(out)
    assert len(rows) == 5 and all(r["state"] == "COMPLETE" for r in rows)
    for row in rows:  # the value is the run's val_loss, not its accuracy
        summary = json.loads(Path(row["run_dir"], "summary.json").read_text())
        assert float(row["value"]) == pytest.approx(summary["val_loss"])
    values = [float(r["value"]) for r in rows]
    assert len(set(values)) == 5  # distinct trials: the lowest is not also the highest
    lowest = min(rows, key=lambda r: float(r["value"]))
    trained = load_config(out / "best.toml")
    assert trained.optimizer.lr == pytest.approx(float(lowest["optimizer.lr"]))
    assert list(trained.model.hidden) == json.loads(lowest["model.hidden"])
    assert (
        f"trial {lowest['number']} (val_loss = {float(lowest['value']):.4f})"
        in (out / "best.toml").read_text()
    )
    about = json.loads((out / "sweep.json").read_text())
    assert about["metric"] == "val_loss" and about["best"]["number"] == int(lowest["number"])


def test_a_zombie_worker_counts_as_dead():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        process = _process_id(child.pid)
        stat = Path(f"/proc/{child.pid}/stat")
        deadline = time.monotonic() + 30
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not reaped
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, 0)  # a zombie still answers signal 0 ...
        assert not _alive(process)  # ... but trains nothing
    finally:
        child.wait()
    assert _alive(_process_id(os.getpid()))


def test_resumed_random_sweep_draws_new_points_and_refuses_another_seed(tmp_path):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    out = tmp_path / "sweep"
    options = {"out": str(out), "sampler": "random", "pruner": "none", "study": "s"}
    run_sweep(config, space, trials=2, **options)
    run_sweep(config, space, trials=4, **options)
    rates = [float(r["optimizer.lr"]) for r in trials_csv(out)]
    assert len(rates) == 4 and len(set(rates)) == 4  # the resume replays no draw
    with pytest.raises(ValueError, match=r"Invalid --seed: 1 \(study 's' uses --seed 0"):
        run_sweep(config, space, trials=5, seed=1, **options)
    with pytest.raises(ValueError, match=r"Invalid --sampler: 'tpe' \(study 's' uses --sampler"):
        run_sweep(config, space, trials=5, **{**options, "sampler": "tpe"})


def _fake_sweep(folder: Path, table: str, about: str | None = None) -> Path:
    folder.mkdir()
    (folder / "trials.csv").write_text(table)
    if about is not None:
        (folder / "sweep.json").write_text(about)
    return folder


GOOD_TABLE = "number,state,value,optimizer.lr,model.hidden\n" + "".join(
    f"{n},COMPLETE,0.{n + 5},0.0{n + 1},[16]\n" for n in range(4)
)


@pytest.mark.parametrize(
    ("table", "about", "message"),
    [
        (
            "number,state,value,optimizer.lr,model.hidden\n0,COMPLETE\n",
            None,
            r"trials\.csv' \(line 2 has 5 columns in its header but not in the row",
        ),
        (GOOD_TABLE.replace("0.6,", "oops,"), None, r"trials\.csv' \(trial '1' has value 'oops'"),
        ("number,value\n", None, r"trials\.csv' \(has no column state"),
        (GOOD_TABLE, "[1, 2]", r"sweep\.json' \(must hold a JSON object"),
        (GOOD_TABLE, "{", r"sweep\.json' \(not JSON"),
        (GOOD_TABLE, '{"metric": "loss"}', r"sweep\.json' \(its metric 'loss' is not one of"),
    ],
)
def test_refine_refuses_a_damaged_sweep_folder_naming_the_file(
    table, about, message, tmp_path, capsys
):
    config, space = write(tmp_path, "tiny.toml", TINY), write(tmp_path, "space.toml", SPACE)
    previous = _fake_sweep(tmp_path / "coarse", table, about)
    out = tmp_path / "fine"
    argv = ["sweep", config, "--space", space, "--out", str(out), "--refine", str(previous)]
    assert main(argv) == 2
    assert re.search(r"Invalid --refine: .*" + message, capsys.readouterr().err)
    assert not out.exists()


def test_a_space_file_that_is_a_device_is_refused_unread(tmp_path, capsys):
    config = write(tmp_path, "tiny.toml", TINY)
    assert main(["sweep", config, "--space", "/dev/zero", "--out", str(tmp_path / "o")]) == 2
    assert re.search(r"Invalid --space: '/dev/zero' \(not a regular file", capsys.readouterr().err)
