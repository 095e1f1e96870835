"""The ``trainlab`` command line."""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from . import _json as strict_json

# `trainlab demo`: the lectures' recipe for MNIST-1D — Adam (with decoupled weight decay),
# Kaiming init, batch norm, dropout, a one-cycle schedule, per-epoch shuffling, and the
# shift augmentation that suits translated 1-D digits — as overrides of the defaults.
DEMO_SETTINGS = [
    "data.val_fraction=0.1",
    'data.augment=[{name="shift1d", p=0.5, max_shift=3}]',
    "model.channels=[32, 32, 32]",
    "model.kernel_size=5",
    "model.dropout=0.1",
    "model.global_pool=true",
    "optimizer.name=adamw",
    "optimizer.lr=0.01",
    "optimizer.options={weight_decay=0.001}",
    # 20 epochs of ceil(3600 / 128) = 29 steps
    'schedule.phases=[{name="one_cycle", total=580}]',
    "run.epochs=20",
    "run.threads=2",
]


def _race(args: argparse.Namespace) -> int:
    from .lab import format_table, race_all

    if args.budget < 1:
        print(f"trainlab: error: Invalid --budget: {args.budget} (must be >= 1)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # 2-D problems: threads only add overhead
    print("trainlab race — every optimizer on the lectures' 2-D problems", flush=True)
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


def _train(args: argparse.Namespace, overrides: list[str], stem: str) -> int:
    from .train.config import fingerprint, load_config
    from .train.distributed import setup
    from .train.report import summary_table
    from .train.run_folder import CONFIG_FILE, RunFolder, RunFolderError, check_is_run, default_stem
    from .train.trainer import config_changed

    ranks = setup()  # under torchrun: this process's rank (rank 0 alone writes the folder)
    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / CONFIG_FILE
        check_is_run("--resume", run_dir)
        about = run_dir / "run.json"
        if about.is_file() and '"source": "python"' in about.read_text()[:4096]:
            raise RunFolderError(
                f"Invalid --resume: {str(run_dir)!r} was trained with trainlab.fit on your own "
                "model and data, which the command line cannot rebuild (resume it with "
                f"trainlab.fit(..., run_dir={str(run_dir)!r}, resume=True))"
            )
        config = load_config(saved, overrides)
        if fingerprint(config) != fingerprint(load_config(saved)):
            raise config_changed(run_dir, "the --set values")
        folder = run_dir
    else:
        config = load_config(args.config, overrides)
        # Claimed after the config is valid, so that a typo creates no folder.
        folder: Any = None  # ranks other than 0: rank 0's folder arrives in _share_folder
        if args.run_dir:
            folder = Path(args.run_dir)
        elif ranks.main:
            folder = RunFolder.claim_unique("runs", default_stem(stem))
    if ranks.parallel:
        folder = _share_folder(ranks, folder, resume=bool(args.resume))
    outcome = _fit_one(config, folder, resume=bool(args.resume))
    if not isinstance(outcome, dict):
        if ranks.main:
            print(f"trainlab: {outcome}", file=sys.stderr)
        return outcome.exit_code
    if ranks.main:
        print(summary_table(outcome, outcome["run_dir"]))
    return 0


def _share_folder(ranks: Any, folder: Any, *, resume: bool) -> Any:
    """Under torchrun: rank 0 claims the run folder; the others learn its path (or the
    reason it could not be claimed) and only read it."""
    from .train.distributed import ReadOnlyFolder, from_rank_0, note_run_folder
    from .train.run_folder import RunFolder, RunFolderError

    path, error = None, None
    if ranks.main:
        try:
            if not isinstance(folder, RunFolder):
                claim = RunFolder.claim_existing if resume else RunFolder.claim_new
                folder = claim(folder)
            path = str(folder.path)
            note_run_folder(path)  # for `train --nproc`'s command that resumes it
        except ValueError as refused:
            error = str(refused)
    path, error = from_rank_0((path, error))
    if error is not None:
        raise RunFolderError(error)
    return folder if ranks.main else ReadOnlyFolder(path)


def _fit_one(config: Any, folder: Any, *, resume: bool) -> Any:
    """Train one run with the live bar: its summary, or the ``Interrupted`` that stopped it."""
    from .train.callbacks import ProgressBar
    from .train.distributed import setup
    from .train.run_folder import RunFolder
    from .train.trainer import Interrupted, Trainer

    main = setup().main  # under torchrun, rank 0 alone shows progress
    progress = ProgressBar()
    try:
        trainer = Trainer(config, folder, resume=resume, callbacks=[progress] if main else [])
        if main and trainer.resumed_from is not None:
            print(f"resuming from {trainer.resumed_from}", file=sys.stderr)
        elif main and resume:
            print("no complete checkpoint yet: starting over from step 0", file=sys.stderr)
        return trainer.fit()
    except Interrupted as interrupted:
        return interrupted
    except BaseException:
        if isinstance(folder, RunFolder):
            folder.release(remove_if_unused=True)
        raise
    finally:
        progress.close()


def _train_command(args: argparse.Namespace) -> int:
    if args.config and args.resume:
        raise ValueError(
            "Invalid arguments: both a CONFIG.toml and --resume (a resumed run keeps the "
            "config saved in its folder; pass only --resume DIR)"
        )
    stem = Path(args.config).stem if args.config else "run"
    if args.nproc is not None:
        return _launch(args)
    from .train.distributed import LostRank, launched, leave, note_exit_code

    if os.environ.get("WORLD_SIZE", "1") != "1":
        # Under torchrun a SIGTERM outside the training loop (which stops at a step and saves)
        # is torchrun stopping the ranks left after one failed: end at once, not by raising
        # `Terminated` into the cleanup under way.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        code = _train_or_seeds(args, stem)
    except LostRank as lost:  # under torchrun another rank died
        if not launched():  # under `--nproc` the launcher's one line names the rank that died
            print(f"trainlab: error: {lost}", file=sys.stderr)
        leave()  # now: the group's teardown at exit would abort this process
        return 1
    note_exit_code(code)  # under `--nproc`, rank 0's answer (errors: main's code, 2)
    return code


def _train_or_seeds(args: argparse.Namespace, stem: str) -> int:
    from .train.runs import read_seeds

    seeds = args.seeds is not None or (args.resume and read_seeds(args.resume) is not None)
    if seeds and os.environ.get("WORLD_SIZE", "1") != "1":
        raise ValueError(_NPROC_WITH_SEEDS)
    if seeds:
        return _train_seeds(args, list(args.set or []), stem)
    return _train(args, list(args.set or []), stem)


_NPROC_WITH_SEEDS = (
    "Invalid --nproc with --seeds (the members of a seeds run train one after another in "
    "one process; train them without --nproc, or train one run with --nproc)"
)


def _launch(args: argparse.Namespace) -> int:
    """``train --nproc N``: the same command under torchrun, N processes on this host."""
    from .train.config import load_config
    from .train.distributed import RankDied, check_batches, launch
    from .train.run_folder import CONFIG_FILE, check_is_run
    from .train.runs import read_seeds

    nproc, overrides = args.nproc, list(args.set or [])
    if nproc < 1:
        raise ValueError(f"Invalid --nproc: {nproc} (must be an integer >= 1)")
    if args.seeds is not None or (args.resume and read_seeds(args.resume) is not None):
        raise ValueError(_NPROC_WITH_SEEDS)
    if args.resume:
        check_is_run("--resume", Path(args.resume))
    config = load_config(Path(args.resume) / CONFIG_FILE if args.resume else args.config, overrides)
    # The batch size is checked here, so that a bad --nproc is one line and exit code 2
    # (the last batch of an epoch, which needs the data, is checked by every worker).
    check_batches(config.data.batch_size, config.data.batch_size, True, nproc)
    argv = ["train", *([args.config] if args.config else [])]
    for setting in overrides:
        argv += ["--set", setting]
    argv += ["--run-dir", args.run_dir] if args.run_dir else []
    argv += ["--resume", args.resume] if args.resume else []
    if nproc == 1:
        return main(argv)
    try:
        return launch(argv, nproc)  # the failed ranks' own exit code (2: bad input)
    except RankDied as died:
        print(f"trainlab: error: {died}", file=sys.stderr)
        return 1


def _train_seeds(args: argparse.Namespace, overrides: list[str], stem: str) -> int:
    """``train --seeds K``: K members with run.seed s, s+1, …, one after another."""
    import dataclasses

    from .train.config import fingerprint, load_config
    from .train.run_folder import CONFIG_FILE, RunFolder, check_is_run, default_stem
    from .train.runs import MAX_SEEDS, SEEDS_FILE, member_name, read_seeds, write_seeds
    from .train.trainer import SUMMARY_FILE, config_changed

    k = args.seeds
    if k is not None and not 1 <= k <= MAX_SEEDS:
        raise ValueError(
            f"Invalid --seeds: {k} (must be an integer from 1 to {MAX_SEEDS}: each member is a "
            "whole training run, and they train one after another)"
        )
    if args.resume:
        parent = Path(args.resume)
        check_is_run("--resume", parent)
        record = read_seeds(parent)
        if record is None:
            raise ValueError(
                f"Invalid --seeds: --resume {parent} holds one run, not a seeds run (resume it "
                "without --seeds; to train several seeds start a new run: trainlab train "
                "CONFIG --seeds K)"
            )
        base = load_config(parent / CONFIG_FILE, overrides)
        if fingerprint(base) != fingerprint(load_config(parent / CONFIG_FILE)):
            raise config_changed(parent, "the --set values")
        seeds = list(record.seeds)
        if k is not None and k < len(seeds):
            raise ValueError(
                f"Invalid --seeds: {k}, but {parent} is a seeds run of {len(seeds)} members "
                f"(resume it without --seeds, or with --seeds {len(seeds)} or more to add members)"
            )
        seeds += [seeds[-1] + i for i in range(1, (k or len(seeds)) - len(seeds) + 1)]
    else:
        base = load_config(args.config, overrides)
        seeds = [base.run.seed + i for i in range(k)]
    if seeds[-1] >= 2**32:
        raise ValueError(
            f"Invalid --seeds: {len(seeds)} from run.seed = {seeds[0]} reaches seed {seeds[-1]} "
            "(seeds must be below 2**32: lower run.seed)"
        )
    if args.resume:
        folder = RunFolder.claim_existing(args.resume)
    else:
        _note_if_test_split_moves(base, seeds)  # loads the data: a bad path fails here
        # Claimed after the config and data are valid, so that a typo creates no folder.
        folder = (
            RunFolder.claim_new(args.run_dir)
            if args.run_dir
            else RunFolder.claim_unique("runs", default_stem(stem))
        )
    try:
        record = write_seeds(folder.path, seeds, None if args.resume else base)
        for number, (seed, member) in enumerate(zip(seeds, record.members), start=1):
            where = f"member {number}/{len(seeds)} (run.seed = {seed}): {member}"
            if (member / SUMMARY_FILE).is_file():
                print(f"{where}: finished", file=sys.stderr)
                continue
            print(where, file=sys.stderr, flush=True)
            config = dataclasses.replace(base, run=dataclasses.replace(base.run, seed=seed))
            outcome = _fit_one(config, member, resume=(member / CONFIG_FILE).is_file())
            if not isinstance(outcome, dict):
                print(f"trainlab: {outcome}", file=sys.stderr)
                print(
                    "trainlab: the seeds run continues with: trainlab train --resume "
                    f"{folder.path}",
                    file=sys.stderr,
                )
                return outcome.exit_code
    except BaseException:
        if not args.resume and not (folder.path / member_name(1)).exists():  # nothing trained
            for name in (CONFIG_FILE, SEEDS_FILE):
                (folder.path / name).unlink(missing_ok=True)
        raise
    finally:
        folder.release(remove_if_unused=True)  # removes only a folder this call left empty
    print(_seeds_results(record))
    print(f"run folder: {folder.path}")
    return 0


def _note_if_test_split_moves(config: Any, seeds: list[int]) -> None:
    """Say so when run.seed also carves the test set: the members cannot be ensembled."""
    import dataclasses

    from .ensembles import held_out_split

    if len(seeds) < 2:
        return
    other = dataclasses.replace(config, run=dataclasses.replace(config.run, seed=seeds[1]))
    if held_out_split(config)[2] == held_out_split(other)[2]:  # each loads the data once
        return
    print(
        f"note: {config.data.name!r} has no fixed test split, so run.seed also carves the test "
        "set: each member is tested on other examples, some of which the others trained on. "
        "Their mean ± std is reported; their predictions cannot be ensembled (use a dataset "
        "with a fixed test split, e.g. an npz file with x_test and y_test)",
        file=sys.stderr,
    )


def _seeds_results(record: Any) -> str:
    """Write the seeds run's summary, with its ensemble when there can be one; its table."""
    from .ensembles import EnsembleError, ensemble, format_table
    from .train.runs import write_seeds_summary

    try:
        result = ensemble([record.path])
    except EnsembleError as error:
        summary = write_seeds_summary(record, None, str(error))
        table = f"no ensemble: {error}"
    else:
        summary = write_seeds_summary(record, result["ensemble"])
        table = format_table(result)
    seeds = ", ".join(str(seed) for seed in record.seeds)
    return f"{table}\nmembers (run.seed = {seeds}): {_mean_and_spread(summary)} (mean ± sample std)"


def _mean_and_spread(summary: dict[str, Any]) -> str:
    """Test accuracy (classification runs that have it) and loss, as mean ± std."""

    def spread(value: float, scale: float = 1.0) -> str:
        return "—" if math.isnan(value) else f"{value * scale:.2g}"

    parts = []
    accuracy = summary.get("test_accuracy_mean", math.nan)
    if summary["task"] == "classification" and not math.isnan(accuracy):
        std = spread(summary["test_accuracy_std"], 100)
        parts.append(f"test accuracy {accuracy * 100:.1f}% ± {std} points")
    parts.append(f"test loss {summary['test_loss_mean']:.4f} ± {spread(summary['test_loss_std'])}")
    return ", ".join(parts)


def _demo(args: argparse.Namespace) -> int:
    args.config, args.resume = None, None
    print("trainlab demo — a CNN on MNIST-1D with the lectures' recipe", flush=True)
    print("  " + " ".join(DEMO_SETTINGS) + "\n", flush=True)
    return _train(args, [*DEMO_SETTINGS, *(args.set or [])], "demo")


def _evaluate(args: argparse.Namespace) -> int:

    from .train.api import load_run
    from .train.build import make_loss, prepared_data, target_data
    from .train.evaluation import evaluate
    from .train.report import metrics_table

    run = load_run(args.run_dir, weights=args.weights)
    if run.about.get("source") == "python":
        raise ValueError(
            f"Invalid run: {args.run_dir} was trained with trainlab.fit on your own model and "
            "data, which the command line cannot rebuild (use trainlab.load_run(DIR, "
            "model=...) and trainlab.train.evaluation.evaluate in Python)"
        )
    config = run.config
    splits = prepared_data(config)
    if args.data:
        splits = target_data(config, args.data)
    classes = run.about["classes"]
    loss = make_loss(config.loss.name, "classification", classes, config.loss.label_smoothing)
    results = {
        name: evaluate(run.model, data, loss, "classification") for name, data in splits.items()
    }
    if args.json:
        print(strict_json.dumps({"run": str(run.path), "weights": args.weights, "splits": results}))
    else:
        print(metrics_table(results, f"{run.path} ({args.weights} weights)"))
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from .ensembles import ensemble, format_table

    result = ensemble(
        args.dirs,
        weights=args.weights,
        combine=args.combine,
        last=args.last,
        snapshots=args.snapshots,
    )
    print(strict_json.dumps(result) if args.json else format_table(result))
    return 0


def _runs(args: argparse.Namespace) -> int:

    from .train.report import runs_table
    from .train.runs import list_runs

    found = list_runs(args.folder)
    if args.json:
        print(strict_json.dumps(found))
    else:
        print(runs_table(found) if found else f"no runs in {args.folder}")
    return 0


def _config_parts(args: argparse.Namespace) -> tuple[object, object]:
    """The config of ``args`` (CONFIG and --set) and the parts it describes, on the CPU/GPU."""
    from .train.build import choose_device, from_config
    from .train.config import load_config
    from .train.trainer import seed_everything

    config = load_config(args.config, list(args.set or []))
    if config.run.threads is not None:
        torch.set_num_threads(config.run.threads)
    seed_everything(config.run.seed)
    return config, from_config(config, choose_device(config.run.device))


def _doctor(args: argparse.Namespace) -> int:

    from .diagnose import doctor
    from .diagnose.findings import table

    config, parts = _config_parts(args)
    findings = doctor(
        parts.model,
        (parts.train.x, parts.train.y),
        loss_fn=parts.loss,
        task=parts.task,
        shuffle=config.data.shuffle,
        l2=config.penalty.l2,
        seed=config.run.seed,
    )
    if args.json:
        print(strict_json.dumps({"checks": [f.to_dict() for f in findings]}))
    else:
        print(table(findings))
    return 1 if any(f.status == "fail" for f in findings) else 0


def _lr_find(args: argparse.Namespace) -> int:

    from .diagnose.lr_find import lr_find, plot, suggested_overrides
    from .train.config import dump_toml, load_config

    config, parts = _config_parts(args)
    result = lr_find(
        parts.model,
        parts.train,
        loss_fn=parts.loss,
        optimizer=parts.optimizer,
        start=args.start,
        end=args.end,
        steps=args.steps,
        method=args.method,
        seed=config.run.seed,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot(result, out / "lr_find.png")
    (out / "lr_find.json").write_text(strict_json.dumps(result.to_dict(), indent=1))
    if result.suggestion is None:  # too few finite losses: say why, exit 2
        raise ValueError(
            f"Invalid range: no learning rate can be suggested "
            f"({result.reason or 'the loss never fell'}); the curve is in "
            f"{out / 'lr_find.json'} (lower --start and --end, or raise --steps)"
        )
    if args.apply:
        applied = load_config(args.config, [*(args.set or []), *suggested_overrides(result)])
        (out / "config.toml").write_text(dump_toml(applied))
    if args.json:
        print(strict_json.dumps(result.to_dict()))
        return 0
    print(f"suggested learning rate ({result.method}): {result.suggestion:.3g}")
    for method, value in result.suggestions.items():
        shown = "—" if value is None else f"{value:.3g}"
        print(f"  {method:<12} {shown}")
    if result.stopped_early:
        print(f"  stopped early: {result.reason}")
    print(f"plot: {out / 'lr_find.png'}  curve: {out / 'lr_find.json'}")
    if args.apply:
        print(f"config with optimizer.lr={result.suggestion:.3g}: {out / 'config.toml'}")
    else:
        print(f"apply it: --set optimizer.lr={result.suggestion:.3g}")
    return 0


def _lab(args: argparse.Namespace) -> int:
    import json

    from .lab import experiments

    registry = experiments.load()
    if args.lab_command == "list":
        described = [entry.describe() for entry in registry.values()]
        if args.json:
            print(json.dumps([{k: d[k] for k in ("name", "claim", "seed")} for d in described]))
        else:
            for entry in described:
                print(f"{entry['name']:<24} [{entry['seed']}] {entry['claim']}")
        return 0
    names = list(registry) if args.lab_command == "all" else [args.name]
    print(
        f"trainlab lab — {len(names)} experiment(s), {'quick' if args.quick else 'full'} mode,"
        f" into {args.out}/",
        flush=True,
    )
    workers = getattr(args, "workers", 1)
    for option, value in (("--workers", workers), ("--threads", args.threads)):
        if value < 1:
            raise ValueError(f"Invalid {option}: {value} (must be >= 1)")
    for results in experiments.run_all(
        names, args.out, quick=args.quick, fresh=args.fresh, workers=workers, threads=args.threads
    ):
        name = results["name"]
        cached = " (cached)" if results["cached"] else f" ({results['seconds']:.1f} s)"
        print(f"  {name:<24} {results['verdict']:<6}{cached}  {results['evidence']}", flush=True)
    if args.lab_command == "all":
        from .lab.report import write_report

        print(f"report: {write_report(args.out)}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .lab.report import write_report

    print(write_report(args.source, args.output))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import run_sweep

    result = run_sweep(
        args.config,
        args.space,
        out=args.out,
        trials=args.trials,
        workers=args.workers,
        storage=args.storage,
        study=args.study,
        metric=args.metric,
        sampler=args.sampler,
        pruner=args.pruner,
        sets=list(args.set or []),
        seed=args.seed,
        refine=args.refine,
    )
    states: dict[str, int] = {}
    for row in result["trials"]:
        states[row["state"].lower()] = states.get(row["state"].lower(), 0) + 1
    print("trials: " + ", ".join(f"{n} {state}" for state, n in states.items()))
    best = result["best"]
    if best is not None:
        shown = ", ".join(
            f"{key}={best[key]:.4g}" if isinstance(best[key], float) else f"{key}={best[key]}"
            for key in best
            if key not in ("number", "state", "value", "run_dir", "seconds", "note")
        )
        print(f"best: trial {best['number']}, {args.metric} {best['value']:.4f} ({shown})")
        print(f"train it: trainlab train {Path(result['out']) / 'best.toml'}")
    written = "trials.csv, best.toml, plots/" if best is not None else "trials.csv"
    print(f"sweep folder: {result['out']} ({written})")
    if args.refine:
        print(f"narrowed space: {Path(result['out']) / 'space.toml'}")
    if result["error"]:
        print(f"trainlab: error: {result['error']}", file=sys.stderr)
    return result["exit_code"]


def build_parser() -> argparse.ArgumentParser:
    from .ensembles import COMBINERS
    from .train.api import WEIGHTS
    from .train.config import describe

    parser = argparse.ArgumentParser(
        prog="trainlab",
        description="Train neural networks well: the lectures' optimizers, data, models and "
        "training recipe.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="train a CNN on MNIST-1D with the lectures' recipe (what `make demo` runs)",
        description="Train a CNN on MNIST-1D: Adam, Kaiming init, batch norm, dropout, a "
        "one-cycle schedule, per-epoch shuffling; prints a live progress line and a summary.",
    )
    demo.add_argument("--run-dir", help="run folder (default: runs/demo-<time>)")
    demo.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    demo.set_defaults(run=_demo)

    train = commands.add_parser(
        "train",
        help="train from a TOML config, or resume a run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the model a TOML config describes (every setting has a default; "
        "--set section.key=value overrides one), or continue a run with --resume.\n\n"
        "Settings (section.key = default  # meaning):\n\n" + describe(),
    )
    train.add_argument(
        "config", nargs="?", help="the TOML config file (default: every setting's default)"
    )
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    train.add_argument("--run-dir", help="run folder (default: runs/<config>-<time>)")
    train.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    train.add_argument(
        "--seeds",
        type=int,
        metavar="K",
        help="train K members (1 ≤ K ≤ 64) with run.seed, run.seed + 1, … into member-1 … "
        "member-K of "
        "the run folder, one after another (each run already uses run.threads of the cores, "
        "so side by side they would only take turns); with --resume, the unfinished members "
        "continue and a larger K adds members",
    )
    train.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train data-parallel in N processes on this host (started by torchrun; each "
        "takes data.batch_size / N examples of every batch, which N must divide)",
    )
    train.set_defaults(run=_train_command)

    race = commands.add_parser(
        "race",
        help="race every optimizer on the lectures' 2-D test problems",
        description="Race every optimizer on the ill-conditioned 'taco shell' quadratic, "
        "Rosenbrock and a saddle; prints steps to converge and final distance.",
    )
    race.add_argument(
        "--budget", type=int, default=1000, help="optimizer steps per run (default: 1000)"
    )
    race.set_defaults(run=_race)

    evaluate = commands.add_parser(
        "evaluate",
        help="the metrics of a run's weights on its data splits",
        description="Evaluate a finished run's weights (raw, EMA or the best checkpoint) on "
        "the train, validation and test splits it was trained with, split and normalized as "
        "in training, or on another dataset's test split (--data).",
    )
    evaluate.add_argument("run_dir", metavar="DIR", help="the run folder")
    evaluate.add_argument("--weights", choices=WEIGHTS, default="raw")
    evaluate.add_argument("--data", help="a dataset name: evaluate on its test split instead")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(run=_evaluate)

    together = commands.add_parser(
        "ensemble",
        help="average several runs' predictions: each member and the ensemble on the test split",
        description="Score each member alone and the average of their predictions on the "
        "test split the members share: accuracy, loss (NLL of the mean probabilities) and "
        "expected calibration error (15 equal-width confidence bins). A folder of a `train "
        "--seeds` run counts as its members. Members must predict the same classes on the "
        "same raw test examples (a dataset with a fixed test split, or the same run.seed).",
    )
    together.add_argument("dirs", nargs="+", metavar="DIR", help="run folders")
    together.add_argument("--weights", choices=WEIGHTS, default="raw")
    together.add_argument(
        "--combine",
        choices=tuple(COMBINERS),
        default="mean-prob",
        help="mean-prob: argmax of the mean probabilities; vote: majority of the members' "
        "predictions, a tie going to the highest mean probability (default: mean-prob)",
    )
    together.add_argument(
        "--last", type=int, metavar="K", help="the last K checkpoints of one run as members"
    )
    together.add_argument(
        "--snapshots",
        action="store_true",
        help="the snapshots/cycle-<k>.safetensors of one run (averaging.snapshots) as members",
    )
    together.add_argument("--json", action="store_true", help="print JSON")
    together.set_defaults(run=_ensemble)

    runs = commands.add_parser(
        "runs",
        help="list the runs in a folder with their key numbers",
        description="List the run folders under FOLDER (default: runs): status, steps, "
        "accuracy or loss, time.",
    )
    runs.add_argument("folder", nargs="?", default="runs", metavar="FOLDER")
    runs.add_argument("--json", action="store_true", help="print JSON")
    runs.set_defaults(run=_runs)

    doctor = commands.add_parser(
        "doctor",
        help="pre-flight checks of a config: loss at init, gradients, overfitting a tiny "
        "subset, data, initialization",
        description="Run the lectures' babysitting checks on the model and data a config "
        "describes, before training: each check prints pass/warn/fail, the evidence and the "
        "fix. Exit 0 when no check fails, 1 when one fails, 2 on bad input. No run folder is "
        "created or touched.",
    )
    doctor.add_argument("config", nargs="?", help="the TOML config (default: the defaults)")
    doctor.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    doctor.set_defaults(run=_doctor)

    finder = commands.add_parser(
        "lr-find",
        help="find a learning rate: an exponential sweep with the smoothed loss",
        description="Sweep the learning rate exponentially over a few mini-batches of the "
        "config's training data, with a bias-corrected smoothed loss; stop when it exceeds "
        "4× its best; suggest a rate. The model, optimizer and data are built afresh and "
        "left untouched. Writes lr_find.png and lr_find.json into --out.",
    )
    finder.add_argument("config", nargs="?", help="the TOML config (default: the defaults)")
    finder.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    finder.add_argument("--json", action="store_true", help="print JSON")
    finder.add_argument("--out", default="lr-find", help="output folder (default: lr-find)")
    finder.add_argument("--start", type=float, default=1e-7, help="first rate (default: 1e-7)")
    finder.add_argument("--end", type=float, default=10.0, help="last rate (default: 10)")
    finder.add_argument("--steps", type=int, default=100, help="steps (default: 100)")
    finder.add_argument(
        "--method",
        default="valley",
        choices=("valley", "steepest", "minimum/10"),
        help="how to pick the suggestion (default: valley)",
    )
    finder.add_argument(
        "--apply", action="store_true", help="write the config with the suggested rate to --out"
    )
    finder.set_defaults(run=_lr_find)

    lab = commands.add_parser(
        "lab",
        help="the lectures' claims as experiments with figures and verdicts",
        description="Each experiment states a lecture's claim, runs it with trainlab's own "
        "optimizers, models and data, saves its figures and results.json, and judges the "
        "claim by a rule written next to it. Results are cached by code and settings.",
    )
    lab_commands = lab.add_subparsers(dest="lab_command", required=True, metavar="COMMAND")
    lab_list = lab_commands.add_parser("list", help="list the experiments and their claims")
    lab_list.add_argument("--json", action="store_true", help="print JSON")
    lab_run = lab_commands.add_parser("run", help="run one experiment")
    lab_run.add_argument("name", help="the experiment (trainlab lab list)")
    lab_all = lab_commands.add_parser("all", help="run every experiment, then the report")
    lab_all.add_argument(
        "--workers",
        type=int,
        default=1,
        help="experiments run at once, each in its own process (default: 1)",
    )
    for sub in (lab_run, lab_all):
        sub.add_argument(
            "--threads",
            type=int,
            default=1,
            help="torch threads per experiment (default: 1; the models are small)",
        )
        sub.add_argument("--quick", action="store_true", help="a small, fast version")
        sub.add_argument("--out", default="lab", help="output folder (default: lab)")
        sub.add_argument("--fresh", action="store_true", help="ignore cached results")
    lab.set_defaults(run=_lab)

    report = commands.add_parser(
        "report",
        help="one self-contained HTML file for experiments or runs",
        description="Write one HTML file with every figure, table, claim, verdict and config "
        "of an experiment folder, a lab folder, a run folder or a folder of runs; it loads "
        "nothing from the network.",
    )
    report.add_argument("source", metavar="DIR")
    report.add_argument("-o", "--output", help="the HTML file (default: DIR/report.html)")
    report.set_defaults(run=_report)

    sweep = commands.add_parser(
        "sweep",
        help="search hyperparameters: an Optuna study whose trials are trainlab runs",
        description="Train --trials trials of CONFIG with values drawn from SPACE.toml "
        '(keys are config keys: "optimizer.lr" = {type = "log-uniform", low = 1e-4, '
        "high = 1e-1}; also uniform, int, categorical with choices), by --workers processes "
        "sharing one study; each trial is a run folder OUT/trials/<number>/. Rerunning the "
        "same command continues the sweep. Writes OUT/trials.csv, OUT/best.toml and plots.",
    )
    sweep.add_argument("config", nargs="?", help="the TOML config (default: the defaults)")
    sweep.add_argument("--space", required=True, metavar="SPACE.toml", help="the search space")
    sweep.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting")
    sweep.add_argument("--trials", type=int, default=20, help="trials in total (default: 20)")
    sweep.add_argument(
        "--workers", type=int, default=1, help="worker processes on this host (default: 1)"
    )
    sweep.add_argument(
        "--storage",
        metavar="URL",
        help="the study's storage: postgresql://user:password@host/db for workers on many "
        "hosts (default: the journal file OUT/study.journal, for one host)",
    )
    sweep.add_argument("--study", help="the study's name (default: the config's name)")
    sweep.add_argument("--out", help="the sweep folder (default: sweeps/<study>)")
    sweep.add_argument(
        "--metric",
        choices=("val_accuracy", "val_loss"),
        default="val_accuracy",
        help="maximize val_accuracy or minimize val_loss (default: val_accuracy)",
    )
    sweep.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe")
    sweep.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median")
    sweep.add_argument("--seed", type=int, default=0, help="the samplers' seed (default: 0)")
    sweep.add_argument(
        "--refine",
        metavar="PREVIOUS_SWEEP_DIR",
        help="coarse to fine: narrow SPACE to the range of the best quarter (at least 3) of "
        "that sweep's complete trials, written to OUT/space.toml (default study: "
        "<config>-refined)",
    )
    sweep.set_defaults(run=_sweep)

    listing = commands.add_parser("optimizers", help="list the optimizers and their update rules")
    listing.set_defaults(run=_optimizers)
    return parser


class Terminated(BaseException):
    """SIGTERM outside the training loop (which handles it itself)."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


#: The folder of trainlab's own modules: their warnings are shown as trainlab's lines.
_PACKAGE = Path(__file__).resolve().parent
_python_format_warning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """A warning trainlab raises, as the command line speaks: ``trainlab: warning: …``
    (a Python warning's file, line and class mean nothing to someone at a shell); others'
    warnings keep Python's format, which says where they come from."""
    if Path(filename).resolve().is_relative_to(_PACKAGE):
        return f"trainlab: warning: {message}\n"
    return _python_format_warning(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    from .train.run_folder import os_error_message

    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    formatwarning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        return args.run(args)
    except ValueError as error:  # bad input, named: config, data, checkpoints, non-finite
        print(f"trainlab: error: {error}", file=sys.stderr)
    except MemoryError:
        print(
            "trainlab: error: out of memory (the data or the model is larger than this "
            "machine's memory: use a smaller model, batch or dataset)",
            file=sys.stderr,
        )
    except BrokenPipeError:  # the reader of our output went away (`| head`): not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as error:  # the disk, the file system, permissions
        print(f"trainlab: error: {os_error_message(error, 'access')}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ntrainlab: interrupted; files already saved are intact", file=sys.stderr)
        return 130
    except Terminated:
        print("trainlab: terminated (SIGTERM); files already saved are intact", file=sys.stderr)
        return 143
    finally:
        warnings.formatwarning = formatwarning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 2


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    raise SystemExit(main())
