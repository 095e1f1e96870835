"""state_dict(): torch.optim's format, loadable across trainlab and torch mid-run."""

from __future__ import annotations

import copy

import pytest
import torch

from trainlab.optim import SGD, Adam, AdamW, RMSprop

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
    ours = SGD(params[:3], lr=0.1, momentum=0.9, momentum_form="ema")
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["momentum_form"] == "ema"
    assert ours.param_groups[0]["decoupled_weight_decay"] is False


def adam_options():
    return {"lr": 0.01, "weight_decay": 0.1}


@pytest.mark.parametrize("source", [torch.optim.Adam, Adam], ids=["torch", "trainlab"])
def test_adamw_keeps_decoupled_weight_decay_after_loading_an_adam_state_dict(source):
    # torch.optim.AdamW forces decoupled_weight_decay=True on load; an Adam state_dict
    # (coupled L2 decay) must not silently turn AdamW into Adam.
    params = make_params(torch.float64)
    first = source(params[:3], **adam_options())
    run(first, params, 3, 0)
    saved = copy.deepcopy(first.state_dict())
    assert saved["param_groups"][0]["decoupled_weight_decay"] is False
    resumed = []
    for cls in (AdamW, torch.optim.AdamW):
        moved = [p.detach().clone().requires_grad_() for p in params]
        opt = cls(moved[:3], **adam_options())
        opt.load_state_dict(copy.deepcopy(saved))
        assert opt.param_groups[0]["decoupled_weight_decay"] is True
        run(opt, moved, 5, 3)
        resumed.append(moved)
    for a, b in zip(*resumed):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_adam_takes_decoupled_weight_decay_from_an_adamw_state_dict_as_torch_does():
    # For Adam it is an ordinary hyperparameter, restored like lr or amsgrad.
    params = make_params(torch.float64)
    first = torch.optim.AdamW(params[:3], **adam_options())
    run(first, params, 3, 0)
    resumed = []
    for cls in (Adam, torch.optim.Adam):
        moved = [p.detach().clone().requires_grad_() for p in params]
        opt = cls(moved[:3], **adam_options())
        opt.load_state_dict(copy.deepcopy(first.state_dict()))
        assert opt.param_groups[0]["decoupled_weight_decay"] is True
        run(opt, moved, 5, 3)
        resumed.append(moved)
    for a, b in zip(*resumed):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_adamw_with_coupled_decay_keeps_it_through_a_round_trip():
    params = make_params(torch.float64)
    opt = AdamW(params[:3], decoupled_weight_decay=False, **adam_options())
    run(opt, params, 2, 0)
    saved = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["decoupled_weight_decay"] is False
    assert opt.state_dict()["param_groups"] == saved["param_groups"]


def test_trainlab_only_group_keys_are_restored_like_any_hyperparameter():
    options = {"lr": 0.05, "momentum": 0.9}
    params = make_params(torch.float64)
    first = SGD(params[:3], momentum_form="cs231n", **options)
    run(first, params, 3, 0)
    moved = [p.detach().clone().requires_grad_() for p in params]
    second = SGD(moved[:3], **options)
    second.load_state_dict(copy.deepcopy(first.state_dict()))
    assert second.param_groups[0]["momentum_form"] == "cs231n"
    run(first, params, 4, 3)
    run(second, moved, 4, 3)
    for a, b in zip(params, moved):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def with_key(state_dict: dict, **extra) -> dict:
    state_dict["param_groups"][0].update(extra)
    return state_dict


@pytest.mark.parametrize(
    ("saved_by", "target", "message"),
    [
        (lambda p: SGD(p, lr=0.1, momentum=0.9).state_dict(), Adam, "'momentum'.*Adam"),
        (lambda p: torch.optim.SGD(p, lr=0.1).state_dict(), Adam, "'momentum'.*Adam"),
        (lambda p: Adam(p, bias_correction=False).state_dict(), SGD, "'betas'.*SGD"),
        # RMSprop's own keys, plus SGD's trainlab-only switch
        (
            lambda p: with_key(RMSprop(p).state_dict(), momentum_form="ema"),
            RMSprop,
            "'momentum_form'.*RMSprop",
        ),
    ],
)
def test_a_state_dict_of_another_optimizer_is_refused_and_changes_nothing(
    saved_by, target, message
):
    params = make_params(torch.float64)[:3]
    opt = target(params)
    run(opt, [*params, None], 2, 0)
    before = copy.deepcopy(opt.state_dict())
    saved = saved_by([p.detach().clone().requires_grad_() for p in params])
    with pytest.raises(
        ValueError, match=rf"^Invalid parameter group key in group 0 of the state_dict: {message}"
    ):
        opt.load_state_dict(saved)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, state in before["state"].items():
        for key, value in state.items():
            torch.testing.assert_close(after["state"][index][key], value, rtol=0, atol=0)


def test_a_loaded_group_with_a_bad_value_is_refused():
    params = make_params(torch.float64)[:3]
    saved = Adam(params).state_dict()
    saved["param_groups"][0]["betas"] = (1.5, 0.999)
    with pytest.raises(ValueError, match=r"Invalid betas: \(1\.5, 0\.999\)"):
        Adam(params).load_state_dict(saved)
