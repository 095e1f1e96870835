"""Activations (parsing, errors) and inverted dropout (expectation, scale, equivalences)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainlab.models import ACTIVATIONS, InvertedDropout, activation, parse_activation

# spec → (module type, expected parameter value or None)
SPECS = [
    ("sigmoid", nn.Sigmoid, None),
    ("tanh", nn.Tanh, None),
    ("relu", nn.ReLU, None),
    ("leaky_relu", nn.LeakyReLU, 0.01),
    ("leaky_relu(0.1)", nn.LeakyReLU, 0.1),
    (" leaky_relu( 0.2 ) ", nn.LeakyReLU, 0.2),
    ("elu", nn.ELU, 1.0),
    ("elu(0.5)", nn.ELU, 0.5),
    ("gelu", nn.GELU, None),
]


@pytest.mark.parametrize(("spec", "kind", "value"), SPECS)
def test_activation_parses_spec(spec, kind, value):
    module = activation(spec)
    assert type(module) is kind
    if kind is nn.LeakyReLU:
        assert module.negative_slope == value
    if kind is nn.ELU:
        assert module.alpha == value


def test_every_registered_activation_builds_a_fresh_module():
    for name, spec in ACTIVATIONS.items():
        assert isinstance(spec(), nn.Module)
        assert activation(name) is not activation(name)
        assert spec.equation and spec.note


def test_leaky_relu_matches_its_equation():
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(activation("leaky_relu(0.1)")(x), torch.maximum(0.1 * x, x))


@pytest.mark.parametrize(
    "spec", ["swish", "relu(0.1)", "leaky_relu(abc)", "leaky_relu(", "elu()", "", "ReLU", 3]
)
def test_bad_activation_lists_the_allowed_forms(spec):
    allowed = (
        r"\(must be one of 'sigmoid', 'tanh', 'relu', 'leaky_relu', "
        r"'leaky_relu\(<negative_slope>\)', 'elu', 'elu\(<alpha>\)', 'gelu'\)"
    )
    with pytest.raises(ValueError, match=rf"^Invalid activation: .* {allowed}$"):
        activation(spec)


@pytest.mark.parametrize("spec", ["leaky_relu(-0.1)", "elu(nan)", "elu(inf)"])
def test_bad_activation_parameter(spec):
    with pytest.raises(ValueError, match=r"^Invalid activation: .* must be a finite number >= 0"):
        parse_activation(spec)


# --------------------------------------------------------------------------- dropout


def test_dropout_preserves_the_expectation():
    torch.manual_seed(0)
    x = torch.randn(50)
    drop = InvertedDropout(0.4).train()
    mean = torch.stack([drop(x) for _ in range(20_000)]).mean(dim=0)
    # per-element std of the sample mean: |x|·√(p/(1−p))/√n ≈ 0.006·|x|
    torch.testing.assert_close(mean, x, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_scales_kept_units_by_one_over_keep(p):
    torch.manual_seed(0)
    out = InvertedDropout(p).train()(torch.ones(100_000))
    kept = out != 0
    scale = torch.ones(()) / (1 - p)
    assert torch.equal(out[kept], scale.expand(int(kept.sum())))
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01  # keep rate 1 − p


def test_dropout_is_identity_in_eval_mode_and_at_p_zero():
    x = torch.randn(4, 7)
    assert InvertedDropout(0.5).eval()(x) is x
    assert InvertedDropout(0.0).train()(x) is x


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_equals_torch_dropout(p):
    x = torch.randn(64, 32)
    torch.manual_seed(3)
    ours = InvertedDropout(p).train()(x)
    torch.manual_seed(3)
    theirs = nn.Dropout(p).train()(x)
    assert torch.equal(ours, theirs)


def test_dropout_gradient_flows_through_kept_units_only():
    x = torch.randn(1000, requires_grad=True)
    out = InvertedDropout(0.5).train()(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5, "0.5", True])
def test_bad_dropout_probability(p):
    with pytest.raises(ValueError, match=r"^Invalid dropout probability \(p\): .* \[0, 1\)\)$"):
        InvertedDropout(p)


def test_dropout_probability_tensor_must_hold_one_element():
    with pytest.raises(
        ValueError,
        match=r"^Invalid dropout probability \(p\): tensor\(\[0\.1000, 0\.2000\]\) \(must be a "
        r"number in \[0, 1\); a tensor must hold exactly one element\)$",
    ):
        InvertedDropout(torch.tensor([0.1, 0.2]))
