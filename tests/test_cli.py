"""The trainlab command line."""

from __future__ import annotations

import subprocess
import sys

from trainlab.cli import main
from trainlab.optim import OPTIMIZERS


def test_optimizers_lists_the_registry(capsys):
    assert main(["optimizers"]) == 0
    out = capsys.readouterr().out
    for name, spec in OPTIMIZERS.items():
        assert name in out and spec.equation in out


def test_race_prints_one_table_per_problem():
    result = subprocess.run(
        [sys.executable, "-m", "trainlab", "race", "--budget", "20"],
        capture_output=True,
        text=True,
        check=True,
    )
    for problem in ("taco", "rosenbrock", "saddle"):
        assert f"{problem}:" in result.stdout
    for name in ("sgd", "momentum", "nesterov", "adam", "lbfgs", "newton"):
        assert f"  {name} " in result.stdout
    assert "dist after 20" in result.stdout


def test_bad_budget_exits_2(capsys):
    assert main(["race", "--budget", "0"]) == 2
    assert "Invalid --budget: 0" in capsys.readouterr().err
