"""Swapping torch.optim.X for trainlab.optim.X gives the same numbers."""

from __future__ import annotations

import inspect

import pytest
import torch

from trainlab.optim import OPTIMIZERS

from .common import assert_same_state, first_order_specs, torch_class, train

CASES = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in first_order_specs()
    if spec.torch_name
    for i, options in enumerate(spec.variants)
]


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_float64_matches_torch_over_60_steps(spec, options):
    ours, opt = train(spec.cls, options, torch.float64, steps=60)
    theirs, ref = train(torch_class(spec), options, torch.float64, steps=60)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert_same_state(opt, ref, rtol=1e-9, atol=1e-12)
    # The parameter without a gradient is untouched and has no state, as in torch.
    torch.testing.assert_close(ours[3], theirs[3], rtol=0, atol=0)
    assert ours[3] not in opt.state or spec.name == "adagrad"


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_float32_matches_torch_after_one_step(spec, options):
    ours, _ = train(spec.cls, options, torch.float32, steps=1)
    theirs, _ = train(torch_class(spec), options, torch.float32, steps=1)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


TENSOR_LR_IDS = ("sgd-0", "adagrad-0")
TENSOR_LR_CASES = [c for c in CASES if c.id in TENSOR_LR_IDS]
assert len(TENSOR_LR_CASES) == len(TENSOR_LR_IDS), "a tensor-lr case id no longer exists"


@pytest.mark.parametrize(("spec", "options"), TENSOR_LR_CASES)
def test_tensor_learning_rate_is_accepted_like_torch(spec, options):
    options = {**options, "lr": torch.tensor(options.get("lr", 0.01))}
    ours, _ = train(spec.cls, options, torch.float64, steps=5)
    theirs, _ = train(torch_class(spec), options, torch.float64, steps=5)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_defaults_match_torch_signatures():
    for spec in [*first_order_specs(), OPTIMIZERS["lbfgs"]]:
        ours = inspect.signature(spec.cls.__init__).parameters
        theirs = inspect.signature(torch_class(spec).__init__).parameters
        for name, param in theirs.items():
            assert name in ours, f"{spec.name}: torch keyword {name!r} missing"
            assert ours[name].default == param.default, f"{spec.name}.{name} default"
            assert ours[name].kind == param.kind, f"{spec.name}.{name} positional/keyword"
