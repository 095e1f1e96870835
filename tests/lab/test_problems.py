"""The 2-D problems and the optimizer race reproduce the lecture's claims."""

from __future__ import annotations

import pytest
import torch

from trainlab.lab import PROBLEMS, entrants, format_table, race
from trainlab.lab.race import TOLERANCE

ENTRANTS = {e.label: e for e in entrants()}


@pytest.mark.parametrize("name", PROBLEMS)
def test_closed_form_gradient_matches_autograd(name):
    problem = PROBLEMS[name]
    for point in ([0.3, -1.2], list(problem.start), [2.0, 0.5]):
        theta = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        (auto,) = torch.autograd.grad(problem.value(theta), theta)
        torch.testing.assert_close(problem.gradient(theta.detach()), auto)


@pytest.mark.parametrize("name", PROBLEMS)
def test_minima_are_stationary_and_lowest(name):
    problem = PROBLEMS[name]
    start = problem.value(torch.tensor(problem.start, dtype=torch.float64))
    for m in problem.minima:
        theta = torch.tensor(m, dtype=torch.float64)
        assert problem.gradient(theta).abs().max() == 0
        assert problem.value(theta) < start


def test_momentum_beats_sgd_on_the_taco_shell():
    taco = PROBLEMS["taco"]
    sgd, momentum = race(ENTRANTS["sgd"], taco), race(ENTRANTS["momentum"], taco)
    assert sgd.steps is not None and momentum.steps is not None
    assert momentum.steps * 3 < sgd.steps  # the lecture: velocity builds up along the shallow axis


def test_per_coordinate_scaling_fixes_an_axis_aligned_taco_shell():
    taco = PROBLEMS["taco"]
    adagrad, sgd = race(ENTRANTS["adagrad"], taco), race(ENTRANTS["sgd"], taco)
    assert adagrad.steps is not None and adagrad.steps * 10 < sgd.steps


def test_newton_solves_the_quadratic_in_one_step():
    result = race(ENTRANTS["newton"], PROBLEMS["taco"], budget=5)
    assert result.steps == 1 and result.final_distance < 1e-12


def test_second_order_methods_converge_on_rosenbrock():
    for label in ("lbfgs", "newton"):
        result = race(ENTRANTS[label], PROBLEMS["rosenbrock"], budget=100)
        assert result.steps is not None and result.steps < 60, label
        assert result.final_distance < TOLERANCE


def test_everyone_leaves_the_saddle():
    saddle = PROBLEMS["saddle"]
    for label in ("sgd", "momentum", "adam", "rmsprop", "lbfgs", "newton"):
        result = race(ENTRANTS[label], saddle, budget=400)
        assert result.steps is not None, label


def test_table_lists_every_entrant():
    results = [race(e, PROBLEMS["taco"], budget=3) for e in entrants()]
    table = format_table(results, budget=3)
    for e in entrants():
        assert f"\n  {e.label} " in table
    assert "dist after 3" in table
