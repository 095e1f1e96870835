"""The batch-norm experiment: faster convergence and survival at high rates, in quick mode."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainlab.lab import exp_batchnorm
from trainlab.lab.experiment import RESULTS_FILE, run


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    threads = torch.get_num_threads()
    results = run("batch_norm", out, quick=True)
    assert torch.get_num_threads() == threads  # one thread while it ran, restored after
    return out / "batch_norm", results


def test_both_claims_hold_in_quick_mode(outcome):
    folder, results = outcome
    assert results["verdict"] == "holds", results["evidence"]
    assert [row["holds"] for row in results["tables"]["claims"]] == [True, True]
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert {"name", "claim", "verdict", "evidence"} <= set(saved)
    assert saved["name"] == "batch_norm" and saved["verdict"] == "holds"


def test_sweep_numbers_back_the_verdict(outcome):
    numbers = outcome[1]["numbers"]
    rates = numbers["rates"]
    assert rates == list(exp_batchnorm.QUICK_RATES)
    # faster: every loss level the plain net reaches, BN reaches in fewer steps
    reached = {level: s for level, s in numbers["steps_to_level"].items() if s["plain"]}
    assert reached, "the plain net reached none of the loss levels"
    assert all(s["bn"] is not None and s["bn"] < s["plain"] for s in reached.values())
    plain, bn = numbers["train_loss"]["plain"], numbers["train_loss"]["bn"]
    assert min(bn) < min(loss for loss in plain if loss is not None)  # and lower, at 150 steps
    assert numbers["rescued_rates"], "no rate where BN trains and the plain net diverges"
    for lr in numbers["rescued_rates"]:
        i = rates.index(lr)
        plain_accuracy = numbers["val_accuracy"]["plain"][i]
        assert plain_accuracy is None or plain_accuracy <= exp_batchnorm.DEAD
        assert numbers["val_accuracy"]["bn"][i] >= exp_batchnorm.TRAINS
    # at the gentlest rate both nets train: the rescue is about high rates, not a broken net
    assert numbers["val_accuracy"]["plain"][0] > 0.5 and math.isfinite(plain[0])


def test_figures_are_written_as_png_and_svg(outcome):
    folder, results = outcome
    assert set(results["figures"]) == {"batch_norm_lr_sweep.png", "batch_norm_curves.png"}
    for figure in results["figures"]:
        png = folder / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert png.with_suffix(".svg").stat().st_size > 0


def test_a_non_finite_run_is_recorded_as_diverged(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 40, generator=g), torch.randint(0, 10, (256,), generator=g)
    result = exp_batchnorm.train(False, 1e4, (x, y), (x[:64], y[:64]), tmp_path / "r", 50, 0)
    assert result.diverged and not result.trains
    assert not math.isfinite(result.train_loss) and len(result.curve) < 50
