"""The optimizers experiment: every first-order optimizer, one tuning budget, Adam's place."""

from __future__ import annotations

import json

import pytest

from trainlab.lab import exp_optimizers, experiment
from trainlab.optim import OPTIMIZERS

NAME = "optimizers_on_networks"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    return out, experiment.run(NAME, out, quick=True)


def test_adam_is_in_the_top_group_in_quick_mode(quick_run):
    out, results = quick_run
    assert results["verdict"] == "holds", results["evidence"]
    saved = json.loads((out / NAME / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["figures"] == ["optimizers_training_loss.png", "optimizers_lr_sensitivity.png"]
    for figure in saved["figures"]:
        png = out / NAME / figure
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").stat().st_size > 0


def test_every_first_order_optimizer_gets_the_same_grid(quick_run):
    _, results = quick_run
    first_order = {name for name, spec in OPTIMIZERS.items() if not spec.closure}
    assert {"sgd", "adagrad", "rmsprop", "adadelta", "adam", "adamw", "adamax", "nadam"} <= (
        first_order
    )
    grid = results["numbers"]["grid"]
    assert len(grid) == 4
    tried: dict[tuple[str, str], list[float]] = {}
    for row in results["tables"]["learning-rate sensitivity"]:
        tried.setdefault((row["model"], row["optimizer"]), []).append(row["lr"])
    assert set(tried) == {(m, o) for m in results["numbers"]["models"] for o in first_order}
    assert all(rates == grid for rates in tried.values())


def test_the_numbers_behind_the_verdict(quick_run):
    _, results = quick_run
    sensitivity = results["tables"]["learning-rate sensitivity"]
    tolerance = results["numbers"]["tolerance_points"] / 100
    assert tolerance == pytest.approx(0.03)
    for model in ("logistic regression", "MLP"):
        rows = {r["optimizer"]: r for r in results["tables"]["best rates"] if r["model"] == model}
        for optimizer, row in rows.items():
            # the chosen rate is the one with the lowest final validation loss
            losses = {
                r["lr"]: r["final val loss"]
                for r in sensitivity
                if r["model"] == model and r["optimizer"] == optimizer
            }
            assert row["best lr"] == min(losses, key=lambda lr: losses[lr] or float("inf"))
            assert row["test accuracy mean"] > 0.2  # 10 classes: well above chance
        best = max(row["test accuracy mean"] for row in rows.values())
        assert best - rows["adam"]["test accuracy mean"] <= tolerance
        numbers = results["numbers"]["per_model"][model]
        assert numbers["adam_gap_points"] == pytest.approx(
            100 * (best - rows["adam"]["test accuracy mean"])
        )


def test_steps_to_target_is_the_first_evaluation_at_or_above_it():
    run = exp_optimizers.Run("MLP", "adam", 1e-2, 0, [2.0], [(10, 0.3), (20, 0.5), (30, 0.45)])
    assert run.steps_to(0.5) == 20
    assert run.steps_to(0.31) == 20
    assert run.steps_to(0.3) == 10
    assert run.steps_to(0.6) is None
