"""The "adagrad_vs_rmsprop" experiment: its claim holds in quick mode, its files, its cache."""

from __future__ import annotations

import json

import pytest
import torch

from trainlab.lab import exp_adaptive  # registers "adagrad_vs_rmsprop"
from trainlab.lab.experiment import RESULTS_FILE
from trainlab.optim import Adagrad, RMSprop

NAME = "adagrad_vs_rmsprop"


def test_adagrad_decays_and_rmsprop_does_not_in_quick_mode(first_run):
    _, results = first_run
    n = results["numbers"]
    assert results["verdict"] == "holds", results["evidence"]
    assert n["adagrad_decay"] > 10 and -0.75 <= n["adagrad_slope"] <= -0.25
    assert n["rmsprop_lowest_vs_settled"] >= 1 / 3
    # AdaGrad ends below RMSProp although both start at the same rate (see the docstring)
    assert n["adagrad_first_rate"] == pytest.approx(n["rmsprop_first_rate"], rel=1e-3)
    assert n["adagrad_last_rate"] < n["rmsprop_last_rate"]
    assert n["untouched_coordinates"] == {"adagrad": 0, "rmsprop": 0}
    assert [row["verdict"] for row in results["tables"]["claims"]] == ["holds", "holds"]


def test_results_json_and_figure(first_run):
    out, results = first_run
    folder = out / NAME
    saved = json.loads((folder / RESULTS_FILE).read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    assert saved["name"] == NAME and saved["seed"] == "000" and saved["mode"] == "quick"
    assert saved["verdict"] == results["verdict"] and results["cached"] is False
    assert results["figures"] == ["adagrad_vs_rmsprop.png"]
    assert (folder / "adagrad_vs_rmsprop.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "adagrad_vs_rmsprop.svg").stat().st_size > 0


@pytest.mark.parametrize(
    ("name", "cls", "accumulated"),
    [("adagrad", Adagrad, 1.0), ("rmsprop", RMSprop, 1 - 0.99)],  # G = g², v = (1 − α)·g²
)
def test_effective_rates_after_one_step_by_hand(name, cls, accumulated):
    weight = torch.zeros(3, requires_grad=True)
    optimizer = cls([weight], lr=0.1, eps=1e-8)
    weight.grad = torch.tensor([2.0, -0.5, 0.0])  # the last coordinate never gets a gradient
    optimizer.step()
    rates, untouched = exp_adaptive.effective_rates(optimizer, name)
    g = torch.tensor([2.0, 0.5])
    torch.testing.assert_close(rates, 0.1 / ((accumulated * g**2).sqrt() + 1e-8))
    assert untouched == 1
