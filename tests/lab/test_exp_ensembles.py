"""The ensembles experiment in quick mode: every method's numbers, and the rule behind them."""

from __future__ import annotations

import json
import statistics

import pytest

from trainlab.lab import exp_ensembles
from trainlab.lab.experiment import RESULTS_FILE
from trainlab.train.config import load_config
from trainlab.train.trainer import Trainer

NAME = "ensembles"  # the quick run of conftest's first_run fixture


@pytest.fixture(scope="module")
def outcome(first_run):
    out, results = first_run
    return out / NAME, results


def test_every_method_is_scored_for_both_models_and_the_runs_are_gone(outcome):
    folder, results = outcome
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert saved["verdict"] in ("holds", "fails") and saved["seed"] == "000"
    rows = results["tables"]["methods"]
    assert [(r["model"], r["method"]) for r in rows] == [
        (model, method) for model in ("CNN", "MLP") for method in exp_ensembles.METHODS
    ]
    assert all(0.1 < r["test_accuracy"] <= 1 and r["test_nll"] > 0 for r in rows)
    assert not (folder / "runs").exists()  # weights and checkpoints deleted after
    for figure in ("ensembles", "ensemble_size"):
        assert (folder / f"{figure}.png").stat().st_size > 1000


def test_the_numbers_agree_with_each_other(outcome):
    results = outcome[1]
    for groups in results["numbers"]["results"].values():
        (group,) = groups  # quick mode: one group of 3 members
        members, growth, scores = group["members"], group["growth"], group["scores"]
        assert len(members) == len(growth) == 3 and len(set(group["seeds"])) == 3
        assert growth[0][0] == pytest.approx(members[0])  # an ensemble of one is that member
        assert growth[-1][0] == pytest.approx(scores["seed ensemble"]["accuracy"])
        assert scores["single model"]["accuracy"] == pytest.approx(statistics.mean(members))


def test_the_verdict_follows_the_rule_from_the_table(outcome):
    results = outcome[1]
    rows = {(r["model"], r["method"]): r for r in results["tables"]["methods"]}
    claims = results["tables"]["claims"]
    for claim in claims:
        single = rows[claim["model"], "single model"]["test_accuracy"]
        method = {
            "seed ensemble more accurate, lower NLL": "seed ensemble",
            "snapshot ensemble more accurate": "snapshot ensemble",
            "SWA at least as accurate": "SWA",
            "EMA at least as accurate": "EMA",
        }[claim["claim"]]
        accuracy = rows[claim["model"], method]["test_accuracy"]
        expected = accuracy > single if "more" in claim["claim"] else accuracy >= single
        if method == "seed ensemble":
            nll = rows[claim["model"], "single model"]["test_nll"]
            expected = expected and rows[claim["model"], method]["test_nll"] < nll
        assert claim["holds"] == expected, claim
    verdict = "holds" if all(c["holds"] for c in claims) else "fails"
    assert results["verdict"] == verdict


@pytest.mark.parametrize("quick", [False, True])
def test_the_runs_are_configured_as_described(tmp_path, quick):
    model = exp_ensembles._quick(exp_ensembles.CNN) if quick else exp_ensembles.CNN
    member = load_config(None, exp_ensembles.member_settings(model, 7, 1))
    assert member.schedule.phases == ({"name": "one_cycle", "total": model.steps()},)
    trainer = Trainer(member, tmp_path / "run")
    assert len(trainer.batches) == exp_ensembles.STEPS_PER_EPOCH  # one epoch, as assumed
    trainer.folder.release()
    swa = load_config(None, exp_ensembles.swa_settings(model, 7, 1))
    assert swa.averaging.swa_start == model.steps() * 3 // 4
    assert swa.averaging.swa_every == exp_ensembles.STEPS_PER_EPOCH
    assert swa.averaging.ema and swa.run.seed == 7 and swa.run.epochs == model.epochs
    snapshots = load_config(None, exp_ensembles.snapshot_settings(exp_ensembles.MLP, 7, 1))
    (phase,) = snapshots.schedule.phases
    assert phase == {"name": "cyclic_cosine", "total": exp_ensembles.MLP.steps(), "cycles": 5}
    assert snapshots.optimizer.lr == 2 * 0.001 and snapshots.averaging.snapshots
    assert not snapshots.averaging.ema and snapshots.run.keep_last == exp_ensembles.CHECKPOINTS
