"""The lab's own training runs draw no progress bar: an experiment trains many runs, and
its page, not a bar per run, is what it shows."""

from __future__ import annotations

import ast
from pathlib import Path

import torch
from torch import nn

from trainlab import lab
from trainlab.lab.common import sgd_run


def test_a_lab_run_prints_nothing(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    train = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    losses, summary = sgd_run(
        nn.Linear(4, 3), train, val=None, run_dir=tmp_path / "r", lr=0.1, momentum=0.9,
        batch_size=16, seed=0, epochs=1, threads=1,
    )  # fmt: skip
    assert len(losses) == 2 and summary is not None
    assert capsys.readouterr().err == ""


def fit_calls(source: str) -> list[ast.Call]:
    """Every call of ``fit(...)`` (the bare name the lab imports) in ``source``."""
    return [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "fit"
    ]


def test_every_fit_call_of_the_lab_turns_progress_off():
    calls = {
        path.name: fit_calls(path.read_text())
        for path in sorted(Path(lab.__file__).parent.glob("*.py"))
    }
    assert sum(len(found) for found in calls.values()) >= 5  # the reader found the calls
    for name, found in calls.items():
        for call in found:
            progress = [k.value for k in call.keywords if k.arg == "progress"]
            assert progress and isinstance(progress[0], ast.Constant), (name, call.lineno)
            assert progress[0].value is False, (name, call.lineno)
