"""The loss-landscape experiment: filter-normalized directions and a quick run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from trainlab import models
from trainlab.lab import exp_landscape, experiment


def test_filter_normalization_matches_each_filter_and_excludes_biases_and_bn():
    model = models.cnn((40,), (4, 6), 3, kernel_size=5, batch_norm=True, hidden=(5,))
    torch.manual_seed(0)
    for p in model.parameters():  # γ, β away from 1, 0 so that zeros in δ mean something
        p.data.normal_()
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    direction = exp_landscape.filter_normalized_direction(weights, torch.Generator().manual_seed(1))
    assert direction.keys() == weights.keys()
    filters = 0
    for name, theta in weights.items():
        d = direction[name]
        assert d.shape == theta.shape
        if theta.dim() < 2:  # biases, BN γ and β
            assert torch.count_nonzero(d) == 0, name
            continue
        for d_filter, theta_filter in zip(d, theta):  # one conv output channel / Linear row
            assert float(d_filter.norm()) == pytest.approx(float(theta_filter.norm()), rel=1e-5)
            filters += 1
        assert not torch.allclose(d, theta)  # a random direction, not the weights themselves
    assert filters == 4 + 6 + 5 + 3
    assert any("norm" in name for name in weights)  # the BN parameters were checked


def test_largest_bump_sees_a_rise_between_init_and_solution_only():
    alphas = exp_landscape.ALPHAS
    valley = [(a - 1) ** 2 for a in alphas]  # falls all the way from 0 to 1, rises beyond
    assert exp_landscape.largest_bump(valley) < 0
    bumped = [v + (0.5 if abs(a - 0.5) < 1e-9 else 0) for a, v in zip(alphas, valley)]
    assert exp_landscape.largest_bump(bumped) > 0.4


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return out, experiment.run("loss_landscape", out, quick=True)


def test_quick_run_writes_results_and_figures(quick_run):
    out, results = quick_run
    assert results["verdict"] in ("holds", "fails")
    saved = json.loads((out / "loss_landscape" / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["verdict"] == results["verdict"]
    assert saved["figures"] == ["loss_landscape_1d.png", "loss_landscape_2d.png"]
    for figure in saved["figures"]:
        png = out / "loss_landscape" / figure
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").stat().st_size > 0


def test_the_verdict_follows_the_rule_on_the_numbers(quick_run):
    _, results = quick_run
    numbers = results["numbers"]
    assert numbers["grid"] == 9 and numbers["subset"] == 512
    basin = numbers["basin"]
    assert set(basin) == set(exp_landscape.NETS)
    holds = basin["CNN + BN"]["near_rise"] < basin["CNN"]["near_rise"]
    assert results["verdict"] == ("holds" if holds else "fails")
    for name, grid in numbers["slices"].items():
        assert len(grid) == 9 and all(len(row) == 9 for row in grid)
        center = grid[4][4]
        assert center == pytest.approx(basin[name]["center_loss"])
        # the slice is centred on the trained net: its loss is below chance (ln 10)
        assert center < math.log(10), name
        path = numbers["paths"][name]
        solution = path[exp_landscape.ALPHAS.index(1.0)]
        assert path[exp_landscape.ALPHAS.index(0.0)] > solution  # training lowered the loss
