"""One step of each optimizer, computed by hand from the lecture's formulas."""

from __future__ import annotations

import math

import torch

import trainlab.optim as optim

THETA = [1.0, -2.0]
GRAD = [0.5, -0.25]


def step_once(cls, steps=1, **options):
    """θ after ``steps`` steps on the linear loss g·θ (constant gradient g)."""
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True)
    opt = cls([theta], **options)
    for _ in range(steps):
        opt.zero_grad()
        (theta * torch.tensor(GRAD, dtype=torch.float64)).sum().backward()
        opt.step()
    return theta.detach().tolist()


def expect(update):
    """θ + update(θ, g) coordinate-wise."""
    return [t + update(t, g) for t, g in zip(THETA, GRAD)]


def close(actual, expected):
    for a, e in zip(actual, expected):
        assert math.isclose(a, e, rel_tol=1e-12, abs_tol=1e-15), (actual, expected)


def test_sgd():
    close(step_once(optim.SGD, lr=0.1), expect(lambda t, g: -0.1 * g))


def test_sgd_momentum_two_steps():
    # v1 = g, θ1 = θ0 − η·g;  v2 = μ·g + g, θ2 = θ1 − η·1.9·g
    close(step_once(optim.SGD, 2, lr=0.1, momentum=0.9), expect(lambda t, g: -0.1 * g * 2.9))


def test_sgd_nesterov_first_step():
    # v1 = g;  θ1 = θ0 − η·(g + μ·v1)
    close(
        step_once(optim.SGD, lr=0.1, momentum=0.9, nesterov=True),
        expect(lambda t, g: -0.1 * 1.9 * g),
    )


def test_sgd_cs231n_form_two_steps():
    # v1 = −η·g, θ1 = θ0 + v1;  v2 = μ·v1 − η·g, θ2 = θ1 + v2
    close(
        step_once(optim.SGD, 2, lr=0.1, momentum=0.9, momentum_form="cs231n"),
        expect(lambda t, g: -0.1 * g + (-0.09 * g - 0.1 * g)),
    )


def test_adagrad():
    close(step_once(optim.Adagrad, lr=0.1), expect(lambda t, g: -0.1 * g / (abs(g) + 1e-10)))


def test_rmsprop():
    close(
        step_once(optim.RMSprop, lr=0.01),
        expect(lambda t, g: -0.01 * g / (math.sqrt(0.01 * g * g) + 1e-8)),
    )


def test_adadelta():
    def update(t, g):
        square_avg = 0.1 * g * g
        return -math.sqrt(1e-6) / math.sqrt(square_avg + 1e-6) * g

    close(step_once(optim.Adadelta), expect(update))


def test_adam_first_step_is_lr_times_sign():
    close(step_once(optim.Adam, lr=0.01), expect(lambda t, g: -0.01 * g / (abs(g) + 1e-8)))


def test_adam_without_bias_correction():
    # m = 0.1·g, v = 0.001·g²: the first step is η·0.1/√0.001 ≈ 3.16·η, not η.
    def update(t, g):
        return -0.01 * 0.1 * g / (math.sqrt(0.001 * g * g) + 1e-8)

    theta = step_once(optim.Adam, lr=0.01, bias_correction=False)
    close(theta, expect(update))
    # The optimizer's own first step, per coordinate: ≈ 3.16·η without the correction,
    # η with it.
    moved = [abs(a - t) for a, t in zip(theta, THETA)]
    assert all(3.1 * 0.01 < m < 3.2 * 0.01 for m in moved), moved
    corrected = [abs(a - t) for a, t in zip(step_once(optim.Adam, lr=0.01), THETA)]
    assert all(math.isclose(m, 0.01, rel_tol=1e-6) for m in corrected), corrected


def test_adamw():
    close(
        step_once(optim.AdamW, lr=0.01, weight_decay=0.1),
        expect(lambda t, g: t * (1 - 0.01 * 0.1) - t - 0.01 * g / (abs(g) + 1e-8)),
    )


def test_adamax():
    # m = 0.1·g, u = |g| + ε, step η/(1 − β1)·m/u
    close(
        step_once(optim.Adamax, lr=0.002),
        expect(lambda t, g: -(0.002 / 0.1) * 0.1 * g / (abs(g) + 1e-8)),
    )


def test_nadam():
    mu1 = 0.9 * (1 - 0.5 * 0.96 ** (1 * 0.004))
    mu2 = 0.9 * (1 - 0.5 * 0.96 ** (2 * 0.004))

    # Π₁ = μ₁, kept (like torch.optim) in a float32 0-dim tensor, whatever the param dtype.
    prod = torch.tensor(mu1, dtype=torch.float32).item()

    def update(t, g):
        m, v_hat = 0.1 * g, g * g  # v/(1 − β2)
        direction = (1 - mu1) / (1 - prod) * g + mu2 / (1 - prod * mu2) * m
        return -0.002 * direction / (math.sqrt(v_hat) + 1e-8)

    close(step_once(optim.NAdam), expect(update))


def test_lbfgs_first_iteration_is_a_scaled_gradient_step():
    # d = −g, t = min(1, 1/‖g‖₁)·η = 1 (‖g‖₁ = 0.75)
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([theta], max_iter=1)
    g = torch.tensor(GRAD, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = (theta * g).sum()
        loss.backward()
        return loss

    opt.step(closure)
    close(theta.detach().tolist(), expect(lambda t, g: -g))


def test_newton_solves_a_quadratic_in_one_step():
    # f = ½·θᵀAθ − bᵀθ  →  θ* = A⁻¹·b
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([1.0, -1.0], dtype=torch.float64)
    theta = torch.tensor(THETA, dtype=torch.float64, requires_grad=True)
    opt = optim.Newton([theta])
    opt.step(lambda: 0.5 * theta @ a @ theta - b @ theta)
    close(theta.detach().tolist(), torch.linalg.solve(a, b).tolist())
