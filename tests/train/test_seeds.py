"""`trainlab train --seeds K`: K members, one after another; their summary; resume; bad input."""

from __future__ import annotations

import json
import re
import signal
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import trainlab
from trainlab import data
from trainlab.cli import main
from trainlab.train import TrainingError, callbacks
from trainlab.train.config import load_config
from trainlab.train.runs import MAX_RECORD_BYTES, read_seeds, write_seeds, write_seeds_summary

from .test_trainer import TINY, set_args, weights


def fixed_test_split(folder: Path) -> list[str]:
    """TINY on digits saved as an npz with a fixed test split: run.seed moves only the val split."""
    ds = data.load("digits")
    x, y = ds.x.numpy(), ds.y.numpy()
    path = folder / "digits.npz"
    np.savez(path, x=x[:1400], y=y[:1400], x_test=x[1400:], y_test=y[1400:])
    kept = [s for s in TINY if not s.startswith("data.name")]
    return [*kept, "data.name=npz", f'data.options={{path="{path}"}}']


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def test_seeds_trains_k_members_with_consecutive_seeds_and_summarizes_them(tmp_path, capsys):
    parent = tmp_path / "seeds"
    settings = [*fixed_test_split(tmp_path), "run.seed=5"]
    assert main(["train", "--run-dir", str(parent), "--seeds", "3", *set_args(settings)]) == 0
    out = capsys.readouterr().out
    assert "ensemble of 3 members" in out and "mean ± sample std" in out

    members = [parent / f"member-{k}" for k in (1, 2, 3)]
    assert [load_config(m / "config.toml").run.seed for m in members] == [5, 6, 7]
    assert json.loads((parent / "seeds.json").read_text())["seeds"] == [5, 6, 7]
    first, second = weights(members[0]), weights(members[1])
    assert not all(torch.equal(first[k], second[k]) for k in first)  # other seeds, other nets

    result = summary(parent)
    accuracies = [summary(m)["test_accuracy"] for m in members]
    losses = [summary(m)["test_loss"] for m in members]
    assert result["test_accuracy_mean"] == pytest.approx(statistics.fmean(accuracies))
    assert result["test_accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    assert result["test_loss_mean"] == pytest.approx(statistics.fmean(losses))
    assert result["test_loss_std"] == pytest.approx(statistics.stdev(losses))
    assert [m["seed"] for m in result["members"]] == [5, 6, 7]
    assert result["steps"] == sum(summary(m)["steps"] for m in members)
    assert result["ensemble"] == trainlab.ensemble(parent)["ensemble"]

    assert main(["runs", str(tmp_path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["status"] == "seeds 3/3 done"
    assert entry["test_accuracy"] == pytest.approx(statistics.fmean(accuracies))
    assert entry["ensemble_test_accuracy"] == result["ensemble"]["test_accuracy"]
    with pytest.raises(TrainingError, match=r"seeds run of 3 members.*member-1"):
        trainlab.load_run(parent)


class SigtermIn(callbacks.ProgressBar):
    """The live bar, which sends SIGTERM at step 20 of the member ``member``."""

    member = "member-2"

    def on_step_end(self, trainer, step):
        super().on_step_end(trainer, step)
        if trainer.run_dir.name == self.member and step.step == 20:
            signal.raise_signal(signal.SIGTERM)


def test_resume_continues_the_interrupted_member_and_trains_the_rest(tmp_path, capsys, monkeypatch):
    parent = tmp_path / "seeds"
    settings = fixed_test_split(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(callbacks, "ProgressBar", SigtermIn)
        code = main(["train", "--run-dir", str(parent), "--seeds", "3", *set_args(settings)])
    assert code == 143
    err = capsys.readouterr().err
    assert f"the seeds run continues with: trainlab train --resume {parent}" in err
    assert (parent / "member-1" / "summary.json").is_file()
    assert not (parent / "member-2" / "summary.json").exists()
    assert not (parent / "member-3").exists() and not (parent / "summary.json").exists()
    assert main(["runs", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["status"] == "seeds 1/3 done"

    assert main(["train", "--resume", str(parent)]) == 0
    assert "resuming from" in capsys.readouterr().err
    assert [m["seed"] for m in summary(parent)["members"]] == [0, 1, 2]
    # the resumed member ends exactly where a single uninterrupted run of its seed ends
    reference = tmp_path / "reference"
    assert main(["train", "--run-dir", str(reference), *set_args([*settings, "run.seed=1"])]) == 0
    expected, got = weights(reference), weights(parent / "member-2")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_resume_with_a_larger_k_adds_members(tmp_path, capsys):
    parent = tmp_path / "seeds"
    settings = fixed_test_split(tmp_path)
    assert main(["train", "--run-dir", str(parent), "--seeds", "1", *set_args(settings)]) == 0
    assert main(["train", "--resume", str(parent), "--seeds", "2"]) == 0
    assert load_config(parent / "member-2" / "config.toml").run.seed == 1
    assert len(summary(parent)["members"]) == 2
    capsys.readouterr()
    assert main(["train", "--resume", str(parent), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "Invalid --seeds: 1, but" in err and "seeds run of 2 members" in err


@pytest.mark.parametrize(
    ("seeds", "message"),
    [("0", r"Invalid --seeds: 0 \(must be an integer from 1 to 64"), ("65", r"--seeds: 65")],
)
def test_seeds_out_of_range_exit_2_before_any_folder(tmp_path, capsys, seeds, message):
    parent = tmp_path / "seeds"
    assert main(["train", "--run-dir", str(parent), "--seeds", seeds, *set_args(TINY)]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # refused before a folder was claimed


def test_seeds_with_resume_of_a_single_run_exit_2(tmp_path, capsys):
    run = tmp_path / "single"
    assert main(["train", "--run-dir", str(run), *set_args([*TINY, "run.epochs=1"])]) == 0
    assert main(["train", "--resume", str(run), "--seeds", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds one run, not a seeds run" in err and "Traceback" not in err
    assert not (run / "member-1").exists()


def test_seeds_on_data_without_a_fixed_test_split_say_why_there_is_no_ensemble(tmp_path, capsys):
    parent = tmp_path / "seeds"
    settings = [*TINY, "run.epochs=1"]  # digits: run.seed also carves the test set
    assert main(["train", "--run-dir", str(parent), "--seeds", "2", *set_args(settings)]) == 0
    assert "'digits' has no fixed test split" in capsys.readouterr().err
    result = summary(parent)
    assert result["ensemble"] is None
    assert "run.seed 0 vs 1" in result["ensemble_note"]
    assert len(result["members"]) == 2 and result["test_accuracy_std"] is not None


@pytest.mark.parametrize("seeds", ["1", "2"])
def test_a_seeds_run_that_cannot_start_leaves_no_folder(tmp_path, capsys, seeds):
    missing = [*TINY, "data.name=npz", f'data.options={{path="{tmp_path / "missing.npz"}"}}']
    parent = tmp_path / "seeds"
    assert main(["train", "--run-dir", str(parent), "--seeds", seeds, *set_args(missing)]) == 2
    err = capsys.readouterr().err
    assert "missing.npz" in err and "Traceback" not in err
    assert not parent.exists()


# --- damaged and oversized records --------------------------------------------------------------


def oversized(path: Path) -> Path:
    """A sparse file one byte over MAX_RECORD_BYTES: refused by its size, before it is read."""
    with open(path, "wb") as file:
        file.truncate(MAX_RECORD_BYTES + 1)
    return path


def test_an_oversized_seeds_file_is_refused_before_it_is_read(tmp_path, capsys):
    parent = tmp_path / "seeds"
    parent.mkdir()
    (parent / "config.toml").write_text("")
    oversized(parent / "seeds.json")
    with pytest.raises(ValueError, match=r"Invalid seeds file: .*seeds.json cannot be read"):
        read_seeds(parent)
    assert main(["runs", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"seeds.json has 1,048,577 bytes, more than the 1,048,576 expected", err)
    assert "Traceback" not in err


def test_an_oversized_summary_is_listed_with_a_note_and_stops_the_seeds_summary(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("")
    oversized(run / "summary.json")
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["status"] == "bad summary.json"
    assert re.search(r"summary.json has 1,048,577 bytes, more than the 1,048,576", entry["note"])
    assert "test_accuracy" not in entry

    parent = tmp_path / "seeds"
    parent.mkdir()
    record = write_seeds(parent, [0])
    record.members[0].mkdir()
    oversized(record.members[0] / "summary.json")
    with pytest.raises(ValueError, match=r"Invalid seeds run: member .*member-1.*1,048,577 bytes"):
        write_seeds_summary(record, None, "none")


# --- regression members ---------------------------------------------------------------------------


def test_a_seeds_run_of_regression_members_reports_their_loss_and_no_accuracy(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(60, generator=g)
    parent = tmp_path / "seeds"
    parent.mkdir()
    record = write_seeds(parent, [0, 1], load_config(None, TINY))
    for seed, member in zip(record.seeds, record.members):
        torch.manual_seed(seed)
        trainlab.fit(nn.Linear(3, 1), (x[:40], y[:40]), test=(x[40:], y[40:]), run_dir=member)
    # every member has finished: the resume writes the parent's summary
    assert main(["train", "--resume", str(parent)]) == 0
    out = capsys.readouterr().out
    losses = [summary(m)["test_loss"] for m in record.members]
    assert "no ensemble: Invalid member" in out and "is a regression run" in out
    assert f"test loss {statistics.fmean(losses):.4f} ± " in out
    assert "accuracy" not in out.split("no ensemble:")[1].split("\n", 1)[1]
    assert "nan" not in out

    result = summary(parent)
    assert result["task"] == "regression"
    assert result["test_loss_mean"] == pytest.approx(statistics.fmean(losses))
    assert "test_accuracy_mean" not in result and result["ensemble"] is None
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["task"] == "regression" and entry["status"] == "seeds 2/2 done"
    assert entry["test_loss"] == pytest.approx(statistics.fmean(losses))
    assert "test_accuracy" not in entry
