"""The initialization experiment: its quick run reproduces the lecture's six findings."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.lab import exp_init
from trainlab.lab.experiment import RESULTS_FILE, run


@pytest.fixture(scope="module")
def outcome(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    threads = torch.get_num_threads()
    results = run("initialization", out, quick=True)
    assert torch.get_num_threads() == threads  # one thread while it ran, restored after
    return out / "initialization", results


def test_every_claim_holds_in_quick_mode(outcome):
    folder, results = outcome
    assert results["verdict"] == "holds", results["evidence"]
    claims = results["tables"]["claims"]
    assert len(claims) == 6 and all(row["holds"] for row in claims)
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert {"name", "claim", "verdict", "evidence"} <= set(saved)
    assert saved["name"] == "initialization" and saved["verdict"] == "holds"


def test_numbers_show_collapse_saturation_and_kept_scale(outcome):
    numbers = outcome[1]["numbers"]
    ratio = numbers["std_ratio_last_first"]
    small, large, xavier_tanh, xavier_relu, he_relu = (s.label for s in exp_init.SETUPS)
    assert ratio[small] < 1e-3 and 0.1 <= ratio[xavier_tanh] <= 10
    assert ratio[xavier_relu] < 0.1 <= ratio[he_relu] <= 10
    assert all(len(stds) == exp_init.DEPTH for stds in numbers["std_per_layer"].values())
    assert sum(numbers["saturated_per_layer"][large]) / exp_init.DEPTH > 0.5
    assert max(numbers["saturated_per_layer"][xavier_tanh]) < 0.05
    # zero init: no unit differs from another, yet the sigmoid net's weights did move
    assert all(spread == 0 for spread in numbers["zeros_unit_spread"].values())
    assert numbers["zeros_largest_weight"][exp_init.SHALLOW_ZEROS.label] > 1e-3
    # the collapsed and saturated nets learn nothing in the short run; Xavier and He do
    loss = numbers["final_train_loss"]
    assert loss[xavier_tanh] < loss[small] and loss[he_relu] < loss[small]


def test_figures_are_written_as_png_and_svg(outcome):
    folder, results = outcome
    assert set(results["figures"]) == {
        "init_activation_std.png",
        "init_activation_histograms.png",
        "init_training_loss.png",
    }
    for figure in results["figures"]:
        png = folder / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert png.with_suffix(".svg").stat().st_size > 0


def test_run_folders_keep_logs_and_weights_but_no_checkpoints(outcome):
    runs = sorted((outcome[0] / "runs").iterdir())
    assert len(runs) == 1 + len(exp_init.SETUPS) + 1  # zeros, the five schemes, shallow zeros
    for run_dir in runs:
        assert (run_dir / "summary.json").is_file() and (run_dir / "model.safetensors").is_file()
        assert not (run_dir / "checkpoints").exists()
