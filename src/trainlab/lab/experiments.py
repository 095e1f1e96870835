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
)


def load() -> dict[str, Experiment]:
    """Import every experiment module (each registers itself) and return the registry."""
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return EXPERIMENTS


def _run_one(name: str, out: str, quick: bool, fresh: bool) -> dict[str, Any]:
    """One experiment in a worker process (which imports the registry itself)."""
    load()
    return run(name, out, quick=quick, fresh=fresh)


def run_all(
    names: list[str], out: str | Path, *, quick: bool, fresh: bool = False, workers: int = 1
) -> Iterator[dict[str, Any]]:
    """Run ``names`` and yield each results dict in order; ``workers`` > 1 runs that many
    experiments at once in separate processes (each experiment uses one thread)."""
    load()
    if workers <= 1:
        for name in names:
            yield run(name, out, quick=quick, fresh=fresh)
        return
    context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = [pool.submit(_run_one, name, str(out), quick, fresh) for name in names]
        for future in futures:
            yield future.result()
