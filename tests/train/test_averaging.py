"""Weight averaging: EMA (Polyak) and SWA against closed forms and hand means, safe swapping,
buffers, BatchNorm recomputation by hand, round trips, the lecture."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from trainlab.train.averaging import (
    EMA,
    SWA,
    debias,
    ema_decay,
    ema_update_,
    recompute_batch_norm,
    swa_update_,
)


class Toy(nn.Module):
    """One parameter vector θ."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(value.clone())


class WithBuffers(nn.Module):
    """Linear + BatchNorm, an integer step buffer and a non-persistent buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.bn = nn.BatchNorm1d(4)
        self.register_buffer("seen", torch.tensor(0, dtype=torch.int64))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += x.shape[0]
        return self.bn(self.linear(x))


def set_(model: nn.Module, **values: torch.Tensor) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(model, name).copy_(value)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


# --- closed forms ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 5, 40])
def test_bias_corrected_average_of_a_constant_is_the_constant(n):
    theta = torch.tensor([1.5, -2.0, 0.25], dtype=torch.float64)
    model, beta = Toy(theta), 0.9
    ema = EMA(model, beta, bias_correction=True)
    for _ in range(n):
        ema.update(model)
    shadow = ema.state_dict()["shadow"]["theta"]
    torch.testing.assert_close(shadow, theta * (1 - beta**n), rtol=1e-14, atol=0)  # s₀ = 0
    torch.testing.assert_close(ema.weights()["theta"], theta, rtol=1e-14, atol=0)
    assert ema.num_updates == n


def test_uncorrected_average_starts_at_the_initial_weights_and_follows_the_recursion():
    beta, thetas = 0.8, [torch.tensor([float(k), -(k**2)], dtype=torch.float64) for k in range(7)]
    model = Toy(thetas[0])
    ema = EMA(model, beta)
    expected = thetas[0].clone()
    torch.testing.assert_close(ema.weights()["theta"], expected)  # s₀ = θ₀, usable at once
    for theta in thetas[1:]:
        set_(model, theta=theta)
        ema.update(model)
        expected = beta * expected + (1 - beta) * theta
    # closed form: s_n = βⁿ·θ₀ + (1 − β)·Σₖ βⁿ⁻ᵏ·θₖ
    n = len(thetas) - 1
    closed = beta**n * thetas[0] + sum(
        (1 - beta) * beta ** (n - k) * thetas[k] for k in range(1, n + 1)
    )
    torch.testing.assert_close(ema.weights()["theta"], expected, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(ema.weights()["theta"], closed, rtol=1e-14, atol=1e-14)


def test_bias_correction_matches_the_weighted_mean_of_the_iterates():
    beta, thetas = 0.7, [torch.tensor([2.0**k], dtype=torch.float64) for k in range(5)]
    model = Toy(torch.zeros(1, dtype=torch.float64))
    ema = EMA(model, beta, bias_correction=True)
    for theta in thetas:
        set_(model, theta=theta)
        ema.update(model)
    n = len(thetas)
    w = [(1 - beta) * beta ** (n - 1 - k) for k in range(n)]
    mean = sum(wk * t for wk, t in zip(w, thetas)) / sum(w)  # weights sum to one
    torch.testing.assert_close(ema.weights()["theta"], mean, rtol=1e-14, atol=0)


def test_decay_zero_copies_the_latest_weights_exactly():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    for bias_correction in (False, True):
        ema = EMA(model, 0.0, bias_correction=bias_correction)
        for _ in range(3):
            set_(model, weight=torch.randn(3, 5), bias=torch.randn(3))
            ema.update(model)
            assert_same(ema.weights(), snapshot(model))


def test_functional_pieces():
    s, theta = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, 6.0])]
    ema_update_(s, theta, 0.75)
    torch.testing.assert_close(s[0], torch.tensor([1.5, 3.0]))  # 0.75·s + 0.25·θ
    torch.testing.assert_close(debias(s, 0.75, 2)[0], s[0] / (1 - 0.75**2))
    ema_update_([], [], 0.5)  # no tensors: nothing to do


# --- swapping never loses the raw weights -----------------------------------------------


def trained_pair(bias_correction: bool = False) -> tuple[nn.Module, EMA]:
    torch.manual_seed(1)
    model = WithBuffers()
    ema = EMA(model, 0.5, bias_correction=bias_correction)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        model(torch.randn(8, 3)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
    model(torch.randn(8, 3))  # raw weights and buffers now differ from the EMA's
    return model, ema


@pytest.mark.parametrize("bias_correction", [False, True])
def test_swapped_lends_the_average_and_restores_the_raw_weights_exactly(bias_correction):
    model, ema = trained_pair(bias_correction)
    raw, tensors = snapshot(model), dict(model.named_parameters())
    with ema.swapped(model) as inside:
        assert inside is model
        assert_same(snapshot(model), ema.weights())
        model(torch.randn(8, 3))  # train-mode forward writes BN stats: discarded
        with torch.no_grad():
            model.linear.weight.add_(1.0)
    assert_same(snapshot(model), raw)
    for name, p in model.named_parameters():
        assert p is tensors[name]  # same objects: the optimizer still holds them


def test_swapped_restores_the_raw_weights_when_the_body_raises():
    model, ema = trained_pair()
    raw = snapshot(model)
    with pytest.raises(KeyError, match="evaluation failed"), ema.swapped(model):
        assert not torch.equal(model.linear.weight, raw["linear.weight"])
        raise KeyError("evaluation failed")
    assert_same(snapshot(model), raw)


def test_weights_are_copies_and_update_does_not_touch_the_model():
    model, ema = trained_pair()
    raw, before = snapshot(model), ema.weights()
    ema.weights()["linear.weight"].add_(100.0)
    assert_same(ema.weights(), before)
    ema.update(model)
    assert_same(snapshot(model), raw)


def test_weights_load_into_a_separate_copy_of_the_model():
    model, ema = trained_pair()
    averaged = copy.deepcopy(model)
    averaged.load_state_dict(ema.weights())  # strict: exactly the state_dict keys
    with ema.swapped(model):
        assert_same(snapshot(averaged), snapshot(model))


# --- buffers ------------------------------------------------------------------------------


def test_buffers_are_copied_as_they_are_and_parameters_averaged():
    torch.manual_seed(2)
    model = WithBuffers()
    ema = EMA(model, 0.9)
    start = snapshot(model)
    model(torch.randn(16, 3) + 3.0)  # moves BN running stats and the int counter
    with torch.no_grad():
        model.bn.weight.fill_(2.0)
    ema.update(model)
    got, now = ema.weights(), snapshot(model)
    for name in ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "seen"):
        assert torch.equal(got[name], now[name]), name  # copied, not averaged
    assert got["bn.num_batches_tracked"].dtype == torch.int64 and int(got["seen"]) == 16
    expected = 0.9 * start["bn.weight"] + 0.1 * now["bn.weight"]
    torch.testing.assert_close(got["bn.weight"], expected)
    assert "scratch" not in got  # non-persistent buffers are not part of the weights
    assert ema.averaged_names == ["linear.weight", "linear.bias", "bn.weight", "bn.bias"]


def test_model_with_only_integer_tensors():
    class Counter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("count", torch.tensor([3, 4], dtype=torch.int32))

    model = Counter()
    ema = EMA(model, 0.5, bias_correction=True)
    model.count += 1
    ema.update(model)
    assert ema.weights()["count"].tolist() == [4, 5]
    model.count += 1
    with ema.swapped(model):
        assert model.count.tolist() == [4, 5]
    assert model.count.tolist() == [5, 6]


# --- every k steps, state round trip ---------------------------------------------------


def test_every_k_steps_averages_on_calls_k_2k():
    beta = 0.5
    model = Toy(torch.zeros(1, dtype=torch.float64))
    ema = EMA(model, beta, every=3)
    expected = torch.zeros(1, dtype=torch.float64)
    for step in range(1, 8):
        set_(model, theta=torch.tensor([float(step)]))
        did = ema.update(model)
        assert did == (step % 3 == 0)
        if did:
            expected = beta * expected + (1 - beta) * step
    assert (ema.num_steps, ema.num_updates) == (7, 2)
    torch.testing.assert_close(ema.weights()["theta"], expected)  # 0.5·(0.5·3) + 0.5·6


def test_state_dict_round_trip_continues_in_lockstep():
    model, ema = trained_pair(bias_correction=True)
    ema.update(model)  # num_steps 5
    state = ema.state_dict()
    for value in state.values():  # plain values: a pickle-free checkpoint can store them
        assert isinstance(value, (bool, int, float, dict))
    assert all(isinstance(t, torch.Tensor) for t in state["shadow"].values())
    other = EMA(WithBuffers(), 0.1, every=2)  # settings come from the state
    other.load_state_dict(state)
    assert (other.decay, other.bias_correction, other.every) == (0.5, True, 1)
    assert (other.num_updates, other.num_steps) == (ema.num_updates, ema.num_steps)
    state["shadow"]["linear.weight"].add_(1.0)  # the state is a snapshot, not a view
    assert_same(other.weights(), ema.weights())
    for _ in range(3):
        model(torch.randn(4, 3))
        with torch.no_grad():
            model.linear.weight.mul_(0.9)
        ema.update(model)
        other.update(model)
        assert_same(other.weights(), ema.weights())
    assert_same(other.state_dict()["shadow"], ema.state_dict()["shadow"])


def test_load_state_dict_refuses_another_model():
    _, ema = trained_pair()
    state = EMA(nn.Linear(3, 4)).state_dict()
    with pytest.raises(ValueError, match=r"Invalid state_dict\['shadow'\]: .*must be a dict"):
        ema.load_state_dict(state)
    state = ema.state_dict()
    state["shadow"]["linear.weight"] = torch.zeros(2, 2)
    with pytest.raises(ValueError, match=r"Invalid .*'linear.weight'\]: \(2, 2\) \(must be a"):
        ema.load_state_dict(state)
    with pytest.raises(ValueError, match=r"Invalid state_dict: \['decay'\] \(must be a dict"):
        ema.load_state_dict({"decay": 0.5})
    state = ema.state_dict()
    state["num_updates"] = -1
    with pytest.raises(ValueError, match=r"Invalid state_dict\['num_updates'\]: -1"):
        ema.load_state_dict(state)


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay": 1.0}, r"Invalid decay: 1.0 \(must be a number in \[0, 1\)\)"),
        ({"decay": -0.1}, r"Invalid decay: -0.1 \(must be a number in \[0, 1\)\)"),
        ({"decay": float("nan")}, r"Invalid decay: nan"),
        ({"every": 0}, r"Invalid every: 0 \(must be an integer >= 1\)"),
        ({"every": 1.5}, r"Invalid every: 1.5 \(must be an integer >= 1\)"),
        ({"bias_correction": 1}, r"Invalid bias_correction: 1 \(must be True or False\)"),
    ],
)
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EMA(nn.Linear(2, 2), **kwargs)


def test_bad_models_are_refused():
    with pytest.raises(ValueError, match=r"Invalid model: 'list' \(must be a torch.nn.Module\)"):
        EMA([nn.Parameter(torch.zeros(1))])
    ema = EMA(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"Invalid model: 'Toy' \(has no tensor 'weight'"):
        ema.update(Toy(torch.zeros(1)))


def test_bias_corrected_average_is_undefined_before_the_first_update():
    model = nn.Linear(2, 2)
    raw = snapshot(model)
    ema = EMA(model, bias_correction=True)
    with pytest.raises(RuntimeError, match="before its first update"):
        ema.weights()
    with pytest.raises(RuntimeError, match="before its first update"), ema.swapped(model):
        pass
    assert_same(snapshot(model), raw)


# --- the lecture's claim ------------------------------------------------------------------


def test_averaging_noisy_sgd_iterates_lands_closer_to_the_optimum():
    """SGD on f(x) = ½·Σ aᵢ·(xᵢ − x*ᵢ)² with noisy gradients jitters around x*;
    the Polyak average of its iterates sits much closer to x* than the last iterate."""
    gen = torch.Generator().manual_seed(0)
    dim, lr, sigma = 20, 0.1, 1.0
    curvature = torch.linspace(0.5, 2.0, dim, dtype=torch.float64)
    optimum = torch.randn(dim, generator=gen, dtype=torch.float64)
    model = Toy(optimum + 5.0)  # start far away
    ema = EMA(model, 0.99, bias_correction=True)
    for _ in range(1500):
        noise = sigma * torch.randn(dim, generator=gen, dtype=torch.float64)
        with torch.no_grad():
            grad = curvature * (model.theta - optimum) + noise
            model.theta -= lr * grad
        ema.update(model)
    last = torch.linalg.vector_norm(model.theta.detach() - optimum)
    averaged = torch.linalg.vector_norm(ema.weights()["theta"] - optimum)
    assert averaged < 0.5 * last, (float(averaged), float(last))


# --- EMA decay warmup (timm's ModelEmaV3) -------------------------------------------------


@pytest.mark.parametrize(("decay", "gamma", "power"), [(0.999, 1.0, 0.75), (0.9, 5.0, 2 / 3)])
def test_warmup_decay_matches_the_closed_form(decay, gamma, power):
    for t in [0, 1, 2, 3, 5, 10, 31, 100, 1000, 10**5]:
        expected = min(decay, 1 - (1 + t / gamma) ** -power)
        assert ema_decay(t, decay, warmup=True, gamma=gamma, power=power) == pytest.approx(
            expected, rel=0, abs=1e-15
        )
        assert ema_decay(t, decay) == decay  # no warmup: constant
    assert ema_decay(0, decay, warmup=True, gamma=gamma, power=power) == 0.0  # β₀: a copy
    # the note's numbers for p = 3/4: β reaches 0.999 after 10⁴ updates
    assert ema_decay(10**4, 0.9999, warmup=True) == pytest.approx(0.999, abs=2e-6)


def test_warmup_with_gamma_1_power_1_is_the_equal_weight_mean():
    for t in range(50):
        assert ema_decay(t, 0.9999, warmup=True, gamma=1.0, power=1.0) == pytest.approx(
            t / (t + 1), rel=0, abs=1e-15
        )


def test_ema_with_warmup_follows_the_recursion_with_the_warmup_decays():
    decay, gamma, power = 0.8, 2.0, 0.5
    thetas = [torch.tensor([float(k) ** 2, -float(k)], dtype=torch.float64) for k in range(1, 9)]
    model = Toy(torch.full((2,), 7.0, dtype=torch.float64))
    ema = EMA(model, decay, warmup=True, warmup_gamma=gamma, warmup_power=power)
    expected = None
    for t, theta in enumerate(thetas):
        set_(model, theta=theta)
        ema.update(model)
        beta = min(decay, 1 - (1 + t / gamma) ** -power)
        expected = theta.clone() if t == 0 else beta * expected + (1 - beta) * theta
        torch.testing.assert_close(ema.weights()["theta"], expected, rtol=1e-14, atol=1e-14)
    assert torch.equal(EMA(model, warmup=True).state_dict()["shadow"]["theta"], thetas[-1])
    assert ema.decay_at(100) == decay  # warmed up: capped at the decay


def test_warmup_state_round_trip_continues_in_lockstep_and_old_states_load():
    model, _ = trained_pair()
    ema = EMA(model, 0.9, warmup=True, warmup_gamma=3.0, warmup_power=0.6)
    for _ in range(3):
        model(torch.randn(4, 3))
        ema.update(model)
    other = EMA(WithBuffers(), 0.5)  # settings come from the state, warmup included
    other.load_state_dict(ema.state_dict())
    assert (other.warmup, other.warmup_gamma, other.warmup_power) == (True, 3.0, 0.6)
    for _ in range(4):
        with torch.no_grad():
            model.linear.weight.mul_(0.8)
        ema.update(model)
        other.update(model)
        assert_same(other.weights(), ema.weights())  # same β_t at the same t: bit for bit
    old = {k: v for k, v in EMA(model, 0.7).state_dict().items() if not k.startswith("warmup")}
    other.load_state_dict(old)  # a checkpoint from before the warmup existed
    assert other.warmup is False and other.decay == 0.7


def test_warmup_and_bias_correction_are_exclusive():
    with pytest.raises(ValueError, match=r"^Invalid warmup: True \(must be False with bias_corr"):
        EMA(nn.Linear(2, 2), warmup=True, bias_correction=True)
    with pytest.raises(ValueError, match=r"^Invalid warmup_power: 0 \(must be a finite number > 0"):
        EMA(nn.Linear(2, 2), warmup=True, warmup_power=0)
    with pytest.raises(ValueError, match=r"^Invalid warmup_gamma: -1\.0 \(must be a finite num"):
        EMA(nn.Linear(2, 2), warmup=True, warmup_gamma=-1.0)


# --- SWA: the equal-weight mean ------------------------------------------------------------


def test_swa_update_is_the_running_mean():
    average, thetas = [torch.zeros(3, dtype=torch.float64)], []
    for n in range(6):
        theta = torch.randn(3, dtype=torch.float64)
        thetas.append(theta)
        swa_update_(average, [theta], n)
        torch.testing.assert_close(average[0], torch.stack(thetas).mean(0), rtol=1e-14, atol=0)
    swa_update_([], [], 3)  # no tensors: nothing to do


@pytest.mark.parametrize(("start", "every"), [(0, 1), (3, 2), (4, 5)])
def test_swa_averages_the_weights_after_steps_start_plus_k_every(start, every):
    torch.manual_seed(3)
    model = WithBuffers().double()
    swa = SWA(model, start=start, every=every)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    kept, averaged_steps = [], []
    for step in range(1, 21):  # steps counted from 1, as the trainer's counter after a step
        model(torch.randn(8, 3, dtype=torch.float64)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        did = swa.update(model)
        assert did == (step > start and (step - start) % every == 0), step
        if did:
            kept.append(snapshot(model))
            averaged_steps.append(step)
    assert averaged_steps == list(range(start + every, 21, every))
    assert swa.num_updates == len(kept) and swa.num_steps == 20
    got = swa.weights()
    for name in swa.averaged_names:
        mean = torch.stack([k[name] for k in kept]).mean(0)
        torch.testing.assert_close(got[name], mean, rtol=1e-13, atol=1e-15)
    for name in swa.copied_names:  # buffers: those of the last averaged weights
        assert torch.equal(got[name], kept[-1][name]), name


def test_swa_first_average_copies_and_there_is_none_before_it():
    model = nn.Linear(3, 2)
    swa = SWA(model, start=2)
    with pytest.raises(RuntimeError, match=r"SWA has no average before its first update \(after"):
        swa.weights()
    raw = snapshot(model)
    with pytest.raises(RuntimeError, match="before its first update"), swa.swapped(model):
        pass
    assert_same(snapshot(model), raw)
    assert not swa.update(model) and not swa.update(model) and swa.update(model)
    assert_same(swa.weights(), raw)  # the first average is the weights themselves, exactly


def test_swa_swapped_restores_the_raw_weights_and_buffers_bit_for_bit():
    torch.manual_seed(4)
    model = WithBuffers()
    swa = SWA(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    for _ in range(3):
        model(torch.randn(8, 3)).square().mean().backward()
        opt.step()
        opt.zero_grad()
        swa.update(model)
    model(torch.randn(8, 3))
    raw, tensors = snapshot(model), dict(model.named_parameters())
    with swa.swapped(model):
        assert_same(snapshot(model), swa.weights())
        recompute_batch_norm(model, [torch.randn(16, 3) + 5.0])  # writes BN stats: discarded
        assert not torch.equal(model.bn.running_mean, raw["bn.running_mean"])
    assert_same(snapshot(model), raw)
    assert all(p is tensors[n] for n, p in model.named_parameters())


def test_swa_state_round_trip_continues_in_lockstep():
    model, _ = trained_pair()
    swa = SWA(model, start=1, every=2)
    for _ in range(5):
        with torch.no_grad():
            model.linear.weight.add_(0.5)
        swa.update(model)
    state = swa.state_dict()
    assert set(state) == {"start", "every", "num_updates", "num_steps", "average", "copied"}
    other = SWA(WithBuffers())
    other.load_state_dict(state)
    assert (other.start, other.every, other.num_updates, other.num_steps) == (1, 2, 2, 5)
    for _ in range(6):
        with torch.no_grad():
            model.linear.weight.mul_(1.1)
        assert swa.update(model) == other.update(model)
        assert_same(other.weights(), swa.weights())
    with pytest.raises(ValueError, match=r"^Invalid state_dict: \['decay'\] \(must be a dict with"):
        other.load_state_dict({"decay": 0.5})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -1}, r"^Invalid start: -1 \(must be an integer >= 0\)$"),
        ({"every": 0}, r"^Invalid every: 0 \(must be an integer >= 1\)$"),
        ({"start": 2.5}, r"^Invalid start: 2\.5 \(must be an integer >= 0\)$"),
    ],
)
def test_bad_swa_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SWA(nn.Linear(2, 2), **kwargs)


# --- BatchNorm statistics recomputed by hand ------------------------------------------------


class DropThenNorm(nn.Module):
    """Dropout → Linear → BatchNorm1d → ReLU → Linear → BatchNorm1d: two BN layers."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.fc1 = nn.Linear(4, 5, bias=False)
        self.bn1 = nn.BatchNorm1d(5, momentum=0.3)
        self.fc2 = nn.Linear(5, 3)
        self.bn2 = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(self.drop(x))))))


def batch_statistics(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """BN's cumulative running mean and var: the means over the batches of each batch's
    mean and *unbiased* variance (BN's running_var is n/(n − 1) times what it divides by)."""
    means = torch.stack([h.mean(0) for h in inputs])
    variances = torch.stack([h.var(0, unbiased=True) for h in inputs])
    return means.mean(0), variances.mean(0)


def test_recompute_batch_norm_matches_the_statistics_by_hand():
    torch.manual_seed(5)
    model = DropThenNorm().double()
    model.bn1.running_mean.fill_(9.0)  # stale statistics, to be replaced
    batches = [torch.randn(n, 4, dtype=torch.float64) * 2 + 1 for n in (16, 16, 7)]
    rng = torch.get_rng_state()
    model.train()
    recompute_batch_norm(model, [(x, torch.zeros(len(x))) for x in batches])
    assert torch.equal(torch.get_rng_state(), rng)  # dropout was off: no random numbers
    assert model.training and model.drop.training  # modes restored
    assert model.bn1.momentum == 0.3 and model.bn2.momentum == 0.1  # momenta restored
    assert int(model.bn1.num_batches_tracked) == 3
    # by hand: layer 1 sees fc1(x) (no dropout); layer 2 sees fc2(relu(BN1 of the batch,
    # normalized with the batch's own biased statistics, as BN does in train mode))
    with torch.no_grad():
        h1 = [model.fc1(x) for x in batches]
        bn1 = model.bn1
        normalized = [
            (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn1.eps) * bn1.weight + bn1.bias
            for h in h1
        ]
        h2 = [model.fc2(torch.relu(z)) for z in normalized]
    for bn, inputs in ((model.bn1, h1), (model.bn2, h2)):
        mean, var = batch_statistics(inputs)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-12, atol=1e-12)
    # one batch of everything: the whole set's mean and unbiased variance
    everything = torch.cat(batches)
    recompute_batch_norm(model, [everything])
    with torch.no_grad():
        h = model.fc1(everything)
    torch.testing.assert_close(model.bn1.running_mean, h.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.bn1.running_var, h.var(0), rtol=1e-12, atol=1e-12)


def test_recompute_batch_norm_refuses_missing_batches_and_keeps_the_old_statistics():
    torch.manual_seed(6)
    model = DropThenNorm()
    model(torch.randn(8, 4))
    before = snapshot(model)
    for batches, shown in ((None, "None"), ([], "'empty'")):
        with pytest.raises(ValueError, match=rf"^Invalid batches: {shown} \(must give the train"):
            recompute_batch_norm(model, batches)
        assert_same(snapshot(model), before)
        assert model.bn1.momentum == 0.3
    recompute_batch_norm(nn.Linear(2, 2), None)  # no BatchNorm: nothing to recompute
    assert math.isclose(model.bn2.momentum, 0.1)
