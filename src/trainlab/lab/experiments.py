"""Every experiment of the lab: importing this module registers them all in EXPERIMENTS."""

from __future__ import annotations

import ctypes
import importlib
import multiprocessing
import os
import signal
import sys
import threading
import time
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
#: How often a pool worker checks that the process that started it still runs (seconds).
PARENT_CHECK_SECONDS = 0.5
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>: the signal a process gets when its parent dies


def load() -> dict[str, Experiment]:
    """Import every experiment module (each registers itself) and return the registry."""
    for module in MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return EXPERIMENTS


def _die_with_parent(parent: int) -> None:
    """A pool worker's initializer: the worker ends when ``parent``, the lab's process, does.

    A parent killed with SIGKILL runs no cleanup, so its workers would go on running
    experiments into the folder that a rerun writes. On Linux the kernel kills the worker
    with its parent (``PR_SET_PDEATHSIG``); on every POSIX system a thread also ends it once
    it has been handed to another parent, which covers a parent that died before the
    ``prctl`` call took effect.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(1)  # what the worker wrote is whole: every lab file is written atomically


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
    at once in separate processes, each with ``threads`` torch threads, which end with this
    process however it ends. Timed experiments (their numbers are wall-clock times) run
    alone, after the others.
    """
    registry = load()
    shared = [name for name in names if name not in registry or not registry[name].timed]
    alone = [name for name in names if name not in shared]
    if workers <= 1:
        for name in shared:
            yield run(name, out, quick=quick, fresh=fresh, threads=threads)
    else:
        context = multiprocessing.get_context("spawn")  # no forked torch state in workers
        pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        )
        with pool:
            futures = [
                pool.submit(_run_one, name, str(out), quick, fresh, threads) for name in shared
            ]
            for future in futures:
                yield future.result()
    for name in alone:
        yield run(name, out, quick=quick, fresh=fresh, threads=threads)
