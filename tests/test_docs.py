"""Documentation stays in step with the code: the README example runs, docstrings hold the math."""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import re
import sys
from pathlib import Path

import pytest
import torch
from latex2mathml.converter import convert

import trainlab.optim as optim
from trainlab.optim import OPTIMIZERS

ROOT = Path(__file__).resolve().parents[1]
RULES = [
    optim.sgd,
    optim.adagrad,
    optim.rmsprop,
    optim.adadelta,
    optim.adam,
    optim.adamax,
    optim.nadam,
    optim.lbfgs_direction,
    optim.newton_direction,
]


def test_readme_lists_every_optimizer_and_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for spec in OPTIMIZERS.values():
        assert f"`{spec.cls.__name__}`" in readme, spec.name


@pytest.mark.parametrize("spec", OPTIMIZERS.values(), ids=lambda s: s.name)
def test_every_class_docstring_carries_its_update_rule_as_math(spec):
    """The reference renders the update as math: a $$ block that converts to MathML."""
    doc = inspect.getdoc(spec.cls)
    blocks = re.findall(r"^\$\$\n(.+?)\n\$\$$", doc, re.S | re.M)
    assert blocks, f"{spec.cls.__name__}: no $$ … $$ block"
    mathml = "".join(convert(block) for block in blocks)
    assert "<mi>&#x003B8;</mi>" in mathml  # θ, the parameters being updated
    assert "References" in doc


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
def test_every_rule_is_small_and_states_its_equations(rule):
    doc = inspect.getdoc(rule)
    assert "←" in doc or "=" in doc
    source = inspect.getsource(rule)
    body = source.split('"""')[2]  # the code after the docstring
    lines = [
        line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    assert len(lines) <= 30, f"{rule.__name__} has {len(lines)} lines of code"


def readme_block(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_block("## Your own model and data"), "README.md", "exec"), namespace)
    assert namespace["summary"]["test_accuracy"] > 0.8
    assert namespace["run"].summary["test_loss"] == namespace["summary"]["test_loss"]
    assert (tmp_path / "runs" / "my-model" / "model.safetensors").exists()


def _docs_hook():
    """The docs build's hook module, loaded as MkDocs loads it: under its file path."""
    path = Path(__file__).resolve().parents[1] / "docs" / "hooks" / "trainlab_docs.py"
    spec = importlib.util.spec_from_file_location(str(path), path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_docs_hook_lets_torch_objects_pickle(tmp_path):
    """Registered under a path that cannot be imported, the hook once held `torch` as an
    attribute, so pickle resolved torch's globals to it: inductor printed a traceback for
    every compiled graph of an executed example."""
    hook = _docs_hook()
    try:
        assert pickle.loads(pickle.dumps(torch.contiguous_format)) is torch.contiguous_format
    finally:
        del sys.modules[hook.__file__]


@pytest.mark.parametrize(
    ("written", "level"),
    [
        ("trainlab: verdict [warn] overfitting: ...\n", "DEBUG"),
        ("example.py:3: UserWarning: something is off\n", "WARNING"),
        ("Traceback (most recent call last):\n  ...\n", "WARNING"),
        ("W1208 01:28:00.036000 7148 torch/_inductor/codecache.py:1052] Failed\n", "WARNING"),
    ],
)
def test_an_examples_stderr_fails_the_build_only_when_it_is_a_problem(
    tmp_path, caplog, written, level
):
    hook = _docs_hook()
    try:
        hook.on_page_markdown("", None, None, None)
        sys.stderr.write(written)
        with caplog.at_level("DEBUG", logger="mkdocs.hooks.trainlab"):
            hook._leave_scratch("page.md")
    finally:
        del sys.modules[hook.__file__]
    assert [r.levelname for r in caplog.records if "wrote to stderr" in r.message] == [level]
