"""The ``trainlab`` command line."""

from __future__ import annotations

import argparse
import sys
import time

import torch


def _demo(args: argparse.Namespace) -> int:
    from .lab import format_table, race_all

    torch.set_num_threads(1)  # 2-D problems: threads only add overhead
    print("trainlab demo — every optimizer on the lectures' 2-D problems", flush=True)
    print(f"(best learning rate per optimizer from a grid; {args.budget} steps per run)\n")
    start = time.perf_counter()
    print(format_table(race_all(budget=args.budget), budget=args.budget))
    print(f"\n{time.perf_counter() - start:.1f} s")
    return 0


def _optimizers(args: argparse.Namespace) -> int:
    from .optim import OPTIMIZERS

    width = max(len(name) for name in OPTIMIZERS)
    for name, spec in OPTIMIZERS.items():
        twin = f"torch.optim.{spec.torch_name}" if spec.torch_name else "trainlab only"
        print(f"{name:<{width}}  {spec.cls.__name__:<9} {spec.equation}   [{twin}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainlab",
        description="Train neural networks well: the lectures' optimizers and experiments.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="race every optimizer on the 2-D test problems and print the table",
        description="Race every optimizer on the lectures' 2-D test problems (ill-conditioned "
        "'taco shell' quadratic, Rosenbrock, a saddle) and print steps to converge and final "
        "distance per optimizer.",
    )
    demo.add_argument(
        "--budget", type=int, default=1000, help="optimizer steps per run (default: 1000)"
    )
    demo.set_defaults(run=_demo)
    listing = commands.add_parser("optimizers", help="list the optimizers and their update rules")
    listing.set_defaults(run=_optimizers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "budget", 1) < 1:
        print(f"trainlab: error: Invalid --budget: {args.budget} (must be >= 1)", file=sys.stderr)
        return 2
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
