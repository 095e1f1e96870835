"""The trainer against a hand-written PyTorch loop doing the same work.

Same model (the demo's MNIST-1D CNN), optimizer (AdamW, one-cycle), batches and epochs.
Two hand-written loops: the bare one does only forward, loss, backward, step and the
learning-rate update; the second also evaluates on the validation split after every
epoch, as the trainer does. On top of that the trainer does what makes it dependable —
the non-finite checks, logging every 10 steps, crash-safe checkpoints (the first epoch's,
then one whenever the last is older than run.checkpoint_seconds, and the last) — and the
ratios show what that costs. Medians over alternating repeats; writes
benchmarks/results/trainer_overhead.json.

    python benchmarks/trainer_overhead.py [--repeats N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainlab.cli import DEMO_SETTINGS
from trainlab.train import LRController, OneCycle
from trainlab.train.config import load_config
from trainlab.train.trainer import Trainer


def settings(epochs: int) -> list[str]:
    steps = epochs * 29  # ceil(3600 / 128) batches per epoch
    return [
        *[s for s in DEMO_SETTINGS if not s.startswith(("run.epochs", "schedule.phases"))],
        f"run.epochs={epochs}",
        f'schedule.phases=[{{name="one_cycle", total={steps}}}]',
        "averaging.ema=false",
        "run.keep_best_by=none",
    ]


def trainer_seconds(epochs: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs)), run_dir)
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start - _final_evaluation_seconds(trainer)


def _final_evaluation_seconds(trainer: Trainer) -> float:
    # fit() ends with train/val/test evaluations and saving; the hand loop does neither.
    start = time.perf_counter()
    for x, y in ((trainer.data.x, trainer.data.y), (trainer.data.x_val, trainer.data.y_val)):
        trainer.evaluate(x, y)
    trainer.evaluate(trainer.data.x_test, trainer.data.y_test)
    return time.perf_counter() - start


def hand_seconds(epochs: int, validate: bool = False) -> float:
    # The same objects the trainer builds, driven by the plainest loop.
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs)), run_dir)
    model, optimizer, batches = trainer.model, trainer.optimizer, trainer.batches
    x_val, y_val = trainer.data.x_val, trainer.data.y_val
    controller = LRController(optimizer, OneCycle(epochs * len(batches)))
    loss_fn = torch.nn.functional.cross_entropy
    start = time.perf_counter()
    step = 0
    model.train()
    for _ in range(epochs):
        for xb, yb in batches:
            controller.step(step)
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
            step += 1
        if validate:
            model.eval()
            with torch.no_grad():
                logits = model(x_val)
                val_loss = loss_fn(logits, y_val).item()
                val_accuracy = (logits.argmax(1) == y_val).float().mean().item()
            model.train()
            del val_loss, val_accuracy
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    times: dict[str, list[float]] = {"hand": [], "hand_validated": [], "trainer": []}
    for _ in range(args.repeats):
        times["hand"].append(hand_seconds(args.epochs))
        times["hand_validated"].append(hand_seconds(args.epochs, validate=True))
        times["trainer"].append(trainer_seconds(args.epochs))
    hand, validated, ours = (statistics.median(times[k]) for k in times)
    print(f"{args.epochs} epochs of the MNIST-1D demo CNN, 2 threads, median of {args.repeats}:")
    print(f"  hand-written loop                 {hand:6.2f} s")
    print(f"  hand-written loop + validation    {validated:6.2f} s")
    print(
        f"  trainlab Trainer                  {ours:6.2f} s   ({ours / hand:.2f}x the bare loop, "
        f"{ours / validated:.2f}x the validated one)"
    )
    out = Path("benchmarks/results/trainer_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "hand_seconds": hand,
                "hand_validated_seconds": validated,
                "trainer_seconds": ours,
                "ratio": ours / hand,
                "ratio_validated": ours / validated,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
