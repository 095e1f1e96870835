"""Seconds of training until MNIST-1D test accuracy reaches 94% (the MNIST-1D paper's CNN).

The demo's recipe (AdamW, one-cycle, batch norm, dropout, shift augmentation) over an
8-epoch run, through trainlab's trainer and through a plain PyTorch loop of the same
recipe (``torch.optim.AdamW``, ``OneCycleLR``, ``randperm`` batches), alternating, seeds
0, 1, 2; the test accuracy is measured every quarter epoch outside the clock (the lab's
``time_to_accuracy`` clock). ``trainlab lab run time_to_accuracy`` searches for a faster
recipe; this script times a fixed one. Writes benchmarks/results/time_to_accuracy.json.

    python benchmarks/time_to_accuracy.py [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from trainlab.lab.exp_time import DEMO_SHORT, TARGET, time_plain, time_trainlab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=DEMO_SHORT.epochs)
    args = parser.parse_args()
    recipe = replace(DEMO_SHORT, epochs=args.epochs)
    results: dict[str, list[dict[str, float | None]]] = {"trainlab": [], "plain": []}
    with tempfile.TemporaryDirectory() as folder:
        for seed in (0, 1, 2):
            for loop in results:
                timing = (
                    time_trainlab(recipe, seed, 60.0, Path(folder))
                    if loop == "trainlab"
                    else time_plain(recipe, seed, 60.0)
                )
                results[loop].append(
                    {"seed": seed, "seconds": timing.seconds, "ms_per_step": 1e3 * timing.per_step}
                )
    print(f"training seconds to {TARGET:.0%} MNIST-1D test accuracy, {recipe.label()}:")
    print(f"{'loop':<10} {'seed 0':>8} {'seed 1':>8} {'seed 2':>8} {'mean':>8} {'ms/step':>8}")
    summary = {}
    for loop, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        mean = statistics.mean(seconds) if None not in seconds else None
        per_step = statistics.median(r["ms_per_step"] for r in runs)
        summary[loop] = {"runs": runs, "mean": mean, "ms_per_step": per_step}
        shown = [f"{s:8.2f}" if s is not None else "  missed" for s in [*seconds, mean]]
        print(f"{loop:<10} {' '.join(shown)} {per_step:8.2f}")
    out = Path("benchmarks/results/time_to_accuracy.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"target": TARGET, "recipe": recipe.label(), **summary}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
