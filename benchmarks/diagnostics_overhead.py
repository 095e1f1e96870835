"""What the live instruments cost: the demo's CNN trained with and without [diagnostics].

Same config (the demo's recipe without augmentation, 10 epochs), the instruments sampling
every 10 steps (the default) and every step; figures off, since drawing them is a one-off
cost at the end (timed separately). Medians over alternating repeats; writes
benchmarks/results/diagnostics_overhead.json.

    python benchmarks/diagnostics_overhead.py [--repeats N] [--epochs N]
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


def settings(epochs: int, every: int | None) -> list[str]:
    steps = epochs * 29
    chosen = [
        *[
            s
            for s in DEMO_SETTINGS
            if not s.startswith(("run.epochs", "schedule.phases", "data.augment"))
        ],
        f"run.epochs={epochs}",
        f'schedule.phases=[{{name="one_cycle", total={steps}}}]',
        "run.keep_best_by=none",
    ]
    if every is not None:
        chosen += ["diagnostics.enabled=true", f"diagnostics.every={every}"]
        chosen += ["diagnostics.plots=false"]
    return chosen


def seconds(epochs: int, every: int | None) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs, every)), run_dir)
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start


def plot_seconds(epochs: int) -> float:
    """Drawing the figures once at the end (matplotlib imported beforehand)."""
    import matplotlib  # noqa: F401  (the import is not the figures' cost)

    from trainlab.diagnose.plots import diagnostics_figures

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs, 10)), run_dir)
        trainer.fit()
        instruments = trainer.callbacks[2]
        metrics = [
            json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
        ]
        start = time.perf_counter()
        diagnostics_figures(Path(run_dir), instruments.samples(), metrics)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    variants = {"off": None, "every 10 steps": 10, "every step": 1}
    for every in variants.values():
        seconds(args.epochs, every)  # warm up
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, every in variants.items():
            times[name].append(seconds(args.epochs, every))
    median = {name: statistics.median(values) for name, values in times.items()}
    figures = plot_seconds(args.epochs)
    base = median["off"]
    print(f"{args.epochs} epochs of the demo CNN, 2 threads, median of {args.repeats}:")
    for name, value in median.items():
        print(f"  diagnostics {name:<16}{value:6.2f} s  ({value / base - 1:+.1%})")
    print(f"  drawing the figures at the end: {figures:.2f} s")
    out = Path("benchmarks/results/diagnostics_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "seconds": median,
                "all_seconds": times,
                "overhead_every_10": median["every 10 steps"] / base - 1,
                "overhead_every_step": median["every step"] / base - 1,
                "figures_seconds": figures,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
