"""Pages generated from trainlab itself, so that they cannot drift from the code.

* ``config_reference()``: every config key from the config schema (``trainlab.train.config
  .settings``, the same source as ``trainlab train --help``).
* ``cli_reference()``: every command's ``--help``, from the command line's own parser.
* ``lab_claims(topic)``: a lecture topic's claims beside the lab's figures and verdicts,
  read from the full-mode ``results.json`` files in ``docs/lab/`` (``docs/lab_results.py``
  copies them there from a ``trainlab lab all`` run).

Executed code blocks of the pages call these (``import docgen``; the hook puts this folder
on ``sys.path``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
from contextlib import redirect_stdout
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1]
LAB = DOCS / "lab"

#: The lecture notes the lab's claims come from, by the seed number each experiment cites.
SEEDS = {
    "000": "“Training Neural Networks 2”: fancier optimization, regularization, "
    "model ensembles (notes in Korean and English)",
    "001": "“Day 7: Optimization, regularization for NN”, Introduction to Machine Learning "
    "Summer School, Chicago 2018",
    "002": "“Lecture 7-1: Training Neural Networks II”: fancier optimization, "
    "regularization, transfer learning",
    "003": "the variants of gradient descent: mini-batch, momentum and Nesterov, Adagrad, "
    "RMSProp, Adam, with exponentially weighted averages",
    "004": "“Problems & Solutions”: overfitting and underfitting, regularization, "
    "initialization, batch normalization, hyperparameter search (notes in Korean)",
}

#: Lecture topic -> its page title and its experiments (name, heading), in reading order.
#: Every experiment of the lab belongs to exactly one topic; ``check_topics`` enforces it.
TOPICS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "optimization": (
        "Fancier optimization",
        [
            ("trajectories", "SGD, momentum and adaptive methods on the 2-D problems"),
            ("ewma", "Exponentially weighted averages and their bias"),
            ("adagrad_vs_rmsprop", "AdaGrad stalls, RMSProp keeps moving"),
            ("adam_bias_correction", "Adam's bias correction"),
            ("optimizers_on_networks", "The optimizers on real networks"),
        ],
    ),
    "learning-rate": (
        "The learning rate and its schedule",
        [
            ("learning_rate", "Too low, too high, just right — and decay"),
            ("time_to_accuracy", "Time to accuracy: which techniques pay for themselves"),
        ],
    ),
    "initialization": (
        "Initialization",
        [("initialization", "Activation statistics under each initialization")],
    ),
    "batch-norm": (
        "Batch normalization",
        [
            ("batch_norm", "Batch norm: higher learning rates, less sensitivity to init"),
            ("loss_landscape", "Batch norm and the loss landscape"),
        ],
    ),
    "regularization": (
        "Regularization and the data",
        [
            ("regularization", "Regularizers and the generalization gap"),
            ("data_order_and_scale", "Shuffling and preprocessing"),
        ],
    ),
    "ensembles": (
        "Model ensembles",
        [("ensembles", "Ensembles, snapshots, EMA and SWA")],
    ),
    "hyperparameter-search": (
        "Hyperparameter search",
        [("random_vs_grid", "Random search beats grid search")],
    ),
}

MAX_TABLE_ROWS = 24  # larger tables are left in results.json


# --------------------------------------------------------------------------- config


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """Markdown: one table per config section, a row per key."""
    from trainlab.train.config import section_summaries, settings

    summaries = section_summaries()
    out: list[str] = []
    section = None
    for setting in settings():
        name, key = setting.key.split(".", 1)
        if name != section:
            section = name
            out += [
                "",
                f"## `[{name}]` {{#{name}}}",
                "",
                _cell(summaries[name].split(":", 1)[-1].strip()).capitalize(),
                "",
                "| key | default | meaning |",
                "|---|---|---|",
            ]
        accepts = setting.type
        if setting.allowed:  # the rule says the type too, unless "none" is also allowed
            accepts = (
                f"{setting.type}; {setting.allowed}" if " or " in setting.type else setting.allowed
            )
        resume = " May change on resume." if setting.resumable else ""
        out.append(
            f"| `{key}`{{#{setting.key} .nowrap}} | `{_cell(setting.default_toml)}` | "
            f"{_cell(setting.help)}. *Accepts {_cell(accepts)}.*{resume} |"
        )
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- command line


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands on a private action
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_reference() -> str:
    """Markdown: ``trainlab --help``, then every command's and sub-command's ``--help``."""
    from trainlab.cli import build_parser

    def usage(parser: argparse.ArgumentParser) -> str:
        buffer = io.StringIO()
        with redirect_stdout(buffer):
            parser.print_help()
        return buffer.getvalue()

    parser = build_parser()
    out = ["```text", usage(parser).rstrip(), "```"]
    for name, command in _subcommands(parser).items():
        out += ["", f"## `trainlab {name}` {{#{name}}}", "", "```text", usage(command).rstrip()]
        out.append("```")
        for sub_name, sub in _subcommands(command).items():
            out += ["", f"### `trainlab {name} {sub_name}`", "", "```text"]
            out += [usage(sub).rstrip(), "```"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- lab


def check_topics() -> list[str]:
    """Problems with ``TOPICS``: experiments missing, twice, unknown, or without results."""
    from trainlab.lab import experiments

    names = list(experiments.load())
    listed = [name for _, entries in TOPICS.values() for name, _ in entries]
    problems = [f"experiment {n!r} is on no lecture page" for n in names if n not in listed]
    problems += [f"experiment {n!r} is on two pages" for n in set(listed) if listed.count(n) > 1]
    problems += [f"{n!r} is not an experiment of the lab" for n in listed if n not in names]
    problems += [
        f"no full-mode results for {n!r} in docs/lab/ (run docs/lab_results.py)"
        for n in names
        if not (LAB / n / "results.json").is_file()
    ]
    return problems


def _number(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_number(item) for item in value)
    return str(value)


def _table(rows: list[dict]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(_cell(str(c)) for c in columns) + " |"]
    out.append("|" + "---|" * len(columns))
    for row in rows:
        out.append("| " + " | ".join(_cell(_number(row.get(c, ""))) for c in columns) + " |")
    return out


def results(name: str) -> dict:
    """The full-mode ``results.json`` of experiment ``name``, as copied into docs/lab/."""
    return json.loads((LAB / name / "results.json").read_text(encoding="utf-8"))


def lab_claims(topic: str) -> str:
    """Markdown for one lecture topic: each claim, its verdict, evidence, figures, numbers."""
    _, entries = TOPICS[topic]
    out: list[str] = []
    for name, heading in entries:
        r = results(name)
        holds = r["verdict"] == "holds"
        out += [
            "",
            f"## {heading} {{#{name}}}",
            "",
            f"> **The lecture's claim.** {r['claim']}",
            "",
            f"*Seed lecture {r['seed']}: {SEEDS[r['seed']]}.*",
            "",
            f'!!! {"success" if holds else "failure"} "The lab: the claim {r["verdict"]}"',
            "",
            f"    {r['evidence']}",
            "",
            f"    *Rule:* {r['rule']}",
            "",
        ]
        for figure in r["figures"]:
            if not (LAB / name / figure).is_file():
                raise FileNotFoundError(
                    f"docs/lab/{name}/{figure} is missing: rerun docs/lab_results.py"
                )
            out += [f"![{name}: {figure}](../lab/{name}/{figure})", ""]
        for table_name, rows in r.get("tables", {}).items():
            if not rows or len(rows) > MAX_TABLE_ROWS:
                continue
            out += [f'??? note "The numbers: {table_name}"', ""]
            out += ["    " + line for line in _table(rows)]
            out.append("")
        out += [
            f"Reproduce: `trainlab lab run {name}` (full mode, {r['seconds']:.0f} s here; "
            f"`--quick` for a smaller run), then `trainlab report lab/{name}`.",
        ]
    return "\n".join(out) + "\n"


def lab_overview() -> str:
    """Markdown: one row per experiment with its page, claim and verdict."""
    out = ["| topic | experiment | the lecture's claim | verdict |", "|---|---|---|---|"]
    for topic, (title, entries) in TOPICS.items():
        for name, heading in entries:
            r = results(name)
            out.append(
                f"| [{title}]({topic}.md) | [{_cell(heading)}]({topic}.md#{name}) | "
                f"{_cell(r['claim'])} | **{r['verdict']}** |"
            )
    return "\n".join(out) + "\n"


def lab_summary() -> dict[str, int]:
    """How many of the lab's claims hold in the full-mode results."""
    verdicts = [results(name)["verdict"] for _, entries in TOPICS.values() for name, _ in entries]
    return {"total": len(verdicts), "holds": verdicts.count("holds")}


# --------------------------------------------------------------------------- benchmarks

BENCHMARKS = DOCS.parent / "benchmarks"


def benchmark(name: str) -> dict:
    """The JSON a benchmark script wrote to benchmarks/results/."""
    return json.loads((BENCHMARKS / "results" / f"{name}.json").read_text(encoding="utf-8"))


def optimizer_tables() -> str:
    """The optimizer step tables, printed by benchmarks/readme_tables.py from its JSON."""
    import runpy

    tables = runpy.run_path(str(BENCHMARKS / "readme_tables.py"))
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        tables["main"](BENCHMARKS / "results" / "optim_step.json")
    return buffer.getvalue()


def speed_summary() -> str:
    """One sentence of headline numbers: optimizer steps and the training loop."""
    steps = benchmark("optim_step")

    def ratios(workload: str) -> list[float]:
        """trainlab's default ÷ torch's fastest, per optimizer (paired within rounds)."""
        rows = steps[workload]
        return [r["ratio_to_torch_best"] for r in rows if r["implementation"] == "trainlab default"]

    big, small = ratios("resnet18"), ratios("small")
    loop = benchmark("trainer_overhead")["ratio_plain_pytorch"]
    return (
        f"at ResNet-18 size trainlab's default step takes {min(big):.2f}–{max(big):.2f}× the "
        "time of torch.optim's fastest implementation of the same optimizer; on 1,000 small "
        f"tensors it is {1 / max(small):.0f}–{1 / min(small):.0f}× faster; the training loop "
        f"takes {loop:.2f}× the time of a plain PyTorch loop of the same recipe"
    )


def loop_tables() -> str:
    """The training-loop benchmarks: overhead, time to accuracy, diagnostics, data, lab."""
    overhead = benchmark("trainer_overhead")
    s = overhead["seconds"]
    out = [
        "**Trainer overhead** (`benchmarks/trainer_overhead.py`: the demo's CNN, 10 epochs, "
        f"medians of {len(overhead['all_seconds']['trainer'])}, 2 threads):",
        "",
        "| loop | seconds | trainer ÷ loop |",
        "|---|---|---|",
        "| plain PyTorch: `torch.optim.AdamW`, `OneCycleLR`, per-epoch `randperm` batches, "
        f"validation every epoch | {s['plain_pytorch']:.2f} | "
        f"{overhead['ratio_plain_pytorch']:.2f} |",
        "| bare loop on trainlab's own model, optimizer and batches | "
        f"{s['hand']:.2f} | {overhead['ratio']:.2f} |",
        f"| the same, validating every epoch | {s['hand_validated']:.2f} | "
        f"{overhead['ratio_validated']:.2f} |",
        f"| **trainlab Trainer** (logs, smoothed loss, checkpoints) | **{s['trainer']:.2f}** | |",
        "",
    ]
    race = benchmark("time_to_accuracy")
    out += [
        f"**Time to {race['target']:.0%} MNIST-1D test accuracy** "
        f"(`benchmarks/time_to_accuracy.py`; recipe: {race['recipe']}):",
        "",
        "| loop | "
        + " | ".join(f"seed {r['seed']}" for r in race["trainlab"]["runs"])
        + " | mean | ms / step |",
        "|---" * (len(race["trainlab"]["runs"]) + 3) + "|",
    ]
    for key, label in (("trainlab", "trainlab Trainer"), ("plain", "plain PyTorch loop")):
        runs = race[key]["runs"]
        cells = " | ".join(f"{r['seconds']:.2f}" for r in runs)
        out.append(
            f"| {label} | {cells} | {race[key]['mean']:.2f} | {race[key]['ms_per_step']:.2f} |"
        )
    diagnostics = benchmark("diagnostics_overhead")
    batches = benchmark("data_batches")
    workers = benchmark("lab_workers")["seconds"]
    out += [
        "",
        "**Instruments** (`benchmarks/diagnostics_overhead.py`, the demo CNN, 10 epochs): "
        f"sampling every 10 steps costs +{diagnostics['overhead_every_10']:.1%}, every step "
        f"+{diagnostics['overhead_every_step']:.0%}; drawing the figures at the end "
        f"{diagnostics['figures_seconds']:.1f} s once.",
        "",
        "**Mini-batches** (`benchmarks/data_batches.py`, one epoch of MNIST-1D): "
        + ", ".join(
            f"batch {e['batch_size']}: `data.Batches` +{e['batches_overhead_pct']:.1f}% over "
            f"indexing by hand, a `DataLoader` +{e['dataloader_overhead_pct']:.0f}%"
            for e in batches["epochs"]
        )
        + ".",
        "",
        "**The lab's workers** (`benchmarks/lab_workers.py`, `trainlab lab all --quick`): "
        + ", ".join(f"{label}: {seconds:.0f} s" for label, seconds in workers.items())
        + ".",
    ]
    return "\n".join(out) + "\n"
