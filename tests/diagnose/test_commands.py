"""trainlab doctor and trainlab lr-find on configs: exit codes, JSON, files, bad input."""

from __future__ import annotations

import json

import pytest

from trainlab.cli import main
from trainlab.train.config import load_config

HEALTHY = ["data.name=digits", "model.kind=mlp", "model.hidden=[64, 64]", "run.threads=1"]
BROKEN = [  # the lectures' classic: N(0, 0.01) on a deep tanh net
    "data.name=digits",
    "model.kind=mlp",
    "model.hidden=[64, 64, 64, 64, 64, 64, 64, 64, 64]",
    "model.activation=tanh",
    "model.batch_norm=false",
    "model.dropout=0",
    "model.init=normal",
    "model.init_options={std=0.01}",
    "run.threads=1",
]


def sets(settings: list[str]) -> list[str]:
    return [arg for s in settings for arg in ("--set", s)]


def test_doctor_passes_a_healthy_config_and_prints_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["doctor", *sets(HEALTHY), "--json"]) == 0
    checks = json.loads(capsys.readouterr().out)["checks"]
    assert {c["name"] for c in checks} >= {"loss_at_init", "gradient_check", "overfit_tiny"}
    assert all(set(c) >= {"name", "status", "evidence", "fix"} for c in checks)
    assert not any(c["status"] == "fail" for c in checks)
    assert list(tmp_path.iterdir()) == []  # no run folder, nothing written


def test_doctor_fails_the_collapsing_deep_tanh_net_and_says_why(capsys):
    assert main(["doctor", *sets(BROKEN)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] activation_scale: activations collapse towards 0 with depth" in out
    assert "Xavier" in out


def test_doctor_on_bad_input_exits_2(capsys):
    assert main(["doctor", "--set", "model.hidden=[0]"]) == 2
    assert "Invalid model.hidden[0]" in capsys.readouterr().err


def test_lr_find_writes_its_curve_plot_and_applied_config(tmp_path, capsys):
    out = tmp_path / "find"
    args = ["lr-find", *sets(HEALTHY), "--steps", "30", "--out", str(out), "--apply", "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) >= {"suggestion", "method", "lrs", "losses"}
    assert result["method"] == "valley" and len(result["lrs"]) == len(result["losses"]) <= 30
    assert (out / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads((out / "lr_find.json").read_text())["suggestion"] == result["suggestion"]
    applied = load_config(out / "config.toml")
    assert applied.optimizer.lr == pytest.approx(result["suggestion"], rel=1e-2)
    assert applied.model.hidden == (64, 64)


def test_lr_find_refuses_an_inverted_range(tmp_path, capsys):
    args = ["lr-find", *sets(HEALTHY), "--start", "1", "--end", "0.1", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "Invalid end: 0.1 (must be > start = 1.0" in capsys.readouterr().err


def test_lr_find_refuses_rates_no_parameter_can_take(tmp_path, capsys):
    # float32 parameters cannot be stepped by 1e300: torch's own step would raise raw
    args = ["lr-find", *sets(HEALTHY), "--start", "1e300", "--end", "1e305", "--out", str(tmp_path)]
    assert main(args) == 2
    assert "Invalid end: 1e+305 (must be <= 1e+10" in capsys.readouterr().err
