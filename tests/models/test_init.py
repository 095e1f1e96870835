"""Initialization: variances against the closed forms, fans, gains, reproducibility, and the
lecture's experiment (small random numbers make deep tanh activations collapse)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from trainlab.models import INIT_SCHEMES, cnn, fans, init_, kaiming_gain, mlp, xavier_std


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def initialized(layer, scheme, **kw):
    return init_(layer, scheme, generator=seeded(), **kw).weight.detach()


def assert_variance(weight, expected):
    assert abs(weight.mean().item()) < 0.01 * math.sqrt(expected)
    assert weight.var().item() == pytest.approx(expected, rel=0.05)


# Linear(in, out) has weight (out, in): fan_in = in, fan_out = out.
SQUARE = (2000, 2000)
WIDE = (1000, 3000)  # fan_in 1000, fan_out 3000: the two Kaiming modes differ by 3×


@pytest.mark.parametrize("std", [0.01, 0.1, 1.0])
def test_normal_variance_is_std_squared(std):
    assert_variance(initialized(nn.Linear(*SQUARE), "normal", std=std), std**2)


def test_normal_defaults_to_small_random_numbers():
    assert_variance(initialized(nn.Linear(*SQUARE), "normal"), 0.01**2)


@pytest.mark.parametrize("scheme", ["xavier_normal", "xavier_uniform"])
@pytest.mark.parametrize("size", [SQUARE, WIDE])
def test_xavier_variance(scheme, size):
    fan_in, fan_out = size
    assert_variance(initialized(nn.Linear(*size), scheme), 2 / (fan_in + fan_out))


def test_xavier_uniform_bound():
    weight = initialized(nn.Linear(*WIDE), "xavier_uniform")
    bound = math.sqrt(6 / (1000 + 3000))
    assert weight.abs().max().item() <= bound
    assert weight.abs().max().item() > 0.99 * bound


@pytest.mark.parametrize("scheme", ["kaiming_normal", "kaiming_uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_variance_for_relu(scheme, mode):
    fan_in, fan_out = WIDE
    fan = fan_in if mode == "fan_in" else fan_out
    assert_variance(initialized(nn.Linear(*WIDE), scheme, mode=mode), 2 / fan)


@pytest.mark.parametrize("scheme", ["kaiming_normal", "kaiming_uniform"])
@pytest.mark.parametrize(
    "keywords",
    [{"nonlinearity": "leaky_relu(0.2)"}, {"nonlinearity": "leaky_relu", "negative_slope": 0.2}],
)
def test_kaiming_variance_for_leaky_relu(scheme, keywords):
    expected = 2 / (1 + 0.2**2) / 2000
    assert_variance(initialized(nn.Linear(*SQUARE), scheme, **keywords), expected)


def test_kaiming_variance_for_a_convolution():
    conv = nn.Conv2d(64, 128, kernel_size=5)
    assert_variance(initialized(conv, "kaiming_normal"), 2 / (64 * 25))


def test_fans():
    assert fans(nn.Linear(3, 7).weight) == (3, 7)
    assert fans(nn.Conv1d(4, 6, 5).weight) == (4 * 5, 6 * 5)
    assert fans(nn.Conv2d(16, 32, 3).weight) == (16 * 9, 32 * 9)
    with pytest.raises(ValueError, match=r"^Invalid weight shape: \(5,\) \(needs at least 2"):
        fans(torch.zeros(5))


@pytest.mark.parametrize(
    ("nonlinearity", "torch_args"),
    [
        ("linear", ("linear",)),
        ("sigmoid", ("sigmoid",)),
        ("tanh", ("tanh",)),
        ("relu", ("relu",)),
        ("leaky_relu", ("leaky_relu", 0.01)),
        ("leaky_relu(0.3)", ("leaky_relu", 0.3)),
    ],
)
def test_gain_matches_torch(nonlinearity, torch_args):
    assert kaiming_gain(nonlinearity) == pytest.approx(nn.init.calculate_gain(*torch_args))


def test_gain_errors():
    with pytest.raises(ValueError, match=r"^Invalid nonlinearity: 'gelu' \(no Kaiming gain; use "):
        kaiming_gain("gelu")
    with pytest.raises(ValueError, match=r"^Invalid negative_slope: 0\.1 \(only for "):
        kaiming_gain("relu", negative_slope=0.1)
    with pytest.raises(ValueError, match=r"^Invalid activation: 'swish'"):
        kaiming_gain("swish")


@pytest.mark.parametrize("slope", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_negative_slope_must_be_a_finite_number_at_least_zero(slope):
    with pytest.raises(
        ValueError, match=r"^Invalid negative_slope: .* \(must be a finite number >= 0\)$"
    ):
        kaiming_gain("leaky_relu", negative_slope=slope)


def test_one_element_tensor_hyperparameters_are_used_as_plain_numbers():
    gain = kaiming_gain("leaky_relu", negative_slope=torch.tensor(0.2))
    assert type(gain) is float and gain == pytest.approx(kaiming_gain("leaky_relu(0.2)"))
    std = xavier_std(torch.empty(3, 5), gain=torch.tensor([2.0]))  # 2·√(2/8)
    assert type(std) is float and std == pytest.approx(1.0)
    init_(nn.Linear(3, 3), "normal", generator=seeded(), std=torch.tensor(0.1))


@pytest.mark.parametrize(
    ("scheme", "kw"),
    [("normal", {"std": torch.tensor([0.1, 0.2])}), ("xavier_normal", {"gain": torch.ones(2)})],
)
def test_multi_element_tensor_hyperparameter_is_refused(scheme, kw):
    with pytest.raises(
        ValueError,
        match=r"\(must be a finite number > 0; a tensor must hold exactly one element\)$",
    ):
        init_(nn.Linear(3, 3), scheme, **kw)


def test_zeros_and_biases_and_batch_norm():
    model = mlp(6, [5], 3, batch_norm=True)
    for p in model.parameters():
        nn.init.uniform_(p, 2.0, 3.0)  # start away from every target value
    init_(model, "zeros")
    assert all(torch.all(m.weight == 0) for m in model.modules() if isinstance(m, nn.Linear))
    assert torch.all(model.block1.norm.weight == 1) and torch.all(model.block1.norm.bias == 0)
    assert torch.all(model.head.fc.bias == 0)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_every_scheme_zeroes_biases_and_resets_batch_norm(scheme):
    model = cnn((1, 8, 8), [4, 4], 3, batch_norm=True, hidden=(5,))
    model.add_module("extra", nn.Linear(3, 3))
    for p in model.parameters():
        nn.init.uniform_(p, 2.0, 3.0)
    assert init_(model, scheme, generator=seeded()) is model
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            assert torch.all(module.bias == 0)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)
    assert torch.all(model.block1.conv.weight < 2.0)  # weights were re-drawn


def test_generator_makes_init_reproducible():
    def weights(seed):
        model = init_(cnn((3, 32, 32), [4, 8], 10), "kaiming_uniform", generator=seeded(seed))
        return [p.detach().clone() for p in model.parameters()]

    same = zip(weights(1), weights(1))
    assert all(torch.equal(a, b) for a, b in same)
    assert not all(torch.equal(a, b) for a, b in zip(weights(1), weights(2)))


@pytest.mark.parametrize(
    ("scheme", "kw", "message"),
    [
        (
            "orthogonal",
            {},
            r"Invalid init scheme: 'orthogonal' \(must be one of 'zeros', 'normal',",
        ),
        ("normal", {"gain": 2.0}, r"Invalid keyword for 'normal': 'gain' \(allowed: std\)"),
        ("zeros", {"std": 0.1}, r"Invalid keyword for 'zeros': 'std' \(allowed: none\)"),
        ("normal", {"std": 0.0}, r"Invalid std: 0\.0 \(must be a finite number > 0\)"),
        ("xavier_normal", {"gain": -1.0}, r"Invalid gain: -1\.0"),
        ("kaiming_normal", {"mode": "fan_avg"}, r"Invalid mode: 'fan_avg' \(must be 'fan_in' or"),
        ("kaiming_uniform", {"nonlinearity": "elu"}, r"Invalid nonlinearity: 'elu'"),
    ],
)
def test_bad_init_arguments(scheme, kw, message):
    with pytest.raises(ValueError, match=f"^{message}"):
        init_(nn.Linear(3, 3), scheme, **kw)


def last_activation_std(scheme, **kw):
    """The lecture's figure: 10 tanh layers of width 500, unit-Gaussian input."""
    model = init_(mlp(500, [500] * 10, 10, activation="tanh"), scheme, generator=seeded(), **kw)
    x = torch.randn(1000, 500, generator=seeded(1))
    with torch.no_grad():
        hidden = model[:-1](x)  # everything but the head: the 10th layer's tanh output
    return hidden.std().item()


def test_lecture_small_random_numbers_collapse_deep_tanh_activations():
    # each layer multiplies the std by about √500 · 0.01 ≈ 0.22, so 10 layers give ≈ 3e-7
    assert last_activation_std("normal", std=0.01) < 1e-5
    assert 0.1 < last_activation_std("xavier_normal") < 1.0
    assert 0.1 < last_activation_std("xavier_uniform") < 1.0
