"""state_dict(): torch.optim's format, loadable across trainlab and torch mid-run."""

from __future__ import annotations

import copy

import pytest
import torch

from .common import batch, first_order_specs, groups, loss_of, make_params, torch_class

CASES = [
    pytest.param(spec, spec.variants[min(1, len(spec.variants) - 1)], id=spec.name)
    for spec in first_order_specs()
]


def run(opt, params, steps, start, maximize=False):
    for step in range(start, start + steps):
        opt.zero_grad()
        loss_of(params, batch(params[0].dtype, step), maximize).backward()
        opt.step()


def resume(spec, options, first_cls, second_cls):
    """Train 7 steps with first_cls, move params+state into second_cls, train 13 more."""
    params = make_params(torch.float64)
    first = first_cls(groups(params, first_cls, options), **options)
    run(first, params, 7, 0, options.get("maximize", False))
    saved = copy.deepcopy(first.state_dict())
    moved = [p.detach().clone().requires_grad_() for p in params]
    second = second_cls(groups(moved, second_cls, options), **options)
    second.load_state_dict(saved)
    run(second, moved, 13, 7, options.get("maximize", False))
    return moved, second


def uninterrupted(spec, options):
    params = make_params(torch.float64)
    opt = spec.cls(groups(params, spec.cls, options), **options)
    run(opt, params, 20, 0, options.get("maximize", False))
    return params


@pytest.mark.parametrize(("spec", "options"), CASES)
@pytest.mark.parametrize("direction", ["torch->trainlab", "trainlab->torch", "trainlab->trainlab"])
def test_resume_continues_identically(spec, options, direction):
    first, second = {
        "torch->trainlab": (torch_class(spec), spec.cls),
        "trainlab->torch": (spec.cls, torch_class(spec)),
        "trainlab->trainlab": (spec.cls, spec.cls),
    }[direction]
    resumed, _ = resume(spec, options, first, second)
    reference = uninterrupted(spec, options)
    for a, b in zip(resumed, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("spec", "options"), CASES)
def test_state_dict_has_torch_layout(spec, options):
    params = make_params(torch.float64)
    ours = spec.cls(groups(params, spec.cls, options), **options)
    theirs_params = [p.detach().clone().requires_grad_() for p in params]
    theirs = torch_class(spec)(groups(theirs_params, torch_class(spec), options), **options)
    run(ours, params, 2, 0)
    run(theirs, theirs_params, 2, 0)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for index, state in a["state"].items():
        assert state.keys() == b["state"][index].keys()
        for key, value in state.items():
            other = b["state"][index][key]
            assert value.dtype == other.dtype and value.shape == other.shape, key
    for ours_group, their_group in zip(a["param_groups"], b["param_groups"]):
        assert set(their_group) <= set(ours_group), "torch's group keys are all present"
        assert ours_group["params"] == their_group["params"]


def test_round_trip_then_lockstep():
    spec = next(s for s in first_order_specs() if s.name == "adam")
    options = spec.variants[1]
    params = make_params(torch.float64)
    opt = spec.cls(groups(params, spec.cls, options), **options)
    run(opt, params, 5, 0)
    twin_params = [p.detach().clone().requires_grad_() for p in params]
    twin = spec.cls(groups(twin_params, spec.cls, options), **options)
    twin.load_state_dict(copy.deepcopy(opt.state_dict()))
    run(opt, params, 10, 5)
    run(twin, twin_params, 10, 5)
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_state_without_trainlab_switches_gets_defaults():
    params = make_params(torch.float64)
    theirs = torch.optim.SGD(params[:3], lr=0.1, momentum=0.9)
    run(theirs, params, 2, 0)
    from trainlab.optim import SGD

    ours = SGD(params[:3], lr=0.1, momentum=0.9, momentum_form="ema")
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["momentum_form"] == "ema"
    assert ours.param_groups[0]["decoupled_weight_decay"] is False
