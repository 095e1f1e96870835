"""Ensembles: the combiners and ECE by hand, members loaded back, incompatible members refused."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import trainlab
from trainlab import data
from trainlab.cli import main
from trainlab.ensembles import (
    EnsembleError,
    expected_calibration_error,
    held_out_split,
    mean_prob,
    member_log_probs,
    score,
    vote,
)
from trainlab.train.build import prepared_data

from .train.test_seeds import fixed_test_split
from .train.test_trainer import TINY, set_args


def log_probs(*members: list[list[float]]) -> torch.Tensor:
    """[M, N, C] log-probabilities of members given as probabilities per example."""
    return torch.tensor(members, dtype=torch.float64).log()


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("run.lock"))
    return target


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """One finished TINY run on digits (10 classes), shared by the tests that only read it."""
    path = tmp_path_factory.mktemp("ensemble") / "run"
    assert main(["train", "--run-dir", str(path), *set_args(TINY)]) == 0
    return path


# --- the math, by hand --------------------------------------------------------------------------


def test_ece_bins_by_hand():
    # bins of width 1/15: 0.95 → (14/15, 1], 0.62 → (9/15, 10/15], 0.3 → (4/15, 5/15]
    confidence = torch.tensor([0.95, 0.95, 0.62, 0.3])
    correct = torch.tensor([True, False, True, False])
    by_hand = (2 * abs(0.5 - 0.95) + abs(1 - 0.62) + abs(0 - 0.3)) / 4  # 0.395
    assert expected_calibration_error(confidence, correct) == pytest.approx(by_hand)
    # one bin, (9/15, 10/15]: over- and under-confidence cancel inside it, not across bins
    same_bin = expected_calibration_error(torch.tensor([0.61, 0.65]), torch.tensor([True, False]))
    assert same_bin == pytest.approx(abs(1 - 0.61 - 0.65) / 2)
    assert expected_calibration_error(torch.tensor([1.0]), torch.tensor([True])) == 0


def test_vote_differs_from_mean_prob_and_its_loss_is_the_mean_probabilities_nll():
    # one confident member against two hesitant ones: the mean says 0, the majority 1
    members = log_probs([[0.9, 0.1]], [[0.45, 0.55]], [[0.45, 0.55]])
    assert mean_prob(members).tolist() == [0] and vote(members).tolist() == [1]
    y = torch.tensor([1])
    voted, averaged = score(members, y, "vote"), score(members, y, "mean-prob")
    assert (voted["test_accuracy"], averaged["test_accuracy"]) == (1.0, 0.0)
    assert voted["test_loss"] == averaged["test_loss"] == pytest.approx(-math.log(0.4))
    # ECE: the confidence of a vote is the mean probability of the voted class
    assert voted["test_ece"] == pytest.approx(1 - 0.4)
    assert averaged["test_ece"] == pytest.approx(0.6)


def test_a_tied_vote_goes_to_the_tied_class_with_the_highest_mean_probability():
    # votes: class 0 and class 2 one each; mean [0.275, 0.44, 0.285] is highest for class 1,
    # which got no vote: the tie goes to 2, the better of the tied classes
    members = log_probs([[0.45, 0.44, 0.11]], [[0.10, 0.44, 0.46]])
    assert vote(members).tolist() == [2]
    assert mean_prob(members).tolist() == [1]


# --- members of trainlab.fit with hand-set weights ---------------------------------------------

# Two linear models whose softmax outputs are set by hand on two inputs x0 = (0, 0), x1 = (1, 0):
# bias = log p(x0), weight[:, 0] = log p(x1) − log p(x0), so softmax(W x + b) = p exactly.
A = {"x0": [0.72, 0.23, 0.05], "x1": [0.15, 0.75, 0.10]}
B = {"x0": [0.10, 0.35, 0.55], "x1": [0.05, 0.05, 0.90]}
X = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
Y = torch.tensor([0, 0, 2, 1])


def hand_set_run(folder: Path, probabilities: dict[str, list[float]]) -> Path:
    trainlab.fit(nn.Linear(2, 3), (X, Y), test=(X, Y), epochs=1, run_dir=folder)
    p0, p1 = (torch.tensor(probabilities[x]).log() for x in ("x0", "x1"))
    weight = torch.zeros(3, 2)
    weight[:, 0] = p1 - p0
    safetensors.torch.save_file({"weight": weight, "bias": p0}, str(folder / "model.safetensors"))
    return folder


def test_two_hand_set_linear_members_average_to_the_hand_computed_probabilities(tmp_path):
    a, b = hand_set_run(tmp_path / "a", A), hand_set_run(tmp_path / "b", B)
    result = trainlab.ensemble([a, b], model=nn.Linear(2, 3), data=(X, Y))
    first, second = result["members"]
    # A predicts 0, 0, 1, 1: right, right, wrong, right; confidences 0.72 ×2 and 0.75 ×2
    assert first["test_accuracy"] == 0.75
    assert first["test_loss"] == pytest.approx(
        -(2 * math.log(0.72) + math.log(0.1) + math.log(0.75)) / 4
    )
    assert first["test_ece"] == pytest.approx((abs(2 - 1.44) + abs(1 - 1.5)) / 4, abs=1e-6)
    # B predicts 2 everywhere: right once, on x1
    assert second["test_accuracy"] == 0.25
    assert second["test_ece"] == pytest.approx((1.1 + abs(1 - 1.8)) / 4, abs=1e-6)
    # mean: x0 [0.41, 0.29, 0.30] → 0, x1 [0.10, 0.40, 0.50] → 2: right, right, right, wrong
    together = result["ensemble"]
    assert together["test_accuracy"] == 0.75
    nll = -(2 * math.log(0.41) + math.log(0.5) + math.log(0.4)) / 4
    assert together["test_loss"] == pytest.approx(nll, abs=1e-6)
    assert together["test_ece"] == pytest.approx((abs(2 - 0.82) + abs(1 - 1.0)) / 4, abs=1e-6)
    assert together["gain"] == pytest.approx(0.75 - 0.5)
    assert together["gain_over_best"] == pytest.approx(0.0)


def test_runs_of_fit_need_their_model_and_data(tmp_path, capsys):
    a, b = hand_set_run(tmp_path / "a", A), hand_set_run(tmp_path / "b", B)
    with pytest.raises(EnsembleError, match=r"pass the architecture: .*model=YourNet\(\)"):
        trainlab.ensemble([a, b], data=(X, Y))
    with pytest.raises(EnsembleError, match=r"own data.*data=\(x_test, y_test\)"):
        trainlab.ensemble([a, b], model=nn.Linear(2, 3))
    with pytest.raises(EnsembleError, match=r"labels from 0 to 5, but the members predict 3"):
        trainlab.ensemble([a, b], model=nn.Linear(2, 3), data=(X, torch.tensor([0, 1, 2, 5])))
    assert main(["ensemble", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert "trainlab.fit" in err and "Traceback" not in err


# --- config runs loaded back --------------------------------------------------------------------


def other_run(run: Path, target: Path) -> Path:
    """A copy of ``run`` whose raw weights are its EMA weights: a member of its own."""
    copy = copy_run(run, target)
    shutil.copy(copy / "ema.safetensors", copy / "model.safetensors")
    return copy


@pytest.mark.parametrize("combine", ["mean-prob", "vote"])
def test_an_ensemble_of_identical_members_is_that_member(run, combine):
    result = trainlab.ensemble(run, combine=combine)
    alone = result["members"][0]
    # scored on the test split rebuilt and normalized exactly as in training
    summary = json.loads((run / "summary.json").read_text())
    assert alone["test_accuracy"] == summary["test_accuracy"]
    assert alone["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)
    # The same predictions three times (which `ensemble` refuses as members) score as one.
    log_probs, y, _ = member_log_probs(run)
    together = score(log_probs.expand(3, -1, -1), y, combine)
    assert together["test_accuracy"] == alone["test_accuracy"]
    assert together["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-12)
    assert together["test_ece"] == pytest.approx(alone["test_ece"], rel=1e-9)


def test_members_of_other_classes_are_refused_with_exit_2(run, tmp_path, capsys):
    other = tmp_path / "three-classes"
    settings = [
        *TINY,
        "run.epochs=1",
        "data.name=npz",
        f'data.options={{path="{three_classes(tmp_path)}"}}',
    ]
    assert main(["train", "--run-dir", str(other), *set_args(settings)]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(run), str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{run} predicts 10 classes and {other} 3" in err
    assert err.startswith("trainlab: error: Invalid ensemble") and "Traceback" not in err


def three_classes(folder: Path) -> Path:
    """digits as a 3-class problem (label mod 3) in an npz file."""
    ds = data.load("digits")
    path = folder / "three.npz"
    x, y = ds.x.numpy(), ds.y.numpy() % 3
    np.savez(path, x=x[:1400], y=y[:1400], x_test=x[1400:], y_test=y[1400:])
    return path


def test_members_tested_on_other_examples_are_refused_naming_the_difference(run, tmp_path, capsys):
    other = tmp_path / "seed-1"
    assert main(["train", "--run-dir", str(other), *set_args([*TINY, "run.seed=1"])]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(run), str(other)]) == 2
    err = capsys.readouterr().err
    assert f"{run} and {other} are tested on different examples (run.seed 0 vs 1;" in err
    assert "'digits' has no fixed test split" in err and "Traceback" not in err


def test_members_on_a_fixed_test_split_may_differ_in_seed_and_normalization(tmp_path):
    settings = fixed_test_split(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", "--run-dir", str(a), *set_args([*settings, "run.epochs=1"])]) == 0
    other = [*settings, "run.epochs=1", "run.seed=3", 'data.normalize="mean"']
    assert main(["train", "--run-dir", str(b), *set_args(other)]) == 0
    result = trainlab.ensemble([a, b])
    for member, folder in zip(result["members"], (a, b)):
        summary = json.loads((folder / "summary.json").read_text())
        assert member["test_loss"] == pytest.approx(summary["test_loss"], rel=1e-5)


# --- checkpoints, snapshots, SWA ------------------------------------------------------------


def test_last_k_checkpoints_of_one_run(run, capsys):
    checkpoints = sorted((run / "checkpoints").iterdir())
    result = trainlab.ensemble(run, last=2)
    assert [m["dir"] for m in result["members"]] == [str(p) for p in checkpoints[-2:]]
    summary = json.loads((run / "summary.json").read_text())
    assert result["members"][-1]["test_accuracy"] == summary["test_accuracy"]  # the final step

    assert main(["ensemble", str(run), "--last", "99"]) == 2
    err = capsys.readouterr().err
    assert f"Invalid --last: 99, but {run} keeps {len(checkpoints)} checkpoints" in err
    assert "(run.keep_last = 2, plus the best" in err and "Traceback" not in err
    with pytest.raises(EnsembleError, match=r"Invalid weights: 'ema' with --last"):
        trainlab.ensemble(run, last=2, weights="ema")
    with pytest.raises(EnsembleError, match=r"averages the weights saved along one run"):
        trainlab.ensemble([run, run], last=2)


def test_snapshots_of_one_run_in_cycle_order(run, tmp_path, capsys):
    copy = copy_run(run, tmp_path / "run")
    assert main(["ensemble", str(copy), "--snapshots"]) == 2
    err = capsys.readouterr().err
    assert "has no snapshots/cycle-<k>.safetensors" in err and "averaging.snapshots = true" in err
    (copy / "snapshots").mkdir()
    earlier = sorted((copy / "checkpoints").iterdir())[0] / "weights.safetensors"
    sources = {1: copy / "model.safetensors", 2: copy / "ema.safetensors", 10: earlier}
    for k, source in sources.items():  # numeric, not text, order
        shutil.copy(source, copy / "snapshots" / f"cycle-{k}.safetensors")
    result = trainlab.ensemble(copy, snapshots=True)
    names = [Path(m["dir"]).name for m in result["members"]]
    assert names == ["cycle-1.safetensors", "cycle-2.safetensors", "cycle-10.safetensors"]
    raw = trainlab.ensemble(copy)["members"][0]
    assert result["members"][0]["test_loss"] == raw["test_loss"]
    assert result["members"][1]["test_loss"] != raw["test_loss"]  # the EMA weights


def test_swa_weights(run, tmp_path):
    copy = copy_run(run, tmp_path / "run")
    with pytest.raises(ValueError, match=r"no swa.safetensors .*averaging.swa_start"):
        trainlab.ensemble(copy, weights="swa")
    shutil.copy(copy / "ema.safetensors", copy / "swa.safetensors")
    swa = trainlab.ensemble(copy, weights="swa")["members"][0]
    assert swa == {**trainlab.ensemble(copy, weights="ema")["members"][0], "weights": "swa"}


# --- the command line -------------------------------------------------------------------------


def test_json_output_is_exactly_the_contract(run, tmp_path, capsys):
    copy = other_run(run, tmp_path / "b")
    assert main(["ensemble", str(run), str(copy), "--json", "--combine", "vote"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"members", "ensemble"}
    assert [m["dir"] for m in result["members"]] == [str(run), str(copy)]
    for member in result["members"]:
        assert set(member) == {"dir", "weights", "test_accuracy", "test_loss", "test_ece"}
    assert set(result["ensemble"]) == {
        "test_accuracy",
        "test_loss",
        "test_ece",
        "combine",
        "weights",
        "size",
        "examples",
        "gain",
        "gain_over_best",
    }
    assert result["ensemble"]["combine"] == "vote" and result["ensemble"]["size"] == 2


def test_a_member_given_twice_or_unfinished_is_refused(run, tmp_path, capsys):
    assert main(["ensemble", str(run), str(run)]) == 2
    assert f"{run} is given twice" in capsys.readouterr().err
    unfinished = copy_run(run, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    with pytest.raises(EnsembleError, match=r"has not finished training.*--last K"):
        trainlab.ensemble([run, unfinished])


def test_a_copy_of_a_member_is_refused_naming_both_folders(run, tmp_path, capsys):
    copy = copy_run(run, tmp_path / "copy")  # other folder, byte-identical weights
    assert main(["ensemble", str(run), str(copy)]) == 2
    err = capsys.readouterr().err
    assert re.match(
        rf"trainlab: error: Invalid ensemble: {re.escape(str(copy))} has the same weights as "
        rf"{re.escape(str(run))} \(SHA-256 [0-9a-f]{{12}}…",
        err,
    ), err
    assert "Traceback" not in err
    with pytest.raises(EnsembleError, match=r"has the same weights as"):  # any weights kind
        trainlab.ensemble([run, copy], weights="ema")


def test_members_trained_with_other_losses_are_refused_naming_both(run, tmp_path, capsys):
    other = tmp_path / "mse"
    settings = [*TINY, "run.epochs=1", 'loss.name="mse"']
    assert main(["train", "--run-dir", str(other), *set_args(settings)]) == 0
    capsys.readouterr()
    assert main(["ensemble", str(run), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"trainlab: error: Invalid ensemble: {run} was trained with loss.name 'cross_entropy' "
        f"and {other} with 'mse'"
    ), err
    assert "Traceback" not in err


# --- scoring sub-ensembles, the user's data, weights that do not fit ----------------------------


def test_member_log_probs_score_every_prefix_as_its_own_ensemble(tmp_path):
    a, b = hand_set_run(tmp_path / "a", A), hand_set_run(tmp_path / "b", B)
    log_probs, y, names = member_log_probs([a, b], model=nn.Linear(2, 3), data=(X, Y))
    assert log_probs.shape == (2, 4, 3) and log_probs.dtype == torch.float64
    assert names == [str(a), str(b)] and torch.equal(y, Y)
    assert torch.allclose(
        log_probs[0, :, :].exp()[[0, 2]], torch.tensor([A["x0"], A["x1"]]).double()
    )
    for k in (1, 2):
        prefix = trainlab.ensemble([a, b][:k], model=nn.Linear(2, 3), data=(X, Y))["ensemble"]
        assert score(log_probs[:k], y) == {key: prefix[key] for key in score(log_probs, y)}


def test_labels_of_the_users_data_are_checked_against_the_outputs_without_classes(tmp_path):
    a = hand_set_run(tmp_path / "a", A)
    about = json.loads((a / "run.json").read_text())
    del about["classes"]  # a run.json that does not say: the model's 3 outputs decide
    (a / "run.json").write_text(json.dumps(about))
    with pytest.raises(EnsembleError, match=r"labels from 0 to 5, but the members predict 3"):
        trainlab.ensemble(a, model=nn.Linear(2, 3), data=(X, torch.tensor([0, 1, 2, 5])))
    as_int32 = trainlab.ensemble(a, model=nn.Linear(2, 3), data=(X, Y.int()))
    assert as_int32 == trainlab.ensemble(a, model=nn.Linear(2, 3), data=(X, Y))


def test_a_snapshot_of_another_model_is_refused_with_exit_2(run, tmp_path, capsys):
    copy = copy_run(run, tmp_path / "run")
    (copy / "snapshots").mkdir()
    foreign = copy / "snapshots" / "cycle-1.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(3, 2)}, str(foreign))
    assert main(["ensemble", str(copy), "--snapshots"]) == 2
    err = capsys.readouterr().err
    assert f"Invalid --snapshots: {foreign} does not fit the model of {copy}" in err
    assert "Traceback" not in err


def test_an_unfinished_member_is_refused_before_its_weights_are_loaded(run, tmp_path):
    unfinished = copy_run(run, tmp_path / "unfinished")
    (unfinished / "summary.json").unlink()
    (unfinished / "model.safetensors").unlink()
    shutil.rmtree(unfinished / "checkpoints")  # no weights at all: loading them would fail
    with pytest.raises(EnsembleError, match=r"has not finished training.*--last K"):
        trainlab.ensemble([run, unfinished])


def test_the_held_out_split_loads_the_data_once_and_normalizes_as_training(run, monkeypatch):
    config = trainlab.load_run(run).config
    assert config.data.normalize != "none"
    loads = []
    original = data.load
    monkeypatch.setattr(data, "load", lambda *a, **k: loads.append(a) or original(*a, **k))
    x, y, digest = held_out_split(config)
    assert len(loads) == 1
    expected_x, expected_y = prepared_data(config)["test"]
    assert torch.equal(x, expected_x) and torch.equal(y, expected_y)
    moved = dataclasses.replace(config, run=dataclasses.replace(config.run, seed=1))
    assert held_out_split(moved)[2] != digest  # digits: run.seed also carves the test set
