"""Schedules against their closed forms and torch; the plateau controller against torch;
configs round trip; the controller resumes exactly."""

from __future__ import annotations

import copy
import inspect
import json
import math
import random

import pytest
import torch
from torch.optim import lr_scheduler

from trainlab.train import (
    SCHEDULES,
    Constant,
    Cosine,
    Exponential,
    InverseTime,
    LinearWarmup,
    LRController,
    OneCycle,
    Phases,
    ReduceOnPlateau,
    StepDecay,
    build_schedule,
)
from trainlab.train.schedules import CyclicCosine, cycle_ends

STEPS = [0, 1, 2, 3, 7, 9, 10, 11, 29, 30, 31, 99, 100, 101, 250, 1000]
PI = math.pi


def one_cycle_form(total, peak_at, start, end):
    p = peak_at * total - 1

    def s(t):
        t = min(t, total - 1)
        if t <= p:
            return start + (1 - start) * 0.5 * (1 - math.cos(PI * t / p))
        return end + (1 - end) * 0.5 * (1 + math.cos(PI * (t - p) / (total - 1 - p)))

    return s


def snapshot_form(total, cycles, floor=0.0):
    """Huang et al.'s α(t)/α₀ = ½(cos(π·mod(t − 1, ⌈T/M⌉)/⌈T/M⌉) + 1) at their t = ours + 1,
    raised to a floor; held at the floor after T."""
    c = math.ceil(total / cycles)

    def s(t):
        if t >= total:
            return floor
        t_paper = t + 1
        return floor + (1 - floor) * 0.5 * (math.cos(PI * ((t_paper - 1) % c) / c) + 1)

    return s


# (schedule, its closed form): every registry entry appears at least once.
CLOSED_FORMS = [
    (Constant(), lambda t: 1.0),
    (StepDecay(10), lambda t: 0.1 ** (t // 10)),
    (StepDecay(every=3, gamma=0.5), lambda t: 0.5 ** (t // 3)),
    (Exponential(0.99), lambda t: 0.99**t),
    (Exponential(1.0), lambda t: 1.0),
    (InverseTime(0.1), lambda t: 1 / (1 + 0.1 * t)),
    (InverseTime(0.0), lambda t: 1.0),
    (Cosine(100), lambda t: 0.5 * (1 + math.cos(PI * min(t, 100) / 100))),
    (Cosine(30, floor=0.1), lambda t: 0.1 + 0.9 * 0.5 * (1 + math.cos(PI * min(t, 30) / 30))),
    (LinearWarmup(10), lambda t: min(t, 10) / 10),
    (LinearWarmup(30, start=0.25), lambda t: 0.25 + 0.75 * min(t, 30) / 30),
    (OneCycle(100), one_cycle_form(100, 0.3, 1 / 25, 1e-4)),
    (OneCycle(31, peak_at=0.5, start=0.1, end=0.0), one_cycle_form(31, 0.5, 0.1, 0.0)),
    (CyclicCosine(300, 3), snapshot_form(300, 3)),
    (CyclicCosine(100, 7, floor=0.05), snapshot_form(100, 7, 0.05)),
]


def test_every_registry_entry_has_a_closed_form_test():
    assert {s.name for s, _ in CLOSED_FORMS} == set(SCHEDULES)
    assert list(SCHEDULES) == [
        "constant",
        "step",
        "exponential",
        "inverse_time",
        "cosine",
        "warmup",
        "one_cycle",
        "cyclic_cosine",
    ]


@pytest.mark.parametrize(("schedule", "form"), CLOSED_FORMS, ids=lambda x: repr(x)[:40])
def test_schedule_matches_its_closed_form(schedule, form):
    for t in STEPS:
        assert schedule(t) == pytest.approx(form(t), rel=0, abs=1e-12), t
        assert isinstance(schedule(t), float)


def test_hand_computed_values():
    assert StepDecay(10)(9) == 1.0 and StepDecay(10)(10) == 0.1
    assert Cosine(100)(50) == pytest.approx(0.5, abs=1e-15) and Cosine(100)(100) == 0.0
    assert Cosine(10, floor=0.2)(10) == pytest.approx(0.2, abs=1e-15)
    assert LinearWarmup(4)(0) == 0.0 and LinearWarmup(4)(2) == 0.5 and LinearWarmup(4)(4) == 1.0
    assert InverseTime(0.5)(2) == 0.5
    cycle = OneCycle(100, peak_at=0.3, start=0.04, end=1e-4)
    assert cycle(0) == pytest.approx(0.04, abs=1e-15)
    assert cycle(29) == 1.0  # p = 0.3·100 − 1 = 29, torch's peak step
    assert cycle(99) == pytest.approx(1e-4, abs=1e-15) and cycle(10**6) == cycle(99)


@pytest.mark.parametrize(
    ("total", "cycles", "floor"), [(300, 3, 0.0), (100, 7, 0.05), (10, 3, 0.0), (5, 5, 0.2)]
)
def test_cyclic_cosine_matches_the_snapshot_ensemble_formula_at_every_step(total, cycles, floor):
    schedule, form = CyclicCosine(total, cycles, floor=floor), snapshot_form(total, cycles, floor)
    for t in range(total + 20):
        assert schedule(t) == pytest.approx(form(t), rel=0, abs=1e-12), t


def test_cyclic_cosine_restarts_at_each_cycle_and_ends_where_the_snapshots_go():
    s = CyclicCosine(10, 3)  # c = ⌈10/3⌉ = 4: cycles t = 0..3, 4..7, 8..9 (cut short)
    assert s.cycle_length == 4
    assert [s(t) for t in (0, 4, 8)] == [1.0, 1.0, 1.0]  # every cycle restarts at 1
    assert s(2) == pytest.approx(0.5, abs=1e-15)  # half way down: cos(π/2)
    assert s(3) == pytest.approx(0.5 * (1 + math.cos(PI * 3 / 4)), abs=1e-15)  # last of cycle 1
    assert s(10) == s(10**6) == 0.0  # held at the floor after T
    assert cycle_ends(s) == [4, 8, 10]  # steps done when each cycle ends
    assert cycle_ends(CyclicCosine(300, 3)) == [100, 200, 300]
    one = CyclicCosine(40, 1, floor=0.1)  # one cycle: the cosine, but ending above the floor
    assert [one(t) for t in range(40)] == [Cosine(40, floor=0.1)(t) for t in range(40)]


def test_cycle_ends_count_the_phases_before_the_cycles():
    warm = [{"name": "warmup", "steps": 5}]
    s = build_schedule([*warm, {"name": "cyclic_cosine", "total": 30, "cycles": 3}])
    assert cycle_ends(s) == [15, 25, 35]
    assert [s(t) for t in (5, 15, 25)] == [1.0, 1.0, 1.0]  # restarts right after each end
    longer = build_schedule(
        [*warm, {"name": "cyclic_cosine", "total": 30, "cycles": 3, "duration": 40}]
    )
    assert cycle_ends(longer) == [15, 25, 35]
    with pytest.raises(ValueError, match=r"^Invalid schedule: .* \(must have exactly one 'cyc"):
        cycle_ends(Cosine(30))
    two = Phases([(10, CyclicCosine(10, 2)), (None, CyclicCosine(10, 2))])
    with pytest.raises(ValueError, match=r"must have exactly one 'cyclic_cosine' phase .*has 2"):
        cycle_ends(two)
    cut = Phases([(20, CyclicCosine(30, 3)), (None, Constant())])
    with pytest.raises(ValueError, match=r"^Invalid duration of the cyclic_cosine phase: 20 \(mu"):
        cycle_ends(cut)


def test_phases_switch_at_the_boundaries_with_relative_steps():
    warmup, decay, cosine = LinearWarmup(10), StepDecay(5, 0.5), Cosine(30, floor=0.1)
    s = Phases([(10, warmup), (20, decay), (None, cosine)])
    expected = {
        0: warmup(0),  # first step of phase 0
        9: warmup(9),  # last step of phase 0
        10: decay(0),  # first step of phase 1
        14: decay(4),
        15: decay(5),
        29: decay(19),  # last step of phase 1
        30: cosine(0),  # first step of the open-ended last phase
        59: cosine(29),
        60: cosine(30),
        5000: cosine(4970),
    }
    assert {t: s(t) for t in expected} == expected
    assert s(9) == 0.9 and s(10) == 1.0 and s(29) == 0.125 and s(30) == 1.0 and s(5000) == 0.1


def test_a_finite_last_phase_keeps_going():
    s = Phases([(3, Constant()), (5, Exponential(0.5))])
    assert [s(t) for t in range(3, 12)] == [0.5**k for k in range(9)]


ONE_CYCLE_CONFIGS = [  # total, peak_at, start, end
    (100, 0.3, 1 / 25, 1e-4),
    (1000, 0.3, 1 / 25, 1 / 25 / 1e4),  # torch's defaults
    (37, 0.25, 0.1, 1e-3),
    (10, 0.2, 0.5, 0.01),
    (50, 0.9, 1 / 25, 1e-4),
]


@pytest.mark.parametrize(("total", "peak_at", "start", "end"), ONE_CYCLE_CONFIGS)
def test_one_cycle_matches_torch(total, peak_at, start, end):
    peak = 0.3
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
    torch_schedule = lr_scheduler.OneCycleLR(
        opt,
        max_lr=peak,
        total_steps=total,
        pct_start=peak_at,
        anneal_strategy="cos",
        three_phase=False,
        cycle_momentum=False,
        div_factor=1 / start,
        final_div_factor=start / end,
    )
    ours = OneCycle(total, peak_at=peak_at, start=start, end=end)
    for t in range(total):
        assert peak * ours(t) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        if t < total - 1:
            opt.step()  # torch warns if the scheduler steps before the optimizer
            torch_schedule.step()


PLATEAU_CONFIGS = [
    {},
    {"patience": 0},
    {"patience": 2, "factor": 0.5, "cooldown": 2},
    {"mode": "max", "patience": 1, "threshold": 0.05},
    {"mode": "min", "patience": 1, "threshold": 0.02, "threshold_mode": "abs", "cooldown": 1},
    {"mode": "max", "patience": 3, "threshold": 0.0, "threshold_mode": "abs", "factor": 0.3},
    {"patience": 0, "factor": 0.5, "min_factor": 0.1},
]


def metric_walk(n, seed):
    """A noisy metric that improves, then stalls: plateaus, drops and cooldowns all happen."""
    rng = random.Random(seed)
    values, x = [], 1.0
    for t in range(n):
        x += (-0.05 if t < n // 4 else 0.0) + rng.choice([-0.02, 0.0, 0.01, 0.02])
        values.append(round(x, 2))
    return values


@pytest.mark.parametrize("options", PLATEAU_CONFIGS, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_reduce_on_plateau_matches_torch(options, seed):
    base = 0.2
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    torch_options = {k: v for k, v in options.items() if k != "min_factor"}
    torch_options["min_lr"] = base * options.get("min_factor", 0.0)
    reference = lr_scheduler.ReduceLROnPlateau(opt, eps=0.0, **torch_options)
    plateau = ReduceOnPlateau(**options)
    lrs, torch_lrs = [], []
    for step, loss in enumerate(metric_walk(80, seed)):
        metric = 2.0 - loss if options.get("mode") == "max" else loss  # an accuracy for "max"
        lrs.append(base * plateau.update(metric, step))
        reference.step(metric)
        torch_lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx(torch_lrs, rel=1e-12, abs=0)
    assert plateau.factor < 1.0  # the sequence does reach a plateau
    assert plateau.state.num_bad_epochs == reference.num_bad_epochs
    assert plateau.state.cooldown_counter == reference.cooldown_counter


def test_plateau_ignores_reports_before_start_step_and_stops_at_min_factor():
    plateau = ReduceOnPlateau(patience=0, min_factor=0.005, start_step=5)
    factors = [plateau.update(float(step), step) for step in range(10)]  # worse every time
    # steps 0-4 ignored; step 5 sets the baseline; each later report drops by 10×, down to 0.005
    assert factors == [1.0] * 6 + [0.1, 0.1 * 0.1, 0.005, 0.005]
    assert plateau.state.best == 5.0


def test_plateau_state_is_json_and_resumes_in_lockstep():
    metrics = metric_walk(60, 3)
    a = ReduceOnPlateau(patience=2, cooldown=1, factor=0.5)
    for step, metric in enumerate(metrics[:25]):
        a.update(metric, step)
    fresh = ReduceOnPlateau(patience=2, cooldown=1, factor=0.5)
    assert fresh.state_dict() == {
        "best": None,
        "num_bad_epochs": 0,
        "cooldown_counter": 0,
        "factor": 1.0,
    }
    fresh.load_state_dict(json.loads(json.dumps(a.state_dict(), allow_nan=False)))
    for step, metric in enumerate(metrics[25:], start=25):
        assert fresh.update(metric, step) == a.update(metric, step)
        assert fresh.state_dict() == a.state_dict()


def test_non_finite_metrics_are_bad_reports():
    plateau = ReduceOnPlateau(patience=1)
    assert plateau.update(1.0, 0) == 1.0
    assert plateau.update(math.nan, 1) == 1.0
    assert plateau.update(-math.inf, 2) == pytest.approx(0.1)
    assert plateau.state.best == 1.0
    json.dumps(plateau.state_dict(), allow_nan=False)


ROUND_TRIP = [s for s, _ in CLOSED_FORMS] + [
    Phases([(100, LinearWarmup(100)), (None, Cosine(900))]),
    Phases([(50, LinearWarmup(100, start=0.1)), (200, StepDecay(20)), (300, Cosine(300))]),
    Phases([(5, Constant())]),
    Phases(((10, OneCycle(10, peak_at=0.5)), (None, Exponential(0.9)))),
    Phases([(5, LinearWarmup(5)), (None, CyclicCosine(30, 3, floor=0.1))]),
]


@pytest.mark.parametrize("schedule", ROUND_TRIP, ids=repr)
def test_config_round_trip(schedule):
    config = json.loads(json.dumps(schedule.to_config()))
    rebuilt = build_schedule(config)
    assert rebuilt == schedule and type(rebuilt) is type(schedule)
    assert [rebuilt(t) for t in STEPS] == [schedule(t) for t in STEPS]


def test_configs_read_like_the_examples():
    assert build_schedule({"name": "cosine", "total": 1000}) == Cosine(1000)
    assert Cosine(1000).to_config() == {"name": "cosine", "total": 1000, "floor": 0.0}
    spec = [{"name": "warmup", "steps": 100}, {"name": "cosine", "total": 900}]
    schedule = build_schedule(spec)
    assert schedule == Phases([(100, LinearWarmup(100)), (None, Cosine(900))])
    assert schedule.to_config() == [
        {"name": "warmup", "steps": 100, "start": 0.0},
        {"name": "cosine", "total": 900, "floor": 0.0},
    ]
    explicit = [{"name": "step", "every": 5, "duration": 20}, {"name": "constant", "duration": 7}]
    assert build_schedule(explicit) == Phases([(20, StepDecay(5)), (7, Constant())])
    assert build_schedule(explicit).to_config()[1] == {"name": "constant", "duration": 7}


def test_numbers_are_stored_as_plain_python_numbers():
    s = StepDecay(torch.tensor(4).item(), gamma=torch.tensor(0.5))
    assert type(s.gamma) is float and s == StepDecay(4, 0.5)
    json.dumps(s.to_config())


NAMES = (
    "'constant', 'step', 'exponential', 'inverse_time', 'cosine', 'warmup', 'one_cycle', "
    "'cyclic_cosine'"
)
BAD = [
    (lambda: StepDecay(0), r"^Invalid every: 0 \(must be an integer >= 1\)$"),
    (lambda: StepDecay(2.0), r"^Invalid every: 2\.0 \(must be an integer >= 1\)$"),
    (lambda: StepDecay(10, 0.0), r"^Invalid gamma: 0\.0 \(must be a number in \(0, 1\]\)$"),
    (lambda: StepDecay(10, 1.5), r"^Invalid gamma: 1\.5 \(must be a number in \(0, 1\]\)$"),
    (lambda: Exponential(math.nan), r"^Invalid gamma: nan \(must be a number in \(0, 1\]\)$"),
    (lambda: Exponential(True), r"^Invalid gamma: True"),
    (lambda: InverseTime(-0.1), r"^Invalid decay: -0\.1 \(must be a finite number >= 0\)$"),
    (lambda: Cosine(0), r"^Invalid total: 0 \(must be an integer >= 1\)$"),
    (lambda: Cosine(10, floor=1.5), r"^Invalid floor: 1\.5 \(must be a number in \[0, 1\]\)$"),
    (lambda: LinearWarmup(-5), r"^Invalid steps: -5 \(must be an integer >= 1\)$"),
    (lambda: LinearWarmup(5, start=-0.1), r"^Invalid start: -0\.1 \(must be a number in \[0, 1"),
    (lambda: OneCycle(1), r"^Invalid total: 1 \(must be an integer >= 2\)$"),
    (
        lambda: OneCycle(100, peak_at=0.01),
        r"^Invalid peak_at: 0\.01 \(must be a number in \(1/total, 1\) = \(0\.01, 1\)\)$",
    ),
    (lambda: OneCycle(100, peak_at=1.0), r"^Invalid peak_at: 1\.0 \(must be a number in \(1/t"),
    (lambda: OneCycle(100, end=2.0), r"^Invalid end: 2\.0 \(must be a number in \[0, 1\]\)$"),
    (lambda: CyclicCosine(10, 0), r"^Invalid cycles: 0 \(must be an integer >= 1\)$"),
    (
        lambda: CyclicCosine(9, 4),  # ⌈9/4⌉ = 3-step cycles fill 9 steps in 3: no 4th
        r"^Invalid cycles: 4 \(must give every cycle a step: cycles of ⌈total/cycles⌉ = 3 "
        r"steps fill total = 9 steps in 3; choose cycles = 3",
    ),
    (lambda: CyclicCosine(3, 5), r"^Invalid cycles: 5 \(must give every cycle a step"),
    (lambda: CyclicCosine(10, 2, floor=-0.5), r"^Invalid floor: -0\.5 \(must be a number in"),
    (lambda: Cosine(10)(-1), r"^Invalid step: -1 \(must be an integer >= 0\)$"),
    (lambda: Constant()(1.5), r"^Invalid step: 1\.5 \(must be an integer >= 0\)$"),
    (lambda: Phases([]), r"^Invalid phases: \[\] \(must be a non-empty list of \(steps, sch"),
    (lambda: Phases([Constant()]), r"^Invalid phase 0: Constant\(\) \(must be a pair \(steps, "),
    (
        lambda: Phases([(None, Constant()), (None, Constant())]),
        r"^Invalid steps of phase 0: None \(only the last phase may be None\)$",
    ),
    (
        lambda: Phases([(0, Constant()), (None, Constant())]),
        r"^Invalid steps of phase 0: 0 \(must be an integer >= 1\)$",
    ),
    (
        lambda: Phases([(5, lambda t: 1.0)]),
        r"^Invalid schedule of phase 0: <function .*> \(must be a trainlab schedule other than",
    ),
    (
        lambda: Phases([(5, Phases([(None, Constant())]))]),
        r"^Invalid schedule of phase 0: Phases\(.*\) \(must be a trainlab schedule other than",
    ),
    (
        lambda: build_schedule({"name": "cosin", "total": 5}),
        rf"^Invalid schedule name: 'cosin' \(must be one of {NAMES}\)$",
    ),
    (lambda: build_schedule({"total": 5}), r"^Invalid schedule name: None \(must be one of"),
    (
        lambda: build_schedule({"name": "cosine", "totl": 5}),
        r"^Invalid key for 'cosine': 'totl' \(must be one of 'name', 'total', 'floor'\)$",
    ),
    (
        lambda: build_schedule({"name": "cosine", "total": 5, "duration": 5}),
        r"^Invalid key for 'cosine': 'duration' \(must be one of 'name', 'total', 'floor'\)$",
    ),
    (
        lambda: build_schedule([{"name": "warmup", "step": 5}]),
        r"^Invalid key for 'warmup': 'step' \(must be one of 'name', 'steps', 'start', 'dur",
    ),
    (
        lambda: build_schedule({"name": "one_cycle"}),
        r"^Invalid config for 'one_cycle': \{'name': 'one_cycle'\} \(missing 'total'\)$",
    ),
    (
        lambda: build_schedule([{"name": "exponential", "gamma": 0.9}, {"name": "constant"}]),
        r"^Invalid duration of phase 0: None \(must be given: 'exponential' has no end\)$",
    ),
    (lambda: build_schedule([]), r"^Invalid schedule config: \[\] \(must be a dict with a 'n"),
    (lambda: build_schedule("cosine"), r"^Invalid schedule config: 'cosine' \(must be a dict"),
    (lambda: build_schedule(["cosine"]), r"^Invalid config of phase 0: 'cosine' \(must be a d"),
    (lambda: ReduceOnPlateau(mode="mean"), r"^Invalid mode: 'mean' \(must be one of 'min', 'max'"),
    (lambda: ReduceOnPlateau(factor=1.0), r"^Invalid factor: 1\.0 \(must be a number in \(0, 1\)"),
    (lambda: ReduceOnPlateau(factor=0), r"^Invalid factor: 0 \(must be a number in \(0, 1\)\)$"),
    (lambda: ReduceOnPlateau(patience=-1), r"^Invalid patience: -1 \(must be an integer >= 0\)$"),
    (lambda: ReduceOnPlateau(threshold=1.0), r"^Invalid threshold: 1\.0 \(must be a number in \["),
    (
        lambda: ReduceOnPlateau(threshold=-1.0, threshold_mode="abs"),
        r"^Invalid threshold: -1\.0 \(must be a finite number >= 0\)$",
    ),
    (lambda: ReduceOnPlateau(threshold_mode="x"), r"^Invalid threshold_mode: 'x' \(must be one of"),
    (lambda: ReduceOnPlateau(cooldown=0.5), r"^Invalid cooldown: 0\.5 \(must be an integer >= 0"),
    (lambda: ReduceOnPlateau(min_factor=2), r"^Invalid min_factor: 2 \(must be a number in \[0, 1"),
    (lambda: ReduceOnPlateau(start_step=-3), r"^Invalid start_step: -3 \(must be an integer >= 0"),
    (lambda: ReduceOnPlateau().update("low", 0), r"^Invalid metric: 'low' \(must be a real number"),
    (lambda: ReduceOnPlateau().update(1.0, -1), r"^Invalid step: -1 \(must be an integer >= 0\)$"),
    (
        lambda: ReduceOnPlateau().load_state_dict({"factor": 1.0}),
        r"^Invalid plateau state: \{'factor': 1\.0\} \(must be a dict with keys best, num_bad_",
    ),
    (
        lambda: ReduceOnPlateau().load_state_dict(
            {"best": None, "num_bad_epochs": 0, "cooldown_counter": 0, "factor": 1.5}
        ),
        r"^Invalid factor: 1\.5 \(must be a number in \[0, 1\]\)$",
    ),
]


@pytest.mark.parametrize(("make", "message"), BAD, ids=lambda x: x if isinstance(x, str) else "")
def test_bad_arguments_name_argument_value_and_what_is_allowed(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def make_optimizer(lrs=(0.1, 0.03)):
    torch.manual_seed(0)
    groups = [{"params": [torch.randn(3, requires_grad=True)], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0], momentum=0.9)


def train_step(opt):
    opt.zero_grad()
    loss = sum((p**2).sum() for group in opt.param_groups for p in group["params"])
    loss.backward()
    opt.step()


def test_controller_multiplies_base_schedule_and_plateau_for_every_group():
    opt = make_optimizer()
    plateau = ReduceOnPlateau(patience=0)
    controller = LRController(opt, Cosine(10), plateau)
    assert controller.base_lrs == [0.1, 0.03]
    assert controller.step(5) == [0.1 * Cosine(10)(5), 0.03 * Cosine(10)(5)]
    assert [g["lr"] for g in opt.param_groups] == controller.step(5)
    controller.report(1.0, 5)
    assert controller.report(2.0, 6) == pytest.approx(0.1)  # applies from the next step
    assert controller.step(7) == [0.1 * Cosine(10)(7) * 0.1, 0.03 * Cosine(10)(7) * 0.1]


def test_controller_keeps_a_tensor_lr_a_tensor():
    opt = torch.optim.Adam([torch.zeros(2, requires_grad=True)], lr=torch.tensor(0.01))
    LRController(opt, LinearWarmup(4)).step(2)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)
    assert opt.param_groups[0]["lr"].item() == pytest.approx(0.005)


def test_controller_errors():
    opt = make_optimizer()
    with pytest.raises(ValueError, match=r"^Invalid plateau: None \(report needs a ReduceOnP"):
        LRController(opt, Constant()).report(1.0, 0)
    with pytest.raises(ValueError, match=r"^Invalid schedule: 0\.5 \(must be a callable step"):
        LRController(opt, 0.5)
    with pytest.raises(ValueError, match=r"^Invalid plateau: 'min' \(must be a ReduceOnPlateau"):
        LRController(opt, Constant(), "min")
    with pytest.raises(ValueError, match=r"^Invalid schedule factor: -1\.0 \(must be a finite n"):
        LRController(opt, lambda t: -1.0).step(0)
    with pytest.raises(ValueError, match=r"^Invalid base_lrs: \[0\.1\] \(must be a list of 2 lrs"):
        LRController(opt, Constant()).load_state_dict({"base_lrs": [0.1], "plateau": None})
    with pytest.raises(ValueError, match=r"^Invalid plateau state: None \(must match a controlle"):
        LRController(opt, Constant(), ReduceOnPlateau()).load_state_dict(
            {"base_lrs": [0.1, 0.03], "plateau": None}
        )
    opt.param_groups[1]["lr"] = -0.1
    with pytest.raises(ValueError, match=r"^Invalid learning rate \(lr\): -0\.1 \(must be a fin"):
        LRController(opt, Constant())


RUN, SAVE_AT, WARMUP = 50, 23, 8


def stalling_loss(step):
    """Falls until step 14, then flat: the plateau drops during the run, before and after 23."""
    return round(max(1.0 - 0.05 * step, 0.3), 6)


def make_controller(opt):
    schedule = build_schedule(
        [{"name": "warmup", "steps": WARMUP}, {"name": "cosine", "total": 42}]
    )
    plateau = ReduceOnPlateau(patience=2, cooldown=1, factor=0.5, start_step=WARMUP)
    return LRController(opt, schedule, plateau)


def run_steps(opt, controller, steps):
    lrs = []
    for step in steps:
        lrs.append(controller.step(step))
        assert [g["lr"] for g in opt.param_groups] == lrs[-1]
        train_step(opt)
        controller.report(stalling_loss(step), step)
    return lrs


def test_resume_continues_with_exactly_the_same_learning_rates():
    opt = make_optimizer()
    controller = make_controller(opt)
    uninterrupted = run_steps(opt, controller, range(RUN))
    assert controller.plateau.factor == 0.5**9  # drops happen ...

    opt = make_optimizer()
    controller = make_controller(opt)
    first = run_steps(opt, controller, range(SAVE_AT + 1))
    state = json.loads(json.dumps(controller.state_dict(), allow_nan=False))
    opt_state = copy.deepcopy(opt.state_dict())
    assert 0 < state["plateau"]["factor"] < 1 and state["plateau"]["num_bad_epochs"] > 0

    resumed_opt = make_optimizer(lrs=(1.0, 1.0))
    resumed_opt.load_state_dict(opt_state)  # its lrs are scheduled values, not base lrs
    resumed = make_controller(resumed_opt)
    assert resumed.base_lrs != [0.1, 0.03]
    resumed.load_state_dict(state)
    second = run_steps(resumed_opt, resumed, range(SAVE_AT + 1, RUN))
    assert first + second == uninterrupted  # exactly, not approximately
    assert second[-1][0] < first[-1][0] * 0.5**2  # ... and after the save


def test_no_reduction_during_warmup_even_when_the_metric_is_bad():
    opt = make_optimizer(lrs=(0.1,))
    schedule = Phases([(WARMUP, LinearWarmup(WARMUP)), (None, Constant())])
    controller = LRController(opt, schedule, ReduceOnPlateau(patience=0, start_step=WARMUP))
    lrs = []
    for step in range(WARMUP + 3):
        lrs.append(controller.step(step)[0])
        controller.report(float(step), step)  # worse at every report
    assert lrs[:WARMUP] == [0.1 * t / WARMUP for t in range(WARMUP)]  # plain warmup
    assert lrs[WARMUP:] == [0.1, 0.1, 0.1 * 0.1]  # baseline at 8, worse at 9, applied at 10
    eager = ReduceOnPlateau(patience=0)  # without start_step it would drop during warmup
    assert [eager.update(float(t), t) for t in range(3)] == [1.0, 0.1, 0.1 * 0.1]


@pytest.mark.parametrize("cls", [*SCHEDULES.values(), Phases], ids=lambda c: c.__name__)
def test_docstrings_state_the_equation(cls):
    doc = inspect.getdoc(cls)
    assert "s(t) =" in doc
    if cls not in (Constant, Phases):
        assert "References" in doc
