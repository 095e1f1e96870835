"""Time to accuracy: the clock, the recipes, both loops, and the experiment in quick mode.

The verdict compares wall-clock times, so it is not asserted here (the test suite asserts
no timings); what is asserted is that each number means what the table says.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from trainlab.lab import exp_time
from trainlab.lab.exp_time import DEMO_SHORT, TARGET, Clock, Recipe
from trainlab.lab.experiment import RESULTS_FILE
from trainlab.train.config import load_config


class FakeTime:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.value = 100.0

    def __call__(self) -> float:
        return self.value


def test_the_clock_leaves_the_evaluations_out_and_stops_at_the_target():
    now = FakeTime()
    clock = Clock(every=2, budget=50.0, now=now)
    clock.begin()

    def accuracy_after(seconds: float, value: float):
        def measure() -> float:
            now.value += seconds  # evaluating takes time that must not count
            return value

        return measure

    now.value += 1.0
    assert clock.check(1, False, accuracy_after(5.0, 0.99)) is None  # not a check step
    now.value += 1.0
    assert clock.check(2, False, accuracy_after(5.0, 0.80)) is None
    now.value += 1.0
    assert clock.check(3, True, accuracy_after(5.0, TARGET)) == "reached 94% test accuracy"
    timing = clock.timing(3)
    assert timing.seconds == pytest.approx(3.0)  # 3 s of training, 10 s of evaluation left out
    assert timing.curve == [(2.0, 0.80), (3.0, TARGET)]
    assert timing.per_step == pytest.approx(1.0)


def test_the_clock_gives_up_over_its_budget():
    now = FakeTime()
    clock = Clock(every=1, budget=2.0, now=now)
    clock.begin()
    now.value += 2.5
    assert "budget" in clock.check(1, False, lambda: 0.5)
    assert clock.timing(1).seconds is None and clock.timing(1).accuracy == 0.5


def test_a_recipe_is_a_valid_config_with_its_own_values():
    recipe = Recipe(width=16, depth=2, batch_size=64, optimizer="sgd", lr=0.05,
                    schedule="cosine", epochs=3, batch_norm=False, label_smoothing=0.1,
                    augment=False, ema=True, dropout=0.0, threads=1)  # fmt: skip
    config = load_config(None, recipe.settings(seed=7))
    assert config.model.channels == (16, 16) and not config.model.batch_norm
    assert config.data.batch_size == 64 and config.data.augment == ()
    assert config.optimizer.name == "sgd" and config.optimizer.lr == 0.05
    assert config.optimizer.options["nesterov"] is True
    assert config.schedule.phases == ({"name": "cosine", "total": 3 * 57},)  # ⌈3600/64⌉ = 57
    assert config.loss.label_smoothing == 0.1 and config.averaging.ema
    assert config.run.seed == 7 and config.run.threads == 1 and config.run.epochs == 3


def test_each_neighbour_is_one_change_away():
    for recipe in (DEMO_SHORT, Recipe(lr=0.2, optimizer="sgd", schedule="constant")):
        for neighbour in exp_time.neighbours(recipe):
            changed = [
                f.name
                for f in dataclasses.fields(Recipe)
                if getattr(neighbour, f.name) != getattr(recipe, f.name)
            ]
            assert len(changed) == 1, changed


def test_random_recipes_sample_the_rate_on_a_log_scale():
    import random

    rng = random.Random(0)
    rates = [r.lr for r in (exp_time.sample(rng) for _ in range(400)) if r.optimizer == "adamw"]
    logs = [math.log10(rate) for rate in rates]
    assert all(1e-3 <= rate <= 3e-2 for rate in rates)
    below = sum(value < math.log10(math.sqrt(1e-3 * 3e-2)) for value in logs) / len(logs)
    assert 0.4 < below < 0.6  # half below the geometric middle: log-uniform, not uniform


def test_the_plain_loops_shift_matches_a_loop_over_signals():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(1.0, 2 * 10 + 1).reshape(2, 10)
    shifted = exp_time.shift(x, g, max_shift=3, p=1.0)
    for row, out in zip(x, shifted, strict=True):
        d = [d for d in range(-3, 4) if torch.equal(out, _shifted(row, d))]
        assert d, f"{out} is no zero-filled shift of {row}"


def _shifted(row: torch.Tensor, d: int) -> torch.Tensor:
    out = torch.zeros_like(row)
    for t in range(len(row)):
        if 0 <= t - d < len(row):
            out[t] = row[t - d]
    return out


@pytest.mark.parametrize("loop", ["trainlab", "plain"])
def test_both_loops_stop_at_the_target_on_the_demos_short_recipe(tmp_path, loop):
    threads = torch.get_num_threads()
    if loop == "trainlab":
        timing = exp_time.time_trainlab(DEMO_SHORT, 0, 60.0, tmp_path)
        assert list(tmp_path.iterdir()) == []  # its run folder is gone
    else:
        timing = exp_time.time_plain(DEMO_SHORT, 0, 60.0)
    assert torch.get_num_threads() == threads
    accuracies = [a for _, a in timing.curve]
    assert timing.seconds is not None and accuracies[-1] >= TARGET > max(accuracies[:-1])
    assert timing.seconds == timing.curve[-1][0]
    assert timing.steps < DEMO_SHORT.total_steps  # it stopped there, not at the end
    assert timing.steps % (DEMO_SHORT.steps_per_epoch // exp_time.CHECKS_PER_EPOCH) == 0


NAME = "time_to_accuracy"  # the quick run of conftest's first_run fixture


@pytest.fixture(scope="module")
def outcome(first_run):
    out, results = first_run
    return out / NAME, results


def test_quick_mode_writes_the_table_the_figures_and_a_verdict(outcome):
    folder, results = outcome
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert saved["verdict"] in ("holds", "fails") and saved["name"] == "time_to_accuracy"
    for figure in ("accuracy_vs_time", "seconds_to_target", "search"):
        for suffix in ("png", "svg"):
            assert (folder / f"{figure}.{suffix}").stat().st_size > 1000
    numbers = results["numbers"]
    found, demo, plain = (numbers["arms"][k] for k in ("found", "demo", "plain"))
    assert found["seconds"][0] is not None  # the fastest reached it in the search: again here
    overhead = found["per_step_ms"] / plain["per_step_ms"]
    assert numbers["overhead_per_step"] == pytest.approx(overhead)
    faster = demo["mean"] is None or found["mean"] < demo["mean"]
    holds = faster and overhead <= exp_time.OVERHEAD_LIMIT
    assert saved["verdict"] == ("holds" if holds else "fails")
    rows = {row["recipe"]: row for row in results["tables"]["time_to_94"]}
    assert {"found", "demo", "plain"} <= set(rows) and len(rows) >= 4  # with ablations
    for row in rows.values():
        if row["bought_seconds"] is not None:
            assert row["bought_seconds"] == pytest.approx(row["mean_seconds"] - found["mean"])
    recipe = Recipe(**numbers["recipe"])
    trials = results["tables"]["search"]
    assert len(trials) == 4 and trials[0]["recipe"] == DEMO_SHORT.label()
    assert min(t["seconds"] for t in trials if t["seconds"] is not None) == pytest.approx(
        next(t["seconds"] for t in trials if t["recipe"] == recipe.label())
    )
