"""The "trajectories" experiment: its claims hold in quick mode, its files and its cache."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from trainlab.lab import exp_trajectories  # registers "trajectories"
from trainlab.lab.experiment import RESULTS_FILE
from trainlab.lab.race import TOLERANCE

NAME = "trajectories"


def test_all_three_claims_hold_in_quick_mode(first_run):
    _, results = first_run
    n = results["numbers"]
    assert results["verdict"] == "holds", results["evidence"]
    assert n["sgd_steps"] is not None and n["momentum_steps"] is not None
    assert n["momentum_steps"] < 0.5 * n["sgd_steps"]
    assert 0 < n["overshoot_nesterov"] < n["overshoot_momentum"]
    near = n["steps_near_saddle"]
    assert near["sgd"] > max(near["momentum"], near["adam"])
    assert [row["verdict"] for row in results["tables"]["claims"]] == ["holds"] * 3


def test_results_json_keeps_the_contract(first_run):
    out, results = first_run
    saved = json.loads((out / NAME / RESULTS_FILE).read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["name"] == NAME and saved["seed"] == "002" and saved["mode"] == "quick"
    assert saved["verdict"] == results["verdict"] and results["cached"] is False
    # every optimizer on every function, with the learning rate it ran at
    rows = {(r["function"], r["optimizer"]) for r in saved["tables"]["paths"]}
    assert len(rows) == len(exp_trajectories.FUNCTIONS) * len(exp_trajectories.racers())


def test_figures_and_animation_are_written(first_run):
    out, results = first_run
    folder = out / NAME
    assert results["figures"] == ["trajectories.png", "trajectories_claims.png"]
    for figure in results["figures"]:
        png = folder / figure
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / figure.replace(".png", ".svg")).stat().st_size > 0
    gif = folder / results["numbers"]["animation"]
    assert 0 < gif.stat().st_size < 1_000_000
    with Image.open(gif) as image:
        assert image.format == "GIF" and image.n_frames > 5


def test_beale_gradient_matches_autograd_and_its_minimum_is_stationary():
    beale = exp_trajectories.BEALE
    for point in ([1.0, 1.5], [-0.3, 0.7], [3.5, -1.0]):
        theta = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        (auto,) = torch.autograd.grad(beale.value(theta), theta)
        torch.testing.assert_close(beale.gradient(theta.detach()), auto)
    minimum = torch.tensor(beale.minima[0], dtype=torch.float64)
    assert beale.value(minimum) == 0 and beale.gradient(minimum).abs().max() == 0


def test_path_measures_on_hand_made_paths():
    taco = exp_trajectories.FUNCTIONS["taco"]  # start (−8, 1.5), minimum (0, 0)

    def path(points):
        tensor = torch.tensor(points, dtype=torch.float64)
        return exp_trajectories.Trajectory("hand", taco, 0.1, tensor, diverged=False)

    # passes the minimum by 1 along the start → minimum line, then comes back and stays
    u = torch.tensor([8.0, -1.5], dtype=torch.float64) / torch.tensor([8.0, -1.5]).norm()
    swing = path([[-8.0, 1.5], u.tolist(), [1e-2, 0.0], [1e-4, 0.0], [0.0, 0.0]])
    assert exp_trajectories.overshoot(swing) == pytest.approx(1.0)
    assert exp_trajectories.steps_to_tolerance(swing) == 3  # 1e-4 < TOLERANCE from step 3 on
    assert exp_trajectories.steps_near(swing, (0.0, 0.0), 0.1) == 3
    # leaving the tolerance again resets the count; never arriving gives None
    assert (
        exp_trajectories.steps_to_tolerance(path([[-8, 1.5], [0, 0], [2 * TOLERANCE, 0]])) is None
    )
    assert exp_trajectories.overshoot(path([[-8.0, 1.5], [-4.0, 0.75]])) == 0.0
