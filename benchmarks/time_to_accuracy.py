"""Seconds of training until MNIST-1D test accuracy reaches 94% (the MNIST-1D paper's CNN).

The demo's recipe (AdamW, one-cycle, batch norm, dropout, shift augmentation) over a short
run; the test accuracy is measured after every epoch, outside the timed training, and the
time of the first epoch at ≥ 94% is reported. Mean over seeds 0, 1, 2, 2 threads; writes
benchmarks/results/time_to_accuracy.json.

    python benchmarks/time_to_accuracy.py [--epochs N] [--target 0.94]
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
from trainlab.train.config import load_config
from trainlab.train.trainer import Trainer


def seconds_to_target(seed: int, epochs: int, target: float) -> tuple[float | None, float]:
    steps = epochs * 29  # ceil(3600 / 128) batches per epoch
    settings = [
        *[s for s in DEMO_SETTINGS if not s.startswith(("run.epochs", "schedule.phases"))],
        f"run.epochs={epochs}",
        f'schedule.phases=[{{name="one_cycle", total={steps}}}]',
        "optimizer.options={weight_decay=0.0001}",
        f"run.seed={seed}",
    ]
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings), run_dir)
        trained, best = 0.0, 0.0
        for _ in range(epochs):
            start = time.perf_counter()
            trainer.model.train()
            for xb, yb in trainer.batches:
                trainer._train_step(xb, yb)
            trained += time.perf_counter() - start
            accuracy = trainer.evaluate(trainer.test)["accuracy"]
            best = max(best, accuracy)
            if accuracy >= target:
                return trained, accuracy
        return None, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--target", type=float, default=0.94)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = []
    for seed in (0, 1, 2):
        seconds, accuracy = seconds_to_target(seed, args.epochs, args.target)
        results.append({"seed": seed, "seconds": seconds, "accuracy": accuracy})
        shown = f"{seconds:.2f} s" if seconds is not None else "not reached"
        print(f"  seed {seed}: {shown} (test accuracy {accuracy:.3f})")
    reached = [r["seconds"] for r in results if r["seconds"] is not None]
    mean = statistics.mean(reached) if len(reached) == len(results) else None
    print(f"mean seconds to {args.target:.0%}: {mean:.2f}" if mean else "target not reached")
    out = Path("benchmarks/results/time_to_accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": args.target, "runs": results, "mean": mean}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
