"""The 2-D problems and the optimizer race reproduce the lecture's claims."""

from __future__ import annotations

import math

import pytest
import torch

from trainlab.lab import PROBLEMS, entrants, format_table, race
from trainlab.lab.race import NEAR_SADDLE, TOLERANCE

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


def test_sgd_lingers_near_the_saddle_longer_than_momentum_and_adam():
    # The lecture: gradient descent lingers at a saddle, momentum and Adam get away.
    saddle = PROBLEMS["saddle"]
    sgd, momentum, adam = (
        race(ENTRANTS[k], saddle, budget=200) for k in ("sgd", "momentum", "adam")
    )
    assert sgd.steps_near_saddle >= 10 * max(momentum.steps_near_saddle, adam.steps_near_saddle, 1)
    # ... for most of its way to a minimum (started 1e-3 off the ridge, it was under half)
    assert sgd.steps is not None and 2 * sgd.steps_near_saddle > sgd.steps


def test_sgd_lingers_as_long_as_the_saddles_repulsion_predicts():
    # Near (0, 0), SGD multiplies y by 1 + η and x by 1 − 2η per step: it enters the disc
    # ‖θ‖ < r after ln(|x₀|/r)/ln(1/(1 − 2η)) steps and leaves after ln(r/|y₀|)/ln(1 + η).
    saddle = PROBLEMS["saddle"]
    sgd = race(ENTRANTS["sgd"], saddle, budget=200)
    (x0, y0), r, lr = saddle.start, NEAR_SADDLE, sgd.lr
    predicted = math.log(r / y0) / math.log(1 + lr) - math.log(x0 / r) / -math.log(1 - 2 * lr)
    assert abs(sgd.steps_near_saddle - predicted) < 3


def test_first_order_methods_and_newton_leave_the_saddle():
    saddle = PROBLEMS["saddle"]
    for label in ("sgd", "momentum", "adam", "rmsprop", "newton"):
        result = race(ENTRANTS[label], saddle, budget=400)
        assert result.steps is not None, label


def test_lbfgs_stops_at_the_saddle():
    # 1e-6 off the ridge, the directional derivative along L-BFGS's direction is ~1e-12,
    # inside its tolerance_change (1e-9): its stopping test takes the saddle for a minimum.
    result = race(ENTRANTS["lbfgs"], PROBLEMS["saddle"], budget=50)
    assert result.steps is None
    assert result.steps_near_saddle >= 45
    assert result.final_distance == pytest.approx(1.0, abs=1e-3)  # still at (0, 0)


def test_near_saddle_is_counted_only_where_there_is_a_saddle():
    assert race(ENTRANTS["sgd"], PROBLEMS["taco"], budget=3).steps_near_saddle is None


def test_table_lists_every_entrant():
    results = [race(e, PROBLEMS["taco"], budget=3) for e in entrants()]
    table = format_table(results, budget=3)
    for e in entrants():
        assert f"\n  {e.label} " in table
    assert "dist after 3" in table
    header = next(line for line in table.splitlines() if "best lr" in line)
    assert "near saddle" not in header  # the taco shell has no saddle point


def test_saddle_table_shows_the_steps_near_the_saddle():
    results = [race(e, PROBLEMS["saddle"], budget=60) for e in entrants()]
    table = format_table(results, budget=60)
    header = next(line for line in table.splitlines() if "best lr" in line)
    assert header.endswith("near saddle")
    for r in results:
        row = next(line for line in table.splitlines() if line.startswith(f"  {r.optimizer} "))
        assert row.split()[-1] == str(r.steps_near_saddle), row
