"""Momentum schedules against their closed forms and torch's one-cycle momentum; the
controller writes them into every kind of param group, refuses what cannot take them, and
resumes exactly with the old state format."""

from __future__ import annotations

import copy
import inspect
import json
import math

import pytest
import torch
from torch.optim import lr_scheduler

from trainlab.optim import OPTIMIZERS
from trainlab.train import Constant, Cosine, LRController, OneCycle, ReduceOnPlateau
from trainlab.train.schedules import (
    MOMENTUM_SCHEDULES,
    CosineAnneal,
    LinearAnneal,
    MomentumSchedule,
    OneCycleMomentum,
)

STEPS = [0, 1, 2, 5, 9, 10, 11, 28, 29, 30, 31, 57, 98, 99, 100, 101, 1000]
PI = math.pi


def one_cycle_momentum_form(total, peak_at, high, low):
    p = peak_at * total - 1

    def mu(t):
        t = min(t, total - 1)
        if t <= p:
            return low + (high - low) * 0.5 * (1 + math.cos(PI * t / p))
        return high + (low - high) * 0.5 * (1 + math.cos(PI * (t - p) / (total - 1 - p)))

    return mu


# (schedule, its closed form): every registry entry appears at least once.
CLOSED_FORMS = [
    (LinearAnneal(10), lambda t: 0.5 + 0.49 * min(t, 10) / 10),
    (LinearAnneal(100, start=0.9, end=0.0), lambda t: 0.9 - 0.9 * min(t, 100) / 100),
    (CosineAnneal(30), lambda t: 0.99 + (0.5 - 0.99) * 0.5 * (1 + math.cos(PI * min(t, 30) / 30))),
    (CosineAnneal(1, start=0.0, end=0.8), lambda t: 0.0 if t == 0 else 0.8),
    (OneCycleMomentum(100), one_cycle_momentum_form(100, 0.3, 0.95, 0.85)),
    (OneCycleMomentum(31, 0.5, max=0.9, min=0.0), one_cycle_momentum_form(31, 0.5, 0.9, 0.0)),
]


def test_every_registry_entry_has_a_closed_form_test():
    assert {s.name for s, _ in CLOSED_FORMS} == set(MOMENTUM_SCHEDULES)
    assert list(MOMENTUM_SCHEDULES) == ["linear", "cosine", "one_cycle"]


@pytest.mark.parametrize(("schedule", "form"), CLOSED_FORMS, ids=lambda x: repr(x)[:40])
def test_schedule_matches_its_closed_form(schedule, form):
    for t in STEPS:
        assert schedule(t) == pytest.approx(form(t), rel=0, abs=1e-12), t
        assert isinstance(schedule(t), float) and 0 <= schedule(t) < 1


def test_hand_computed_values():
    anneal = LinearAnneal(steps=1000)  # the lectures' 0.5 → 0.99
    assert anneal(0) == 0.5 and anneal(500) == pytest.approx(0.745, abs=1e-15)
    assert anneal(1000) == 0.99 and anneal(10**6) == 0.99
    cosine = CosineAnneal(steps=10, start=0.5, end=0.9)
    assert cosine(0) == 0.5 and cosine(5) == pytest.approx(0.7, abs=1e-15) and cosine(10) == 0.9
    cycle = OneCycleMomentum(100)  # Smith's 0.95 → 0.85 → 0.95, p = 0.3·100 − 1 = 29
    assert cycle(0) == 0.95 and cycle(29) == 0.85
    assert cycle(99) == pytest.approx(0.95, abs=1e-15) and cycle(10**6) == cycle(99)


@pytest.mark.parametrize(("total", "peak_at"), [(100, 0.3), (37, 0.25), (10, 0.2), (50, 0.9)])
def test_one_cycle_momentum_mirrors_the_one_cycle_lr(total, peak_at):
    """Same phases: μ(t) = max − (max − min)·s(t) for the lr cycle s from 0 to 1 to 0."""
    lr = OneCycle(total, peak_at=peak_at, start=0.0, end=0.0)
    mu = OneCycleMomentum(total, peak_at=peak_at, max=0.95, min=0.85)
    for t in range(total + 5):
        assert mu(t) == pytest.approx(0.95 - 0.1 * lr(t), rel=0, abs=1e-12), t
    peak = max(range(total), key=OneCycle(total, peak_at=peak_at))  # the default lr cycle
    assert peak == min(range(total), key=mu)


def torch_one_cycle(opt, total, peak_at, high, low):
    return lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.3,
        total_steps=total,
        pct_start=peak_at,
        anneal_strategy="cos",
        three_phase=False,
        cycle_momentum=True,
        base_momentum=low,
        max_momentum=high,
    )


@pytest.mark.parametrize(
    ("make", "key"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9), "momentum"),
        (lambda p: torch.optim.Adam(p, lr=0.3, betas=(0.9, 0.99)), "betas"),
    ],
    ids=["SGD", "Adam"],
)
@pytest.mark.parametrize(
    ("total", "peak_at", "high", "low"), [(100, 0.3, 0.95, 0.85), (37, 0.25, 0.9, 0.5)]
)
def test_one_cycle_lr_and_momentum_match_torch(make, key, total, peak_at, high, low):
    reference = make([torch.zeros(1, requires_grad=True)])
    torch_schedule = torch_one_cycle(reference, total, peak_at, high, low)
    ours = make([torch.zeros(1, requires_grad=True)])
    controller = LRController(
        ours,
        OneCycle(total, peak_at=peak_at, start=1 / 25, end=1 / 25 / 1e4),  # torch's defaults
        momentum=OneCycleMomentum(total, peak_at=peak_at, max=high, min=low),
    )
    for t in range(total):
        controller.step(t)
        group, expected = ours.param_groups[0], reference.param_groups[0]
        assert group["lr"] == pytest.approx(expected["lr"], rel=1e-12, abs=1e-15)
        assert group[key] == pytest.approx(expected[key], rel=1e-12, abs=0)
        if key == "betas":
            assert group["betas"][1] == 0.99
        if t < total - 1:
            reference.step()  # torch warns if the scheduler steps before the optimizer
            torch_schedule.step()


# --------------------------------------------------------------------------- the controller

MOMENTUM_KEYS = {"sgd": "momentum", "rmsprop": "momentum"}
BETAS = {"adam", "adamw", "adamax", "nadam"}


def trainlab_optimizer(name):
    spec = OPTIMIZERS[name]
    torch.manual_seed(0)
    params = [torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)]
    if spec.closure:  # full-batch methods: one group, no backend
        return spec.cls(params, lr=0.05)
    groups = [{"params": params[:1]}, {"params": params[1:], "lr": 0.01}]
    return spec.cls(groups, lr=0.05, backend="eager")


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_controller_writes_momentum_into_every_optimizer_that_has_one(name):
    opt = trainlab_optimizer(name)
    groups = opt.param_groups
    if not any(key in groups[0] for key in ("momentum", "betas")):  # adagrad, lbfgs, ...
        cls = type(opt).__name__
        with pytest.raises(
            ValueError,
            match=rf"^Invalid optimizer: '{cls}' \(a momentum schedule needs param groups with "
            rf"'betas' \(the Adam family\) or 'momentum' \(SGD, RMSprop\); {cls} has neither\)$",
        ):
            LRController(opt, Constant(), momentum=LinearAnneal(10))
        return
    assert name in BETAS | set(MOMENTUM_KEYS)  # a new optimizer with momentum is listed here
    beta2 = [g["betas"][1] for g in groups] if name in BETAS else None
    controller = LRController(opt, Cosine(10), momentum=LinearAnneal(10))
    for t in (0, 4, 10, 12):
        lrs = controller.step(t)
        assert lrs == [0.05 * Cosine(10)(t), 0.01 * Cosine(10)(t)]
        mu = 0.5 + 0.49 * min(t, 10) / 10
        for group, b2 in zip(groups, beta2 or [None] * len(groups)):
            if name in BETAS:
                assert type(group["betas"]) is tuple and group["betas"] == (mu, b2)
            else:
                assert group["momentum"] == mu
        loss = sum((p**2).sum() for g in groups for p in g["params"])
        opt.zero_grad()
        loss.backward()
        opt.step()  # the optimizer takes the values it is given


@pytest.mark.parametrize("name", ["sgd", "rmsprop"])
@pytest.mark.parametrize("library", ["torch", "trainlab"])
def test_momentum_off_at_construction_is_turned_on_by_the_schedule(name, library):
    """SGD(momentum=0) + a constant schedule μ = 0.9 trains exactly as SGD(momentum=0.9)."""
    if library == "torch":
        cls = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}[name]
    else:
        cls = OPTIMIZERS[name].cls

    def run(momentum, schedule):
        torch.manual_seed(0)
        w = torch.randn(5, requires_grad=True)
        opt = cls([w], lr=0.01, momentum=momentum)
        controller = LRController(opt, Constant(), momentum=schedule)
        for t in range(6):
            controller.step(t)
            opt.zero_grad()
            ((w - 1) ** 2 * torch.arange(5.0)).sum().backward()
            opt.step()
        return w.detach()

    constant = LinearAnneal(1, start=0.9, end=0.9)
    assert torch.equal(run(0.0, constant), run(0.9, None))
    assert not torch.equal(run(0.9, None), run(0.0, None))  # momentum does change the path


def test_a_schedule_from_zero_on_trainlab_sgd_starts_the_buffer_at_its_first_nonzero_step():
    torch.manual_seed(0)
    w = torch.randn(4, requires_grad=True)
    opt = OPTIMIZERS["sgd"].cls([w], lr=0.1, backend="eager")
    controller = LRController(opt, Constant(), momentum=LinearAnneal(4, start=0.0, end=0.8))
    for t in range(3):
        controller.step(t)
        opt.zero_grad()
        (w**2).sum().backward()
        opt.step()
        assert ("momentum_buffer" in opt.state[w]) == (t > 0), t


def test_torch_rmsprop_needs_momentum_above_zero_at_step_zero():
    opt = torch.optim.RMSprop([torch.zeros(2, requires_grad=True)], lr=0.01)
    with pytest.raises(
        ValueError, match=r"^Invalid momentum: 0\.0 \(torch\.optim\.RMSprop creates its momentum"
    ):
        LRController(opt, Constant(), momentum=LinearAnneal(10, start=0.0))
    LRController(opt, Constant(), momentum=LinearAnneal(10, start=0.1)).step(0)
    assert opt.param_groups[0]["momentum"] == 0.1


def test_tensor_momentum_and_beta1_stay_tensors():
    sgd = torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, momentum=torch.tensor(0.9))
    LRController(sgd, Constant(), momentum=LinearAnneal(2)).step(1)
    assert isinstance(sgd.param_groups[0]["momentum"], torch.Tensor)
    assert sgd.param_groups[0]["momentum"].item() == pytest.approx(0.745)
    betas = (torch.tensor(0.9), torch.tensor(0.99))
    adam = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=0.1, betas=betas)
    LRController(adam, Constant(), momentum=LinearAnneal(2)).step(2)
    beta1, beta2 = adam.param_groups[0]["betas"]
    assert beta1 is betas[0] and beta2 is betas[1] and beta1.item() == pytest.approx(0.99)


def test_momentum_values_outside_0_1_are_refused():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match=r"^Invalid momentum: 1\.0 \(must be a number in \[0, 1"):
        LRController(opt, Constant(), momentum=lambda t: 1.0)
    controller = LRController(opt, Constant(), momentum=lambda t: 0.5 if t < 3 else -0.1)
    controller.step(2)
    with pytest.raises(ValueError, match=r"^Invalid momentum: -0\.1 \(must be a number in \[0, "):
        controller.step(3)
    with pytest.raises(ValueError, match=r"^Invalid momentum: 0\.9 \(must be a callable step -> "):
        LRController(opt, Constant(), momentum=0.9)


def test_state_format_is_unchanged_and_old_checkpoints_load():
    opt = torch.optim.SGD([torch.zeros(2, requires_grad=True)] * 1, lr=0.1, momentum=0.9)
    controller = LRController(opt, Cosine(10), momentum=OneCycleMomentum(10))
    assert controller.state_dict() == {"base_lrs": [0.1], "plateau": None}
    old = {"base_lrs": [0.2], "plateau": None}  # saved before momentum schedules existed
    controller.load_state_dict(old)
    controller.step(3)
    assert opt.param_groups[0]["lr"] == 0.2 * Cosine(10)(3)
    assert opt.param_groups[0]["momentum"] == OneCycleMomentum(10)(3)


def test_resume_continues_with_exactly_the_same_weights():
    def make(momentum=0.0):
        torch.manual_seed(0)
        w = torch.randn(6, requires_grad=True)
        opt = torch.optim.SGD([w], lr=0.05, momentum=momentum, nesterov=momentum > 0)
        controller = LRController(
            opt, OneCycle(30), ReduceOnPlateau(patience=1), momentum=OneCycleMomentum(30)
        )
        return w, opt, controller

    def run(w, opt, controller, steps):
        for t in steps:
            controller.step(t)
            opt.zero_grad()
            loss = ((w - 2) ** 2).sum()
            loss.backward()
            opt.step()
            controller.report(round(loss.item(), 1), t)

    w, opt, controller = make()
    run(w, opt, controller, range(30))
    uninterrupted = w.detach().clone()

    w, opt, controller = make()
    run(w, opt, controller, range(12))
    state = json.loads(json.dumps(controller.state_dict()))
    opt_state = copy.deepcopy(opt.state_dict())
    resumed_w, resumed_opt, resumed = make(momentum=0.5)  # other hyperparameters at first
    with torch.no_grad():
        resumed_w.copy_(w)
    resumed_opt.load_state_dict(opt_state)
    resumed.load_state_dict(state)
    run(resumed_w, resumed_opt, resumed, range(12, 30))
    assert torch.equal(resumed_w.detach(), uninterrupted)


# --------------------------------------------------------------------------- configs, errors


@pytest.mark.parametrize("schedule", [s for s, _ in CLOSED_FORMS], ids=repr)
def test_config_round_trip(schedule):
    config = json.loads(json.dumps(schedule.to_config()))
    cls = MOMENTUM_SCHEDULES[config.pop("name")]
    assert cls(**config) == schedule


def test_numbers_are_stored_as_plain_python_numbers():
    s = OneCycleMomentum(torch.tensor(50).item(), max=torch.tensor(0.5), min=0)
    assert type(s.max) is float and type(s.min) is float and s == OneCycleMomentum(50, 0.3, 0.5, 0)
    assert LinearAnneal(4).to_config() == {"name": "linear", "steps": 4, "start": 0.5, "end": 0.99}


BAD = [
    (lambda: LinearAnneal(0), r"^Invalid steps: 0 \(must be an integer >= 1\)$"),
    (lambda: LinearAnneal(5, start=1.0), r"^Invalid start: 1\.0 \(must be a number in \[0, 1\)\)$"),
    (lambda: CosineAnneal(5, end=-0.1), r"^Invalid end: -0\.1 \(must be a number in \[0, 1\)\)$"),
    (lambda: CosineAnneal(5, end=math.nan), r"^Invalid end: nan \(must be a number in \[0, 1\)"),
    (lambda: OneCycleMomentum(1), r"^Invalid total: 1 \(must be an integer >= 2\)$"),
    (
        lambda: OneCycleMomentum(100, peak_at=0.01),
        r"^Invalid peak_at: 0\.01 \(must be a number in \(1/total, 1\) = \(0\.01, 1\)\)$",
    ),
    (lambda: OneCycleMomentum(10, max=0.99, min=1.0), r"^Invalid min: 1\.0 \(must be a number in"),
    (lambda: OneCycleMomentum(10, min=0.96), r"^Invalid min: 0\.96 \(must be <= max = 0\.95\)$"),
    (lambda: LinearAnneal(3)(-1), r"^Invalid step: -1 \(must be an integer >= 0\)$"),
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=lambda x: x if isinstance(x, str) else "")
def test_bad_arguments_name_argument_value_and_what_is_allowed(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("cls", MOMENTUM_SCHEDULES.values(), ids=lambda c: c.__name__)
def test_docstrings_state_the_equation(cls):
    assert issubclass(cls, MomentumSchedule)
    doc = inspect.getdoc(cls)
    assert "μ(t) =" in doc and "References" in doc
