"""Adam's bias correction: what it changes in the first steps, measured.

Adam's moments start at 0, so early on m_t ≈ (1 − β1ᵗ)·E[g] and v_t ≈ (1 − β2ᵗ)·E[g²].
Without correction the step m_t/√v_t is (1 − β1ᵗ)/√(1 − β2ᵗ) times the corrected one:
(1 − 0.9)/√(1 − 0.999) ≈ 3.16 at the first step — the lecture's "Adam (almost)" takes a
first step three times too large — and the factor fades only as β2ᵗ does, over about
1/(1 − β2) = 1000 steps (seed 002, cs231n lecture 7: "bias correction for the fact that
first and second moment estimates start at zero").
"""

from __future__ import annotations

import math

import torch

from ..optim import Adam
from .experiment import Context, Outcome, experiment

CHECK_STEPS = (1, 2, 10, 100, 1000)


def step_sizes(bias_correction: bool, steps: int) -> list[float]:
    """Per-coordinate step |Δθ|/η of Adam on a constant gradient (g = 1 everywhere)."""
    theta = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    optimizer = Adam([theta], lr=1e-3, bias_correction=bias_correction)
    sizes = []
    for _ in range(steps):
        before = theta.detach().clone()
        optimizer.zero_grad()
        theta.sum().backward()  # gradient 1 in every coordinate
        optimizer.step()
        sizes.append(float((theta.detach() - before).abs().mean()) / 1e-3)
    return sizes


def early_losses(bias_correction: bool, steps: int, seed: int) -> list[float]:
    """Training loss of a small MLP on digits over the first ``steps`` Adam steps."""
    from .. import data, models

    ds = data.load("digits")
    x = data.Normalizer("feature").fit(ds.x)(ds.x)
    torch.manual_seed(seed)
    model = models.mlp(x.shape[1:], (64,), ds.classes)
    optimizer = Adam(model.parameters(), lr=1e-2, bias_correction=bias_correction)
    batches = data.Batches(x, ds.y, 64, seed=seed)
    losses: list[float] = []
    while len(losses) < steps:
        for xb, yb in batches:
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    return losses


@experiment(
    "adam_bias_correction",
    claim="Without bias correction Adam's first step is (1 − β1)/√(1 − β2) ≈ 3.16 times "
    "the corrected one, and the two agree only after about 1/(1 − β2) steps.",
    seed="002",
    rule="on a constant gradient, the uncorrected/corrected step ratio equals "
    "(1 − β1ᵗ)/√(1 − β2ᵗ) within 1% at t = 1, 2, 10, 100, 1000 (3.16 at t = 1), and the "
    "corrected step is η within 1% at t = 1",
)
def run(ctx: Context) -> Outcome:
    steps = max(CHECK_STEPS)
    plain = step_sizes(False, steps)
    corrected = step_sizes(True, steps)
    loss_steps = 60 if ctx.quick else 300
    loss_plain = early_losses(False, loss_steps, ctx.seed)
    loss_corrected = early_losses(True, loss_steps, ctx.seed)
    rows, holds = [], abs(corrected[0] - 1) < 0.01
    for t in CHECK_STEPS:
        measured = plain[t - 1] / corrected[t - 1]
        theory = (1 - 0.9**t) / math.sqrt(1 - 0.999**t)
        rows.append({"step": t, "measured ratio": measured, "(1 − β1ᵗ)/√(1 − β2ᵗ)": theory})
        holds &= abs(measured / theory - 1) < 0.01
    figure, axes = ctx.figure("adam_bias_correction", width=10, height=4.2, columns=2)
    left, right = axes[0]
    ts = range(1, steps + 1)
    left.plot(ts, plain, label="without bias correction")
    left.plot(ts, corrected, label="with bias correction")
    left.set(
        xscale="log",
        xlabel="step",
        ylabel="|Δθ| / η per coordinate",
        title="Adam's step on a constant gradient",
    )
    left.legend()
    right.plot(range(1, loss_steps + 1), loss_plain, label="without bias correction")
    right.plot(range(1, loss_steps + 1), loss_corrected, label="with bias correction")
    right.set(xlabel="step", ylabel="training loss", title="First steps, MLP on digits (lr 1e-2)")
    right.legend()
    ctx.save(figure)
    evidence = (
        f"first step {plain[0]:.3f}·η without correction, {corrected[0]:.3f}·η with "
        f"(ratio {rows[0]['measured ratio']:.3f}, theory 3.162); ratio "
        f"{rows[2]['measured ratio']:.3f} at step 10, {rows[3]['measured ratio']:.3f} at 100, "
        f"{rows[4]['measured ratio']:.3f} at 1000; digits MLP loss after {loss_steps} steps "
        f"{loss_plain[-1]:.3f} without, {loss_corrected[-1]:.3f} with"
    )
    return Outcome(
        "holds" if holds else "fails",
        evidence,
        {"loss_without": loss_plain, "loss_with": loss_corrected},
        {"step ratios": rows},
    )
