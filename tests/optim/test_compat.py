"""Drop-in details: inputs torch accepts, old checkpoints, switches changed mid-run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import trainlab.optim as optim

from .common import assert_same_state, batch, first_order_specs, loss_of, make_params, torch_class


def quadratic_lbfgs(cls, dtype, **options):
    x = torch.ones(6, dtype=dtype, requires_grad=True)
    a = torch.diag(torch.logspace(0, 3, 6, dtype=dtype))
    opt = cls([x], **options)

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ a @ x - x.sum()
        loss.backward()
        return loss

    for _ in range(6):
        opt.step(closure)
    return x.detach(), opt.state[x]["func_evals"]


@pytest.mark.parametrize(
    "options",
    [{"history_size": 1, "lr": 0.5}, {"history_size": 2}, {"line_search_fn": "strong_wolfe"}],
)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_lbfgs_long_runs_stay_identical_to_torch(options, dtype):
    ours, our_evals = quadratic_lbfgs(optim.LBFGS, dtype, **options)
    theirs, their_evals = quadratic_lbfgs(torch.optim.LBFGS, dtype, **options)
    assert our_evals == their_evals
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_numpy_scalars_are_accepted():
    p = [torch.zeros(2, requires_grad=True)]
    optim.Adam(p, lr=np.float32(0.01), betas=(np.float64(0.9), 0.999))
    optim.SGD(p, lr=np.int64(1), momentum=np.float32(0.9))
    optim.LBFGS(p, history_size=np.int64(5))


def test_group_metadata_keys_pass_but_near_misses_do_not():
    p, q = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = optim.Adam([{"params": [p], "name": "backbone"}, {"params": [q], "swa_lr": 0.1}])
    assert opt.param_groups[0]["name"] == "backbone"
    with pytest.raises(ValueError, match=r"'weight_dacay' .*did you mean 'weight_decay'"):
        optim.Adam([{"params": [p], "weight_dacay": 0.1}])


def test_failed_add_param_group_adds_nothing():
    opt = optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="Invalid nesterov"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "nesterov": True})
    assert len(opt.param_groups) == 1


def test_checkpoint_with_a_numeric_step_loads():
    params = make_params(torch.float64)[:3]
    opt = optim.Adam(params, lr=0.01)
    loss_of([*params, None], batch(torch.float64, 0)).backward()
    opt.step()
    saved = opt.state_dict()
    for state in saved["state"].values():
        state["step"] = int(state["step"].item())  # as old torch versions saved it
    fresh = optim.Adam(params, lr=0.01)
    fresh.load_state_dict(saved)
    fresh.step()
    assert all(isinstance(s["step"], torch.Tensor) for s in fresh.state.values())


def run_with_switch(cls, first, later, steps=12, switch_at=6):
    params = make_params(torch.float64)
    opt = cls(params[:3], **first)
    for step in range(steps):
        if step == switch_at:
            opt.param_groups[0].update(later)
        opt.zero_grad()
        loss_of(params, batch(torch.float64, step)).backward()
        opt.step()
    return params[:3], opt


def test_switching_sgd_momentum_on_mid_run_matches_torch():
    ours, _ = run_with_switch(optim.SGD, {"lr": 0.05}, {"momentum": 0.9})
    theirs, _ = run_with_switch(torch.optim.SGD, {"lr": 0.05}, {"momentum": 0.9})
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    ("cls", "switch", "key"),
    [
        (optim.Adam, {"amsgrad": True}, "max_exp_avg_sq"),
        (optim.RMSprop, {"centered": True}, "grad_avg"),
        (optim.RMSprop, {"momentum": 0.9}, "momentum_buffer"),
    ],
)
def test_switching_a_buffered_variant_on_mid_run_creates_its_buffer(cls, switch, key):
    switched, opt = run_with_switch(cls, {"lr": 0.01}, switch)
    plain, _ = run_with_switch(cls, {"lr": 0.01}, {})
    assert all(key in state for state in opt.state.values())
    assert max((a - b).abs().max() for a, b in zip(switched, plain)) > 1e-6


def test_newton_takes_one_group_and_skips_frozen_parameters():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    frozen = torch.ones(2, dtype=torch.float64)  # requires_grad=False
    opt = optim.Newton([w, frozen])
    with pytest.raises(ValueError, match="a second parameter group"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})
    opt.step(lambda: ((w - 1) ** 2).sum() + frozen.sum())
    torch.testing.assert_close(w.detach(), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(frozen, torch.ones(2, dtype=torch.float64))


def test_newton_refuses_a_linear_loss():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([w])
    with pytest.raises(ValueError, match="Hessian is zero — the loss is linear"):
        opt.step(lambda: w.sum())
    assert bool((w == 0).all())


@pytest.mark.parametrize("cls", [optim.LBFGS, optim.Newton])
def test_copied_full_batch_optimizers_still_step(cls):
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = copy.deepcopy(cls([w]))
    w2 = opt.param_groups[0]["params"][0]

    def closure():
        opt.zero_grad()
        loss = ((w2 - 1) ** 2).sum()
        if cls is optim.LBFGS:
            loss.backward()
        return loss

    opt.step(closure)
    assert float((w2.detach() - 1).abs().max()) < 1e-6


DUPLICATE_CASES = [
    pytest.param(spec, options, id=f"{spec.name}-{i}")
    for spec in first_order_specs()
    if spec.torch_name
    for i, options in enumerate(spec.variants)
]


def train_with_a_duplicate(cls, options, steps=8):
    params = make_params(torch.float64)
    w, b, s, _ = params
    with pytest.warns(UserWarning, match=r"a parameter group with duplicate parameters"):
        opt = cls([w, b, w, s], **options)  # w listed twice
    for step in range(steps):
        opt.zero_grad()
        loss_of(params, batch(torch.float64, step), options.get("maximize", False)).backward()
        opt.step()
    return params[:3], opt


@pytest.mark.parametrize(("spec", "options"), DUPLICATE_CASES)
def test_a_duplicated_parameter_warns_and_steps_like_torch(spec, options):
    # torch.optim keeps both occurrences and steps the parameter twice per step (SGD's
    # momentum buffer restarts at the second occurrence of its first step).
    ours, opt = train_with_a_duplicate(spec.cls, options)
    theirs, ref = train_with_a_duplicate(torch_class(spec), options)
    assert len(opt.param_groups[0]["params"]) == 4
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert_same_state(opt, ref, rtol=1e-9, atol=1e-12)


def test_a_duplicated_parameter_on_the_fused_backend_steps_like_torch(traced_only):
    options = {"lr": 0.05, "momentum": 0.9}
    ours, opt = train_with_a_duplicate(optim.SGD, {**options, "backend": "fused"})
    theirs, _ = train_with_a_duplicate(torch.optim.SGD, options)
    assert opt.backend_info() == []  # the group takes the eager loop
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_lbfgs_with_a_duplicated_parameter_steps_like_torch():
    results = []
    for cls in (optim.LBFGS, torch.optim.LBFGS):
        params = make_params(torch.float64)
        w, b, s, _ = params
        with pytest.warns(UserWarning, match=r"duplicate parameters"):
            opt = cls([w, b, w, s], line_search_fn="strong_wolfe", max_iter=5)

        def closure(opt=opt, params=params):
            opt.zero_grad()
            loss = loss_of(params, batch(torch.float64, 0))
            loss.backward()
            return loss

        opt.step(closure)
        results.append(params[:3])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
