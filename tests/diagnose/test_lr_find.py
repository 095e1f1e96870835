"""The learning-rate range test: exact restore, stopping, suggestions, bad input, plot."""

from __future__ import annotations

import copy
import json
import math
import random
import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

import trainlab.optim as trainlab_optim
from trainlab.data import Batches
from trainlab.data import loader as data_loader
from trainlab.diagnose.lr_find import (
    METHODS,
    LRFindResult,
    diverged,
    lr_find,
    plot,
    settled_curve,
    smooth,
    suggest_all,
    suggest_minimum,
    suggest_steepest,
    suggest_valley,
    suggested_overrides,
    sweep_lrs,
)
from trainlab.optim import _fused
from trainlab.train.sources import LoaderBatches
from trainlab.train.state_tree import rng_state, set_rng_state

# --- helpers -------------------------------------------------------------------------------


def data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()  # 3 classes
    return x, y


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 3)
    )


def train(model, optimizer, batches, steps: int, loss_fn=F.cross_entropy) -> None:
    """``steps`` optimizer steps on the source's batches, across epochs."""
    model.train()
    done = 0
    while done < steps:
        for x, y in batches:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            done += 1
            if done == steps:
                return


def assert_same(a, b, where: str = "state") -> None:
    """Two state trees are identical: same structure, bit-identical tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}/{i}")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def assert_rng_same(a: dict, b: dict) -> None:
    assert torch.equal(a["torch"], b["torch"])
    assert_same(a["numpy"], b["numpy"], "numpy rng")
    assert a["python"] == b["python"]


def snapshot(model, optimizer, batches):
    """What must come back: everything a later training step reads."""
    return {
        "model": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "batches": batches.state_dict(),
        "rng": rng_state(),
    }


def assert_restored(before: dict, model, optimizer, batches) -> None:
    after = snapshot(model, optimizer, batches)
    assert_same(before["model"], after["model"], "model")
    assert len(before["grads"]) == len(after["grads"])
    for g0, g1 in zip(before["grads"], after["grads"]):
        assert (g0 is None) == (g1 is None)
        if g0 is not None:
            assert torch.equal(g0, g1)
    assert before["modes"] == after["modes"]
    assert_same(before["optimizer"], after["optimizer"], "optimizer")
    assert before["batches"] == after["batches"]
    assert_rng_same(before["rng"], after["rng"])


def advance_rngs() -> None:
    """Leave the global RNGs somewhere other than a fresh seed."""
    torch.rand(3)
    np.random.rand(2)
    random.random()


# --- exact restore --------------------------------------------------------------------------


def adam_that_stepped(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)


def fresh_sgd_momentum(model):
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)


def trainlab_adamw(model):
    return trainlab_optim.AdamW(model.parameters(), lr=1e-3, backend="eager")


@pytest.mark.parametrize(
    ("make_optimizer", "warm_steps"),
    [
        pytest.param(adam_that_stepped, 5, id="torch-adam-stepped"),
        pytest.param(fresh_sgd_momentum, 0, id="torch-sgd-momentum-fresh"),
        pytest.param(trainlab_adamw, 3, id="trainlab-adamw-stepped"),
    ],
)
def test_everything_is_restored_and_training_after_is_bit_identical(make_optimizer, warm_steps):
    x, y = data()
    model = mlp()
    optimizer = make_optimizer(model)
    batches = Batches(x, y, 32, seed=1)
    batches.load_state_dict({**batches.state_dict(), "epoch": 1, "batch": 3})  # mid-epoch
    # stepping leaves an abandoned iteration: the next iter() starts the next epoch
    train(model, optimizer, batches, warm_steps)
    model[1].eval()  # a frozen BatchNorm: its own mode must survive the sweep's train()
    # leave a gradient on the parameters, as a caller accumulating gradients would
    F.cross_entropy(model(x[:16]), y[:16]).backward()
    advance_rngs()
    twin = copy.deepcopy((model, optimizer, batches))  # never sees lr_find
    before = snapshot(model, optimizer, batches)
    had_state = len(optimizer.state)

    result = lr_find(
        model, batches, loss_fn=F.cross_entropy, optimizer=optimizer, steps=40, end=1.0
    )

    assert len(result.losses) > 10  # it did train (and create state) before restoring
    assert_restored(before, model, optimizer, batches)
    assert len(optimizer.state) == had_state  # a fresh optimizer has no state again
    assert [g["lr"] for g in optimizer.param_groups] == [
        g["lr"] for g in before["optimizer"]["param_groups"]
    ]
    train(model, optimizer, batches, 12)
    twin_model, twin_optimizer, twin_batches = twin
    set_rng_state(before["rng"])  # the twin starts from the caller's RNG, as lr_find left it
    train(twin_model, twin_optimizer, twin_batches, 12)
    assert_same(twin_model.state_dict(), model.state_dict(), "trained model")
    assert_same(twin_optimizer.state_dict(), optimizer.state_dict(), "trained optimizer")


def test_a_fresh_momentum_optimizer_ends_without_state():
    # The pytorch-lr-finder/fastai bug class: momentum buffers of the sweep kept afterwards.
    x, y = data()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_find(model, (x, y), loss_fn=F.cross_entropy, optimizer=optimizer, steps=20)
    assert all(p.grad is None for p in model.parameters())  # as before: never a backward
    assert len(optimizer.state) == 0
    assert optimizer.state_dict()["state"] == {}
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_the_fused_backend_is_restored_exactly(monkeypatch):
    # the fused path traced by dynamo alone (no inductor): the same flat buffers, faster
    monkeypatch.setattr(_fused, "BACKEND", "eager")
    _fused.compiled_update.cache_clear()
    try:
        x, y = data()
        model = mlp()
        optimizer = trainlab_optim.Adam(model.parameters(), lr=1e-3, backend="fused")
        batches = Batches(x, y, 32, seed=2)
        train(model, optimizer, batches, 3)
        assert any(part["fused"] for part in optimizer.backend_info())
        twin = copy.deepcopy((model, optimizer, batches))
        before = snapshot(model, optimizer, batches)
        lr_find(model, batches, loss_fn=F.cross_entropy, optimizer=optimizer, steps=20)
        assert_restored(before, model, optimizer, batches)
        train(model, optimizer, batches, 5)
        set_rng_state(before["rng"])
        twin_model, twin_optimizer, twin_batches = twin
        train(twin_model, twin_optimizer, twin_batches, 5)
        assert_same(twin_model.state_dict(), model.state_dict(), "trained model")
    finally:
        _fused.compiled_update.cache_clear()


def test_a_dataloader_source_is_restored_with_its_sampler_and_generator():
    x, y = data()
    source = LoaderBatches(data_loader(TensorDataset(x, y), 32, seed=4))
    source.load_state_dict(
        {
            "epoch": 2,
            "batch": 3,
            "sampler": {**source.state_dict()["sampler"], "epoch": 2, "consumed": 96},
        }
    )
    twin = copy.deepcopy(source)
    before = source.state_dict()
    generator = source.loader.generator.get_state()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lr_find(model, source, loss_fn=F.cross_entropy, optimizer=optimizer, steps=30)
    assert source.state_dict() == before
    assert torch.equal(source.loader.generator.get_state(), generator)
    rest, twin_rest = list(source), list(twin)  # the rest of epoch 2
    assert len(rest) == len(twin_rest) == 5
    for (x0, y0), (x1, y1) in zip(rest, twin_rest):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert source.state_dict() == twin.state_dict()


def test_tensor_learning_rate_and_scheduler_are_restored():
    x, y = data()
    model = mlp()
    lr = torch.tensor(0.01)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, foreach=False)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    scheduler_before = copy.deepcopy(scheduler.state_dict())
    lr_before = float(optimizer.param_groups[0]["lr"])
    lr_find(
        model,
        (x, y),
        loss_fn=F.cross_entropy,
        optimizer=optimizer,
        steps=20,
        scheduler=scheduler,
    )
    assert optimizer.param_groups[0]["lr"] is lr  # the caller's tensor, not a copy
    assert float(lr) == lr_before
    assert_same(scheduler_before, scheduler.state_dict(), "scheduler")
    scheduler.step()
    assert float(optimizer.param_groups[0]["lr"]) == lr_before * 0.5  # step 4: halved


def test_restored_when_the_loss_raises_midway():
    x, y = data()
    model = mlp()
    optimizer = adam_that_stepped(model)
    batches = Batches(x, y, 32)
    train(model, optimizer, batches, 4)
    before = snapshot(model, optimizer, batches)
    calls = []

    def failing_loss(out, target):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("out of memory, say")
        return F.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="out of memory"):
        lr_find(model, batches, loss_fn=failing_loss, optimizer=optimizer, steps=30)
    assert len(calls) == 7
    assert_restored(before, model, optimizer, batches)


def test_buffers_reassigned_by_a_module_are_put_back():
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(8, 3)
            self.register_buffer("seen", torch.zeros(()))
            self.register_buffer("scratch", torch.zeros(3), persistent=False)

        def forward(self, x):
            self.seen = self.seen + len(x)  # a new tensor every call
            self.scratch.add_(1)  # not in state_dict()
            return self.linear(x)

    model = Counter()
    seen = model.seen
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    lr_find(model, data(), loss_fn=F.cross_entropy, optimizer=optimizer, steps=10)
    assert model.seen is seen and float(seen) == 0
    assert torch.equal(model.scratch, torch.zeros(3))


# --- determinism ------------------------------------------------------------------------------


def test_a_seed_makes_the_curve_repeat_and_leaves_the_callers_rng():
    x, y = data()
    model = mlp()  # dropout: the curve depends on the RNG
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    batches = Batches(x, y, 32, seed=5)  # the same batches for every seed

    def run(seed):
        return lr_find(
            model, batches, loss_fn=F.cross_entropy, optimizer=optimizer, steps=30, seed=seed
        )

    advance_rngs()
    rng = rng_state()
    first, second = run(7), run(7)
    assert first.losses == second.losses and first.smoothed == second.smoothed
    assert first.suggestions == second.suggestions
    assert run(8).losses != first.losses
    assert_rng_same(rng, rng_state())
    torch.manual_seed(7)  # the seeded sweep starts from exactly torch.manual_seed(seed)
    np.random.seed(7)
    random.seed(7)
    assert run(None).losses == first.losses


def test_a_tensor_pair_is_batched_as_trainlab_batches():
    x, y = data()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"loss_fn": F.cross_entropy, "optimizer": optimizer, "steps": 15, "seed": 3}
    from_pair = lr_find(model, (x, y), batch_size=16, **kwargs)
    from_batches = lr_find(model, Batches(x, y, 16, seed=3), **kwargs)
    assert from_pair.losses == from_batches.losses


def test_param_groups_keep_their_ratio_and_a_zero_group_stays_frozen():
    x, y = data()
    model = mlp()
    optimizer = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.02},
            {"params": model[4].parameters(), "lr": 0.01},
            {"params": model[1].parameters(), "lr": 0.0},
        ]
    )
    seen = []

    def loss_fn(out, target):
        seen.append([g["lr"] for g in optimizer.param_groups])
        return F.cross_entropy(out, target)

    result = lr_find(
        model, (x, y), loss_fn=loss_fn, optimizer=optimizer, start=1e-4, end=1e-1, steps=10
    )
    assert [s[0] for s in seen] == pytest.approx(result.lrs, rel=1e-12)
    assert [s[1] for s in seen] == pytest.approx([lr / 2 for lr in result.lrs], rel=1e-12)
    assert all(s[2] == 0.0 for s in seen)
    assert [g["lr"] for g in optimizer.param_groups] == [0.02, 0.01, 0.0]


# --- stopping --------------------------------------------------------------------------------


def test_stops_when_the_loss_diverges():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g)
    model = nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    result = lr_find(model, Batches(x, y, 32), loss_fn=F.mse_loss, optimizer=optimizer, end=10.0)
    assert result.stopped_early
    assert len(result.losses) < 100
    assert re.fullmatch(
        r"the smoothed loss \S+ exceeded 4 × its best \S+ at lr \S+ \(step \d+\)", result.reason
    )
    # the rule on the recorded curve: from step 10 on, only the last point exceeds 4 × best
    smoothed = result.smoothed
    exceeds = [t for t in range(11, len(smoothed)) if smoothed[t] > 4 * min(smoothed[10:t])]
    assert exceeds == [len(smoothed) - 1]
    assert result.lrs == sweep_lrs(1e-7, 10.0, 100)[: len(result.losses)]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_is_recorded_and_stops_the_sweep(bad):
    x, y = data()
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = snapshot(model, optimizer, Batches(x, y, 64))

    def loss_fn(out, target):
        loss = F.cross_entropy(out, target)
        return loss * bad if optimizer.param_groups[0]["lr"] > 1e-2 else loss

    result = lr_find(model, (x, y), loss_fn=loss_fn, optimizer=optimizer)
    assert result.stopped_early
    assert not math.isfinite(result.losses[-1]) and all(map(math.isfinite, result.losses[:-1]))
    assert result.lrs[-1] > 1e-2 >= result.lrs[-2]
    assert re.fullmatch(rf"the loss was {bad} at lr \S+ \(step \d+\)", result.reason)
    assert result.suggestion is not None and result.suggestion <= 1e-2
    text = json.dumps(result.to_dict(), allow_nan=False)  # the --json contract: no NaN
    assert json.loads(text)["losses"][-1] is None
    assert_same(before["model"], model.state_dict(), "model")


def test_an_early_spike_neither_stops_the_sweep_nor_moves_the_suggestion():
    x, y = data()

    def sweep(factor):
        model = mlp()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        calls = []

        def spiky(out, target):
            calls.append(1)
            loss = F.cross_entropy(out, target)
            return loss * factor if len(calls) == 2 else loss  # an awful second batch

        return lr_find(model, (x, y), loss_fn=spiky, optimizer=optimizer, seed=0)

    plain, spiked = sweep(1.0), sweep(10.0)
    assert spiked.smoothed[1] > 4 * spiked.smoothed[0]  # a naive test would stop at step 1
    assert len(spiked.losses) == len(plain.losses) == 100
    for method in METHODS:
        assert spiked.suggestions[method] == pytest.approx(plain.suggestions[method], rel=0.25)
    # the spike fades slowly from the plain smoothed loss: read naively, it is the valley
    assert suggest_valley(spiked.lrs[10:], spiked.smoothed[10:]) < 1e-4 < spiked.suggestion


# --- suggestions on synthetic curves ------------------------------------------------------------

LRS = sweep_lrs(1e-6, 1.0, 61)  # 0.1 decade per point: lr[i] = 10^(i/10 − 6)


def wiggle(i: int) -> float:
    return 0.01 * (-1) ** i  # the flat start: ups and downs, never a long descent


def flat_descent_rise() -> list[float]:
    """Flat and wiggling to 19, straight down 2.0 → 0.425 over 20..41, then up again."""
    s = [2.0 + wiggle(i) for i in range(20)]
    s += [2.0 - 0.075 * (i - 20) for i in range(20, 42)]
    s += [0.425 + 0.1 * (i - 41) for i in range(42, 61)]
    return s


def test_sweep_and_smoothing_closed_forms():
    lrs = sweep_lrs(1e-4, 1e2, 7)
    assert lrs == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1, 10, 100], rel=1e-12)
    assert lrs[0] == 1e-4 and lrs[-1] == pytest.approx(100, rel=1e-15)
    # β = 0.5: avg = 0.5, 1.25, 2.125; ÷ (1 − 0.5^t) = 0.5, 0.75, 0.875
    assert smooth([1.0, 2.0, 3.0], 0.5) == pytest.approx([1.0, 1.25 / 0.75, 2.125 / 0.875])
    assert smooth([2.0, 2.0, 2.0], 0.98) == pytest.approx([2.0, 2.0, 2.0])
    assert smooth([1.0, 2.0], 0.0) == [1.0, 2.0]
    # the stopping rule: 4 × best for a positive loss, the same distance for a negative one
    assert diverged(4.01, 1.0, 4.0) and not diverged(3.99, 1.0, 4.0)
    assert diverged(2.01, -1.0, 4.0) and not diverged(1.99, -1.0, 4.0)
    assert not diverged(1e30, math.inf, 4.0)  # no best yet
    # restarted after 3 points from their median 3: 0.5·3 + 0.5·2 = 2.5, 0.5·2.5 + 0.5·4
    assert settled_curve([1.0, 5.0, 3.0, 2.0, 4.0], 0.5, 3) == [2.5, 3.25]
    assert settled_curve([1.0, 2.0, 3.0], 0.5, 0) == smooth([1.0, 2.0, 3.0], 0.5)


def test_valley_is_half_way_down_the_longest_descent():
    s = flat_descent_rise()
    # valley 20..41: half-way is (2.0 + 0.425) / 2 = 1.2125; s[30] = 1.25, s[31] = 1.175
    assert suggest_valley(LRS, s) == LRS[31]
    assert suggest_minimum(LRS, s) == LRS[41] / 10


def test_steepest_is_the_fastest_fall_before_the_minimum():
    # a smooth S-shaped fall, fastest at point 30; past the minimum a steeper rise
    s = [2.0 - 1.5 / (1 + math.exp(-(i - 30) / 2)) for i in range(45)]
    s += [s[44] + 0.3 * (i - 44) ** 2 for i in range(45, 61)]
    assert suggest_steepest(LRS, s) == LRS[30]
    assert suggest_minimum(LRS, s) == LRS[44] / 10


def test_valley_ignores_a_short_steep_drop_that_steepest_takes():
    # a sharp drop at 10..12, flat and wiggling, then a long gentle descent 24..50
    s = [3.0 + wiggle(i) for i in range(11)]
    s += [2.5, 2.0]
    s += [2.0 + wiggle(i) for i in range(13, 25)]
    s += [2.0 - 0.04 * (i - 24) for i in range(25, 51)]  # 1.96 → 0.96
    s += [0.96 + 0.2 * (i - 50) for i in range(51, 61)]
    # central difference at 11: (2.0 − 3.01) / 2, the steepest of the curve
    assert suggest_steepest(LRS, s) == LRS[11]
    # the valley 24..50 runs 2.01 → 0.96, half-way 1.485: s[36] = 1.52, s[37] = 1.48
    assert suggest_valley(LRS, s) == LRS[37]
    assert suggest_minimum(LRS, s) == LRS[50] / 10


def test_suggestions_skip_the_settling_points_and_a_final_nan():
    losses = flat_descent_rise()[:60]
    losses[1] = 0.1  # a lucky second batch: the lowest loss of the sweep
    losses.append(math.nan)
    # β = 0: the curve is the losses themselves, after settle_points(61) = 6
    suggestions = suggest_all(LRS, losses, 0.0, steps=61)
    assert suggestions["valley"] == LRS[31]
    assert suggestions["minimum/10"] == LRS[41] / 10
    assert LRS[20] <= suggestions["steepest"] <= LRS[41]  # a straight descent: any point of it
    assert suggest_minimum(LRS, losses[:-1]) == LRS[1] / 10  # without skipping, it wins


def test_a_spike_among_the_settling_points_leaves_no_trace():
    losses = flat_descent_rise()
    losses[1] = 100.0
    suggestions = suggest_all(LRS, losses, 0.98, steps=61)
    assert LRS[20] < suggestions["valley"] < LRS[41]
    assert LRS[20] < suggestions["steepest"] < LRS[41]
    # the plain smoothed loss carries the spike's slow fade, read as a long descent
    assert suggest_valley(LRS[6:], smooth(losses, 0.98)[6:]) < LRS[20]


def test_a_loss_that_never_falls_suggests_the_first_lr():
    s = [1.0 + 0.01 * i for i in range(61)]
    assert suggest_valley(LRS, s) == LRS[0]
    assert suggest_steepest(LRS, s) == LRS[0]
    assert suggest_minimum(LRS, s) == LRS[0] / 10


def test_too_short_a_curve_has_no_suggestion():
    assert suggest_all(LRS, [2.0], 0.98, steps=100) == dict.fromkeys(METHODS)
    assert suggest_all(LRS, [2.0, math.nan], 0.98, steps=100) == dict.fromkeys(METHODS)
    assert suggest_all(LRS, [2.0, 1.0], 0.98, steps=100)["valley"] == LRS[1]
    result = LRFindResult([1e-7], [math.nan], [math.nan], None, "valley", dict.fromkeys(METHODS))
    with pytest.raises(ValueError, match=r"^Invalid result: .* \(must have a suggestion"):
        suggested_overrides(result)


# --- using the result ---------------------------------------------------------------------------


def test_suggested_overrides_feed_the_config():
    from trainlab.train import load_config

    result = LRFindResult([1e-3], [2.0], [2.0], 0.0031622776, "valley", {"valley": 0.0031622776})
    overrides = suggested_overrides(result)
    assert overrides == ["optimizer.lr=0.00316"]
    assert load_config(None, overrides).optimizer.lr == 0.00316


def test_to_dict_has_the_json_contract():
    x, y = data()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_find(model, (x, y), loss_fn=F.cross_entropy, optimizer=optimizer, steps=20)
    out = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert {"suggestion", "method", "lrs", "losses"} <= set(out)
    assert out["suggestion"] == result.suggestion == result.suggestions["valley"]
    assert out["method"] == "valley" and len(out["lrs"]) == len(out["losses"]) == 20
    assert set(out["suggestions"]) == set(METHODS)
    assert out["stopped_early"] is False and out["reason"] == ""


@pytest.mark.parametrize("stopped", [False, True])
def test_plot_writes_a_png(tmp_path, stopped):
    lrs = sweep_lrs(1e-6, 1.0, 40)
    losses = [2.0 - 1.5 / (1 + math.exp(-(i - 20) / 3)) for i in range(40)]
    if stopped:
        losses[-1] = math.inf
    smoothed = smooth(losses, 0.9)
    suggestions = suggest_all(lrs, losses, 0.9, 40)
    result = LRFindResult(
        lrs, losses, smoothed, suggestions["valley"], "valley", suggestions, stopped, ""
    )
    path = plot(result, tmp_path / "lr.png")
    assert path == tmp_path / "lr.png"
    content = path.read_bytes()
    assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 1000


# --- bad input ----------------------------------------------------------------------------------

BAD = [
    ({"start": 0.0}, r"^Invalid start: 0\.0 \(must be a finite number > 0\)$"),
    ({"start": -1e-3}, r"^Invalid start: -0\.001 \(must be a finite number > 0\)$"),
    ({"start": math.nan}, r"^Invalid start: nan \(must be a finite number > 0\)$"),
    ({"end": math.inf}, r"^Invalid end: inf \(must be a finite number > 0\)$"),
    (
        {"start": 1.0, "end": 1.0},
        r"^Invalid end: 1\.0 \(must be > start = 1\.0: the sweep goes up\)$",
    ),
    ({"start": 1.0, "end": 1e-3}, r"^Invalid end: 0\.001 \(must be > start = 1\.0"),
    ({"steps": 1}, r"^Invalid steps: 1 \(must be an integer >= 2\)$"),
    ({"steps": 10.0}, r"^Invalid steps: 10\.0 \(must be an integer >= 2\)$"),
    ({"diverge": 1.0}, r"^Invalid diverge: 1\.0 \(must be a finite number > 1\)$"),
    ({"diverge": 0.5}, r"^Invalid diverge: 0\.5 \(must be a finite number > 1\)$"),
    ({"smoothing": 1.0}, r"^Invalid smoothing: 1\.0 \(must be a number in \[0, 1\)\)$"),
    (
        {"method": "min"},
        r"^Invalid method: 'min' \(must be one of 'valley', 'steepest', 'minimum/10'\)$",
    ),
    ({"seed": -1}, r"^Invalid seed: -1 \(must be an integer >= 0\)$"),
    ({"batch_size": 0}, r"^Invalid batch_size: 0 \(must be an integer >= 1\)$"),
    ({"scheduler": object()}, r"^Invalid scheduler: .* \(must have state_dict and load_state_dict"),
    ({"loss_fn": "mse"}, r"^Invalid loss_fn: 'mse' \(must be a callable"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD)
def test_bad_arguments_are_refused_before_anything_changes(kwargs, message):
    x, y = data()
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    arguments = {"loss_fn": F.cross_entropy, "optimizer": optimizer, **kwargs}
    with pytest.raises(ValueError, match=message):
        lr_find(model, (x, y), **arguments)
    assert_same(before, model.state_dict(), "model")
    assert len(optimizer.state) == 0


def test_bad_sources_optimizers_and_losses_are_refused():
    x, y = data()
    model = mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"^Invalid batches: 'list' \(must be a resumable"):
        lr_find(model, [x, y, y], loss_fn=F.cross_entropy, optimizer=sgd)
    lbfgs = torch.optim.LBFGS(model.parameters())
    with pytest.raises(ValueError, match=r"^Invalid optimizer: 'LBFGS' \(must be a first-order"):
        lr_find(model, (x, y), loss_fn=F.cross_entropy, optimizer=lbfgs)
    with pytest.raises(
        ValueError,
        match=r"^Invalid loss_fn: '<lambda>' \(must return a scalar tensor, returned \(64, 3\)\)$",
    ):
        lr_find(model, (x, y), loss_fn=lambda out, target: out, optimizer=sgd)


# --- the demo CNN -------------------------------------------------------------------------------


def test_the_suggestion_trains_the_demo_cnn_to_97_percent(tmp_path):
    from trainlab.cli import DEMO_SETTINGS
    from trainlab.train import Trainer, load_config
    from trainlab.train.build import from_config

    torch.manual_seed(0)
    parts = from_config(load_config(None, DEMO_SETTINGS), torch.device("cpu"))
    result = lr_find(
        parts.model, parts.train, loss_fn=parts.loss, optimizer=parts.optimizer, seed=0
    )
    assert not result.stopped_early  # AdamW's normalized steps: the loss rises, never explodes
    assert 1e-3 < result.suggestion < 0.3
    # one thread: same recipe, and on a shared 2-core host a second OpenMP thread that
    # waits for a busy core costs more than it gives (20-80 s instead of 5)
    config = load_config(None, [*DEMO_SETTINGS, *suggested_overrides(result), "run.threads=1"])
    summary = Trainer(config, tmp_path / "run").fit()
    assert summary["test_accuracy"] >= 0.97
