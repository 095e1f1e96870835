"""The data experiment: normalization and shuffling matter, in quick mode."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.lab import exp_data
from trainlab.lab.experiment import RESULTS_FILE, run


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    threads = torch.get_num_threads()
    results = run("data_order_and_scale", out, quick=True)
    assert torch.get_num_threads() == threads  # one thread while it ran, restored after
    return out / "data_order_and_scale", results


def test_every_claim_holds_in_quick_mode(outcome):
    folder, results = outcome
    assert results["verdict"] == "holds", results["evidence"]
    claims = results["tables"]["claims"]
    assert len(claims) == 4 and all(row["holds"] for row in claims)
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert {"name", "claim", "verdict", "evidence"} <= set(saved)
    assert saved["name"] == "data_order_and_scale" and saved["verdict"] == "holds"


def test_numbers_back_the_verdict(outcome):
    numbers = outcome[1]["numbers"]
    rates = numbers["rates"]
    shared = rates.index(exp_data.SHARED_LR)
    normalized, raw = numbers["val_accuracy"]["normalized"], numbers["val_accuracy"]["raw"]
    assert normalized[shared] >= raw[shared] + exp_data.GAP
    assert max(normalized) >= max(raw) + exp_data.GAP
    every, once, sorted_ = exp_data.EVERY, exp_data.ONCE, exp_data.SORTED
    order = numbers["order_val_accuracy"]
    assert order[sorted_] <= order[every] - exp_data.GAP
    assert order[once] >= order[every] - exp_data.GAP  # one shuffle is enough here
    rough = numbers["order_roughness"]
    assert rough[sorted_] >= exp_data.ROUGHER * rough[every]
    # the sorted net collapses onto (nearly) one class
    counts = numbers["sorted_predictions_per_class"]
    assert max(counts) >= 0.5 * sum(counts)


def test_figures_are_written_as_png_and_svg(outcome):
    folder, results = outcome
    assert set(results["figures"]) == {"data_loss_curves.png", "data_accuracy.png"}
    for figure in results["figures"]:
        png = folder / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert png.with_suffix(".svg").stat().st_size > 0
