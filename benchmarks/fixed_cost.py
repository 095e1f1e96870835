"""The fixed cost of one optimizer step, measured alone: a group of 8 tensors of 1,000 parameters.

For each optimizer, trainlab's default (``backend="auto"``), its compiled path
(``"fused"``), torch's fused kernel over trainlab's flat buffers (``"torch-fused"``, where
torch has one) and torch.optim's fastest implementation each step one group by themselves:
warm-up, then the median of 3,000 steps, in microseconds. At this size a step is almost
all fixed cost (Python, dispatch, the compiled call), which is what this measures. After
the first step each gets its gradients as a training loop does, from zero_grad and backward
(optim_step.py's `as_in_training`), so no step copies them into a flat buffer. With
``--runs N`` every path is measured in N whole runs and each cell is their median.

    python benchmarks/fixed_cost.py [--label NAME] [--note TEXT] [--threads N] [--runs N]

The run is stored under ``--label`` (default "current") in
benchmarks/results/fixed_cost.json, beside the runs stored under other labels: running it
with ``PYTHONPATH`` pointing at an older checkout's ``src`` and ``--label before`` keeps
that checkout's numbers beside the current ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch

import trainlab
from optim_step import (  # this script's folder is on sys.path
    FUSED_IN_TORCH,
    SETTINGS,
    as_in_training,
)
from trainlab.optim import OPTIMIZERS

STEPS = 3000


def group() -> list[torch.Tensor]:
    params = [torch.randn(1000, requires_grad=True) for _ in range(8)]
    for p in params:
        p.grad = torch.randn(1000) * 1e-3
    return params


def median_us(opt: torch.optim.Optimizer) -> float:
    as_in_training(opt)  # the first step, then gradients from zero_grad and backward
    for _ in range(49):  # the compilation, the caches
        opt.step()
    samples = []
    for _ in range(STEPS):
        start = time.perf_counter()
        opt.step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(name: str) -> dict[str, float]:
    spec, options = OPTIMIZERS[name], SETTINGS[name]
    row = {
        "default": median_us(spec.cls(group(), **options)),
        "fused": median_us(spec.cls(group(), backend="fused", **options)),
    }
    if getattr(spec.cls, "has_torch_kernel", False):
        row["torch-fused"] = median_us(spec.cls(group(), backend="torch-fused", **options))
    torch_cls = getattr(torch.optim, spec.torch_name)
    kinds = [{"foreach": False}, {"foreach": True}]
    if spec.torch_name in FUSED_IN_TORCH:
        kinds.append({"fused": True})
    row["torch fastest"] = min(median_us(torch_cls(group(), **kind, **options)) for kind in kinds)
    return row


def median_rows(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each cell's median over whole runs: on a shared host one path can measure 1.5× its
    usual time for a while, and a run taking its turn later finds it back."""
    return {
        name: {path: statistics.median(run[name][path] for run in runs) for path in row}
        for name, row in runs[0].items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="current", help="the name this run is stored under")
    parser.add_argument("--note", default="", help="what was measured, e.g. which checkout")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--runs", type=int, default=1, help="runs of every path; each cell is their median"
    )
    parser.add_argument("--out", default="benchmarks/results/fixed_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # a first calibration's notice
    rows = median_rows([{name: measure(name) for name in SETTINGS} for _ in range(args.runs)])
    print(f"fixed cost ({args.label}): 8 tensors of 1,000 parameters, µs per step, alone")
    head = ("optimizer", "default", "fused", "torch-fused", "torch fastest")
    print("  {:<10}{:>10}{:>10}{:>13}{:>15}".format(*head))
    for name, row in rows.items():
        kernel = f"{row['torch-fused']:>13.1f}" if "torch-fused" in row else f"{'—':>13}"
        print(
            f"  {name:<10}{row['default']:>10.1f}{row['fused']:>10.1f}{kernel}"
            f"{row['torch fastest']:>15.1f}"
        )
    out = Path(args.out)
    runs = json.loads(out.read_text()) if out.exists() else {}
    runs[args.label] = {
        "trainlab": getattr(trainlab, "__version__", "unknown"),
        "torch": torch.__version__,
        "threads": args.threads,
        "runs": args.runs,
        "note": args.note,
        "us": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(runs, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
