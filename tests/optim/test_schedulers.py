"""torch's LR schedulers drive trainlab optimizers exactly as they drive torch's."""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler

from .common import batch, first_order_specs, groups, loss_of, make_params, torch_class

STEPS = 24

SCHEDULERS = {
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=5, gamma=0.5),
    "ExponentialLR": lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.9),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(
        opt,
        max_lr=[0.05, 0.02],
        total_steps=STEPS,
        cycle_momentum="momentum" in opt.defaults or "betas" in opt.defaults,
    ),
}


def trajectory(cls, options, make_scheduler):
    params = make_params(torch.float64)
    opt = cls(groups(params, cls, options), **options)
    scheduler = make_scheduler(opt)
    lrs = []
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_of(params, batch(torch.float64, step))
        loss.backward()
        opt.step()
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(round(loss.item(), 1))  # coarse, so that it plateaus
        else:
            scheduler.step()
        lrs.append([g["lr"] for g in opt.param_groups])
    return params, lrs


@pytest.mark.parametrize("scheduler", SCHEDULERS)
@pytest.mark.parametrize(
    "spec", [s for s in first_order_specs() if s.torch_name], ids=lambda s: s.name
)
def test_scheduler_drives_both_identically(spec, scheduler):
    options = {k: v for k, v in spec.variants[0].items() if k != "maximize"}
    if spec.name == "sgd":
        options["momentum"] = 0.9  # so that OneCycleLR has a momentum to cycle
    ours, our_lrs = trajectory(spec.cls, options, SCHEDULERS[scheduler])
    theirs, their_lrs = trajectory(torch_class(spec), options, SCHEDULERS[scheduler])
    assert our_lrs == their_lrs
    assert len({tuple(lr) for lr in our_lrs}) > 1, "the schedule changed the learning rate"
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
