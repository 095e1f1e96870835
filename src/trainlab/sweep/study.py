"""Run a sweep: worker processes that train trials of one Optuna study until N are done.

Every worker — on this host or another — runs the same loop against the study's storage::

    lock → mark this host's trials whose worker died FAIL → count → ask → unlock
    train trials/<number>/ with the trial's values → tell COMPLETE, PRUNED or FAIL

The count and the ``ask`` happen under one lock, so N trials are started in total however
many workers there are, and none twice: a PostgreSQL advisory lock for a PostgreSQL
storage (every host), an OS file lock in the sweep folder otherwise (one host). Counted
are trials that finished (complete, pruned, or failed with an error of their own, such as
a diverging loss) and those running; a trial whose worker was killed is failed (not
counted) by the next worker on its host, and another trial takes its place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import multiprocessing
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._checks import fail
from ..train.callbacks import Callback
from ..train.config import dump_toml, fingerprint, load_config
from ..train.trainer import write_atomic
from .refine import METRICS, Refinement
from .refine import refine as narrow
from .space import Space, differences, load_space, trial_config

SAMPLERS = ("tpe", "random", "grid")
"""The Optuna samplers a sweep can use (``--sampler``): TPE, random search, or a grid over
the space's ``points``.
"""
PRUNERS = ("median", "hyperband", "none")
"""The Optuna pruners a sweep can use (``--pruner``) to stop unpromising trials early from
their evaluations; ``"none"`` runs every trial to the end.
"""
JOURNAL_FILE = "study.journal"
LOCK_FILE = ".ask.lock"
SPACE_FILE = "space.toml"
TRIALS_DIR = "trials"
#: Trials the median pruner lets finish before it prunes: the median of fewer is noise.
MEDIAN_STARTUP_TRIALS = 4


@dataclass(frozen=True)
class Sweep:
    """What ``trainlab sweep`` was asked for: enough for any worker to join the study."""

    config: str | None
    space_path: str
    space: Space
    out: str
    trials: int = 20
    workers: int = 1
    storage: str | None = None  # a database URL or a journal file; None: OUT/study.journal
    study: str = "sweep"
    metric: str = "val_accuracy"
    sampler: str = "tpe"
    pruner: str = "median"
    sets: tuple[str, ...] = ()
    seed: int = 0
    refinement: Refinement | None = None  # --refine: the space narrowed from another sweep

    @property
    def storage_url(self) -> str:
        return self.storage or str(Path(self.out) / JOURNAL_FILE)

    @property
    def is_database(self) -> bool:
        return "://" in self.storage_url


# --------------------------------------------------------------------------- storage


def _shown(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def open_storage(url: str) -> Any:
    """Optuna's storage for ``url``: RDBStorage for a database URL, else a journal file.

    The journal file (``JournalFileBackend``) appends each change under a file lock, so
    processes on one host share it safely; Optuna advises against SQLite for parallel
    workers, whose writers wait on one database lock and time out.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if "://" not in url:
        if not Path(url).parent.is_dir():
            raise fail("--storage", url, "its folder does not exist")
        return JournalStorage(JournalFileBackend(url))
    if url.startswith("postgresql://"):  # SQLAlchemy 2.1's default driver is psycopg 3;
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")  # ours: psycopg2
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine["connect_args"] = {"connect_timeout": 10}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine)
    except Exception as error:  # SQLAlchemy's errors for a bad URL, host, database, driver
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise fail(
            "--storage",
            _shown(url),
            f"cannot connect: {detail}; check the host, port, database, user and password",
        ) from None


def _sampler(sweep: Sweep, asked: int) -> Any:
    """The sampler for the ask after ``asked`` trials, seeded from (--seed, ``asked``).

    Reseeded for every ask (under the quota lock, where ``asked`` differs each time), so
    another worker, another host or a resumed sweep draws new points instead of replaying
    the first run's draws.
    """
    import optuna

    digest = hashlib.sha256(f"trainlab sweep {sweep.seed} {asked}".encode()).digest()
    seed = int.from_bytes(digest[:4], "big")
    if sweep.sampler in ("random", "grid"):  # grid: each trial's point is fixed in work()
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(sweep: Sweep) -> Any:
    import optuna

    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every point of the grid, in an order shuffled by the seed: fewer trials than points
    sample the grid at random."""
    import itertools
    import random

    grid = sweep.space.grid()
    points = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    random.Random(sweep.seed).shuffle(points)
    return points


def _enqueue_grid_point(study: Any, points: list[dict[str, Any]]) -> None:
    """Queue the first grid point no counted trial has, for the ``ask`` that follows under
    the quota lock.

    Optuna's GridSampler picks its points itself, may give one point to two processes, and
    stops the study from ``tell`` (an error outside ``optimize``); a point per trial chosen
    under the lock repeats none.
    """
    trials = study.get_trials(deepcopy=False)
    taken = {t.user_attrs.get("grid_point") for t in trials if counted(t)}
    point = next(i for i in range(len(points)) if i not in taken)
    study.enqueue_trial(points[point], user_attrs={"grid_point": point})


def _study(sweep: Sweep, storage: Any) -> Any:
    import optuna

    return optuna.load_study(
        study_name=sweep.study,
        storage=storage,
        sampler=_sampler(sweep, 0),  # replaced before each ask
        pruner=_pruner(sweep),
    )


def _identity(sweep: Sweep) -> dict[str, Any]:
    """What a study was made for; a sweep that differs in any of it is refused."""
    identity = {
        "space": sweep.space.to_dict(),
        "metric": sweep.metric,
        "sampler": sweep.sampler,
        "seed": sweep.seed,
        "config": fingerprint(load_config(sweep.config, list(sweep.sets))),
    }
    if sweep.refinement is not None:  # recorded, not compared
        identity.update(sweep.refinement.to_dict())
    return identity


def _create_or_check(sweep: Sweep, storage: Any) -> None:
    """Create the study, or check that the existing one was made for this sweep."""
    import optuna

    try:  # loaded first: a create_study that finds the study still writes to the journal
        study = optuna.load_study(study_name=sweep.study, storage=storage)
    except KeyError:
        study = optuna.create_study(
            storage=storage,
            study_name=sweep.study,
            direction=METRICS[sweep.metric],
            load_if_exists=True,
        )
    saved = study.user_attrs.get("trainlab")
    mine = _identity(sweep)
    if saved is None:
        study.set_user_attr("trainlab", mine)
        return
    how = f"use another --study than {sweep.study!r}, or another --out, for a new sweep"
    changes = differences(saved["space"], mine["space"])
    if changes:
        raise fail(
            "--space",
            sweep.space_path,
            f"differs from study {sweep.study!r}: " + "; ".join(changes) + f" ({how})",
        )
    if saved["metric"] != mine["metric"]:
        raise fail(
            "--metric", sweep.metric, f"study {sweep.study!r} optimizes {saved['metric']} ({how})"
        )
    for key in ("sampler", "seed"):  # absent from studies made before they were recorded
        if key in saved and saved[key] != mine[key]:
            raise fail(
                f"--{key}", mine[key], f"study {sweep.study!r} uses --{key} {saved[key]} ({how})"
            )
    if saved["config"] != mine["config"]:
        raise fail(
            "CONFIG",
            sweep.config,
            f"the config (with --set) differs from the one "
            f"study {sweep.study!r} was made with ({how})",
        )


# --------------------------------------------------------------------------- counting


def _process_id(pid: int) -> str:
    """``pid:start time``: a PID reused by a later process does not match (Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return f"{pid}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError):
        return str(pid)


def _state(pid: int) -> str | None:
    """The process state letter of /proc/<pid>/stat (``R``, ``S``, ``Z``, ...); None unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _alive(process: str) -> bool:
    """Whether the worker ``pid:start time`` still runs.

    A zombie (``Z``) or dead (``X``) process still answers ``kill(pid, 0)`` and keeps its
    start time until its parent reaps it, yet it trains nothing: it counts as dead.
    """
    pid = int(process.split(":")[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive unless /proc says otherwise
    if _state(pid) in ("Z", "X"):
        return False
    return _process_id(pid) == process or ":" not in process


def fail_orphans(study: Any) -> list[int]:
    """Mark FAIL the running trials of this host whose worker process is gone, and the
    running trials of any host that have no ``process`` attribute.

    Call it under the quota lock: a worker asks for a trial and sets its ``host`` and
    ``process`` under that lock, so a running trial seen without ``process`` by the lock's
    holder is one whose worker died (or raised) between the two writes; it would otherwise
    count towards N forever.
    """
    from optuna.trial import TrialState

    host, failed = socket.gethostname(), []
    # Optuna has no public call to fail another process's trial (its heartbeat does this
    # for RDB storages only, after a grace period): the storage's own setters, by trial id.
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        mine = attrs.get("host") == host and "process" in attrs
        if "process" not in attrs or (mine and not _alive(attrs["process"])):
            study._storage.set_trial_user_attr(trial._trial_id, "failed", "its worker died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            failed.append(trial.number)
    return failed


def counted(trial: Any) -> bool:
    """A trial that counts towards N: done, running, or failed by an error of its own."""
    from optuna.trial import TrialState

    if trial.state == TrialState.FAIL:
        return "error" in trial.user_attrs
    return True


@contextlib.contextmanager
def _quota_lock(sweep: Sweep, storage: Any) -> Iterator[None]:
    """One worker at a time counts the trials and asks for the next one."""
    if sweep.storage_url.startswith("postgresql"):
        from sqlalchemy import text

        digest = hashlib.sha256(f"trainlab sweep {sweep.study}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        with storage.engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return
    with open(Path(sweep.out) / LOCK_FILE, "a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------- trials


class Pruning(Callback):
    """Report each evaluation's metric to the trial; stop the run when the pruner says so."""

    def __init__(self, trial: Any, metric: str, pruner: str) -> None:
        self.trial, self.metric, self.pruner = trial, metric, pruner
        self.reported: set[int] = set()
        self.pruned = False

    def on_record(self, trainer: Any, record: dict[str, Any]) -> None:
        value = record.get(self.metric)
        step = record.get("step")
        if self.pruned or "event" in record or value is None or step in self.reported:
            return
        if not math.isfinite(value):
            return
        self.reported.add(step)
        self.trial.report(value, step)
        if self.trial.should_prune():
            self.pruned = True
            trainer.request_stop(f"pruned by the {self.pruner} pruner")


def _train_trial(sweep: Sweep, study: Any, trial: Any) -> int | None:
    """Train one trial and tell the study; an exit code when a signal stopped it."""
    from optuna.trial import TrialState

    from ..train.trainer import Interrupted, Trainer

    params = {param.key: param.suggest(trial) for param in sweep.space.params}
    run_dir = Path(sweep.out) / TRIALS_DIR / str(trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    pruning = Pruning(trial, sweep.metric, sweep.pruner)
    start = time.perf_counter()
    shown = ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    try:
        config = trial_config(sweep.config, list(sweep.sets), params)
        summary = Trainer(config, run_dir, callbacks=[pruning]).fit()
    except Interrupted as interrupted:
        trial.set_user_attr("failed", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number}: {interrupted}", file=sys.stderr)
        return interrupted.exit_code
    except Exception as error:  # the trial's own failure (a diverging loss, ...): a result
        trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
        trial.set_user_attr("seconds", time.perf_counter() - start)
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed ({shown}): {error}", file=sys.stderr, flush=True)
        return None
    except BaseException:
        trial.set_user_attr("failed", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    trial.set_user_attr("seconds", time.perf_counter() - start)
    value = summary.get(sweep.metric)
    if pruning.pruned:
        study.tell(trial, state=TrialState.PRUNED)
        state = f"pruned at step {summary['steps']}"
    elif value is None or not math.isfinite(value):
        trial.set_user_attr("error", f"no finite {sweep.metric} in the summary")
        study.tell(trial, state=TrialState.FAIL)
        state = "failed"
    else:
        study.tell(trial, value)
        state = f"{sweep.metric} {value:.4f}"
    print(f"trial {trial.number}: {state} ({shown})", flush=True)
    return None


def work(sweep: Sweep) -> int:
    """One worker's loop: ask for trials and train them until N are counted. Exit code."""
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    threads = load_config(sweep.config, list(sweep.sets)).run.threads
    if threads is None:  # the workers share the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // sweep.workers))
    storage = open_storage(sweep.storage_url)
    study = _study(sweep, storage)
    points = grid_points(sweep) if sweep.sampler == "grid" else []
    while True:
        with _quota_lock(sweep, storage):
            for number in fail_orphans(study):
                print(f"trial {number}: its worker died; marked FAIL", file=sys.stderr)
            trials = study.get_trials(deepcopy=False)
            if sum(counted(t) for t in trials) >= sweep.trials:
                return 0
            if points:
                _enqueue_grid_point(study, points)
            study.sampler = _sampler(sweep, len(trials))
            trial = study.ask()
            try:  # a trial left without `process` is failed by fail_orphans as well
                trial.set_user_attr("host", socket.gethostname())
                trial.set_user_attr("process", _process_id(os.getpid()))
            except BaseException:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
        code = _train_trial(sweep, study, trial)
        if code is not None:
            return code


def _work_in_process(sweep: Sweep) -> None:
    sys.exit(work(sweep))


# --------------------------------------------------------------------------- the sweep


def prepare(
    config: str | None,
    space: str,
    *,
    out: str | None = None,
    trials: int = 20,
    workers: int = 1,
    storage: str | None = None,
    study: str | None = None,
    metric: str = "val_accuracy",
    sampler: str = "tpe",
    pruner: str = "median",
    sets: list[str] | tuple[str, ...] = (),
    seed: int = 0,
    refine: str | None = None,
) -> Sweep:
    """Check every argument, the space and the storage; create nothing.

    ``refine`` (``--refine``): a previous sweep folder; the space is narrowed to the best
    region of its trials (see `trainlab.sweep.refine`) and written to OUT/space.toml.
    """
    for name, value, allowed in (
        ("--metric", metric, tuple(METRICS)),
        ("--sampler", sampler, SAMPLERS),
        ("--pruner", pruner, PRUNERS),
    ):
        if value not in allowed:
            raise fail(name, value, f"must be one of {', '.join(allowed)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise fail("--trials", trials, "must be an integer >= 1")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise fail("--workers", workers, "must be an integer >= 1")
    load_config(config, list(sets))
    parsed = load_space(space, config, list(sets))
    refinement = None
    if refine is not None:
        refinement = narrow(parsed, refine, metric)
        parsed = refinement.space
    if sampler == "grid" and trials > parsed.grid_size():
        raise fail("--trials", trials, f"the grid has {parsed.grid_size()} points: at most that")
    name = study or (Path(config).stem if config else "sweep")
    if refine is not None and study is None:
        name += "-refined"
    out = str(out or Path("sweeps") / name)
    if refine is not None and Path(out).resolve() == Path(refine).resolve():
        raise fail("--out", out, "must differ from --refine: the refined sweep is a new folder")
    sweep = Sweep(
        config=None if config is None else str(config),
        space_path=str(Path(out) / SPACE_FILE) if refine is not None else str(space),
        out=out,
        trials=trials,
        workers=workers,
        storage=storage,
        study=name,
        metric=metric,
        sampler=sampler,
        pruner=pruner,
        sets=tuple(sets),
        seed=seed,
        space=parsed,
        refinement=refinement,
    )
    if sweep.storage is not None and not sweep.is_database:
        open_storage(sweep.storage)  # a journal file elsewhere: its folder must exist
    elif sweep.is_database:
        _create_or_check(sweep, open_storage(sweep.storage_url))
    return sweep


def run_sweep(config: str | None, space: str, **options: Any) -> dict[str, Any]:
    """Run (or continue) a sweep to N trials and write its results; see
    [`prepare`][trainlab.sweep.prepare].

    Returns:
        ``{"out", "trials" (rows of trials.csv), "best" (the best row or None),
        "exit_code"}``.
    """
    import optuna

    from .results import write_results

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = prepare(config, space, **options)
    out = Path(sweep.out)
    created = not out.exists()
    (out / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    if sweep.refinement is not None:  # the narrowed space, to rerun or read
        space_text = sweep.refinement.header() + dump_toml(sweep.space.to_dict())
        write_atomic(out / SPACE_FILE, space_text)
    try:
        if not sweep.is_database:
            _create_or_check(sweep, open_storage(sweep.storage_url))
    except BaseException:
        if created:  # a refused study: leave no folder behind
            import shutil

            shutil.rmtree(out, ignore_errors=True)
        raise
    # This process is worker 0; the others start afresh ("spawn": no forked torch threads).
    context = multiprocessing.get_context("spawn")
    others = [
        context.Process(target=_work_in_process, args=(sweep,), name=f"sweep-worker-{k}")
        for k in range(1, sweep.workers)
    ]
    for process in others:
        process.start()
    try:
        code = work(sweep)
    finally:
        for process in others:
            process.join()
    for process in others:  # a worker killed by a signal: the shell's number
        exit_code = process.exitcode or 0
        code = max(code, exit_code if exit_code >= 0 else 128 - exit_code)
    study = _study(sweep, open_storage(sweep.storage_url))
    result = write_results(sweep, study)
    result["exit_code"] = code
    return result


__all__ = [
    "METRICS",
    "PRUNERS",
    "SAMPLERS",
    "Pruning",
    "Sweep",
    "counted",
    "fail_orphans",
    "open_storage",
    "prepare",
    "run_sweep",
    "work",
]
