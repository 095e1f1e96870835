"""The regularization experiment: each regularizer against an overfitting baseline."""

from __future__ import annotations

import json

import pytest

from trainlab.lab import exp_regularization

NAME = "regularization"  # the quick run of conftest's first_run fixture


def test_every_regularizer_shrinks_the_gap_in_quick_mode(first_run):
    out, results = first_run
    assert results["verdict"] == "holds", results["evidence"]
    saved = json.loads((out / "regularization" / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["figures"] == ["regularization_curves.png", "regularization_gaps.png"]
    for figure in saved["figures"]:
        png = out / "regularization" / figure
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.with_suffix(".svg").stat().st_size > 0


def test_the_baseline_overfits_and_each_run_is_measured(first_run):
    out, results = first_run
    rows = {row["regularizer"]: row for row in results["tables"]["gaps"]}
    assert list(rows) == list(exp_regularization.REGULARIZERS)
    none = rows["none"]
    assert none["train_accuracy"] == 1.0 and none["gap (train − test accuracy)"] > 0.5
    for name, row in rows.items():
        gap = row["train_accuracy"] - row["test_accuracy"]
        assert row["gap (train − test accuracy)"] == pytest.approx(gap)
        assert (gap < none["train_accuracy"] - none["test_accuracy"]) == (name != "none")
    # early stopping stopped well before the 60 epochs the others trained
    assert rows["early stopping"]["epochs trained"] < 30
    assert {row["epochs trained"] for name, row in rows.items() if name != "early stopping"} == {60}
    assert len(list((out / "regularization" / "runs").glob("*-seed0"))) == len(rows)


def test_merged_changes_one_key_and_keeps_the_rest():
    base = {"optimizer": {"name": "adamw", "options": {"weight_decay": 0.0, "eps": 1e-8}}}
    tree = exp_regularization.merged(base, {"optimizer": {"options": {"weight_decay": 2.0}}})
    assert tree == {"optimizer": {"name": "adamw", "options": {"weight_decay": 2.0, "eps": 1e-8}}}
    assert base["optimizer"]["options"]["weight_decay"] == 0.0  # the base is left alone
