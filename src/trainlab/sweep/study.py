"""Run a sweep: worker processes that train trials of one Optuna study until N are done.

Every worker — on this host or another — runs the same loop against the study's storage::

    lock → mark this host's trials whose worker died FAIL → count → ask → unlock
    train trials/<number>/ with the trial's values → tell COMPLETE, PRUNED or FAIL

The count and the ``ask`` happen under one lock, so N trials are started in total however
many workers there are, and none twice: a PostgreSQL advisory lock for a PostgreSQL
storage (every host), an OS file lock beside the journal file or SQLite database otherwise
(one host). Counted are trials that finished (complete, pruned, or failed with an error of
their own, such as a diverging loss) and those running; a trial whose worker was killed is
failed (not counted) by the next worker on its host, and another trial takes its place.

A sweep folder holds one study: its ``trials/<number>/`` run folders are numbered by that
study alone, and its results are derived from that study's trials. A sweep claims the
folder before any trial — under the folder's lock and the study's, so that of two sweeps
started together the second sees what the first recorded — by checking that
``sweep.json`` names no other study and writing its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import multiprocessing
import os
import shutil
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
from ..train.runs import read_record
from ..train.trainer import write_atomic
from .refine import METRICS, SWEEP_FILE, Refinement
from .refine import refine as narrow
from .results import TRIALS_FILE, write_results
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

    @property
    def storage_id(self) -> str | None:
        """Where the study lives, as ``sweep.json`` records it: None for the sweep folder's
        own journal, else the database URL (no password) or the journal file's full path."""
        if self.is_database:
            return _shown(self.storage_url)
        journal = Path(self.storage_url).resolve()
        return None if journal == (Path(self.out) / JOURNAL_FILE).resolve() else str(journal)


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
    # The sweep folder holds this study's trials: a new study needs a new folder as well.
    how = "for a new sweep use another --out"
    if sweep.storage_id is not None:  # a shared storage: the name is taken there too
        how = "for a new sweep use another --study and another --out"
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
def _file_lock(path: Path) -> Iterator[None]:
    """An OS file lock on ``path`` (created if missing): one process of this host at a time."""
    with open(path, "a") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


def _is_postgresql(sweep: Sweep) -> bool:
    """Whether the study's storage is PostgreSQL, whose advisory lock spans hosts."""
    return sweep.storage_url.startswith("postgresql")


def _quota_lock_file(sweep: Sweep) -> Path:
    """The file the quota lock takes for a storage of one host: beside the journal file, or
    beside a SQLite database, so that every sweep folder whose study lives there takes the
    same lock; in the sweep folder for a database with no file of its own."""
    if not sweep.is_database:
        return Path(sweep.storage_url).parent / LOCK_FILE
    from sqlalchemy.engine import make_url

    url = make_url(sweep.storage_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return Path(url.database).parent / LOCK_FILE
    return Path(sweep.out) / LOCK_FILE


@contextlib.contextmanager
def _quota_lock(sweep: Sweep, storage: Any) -> Iterator[None]:
    """One worker at a time counts the trials and asks for the next one."""
    if _is_postgresql(sweep):
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
    with _file_lock(_quota_lock_file(sweep)):
        yield


@contextlib.contextmanager
def _claim_lock(sweep: Sweep) -> Iterator[Any]:
    """The sweep folder's lock, then the study's (one file when the study lives in the
    folder's journal, or in a database with no file of its own); the study's storage.

    Always in this order, and workers take only the study's: no two processes wait on each
    other.
    """
    folder_lock = Path(sweep.out) / LOCK_FILE
    with _file_lock(folder_lock):
        storage = open_storage(sweep.storage_url)
        # One lock file taken twice by one process would wait for itself (flock).
        if not _is_postgresql(sweep) and _quota_lock_file(sweep).resolve() == folder_lock.resolve():
            yield storage
            return
        with _quota_lock(sweep, storage):
            yield storage


# --------------------------------------------------------------------------- the folder


def _recorded_owner(path: Path, sweep: Sweep) -> tuple[Any, Any]:
    """The study and storage a sweep.json names (a sweep.json of a version that did not
    record the storage: this sweep's)."""
    how = "not a sweep.json trainlab wrote; use another --out"
    try:
        about = read_record(path)
    except ValueError as error:  # too large, not JSON, or nested past the reader's recursion
        raise fail("--out", sweep.out, f"{error}; {how}") from None
    if not isinstance(about, dict) or "study" not in about:
        raise fail("--out", sweep.out, f"its {SWEEP_FILE} names no study: {how}")
    return about["study"], about.get("storage", sweep.storage_id)


def _check_owner(sweep: Sweep, storage: Any) -> None:
    """Refuse a sweep folder that holds another study, or the same name in another storage:
    their ``trials/<number>`` folders would collide and their results be overwritten.

    Asks ``sweep.json`` (written when a sweep claims the folder), and the folder's own
    journal, which a sweep folder made before ``sweep.json`` recorded its storage may hold.
    """
    out = Path(sweep.out)
    owner = None
    if (out / SWEEP_FILE).exists():
        owner = _recorded_owner(out / SWEEP_FILE, sweep)
    journal = out / JOURNAL_FILE
    if owner is None and journal.is_file() and journal.stat().st_size > 0:
        if sweep.storage_id is not None:
            owner = (None, str(journal))
        else:
            import optuna

            names = optuna.get_all_study_names(storage)  # the folder's journal
            owner = (next((n for n in names if n != sweep.study), sweep.study), None)
    if owner is None or owner == (sweep.study, sweep.storage_id):
        return
    their_study, their_storage = owner
    held = f"holds study {their_study!r}"
    if their_study is None:
        held = f"holds a study stored in {their_storage}"
    elif their_study == sweep.study:
        held += f" stored in {their_storage or out / JOURNAL_FILE}"
    raise fail(
        "--out",
        sweep.out,
        f"{held}; a sweep folder holds the trials of one study: "
        f"use another --out for study {sweep.study!r}",
    )


def _claim(sweep: Sweep) -> None:
    """Check that the sweep folder and the study are this sweep's, create the study if it is
    new, and write the folder's results for it: ``sweep.json`` then names the study.

    All under `_claim_lock`: of two sweeps started together, one claims first and the
    other is checked against what it recorded.
    """
    with _claim_lock(sweep) as storage:
        _check_owner(sweep, storage)
        _create_or_check(sweep, storage)
        (Path(sweep.out) / TRIALS_DIR).mkdir(exist_ok=True)
        if sweep.refinement is not None:  # the narrowed space, to rerun or read
            space_text = sweep.refinement.header() + dump_toml(sweep.space.to_dict())
            write_atomic(Path(sweep.out) / SPACE_FILE, space_text)
        write_results(sweep, _study(sweep, storage), plots=False)


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
    if sweep.storage is not None:  # a database it can reach, a journal file's folder
        open_storage(sweep.storage)
    return sweep


def run_sweep(config: str | None, space: str, **options: Any) -> dict[str, Any]:
    """Run (or continue) a sweep to N trials and write its results; see
    [`prepare`][trainlab.sweep.prepare].

    Returns:
        ``{"out", "trials" (rows of trials.csv), "best" (the best row or None),
        "exit_code", "error" (why the sweep failed, or None)}``.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sweep = prepare(config, space, **options)
    _claim_folder(sweep)
    # This process is worker 0; the others start afresh ("spawn": no forked torch threads).
    context = multiprocessing.get_context("spawn")
    others = [
        context.Process(target=_work_in_process, args=(sweep,), name=f"sweep worker {k}")
        for k in range(1, sweep.workers)
    ]
    for process in others:
        process.start()
    try:
        code = work(sweep)
    finally:
        for process in others:
            process.join()
    code = _after_workers(sweep, others, code)
    with _file_lock(Path(sweep.out) / LOCK_FILE):  # one writer: the files agree
        result = write_results(sweep, _study(sweep, open_storage(sweep.storage_url)))
    result["error"] = _all_failed(sweep, result["trials"])
    result["exit_code"] = max(code, 1) if result["error"] else code
    return result


def _claim_folder(sweep: Sweep) -> None:
    """`_claim` the sweep folder, made here if missing; a folder made here for a refused
    sweep is removed unless another sweep claimed it meanwhile."""
    out = Path(sweep.out)
    try:
        out.mkdir(parents=True)
        created = True
    except FileExistsError:
        created = False
    try:
        _claim(sweep)
    except BaseException:
        if created and not (out / SWEEP_FILE).exists():  # a refused sweep leaves no folder
            shutil.rmtree(out, ignore_errors=True)
        raise


def _after_workers(sweep: Sweep, others: list[Any], code: int) -> int:
    """The exit code once the other workers have ended.

    A worker killed by a signal (the kernel's out-of-memory killer, say) left its trial
    running: `work` again here fails it and trains a replacement, so a sweep whose N
    trials all finished exits 0 whatever happened to a worker. A worker that ended with a
    code of its own (an interrupt, an error) passes it on.
    """
    killed = [p for p in others if p.exitcode is not None and p.exitcode < 0]
    for process in killed:
        print(
            f"{process.name} was killed by signal {-process.exitcode}; any trial it was "
            "training is marked FAIL and another takes its place",
            file=sys.stderr,
            flush=True,
        )
    if killed and code == 0:
        code = work(sweep)
    return max([code, *(p.exitcode for p in others if p.exitcode and p.exitcode > 0)])


def _all_failed(sweep: Sweep, rows: list[dict[str, Any]]) -> str | None:
    """Why the sweep failed when every trial failed (the first trial's error), else None."""
    if not rows or any(row["state"] != "FAIL" for row in rows):
        return None
    first = next((row for row in rows if row["note"] != "its worker died"), rows[0])
    note = " ".join(str(first["note"]).split())
    return (
        f"every trial of study {sweep.study!r} failed ({len(rows)} trials; trial "
        f"{first['number']}: {note}); {Path(sweep.out) / TRIALS_FILE} holds each trial's error"
    )


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
