"""Exponentially weighted averages: why they need bias correction, and how long they remember.

The lecture (seed 003) averages a noisy daily temperature series with
v_t = β·v_{t−1} + (1 − β)·θ_t, v_0 = 0: the average covers about 1/(1 − β) days (10 for
β = 0.9, 50 for β = 0.98), starts far too low because v_0 = 0, and the corrected
v_t / (1 − βᵗ) tracks the data from the first day. Adam's moments are such averages.
"""

from __future__ import annotations

import math

import torch

from .experiment import Context, Outcome, experiment

BETAS = (0.9, 0.98)


def ewma(series: list[float], beta: float, *, corrected: bool) -> list[float]:
    """v_t = β·v_{t−1} + (1 − β)·θ_t from v_0 = 0, divided by 1 − βᵗ when ``corrected``."""
    out, v = [], 0.0
    for t, value in enumerate(series, start=1):
        v = beta * v + (1 - beta) * value
        out.append(v / (1 - beta**t) if corrected else v)
    return out


def temperatures(days: int, seed: int) -> list[float]:
    """A year of noisy daily temperatures (°C): a seasonal cycle plus weather."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(days, dtype=torch.float64)
    season = 12 - 10 * torch.cos(2 * math.pi * (t + 100) / 365)  # from mid-April
    return (season + 4 * torch.randn(days, generator=g, dtype=torch.float64)).tolist()


def rise_time(beta: float, steps: int = 2000) -> int:
    """Steps until the average of a unit step reaches 1 − 1/e (63%) of it."""
    for t, value in enumerate(ewma([1.0] * steps, beta, corrected=False), start=1):
        if value >= 1 - 1 / math.e:
            return t
    return steps


@experiment(
    "ewma",
    claim="An exponentially weighted average with β remembers about 1/(1 − β) steps; "
    "started at 0 it begins far too low, and bias correction v_t/(1 − βᵗ) tracks the data "
    "from the first step.",
    seed="003",
    rule="for β = 0.9 and 0.98: the uncorrected first value is (1 − β)·θ₁ (≤ 10% of θ₁), "
    "the corrected first value is θ₁ exactly, the corrected average's mean error over the "
    "first 1/(1 − β) days is under half the uncorrected one's, and the average of a unit "
    "step reaches 63% within ±10% of 1/(1 − β) steps",
)
def run(ctx: Context) -> Outcome:
    days = 120 if ctx.quick else 365
    series = temperatures(days, ctx.seed)
    figure, axes = ctx.figure("ewma", width=10, height=4.2, columns=2)
    left, right = axes[0]
    left.plot(range(1, days + 1), series, ".", color="0.6", markersize=3, label="daily θ_t")
    rows, holds = [], True
    for beta, color in zip(BETAS, ("tab:red", "tab:green")):
        raw = ewma(series, beta, corrected=False)
        fixed = ewma(series, beta, corrected=True)
        window = 1 / (1 - beta)
        early = range(int(window))
        raw_error = sum(abs(raw[t] - series[t]) for t in early) / len(early)
        fixed_error = sum(abs(fixed[t] - series[t]) for t in early) / len(early)
        rise = rise_time(beta)
        row = {
            "beta": beta,
            "window 1/(1-β)": window,
            "first value, uncorrected": raw[0],
            "first value, corrected": fixed[0],
            "first day θ₁": series[0],
            "mean |error| first window, uncorrected": raw_error,
            "mean |error| first window, corrected": fixed_error,
            "63% rise time (steps)": rise,
        }
        rows.append(row)
        holds &= abs(raw[0] - (1 - beta) * series[0]) < 1e-9 and abs(raw[0]) <= 0.1 * abs(series[0])
        holds &= abs(fixed[0] - series[0]) < 1e-9 and fixed_error < 0.5 * raw_error
        holds &= abs(rise - window) <= 0.1 * window
        left.plot(range(1, days + 1), raw, "--", color=color, label=f"β = {beta}, no correction")
        left.plot(range(1, days + 1), fixed, "-", color=color, label=f"β = {beta}, corrected")
        step = ewma([1.0] * 200, beta, corrected=False)
        right.plot(range(1, 201), step, color=color, label=f"β = {beta}: 63% at step {rise}")
        right.axvline(window, color=color, linestyle=":", linewidth=1)
    left.set(xlabel="day", ylabel="temperature (°C)", title="Averages of a noisy series")
    left.legend(fontsize=7)
    right.axhline(1 - 1 / math.e, color="black", linewidth=0.8, linestyle="--")
    right.set(xlabel="step", ylabel="average of a unit step", title="Memory ≈ 1/(1 − β) steps")
    right.legend(fontsize=8)
    ctx.save(figure)
    first = rows[0]
    evidence = (
        f"β = 0.9: first value {first['first value, uncorrected']:.2f} uncorrected vs "
        f"{first['first value, corrected']:.2f} corrected (θ₁ = {first['first day θ₁']:.2f}); "
        f"mean error over the first 10 days {first['mean |error| first window, uncorrected']:.2f}"
        f" vs {first['mean |error| first window, corrected']:.2f}; 63% rise after "
        f"{rows[0]['63% rise time (steps)']} and {rows[1]['63% rise time (steps)']} steps for "
        "β = 0.9 and 0.98 (1/(1 − β) = 10 and 50)"
    )
    outcome = Outcome.judge(holds, evidence, betas=list(BETAS))
    return Outcome(outcome.verdict, outcome.evidence, outcome.numbers, {"averages": rows})
