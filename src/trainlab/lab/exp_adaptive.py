"""Experiment "adagrad_vs_rmsprop": AdaGrad's step size decays to 0, RMSProp's does not.

AdaGrad divides each coordinate's step by the root of the *sum* of its squared gradients,
G ← G + g², which only grows: with gradients of a steady size G ≈ t·g², so the effective
learning rate η/(√G + ε) falls like 1/√t — the lecture's "No decay of grad_sq term. Just
gets bigger and bigger!". RMSProp keeps a leaky average instead, v ← α·v + (1 − α)·g²,
which tracks the current gradient size, so η/(√v + ε) stays put.

Both train the same MLP on MNIST-1D from the same initialization and batch order;
the optimizers' own state (``sum``, ``square_avg``) gives the effective rate of every
weight, summarized as the median and quartiles over all of them.

For the first steps the two curves coincide: RMSProp's v starts at 0 (no bias
correction), so while t ≪ 1/(1 − α) it is (1 − α)·Σg², and η = 1e-3 with 1 − α = 0.01 gives
exactly AdaGrad's η = 1e-2. They part once v has filled (~3/(1 − α) = 300 steps), which is
where the rule starts to look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor, nn

from ..data import load
from ..models import mlp
from ..optim import OPTIMIZERS
from .experiment import Context, Outcome, experiment

ACCUMULATORS = {"adagrad": "sum", "rmsprop": "square_avg"}
"""Where each optimizer keeps its squared-gradient accumulator: G (AdaGrad), v (RMSProp)."""
LEARNING_RATES = {"adagrad": 1e-2, "rmsprop": 1e-3}  # torch.optim's default / the usual one
HIDDEN = (100, 100)
SETTLED = 300  # RMSProp's v starts at 0: after 3/(1 − α) steps its bias α^t is down to 5%
BATCH_SIZE = 64


@dataclass(frozen=True)
class RateHistory:
    """The spread of one optimizer's effective per-coordinate learning rates over training."""

    optimizer: str
    steps: np.ndarray  # the steps recorded, 1-based
    quartiles: np.ndarray  # (len(steps), 3): 25th, 50th and 75th percentile of the rates
    losses: np.ndarray  # training loss of the batch at each recorded step
    untouched: int  # coordinates whose gradient was always exactly 0 (no rate: η/ε)

    @property
    def median(self) -> np.ndarray:
        return self.quartiles[:, 1]

    def at(self, step: int) -> float:
        """The median rate at the recorded step nearest to ``step``."""
        return float(self.median[np.abs(self.steps - step).argmin()])


def effective_rates(optimizer: torch.optim.Optimizer, name: str) -> tuple[Tensor, int]:
    """η/(√G + ε) for every coordinate that has had a nonzero gradient, and the count of those
    that have not.

    AdaGrad's step is θ ← θ − η·g/(√G + ε), RMSProp's θ ← θ − η·g/(√v + ε): the factor in
    front of g is each coordinate's learning rate. A coordinate whose every gradient was
    0 (a dead ReLU's weights) has G = 0 and a "rate" η/ε that it never uses: left out.
    """
    rates, untouched = [], 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            accumulator = optimizer.state[p][ACCUMULATORS[name]].flatten()
            used = accumulator > 0
            untouched += int((~used).sum())
            rates.append(group["lr"] / (accumulator[used].sqrt() + group["eps"]))
    return torch.cat(rates), untouched


def recorded_steps(total: int) -> list[int]:
    """Log-spaced steps (for the early decay), an even grid (for the late steps), SETTLED."""
    logarithmic = np.geomspace(1, total, 60).round().astype(int)
    linear = np.linspace(total / 50, total, 50).round().astype(int)
    return sorted({int(s) for s in (*logarithmic, *linear, SETTLED) if s <= total})


def train(name: str, steps: int, seed: int, x: Tensor, y: Tensor) -> RateHistory:
    """Train the MLP with ``name``'s optimizer and record its effective rates."""
    torch.manual_seed(seed)  # the same initial weights for both optimizers
    model = mlp(x.shape[1], HIDDEN, 10)
    optimizer = OPTIMIZERS[name].cls(model.parameters(), lr=LEARNING_RATES[name])
    generator = torch.Generator().manual_seed(seed)  # and the same batches
    record = set(recorded_steps(steps))
    order = torch.randperm(len(y), generator=generator)
    rows, kept, losses, untouched = [], [], [], 0
    for step in range(1, steps + 1):
        start = ((step - 1) * BATCH_SIZE) % len(y)
        if start + BATCH_SIZE > len(y):  # a new epoch, reshuffled
            order = torch.randperm(len(y), generator=generator)
        batch = order[start : start + BATCH_SIZE]
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in record:
            rates, untouched = effective_rates(optimizer, name)
            quartiles = torch.quantile(rates, rates.new_tensor([0.25, 0.5, 0.75]))
            rows.append(quartiles.numpy())
            kept.append(step)
            losses.append(loss.item())
    return RateHistory(name, np.array(kept), np.array(rows), np.array(losses), untouched)


def log_log_slope(history: RateHistory, start: int) -> float:
    """Least-squares slope of log(median rate) against log(step) over steps >= ``start``."""
    late = history.steps >= start
    return float(np.polyfit(np.log(history.steps[late]), np.log(history.median[late]), 1)[0])


@experiment(
    "adagrad_vs_rmsprop",
    claim=(
        "AdaGrad's effective per-coordinate learning rate η/(√G + ε) decays towards 0, "
        "roughly like 1/√t, because G only grows; RMSProp's η/(√v + ε) does not decay."
    ),
    seed="000",
    rule=(
        "holds if (1) AdaGrad's median effective rate at the last step is < 1/10 of the "
        "first step's and its log-log slope from step 300 on is in [−0.75, −0.25] (1/√t: "
        "−0.5), and (2) RMSProp's median rate never falls below 1/3 of its value at step "
        "300 (once v has filled: 0.99³⁰⁰ ≈ 5%)"
    ),
)
def adagrad_vs_rmsprop(ctx: Context) -> Outcome:
    steps = 2000 if ctx.quick else 10000
    data = load("mnist1d")
    x, y = data.x.flatten(1), data.y
    adagrad, rmsprop = (train(name, steps, ctx.seed, x, y) for name in ACCUMULATORS)

    settled = SETTLED
    adagrad_decay = adagrad.at(1) / adagrad.at(steps)
    adagrad_slope = log_log_slope(adagrad, settled)
    late = rmsprop.median[rmsprop.steps >= settled] / rmsprop.at(settled)
    # One-sided: the claim is about decay. RMSProp's rate follows the gradients' size, and
    # it *rises* when they shrink (a long run drives the training loss towards 0).
    rmsprop_lowest, rmsprop_highest = float(late.min()), float(late.max())
    rmsprop_slope = log_log_slope(rmsprop, settled)
    adagrad_decays = adagrad_decay > 10 and -0.75 <= adagrad_slope <= -0.25
    rmsprop_steady = rmsprop_lowest >= 1 / 3
    # Both rates drift with the size of the gradients (they grow here as the network leaves
    # its initialization); their ratio √(v/G) cancels that drift and is left with ≈ 1/√t.
    ratio = replace(adagrad, quartiles=adagrad.quartiles / rmsprop.quartiles)
    ratio_slope = log_log_slope(ratio, settled)

    _figure(ctx, adagrad, rmsprop, settled)
    evidence = (
        f"Over {steps} steps AdaGrad's median effective rate fell {adagrad_decay:.0f}× "
        f"(log-log slope {adagrad_slope:.2f} after step {settled}, 1/√t is −0.5); RMSProp's "
        f"stayed between {rmsprop_lowest:.2f}× and {rmsprop_highest:.2f}× its value at step "
        f"{settled} (slope {rmsprop_slope:.2f}: it follows the gradients' size); the ratio of "
        f"the two falls with slope {ratio_slope:.2f}."
    )
    outcome = Outcome.judge(
        adagrad_decays and rmsprop_steady,
        evidence,
        steps=steps,
        batch_size=BATCH_SIZE,
        learning_rates=LEARNING_RATES,
        settled_from_step=settled,
        adagrad_first_rate=adagrad.at(1),
        adagrad_last_rate=adagrad.at(steps),
        adagrad_decay=adagrad_decay,
        adagrad_slope=adagrad_slope,
        adagrad_decays=adagrad_decays,
        rmsprop_first_rate=rmsprop.at(1),
        rmsprop_settled_rate=rmsprop.at(settled),
        rmsprop_last_rate=rmsprop.at(steps),
        rmsprop_lowest_vs_settled=rmsprop_lowest,
        rmsprop_highest_vs_settled=rmsprop_highest,
        rmsprop_slope=rmsprop_slope,
        rmsprop_steady=rmsprop_steady,
        adagrad_to_rmsprop_slope=ratio_slope,
        final_batch_loss={h.optimizer: float(h.losses[-5:].mean()) for h in (adagrad, rmsprop)},
        untouched_coordinates={h.optimizer: h.untouched for h in (adagrad, rmsprop)},
    )
    table = [
        {
            "optimizer": h.optimizer,
            "step": int(s),
            "rate_q25": float(q[0]),
            "rate_median": float(q[1]),
            "rate_q75": float(q[2]),
            "batch_loss": float(loss),
        }
        for h in (adagrad, rmsprop)
        for s, q, loss in zip(h.steps, h.quartiles, h.losses)
        if s in (1, settled, steps) or math.log2(s).is_integer()
    ]
    claims = [
        {
            "claim": "AdaGrad's effective rate decays towards 0 like 1/√t",
            "numbers": f"fell {adagrad_decay:.1f}×, slope {adagrad_slope:.2f}",
            "verdict": "holds" if adagrad_decays else "fails",
        },
        {
            "claim": "RMSProp's effective rate does not decay",
            "numbers": f"{rmsprop_lowest:.2f}× to {rmsprop_highest:.2f}× its step-{settled} value, "
            f"slope {rmsprop_slope:.2f}",
            "verdict": "holds" if rmsprop_steady else "fails",
        },
    ]
    return replace(outcome, tables={"claims": claims, "rates": table})


def _figure(ctx: Context, adagrad: RateHistory, rmsprop: RateHistory, settled: int) -> None:
    figure, axes = ctx.figure("adagrad_vs_rmsprop", width=11, height=4.2, columns=2)
    ax_rates, ax_loss = axes[0]
    colors = {"adagrad": "tab:orange", "rmsprop": "tab:red"}
    for h, symbol in ((adagrad, "η/(√G + ε)"), (rmsprop, "η/(√v + ε)")):
        color, lr = colors[h.optimizer], LEARNING_RATES[h.optimizer]
        low, high = h.quartiles[:, 0], h.quartiles[:, 2]
        ax_rates.fill_between(h.steps, low, high, color=color, alpha=0.25, linewidth=0)
        ax_rates.plot(h.steps, h.median, color=color, label=f"{h.optimizer} (η = {lr:g}): {symbol}")
        ax_loss.plot(h.steps, h.losses, color=color, label=h.optimizer)
    # the 1/√t law through AdaGrad's rate at the settled step, for the eye
    t = adagrad.steps[adagrad.steps >= settled].astype(float)
    law = adagrad.at(settled) * np.sqrt(settled / t)
    ax_rates.plot(t, law, color="black", linestyle=":", linewidth=1, label="∝ 1/√t")
    ax_rates.axvline(
        settled, color="0.5", linewidth=0.8, linestyle="--", label=f"step {settled}: v has filled"
    )
    ax_rates.set(
        xscale="log",
        yscale="log",
        xlabel="step",
        ylabel="effective learning rate per weight",
        title="median and quartiles over all weights",
    )
    ax_loss.set(
        xscale="log",
        yscale="log",
        xlabel="step",
        ylabel="training loss (batch)",
        title="both train the same MLP on MNIST-1D, same start and batches",
    )
    for ax in axes[0]:
        ax.legend(fontsize=8)
        ax.title.set_fontsize(9)
    ctx.save(figure)
