"""The learning-rate experiment: the lecture's four loss curves and step decay, from real runs."""

from __future__ import annotations

import json
import math

import pytest

from trainlab.lab import exp_learning_rate

NAME = "learning_rate"  # the quick run of conftest's first_run fixture


def test_the_four_regimes_and_step_decay_hold_in_quick_mode(first_run):
    out, results = first_run
    assert results["verdict"] == "holds", results["evidence"]
    saved = json.loads((out / "learning_rate" / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["figures"] == ["learning_rate.png"]
    for figure in saved["figures"]:
        png = out / "learning_rate" / figure
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").stat().st_size > 0


def test_the_numbers_behind_the_verdict(first_run):
    _, results = first_run
    final = {row["run"]: row["final loss"] for row in results["tables"]["loss curves"]}
    initial = results["tables"]["loss curves"][0]["initial loss"]
    assert final["very high"] is None or final["very high"] >= initial  # None: NaN
    assert final["good"] < final["high"] < initial
    assert final["good"] < final["low"] < initial
    assert final["good, step decay"] < final["good"]
    # every run trained to the end, and the runs went into the experiment's own folder
    curves = results["numbers"]["curves"]
    assert all(points[-1][0] == results["numbers"]["steps"] for points in curves.values())


def test_straight_line_r2_is_one_on_a_line_and_lower_on_a_bend():
    steps = [0.0, 1.0, 2.0, 3.0, 4.0]
    assert exp_learning_rate.straight_line_r2(steps, [5 - 0.5 * s for s in steps]) == (
        pytest.approx(1.0)
    )
    assert exp_learning_rate.straight_line_r2(steps, [1 / (1 + s) for s in steps]) < 0.9
    assert math.isnan(exp_learning_rate.straight_line_r2(steps, [1, 2, math.nan, 1, 1]))
