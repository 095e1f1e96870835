"""The lectures' equivalences between update rules — and where they stop holding."""

from __future__ import annotations

import pytest
import torch

import trainlab.optim as optim

MU = 0.9


def grad_f(theta: torch.Tensor) -> torch.Tensor:
    """Gradient of a non-quadratic test function f = Σ log cosh(θ·s) + 0.1·θ⁴."""
    s = torch.arange(1.0, theta.numel() + 1, dtype=theta.dtype)
    return s * torch.tanh(theta * s) + 0.4 * theta**3


def trajectory(cls, steps=40, lr_change_at=None, **options):
    theta = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64).requires_grad_()
    opt = cls([theta], **options)
    points = []
    for step in range(steps):
        if step == lr_change_at:
            for group in opt.param_groups:
                group["lr"] *= 0.1
        theta.grad = grad_f(theta.detach())
        opt.step()
        points.append(theta.detach().clone())
    return torch.stack(points)


def same(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_forms_trace_one_trajectory_at_constant_lr(nesterov):
    rho = trajectory(optim.SGD, lr=0.05, momentum=MU, nesterov=nesterov)
    cs231n = trajectory(optim.SGD, lr=0.05, momentum=MU, nesterov=nesterov, momentum_form="cs231n")
    # EMA form: v_ema = (1 − μ)·v_rho, so η_ema = η_rho/(1 − μ) gives the same steps.
    ema = trajectory(
        optim.SGD, lr=0.05 / (1 - MU), momentum=MU, nesterov=nesterov, momentum_form="ema"
    )
    same(rho, cs231n)
    same(rho, ema)


def test_momentum_forms_part_when_the_learning_rate_changes():
    kw = dict(momentum=MU, lr_change_at=20)
    rho = trajectory(optim.SGD, lr=0.05, **kw)
    cs231n = trajectory(optim.SGD, lr=0.05, momentum_form="cs231n", **kw)
    ema = trajectory(optim.SGD, lr=0.05 / (1 - MU), momentum_form="ema", **kw)
    same(rho[:20], cs231n[:20])
    # rho and ema scale the whole velocity by the new η: still the same trajectory.
    same(rho, ema)
    # cs231n keeps the old η inside v: after the change it keeps moving faster.
    gap = (rho[20:] - cs231n[20:]).abs().max()
    assert gap > 1e-2


def test_nesterov_change_of_variables_equals_look_ahead_form():
    # Reference: the look-ahead form v ← μ·v − η·∇f(θ + μ·v);  θ ← θ + v.
    lr, steps = 0.05, 40
    theta = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)
    v = torch.zeros_like(theta)
    looked_ahead = []
    for _ in range(steps):
        v = MU * v - lr * grad_f(theta + MU * v)
        theta = theta + v
        looked_ahead.append((theta + MU * v).clone())  # φ = θ + μ·v is what optimizers store
    stored = trajectory(optim.SGD, steps, lr=lr, momentum=MU, nesterov=True, momentum_form="cs231n")
    same(stored, torch.stack(looked_ahead))
    # ...and the stored point is not the plain momentum trajectory.
    plain = trajectory(optim.SGD, steps, lr=lr, momentum=MU, momentum_form="cs231n")
    assert (plain - stored).abs().max() > 1e-3


@pytest.mark.parametrize("nesterov", [False, True])
@pytest.mark.parametrize("form", optim.MOMENTUM_FORMS)
def test_momentum_zero_is_plain_sgd(form, nesterov):
    # The momentum rule with μ = 0 and a live velocity buffer reduces to θ ← θ − η·g.
    theta = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)
    velocity = torch.zeros_like(theta)
    points = []
    for step in range(40):
        optim.sgd(
            theta,
            grad_f(theta),
            velocity,
            lr=0.05,
            momentum=0.0,
            dampening=0.0,
            nesterov=nesterov,
            form=form,
            first_step=step == 0,
        )
        points.append(theta.clone())
    same(torch.stack(points), trajectory(optim.SGD, lr=0.05))


def test_l2_equals_decoupled_weight_decay_for_plain_sgd():
    l2 = trajectory(optim.SGD, lr=0.05, weight_decay=0.3)
    decoupled = trajectory(optim.SGD, lr=0.05, weight_decay=0.3, decoupled_weight_decay=True)
    same(l2, decoupled)


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (optim.SGD, {"lr": 0.05, "momentum": 0.9}),
        (optim.Adam, {"lr": 0.05}),
        (optim.RMSprop, {"lr": 0.01}),
        (optim.Adagrad, {"lr": 0.1}),
    ],
    ids=["momentum", "adam", "rmsprop", "adagrad"],
)
def test_l2_and_decoupled_weight_decay_differ_once_the_gradient_is_rescaled(cls, options):
    l2 = trajectory(cls, weight_decay=0.3, **options)
    decoupled = trajectory(cls, weight_decay=0.3, decoupled_weight_decay=True, **options)
    assert (l2 - decoupled).abs().max() > 1e-3


def test_adamw_is_adam_with_decoupled_weight_decay():
    same(
        trajectory(optim.AdamW, lr=0.05, weight_decay=0.1),
        trajectory(optim.Adam, lr=0.05, weight_decay=0.1, decoupled_weight_decay=True),
    )


def test_adam_with_beta1_zero_and_no_bias_correction_is_rmsprop():
    adam = trajectory(optim.Adam, lr=0.01, betas=(0.0, 0.99), bias_correction=False)
    rmsprop = trajectory(optim.RMSprop, lr=0.01, alpha=0.99)
    same(adam, rmsprop)


def test_adam_with_beta1_zero_is_rmsprop_with_rescaled_lr_and_eps():
    # Bias-corrected, β1 = 0:  η·g/(√(v/c) + ε) = (η√c)·g/(√v + ε√c),  c = 1 − β2ᵗ.
    lr, beta2, eps = 0.01, 0.99, 1e-3
    adam = trajectory(optim.Adam, lr=lr, betas=(0.0, beta2), eps=eps)
    theta = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)
    square_avg = torch.zeros_like(theta)
    points = []
    for t in range(1, 41):
        c = 1 - beta2**t
        optim.rmsprop(
            theta,
            grad_f(theta),
            square_avg,
            None,
            None,
            lr=lr * c**0.5,
            alpha=beta2,
            eps=eps * c**0.5,
            momentum=0.0,
        )
        points.append(theta.clone())
    same(adam, torch.stack(points))


def adam_by_hand(look_ahead: bool, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, steps=40):
    """Adam's moments m, v and bias-corrected v̂; the step uses m̂ = m/(1 − β1ᵗ) or, with
    ``look_ahead``, Nesterov's (1 − β1)/(1 − β1ᵗ)·g + β1/(1 − β1ᵗ⁺¹)·m (constant μ = β1)."""
    theta = torch.linspace(-1.0, 1.5, 5, dtype=torch.float64)
    m, v = torch.zeros_like(theta), torch.zeros_like(theta)
    product = torch.ones(())  # Π = β1ᵗ, kept like torch.optim's NAdam in a 0-dim tensor
    points = []
    for t in range(1, steps + 1):
        g = grad_f(theta)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if look_ahead:
            p = product.mul_(beta1).item()
            direction = (1 - beta1) / (1 - p) * g + beta1 / (1 - p * beta1) * m
        else:
            direction = m / (1 - beta1**t)
        theta = theta - lr * direction / ((v / (1 - beta2**t)).sqrt() + eps)
        points.append(theta.clone())
    return torch.stack(points)


def test_nadam_and_adam_differ_only_through_the_look_ahead():
    adam = trajectory(optim.Adam, lr=0.01)
    same(adam, adam_by_hand(look_ahead=False))
    # A huge ψ makes the momentum schedule μ_t = β1·(1 − ½·0.96^(t·ψ)) constant at β1:
    # NAdam is then the same recursion as Adam with the look-ahead momentum term.
    nadam = trajectory(optim.NAdam, lr=0.01, momentum_decay=1e4)
    same(nadam, adam_by_hand(look_ahead=True))
    assert (adam - nadam).abs().max() > 1e-4
    # With the default ψ the warm-up of μ_t is a second difference.
    assert (trajectory(optim.NAdam, lr=0.01) - nadam).abs().max() > 1e-6
