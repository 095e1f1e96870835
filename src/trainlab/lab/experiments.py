"""Every experiment of the lab: importing this module registers them all in EXPERIMENTS."""

from __future__ import annotations

import importlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from .experiment import EXPERIMENTS, Experiment, run

#: The experiment modules, in the order ``trainlab lab list`` shows them.
MODULES = (
    "exp_trajectories",
    "exp_ewma",
    "exp_adaptive",
    "exp_bias_correction",
    "exp_learning_rate",
    "exp_init",
    "exp_batchnorm",
    "exp_data",
    "exp_regularization",
    "exp_search",
    "exp_optimizers",
    "exp_landscape",
    "exp_ensembles",
    "exp_time",
)


def load() -> dict[str, Experiment]:
    """Import every experiment module (each registers itself) and return the registry."""
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return EXPERIMENTS


def _run_one(name: str, out: str, quick: bool, fresh: bool, threads: int) -> dict[str, Any]:
    """One experiment in a worker process (which imports the registry itself)."""
    load()
    return run(name, out, quick=quick, fresh=fresh, threads=threads)


def run_all(
    names: list[str],
    out: str | Path,
    *,
    quick: bool,
    fresh: bool = False,
    workers: int = 1,
    threads: int = 1,
) -> Iterator[dict[str, Any]]:
    """Run ``names`` and yield each results dict; ``workers`` > 1 runs that many experiments
    at once in separate processes, each with ``threads`` torch threads. Timed experiments
    (their numbers are wall-clock times) run alone, after the others.
    """
    registry = load()
    shared = [name for name in names if name not in registry or not registry[name].timed]
    alone = [name for name in names if name not in shared]
    if workers <= 1:
        for name in shared:
            yield run(name, out, quick=quick, fresh=fresh, threads=threads)
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch state in workers
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [
                pool.submit(_run_one, name, str(out), quick, fresh, threads) for name in shared
            ]
            for future in futures:
                yield future.result()
    for name in alone:
        yield run(name, out, quick=quick, fresh=fresh, threads=threads)
