"""Random vs. grid search (Bergstra & Bengio 2012) on a loss where one hyperparameter matters."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.lab import exp_search, experiment


def test_random_search_beats_the_grid_in_quick_mode(tmp_path):
    results = experiment.run("random_vs_grid", tmp_path, quick=True)
    assert results["verdict"] == "holds", results["evidence"]
    saved = json.loads((tmp_path / "random_vs_grid" / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["figures"] == ["random_vs_grid.png"]
    for figure in saved["figures"]:
        png = tmp_path / "random_vs_grid" / figure
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").stat().st_size > 0
    numbers = results["numbers"]
    assert numbers["distinct_learning_rates"] == {"grid": 3, "random": 9}
    # near the theory's ≈ 70% (1 − 6∫₀^{1/6}(1 − 2d)⁹ dd, less near the ends of the range)
    assert 0.62 < numbers["random_win_share"] < 0.76
    assert "digits" not in numbers  # the real trainings are for the full mode


def test_the_grid_sits_at_the_centres_of_equal_slices():
    grid = exp_search.grid_trials()
    assert grid.shape == (9, 2)
    assert sorted(set(grid[:, 0].tolist())) == pytest.approx([-5 + 5 / 6, -2.5, -5 / 6])
    assert sorted(set(grid[:, 1].tolist())) == pytest.approx([-6 + 4 / 6, -4.0, -2 - 4 / 6])


def test_random_trials_are_log_uniform_within_the_ranges():
    points = exp_search.random_trials(torch.Generator().manual_seed(0), 20_000)
    u, w = points[:, 0], points[:, 1]
    assert exp_search.LOG_LR[0] <= u.min() and u.max() <= exp_search.LOG_LR[1]
    assert exp_search.LOG_WD[0] <= w.min() and w.max() <= exp_search.LOG_WD[1]
    # uniform in the exponent: each decade of learning rate gets a fifth of the draws
    counts = torch.histc(u, bins=5, min=-5.0, max=0.0) / len(u)
    assert torch.allclose(counts, torch.full((5,), 0.2, dtype=counts.dtype), atol=0.01)


def test_the_validation_loss_matters_in_lr_and_hardly_in_weight_decay():
    u_star = torch.tensor(-2.0, dtype=torch.float64)
    u = torch.tensor([-2.0, -2.0, -4.0], dtype=torch.float64)
    w = torch.tensor([-6.0, -2.0, -6.0], dtype=torch.float64)
    at_best, most_decay, far = exp_search.validation_loss(u, w, u_star).tolist()
    assert at_best == pytest.approx(exp_search.BEST_LOSS)
    assert most_decay - at_best == pytest.approx(exp_search.NUISANCE)
    assert far == pytest.approx(exp_search.CHANCE_LOSS, abs=1e-6)
