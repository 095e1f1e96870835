"""The lab's framework, its commands and the HTML report, checked in a real browser."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from trainlab.cli import main
from trainlab.lab import experiment, experiments

from ..test_sweep import SPACE as SWEEP_SPACE
from ..test_sweep import TINY as SWEEP_CONFIG
from ..train.test_seeds import fixed_test_split
from ..train.test_trainer import TINY, set_args

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Chromium (.ci/run installs Debian's chromium package)"
)
BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_lab_list_gives_every_experiment_with_its_claim_and_seed(capsys):
    assert main(["lab", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["name"] for entry in listed] == list(experiments.load())
    assert all(set(entry) == {"name", "claim", "seed"} for entry in listed)
    assert all(re.fullmatch(r"00[0-4]", entry["seed"]) for entry in listed)


@pytest.mark.parametrize("name", ["ewma", "adam_bias_correction"])
def test_cheap_experiments_hold_in_quick_mode(tmp_path, name):
    experiments.load()
    results = experiment.run(name, tmp_path, quick=True)
    assert results["verdict"] == "holds", results["evidence"]
    saved = json.loads((tmp_path / name / "results.json").read_text())
    assert {"name", "claim", "verdict", "evidence"} <= saved.keys()
    for figure in saved["figures"]:
        png = tmp_path / name / figure
        assert png.read_bytes().startswith(b"\x89PNG") and png.with_suffix(".svg").stat().st_size


def test_results_are_cached_until_fresh(tmp_path):
    experiments.load()
    first = experiment.run("ewma", tmp_path, quick=True)
    again = experiment.run("ewma", tmp_path, quick=True)
    assert not first["cached"] and again["cached"] and again["evidence"] == first["evidence"]
    assert not experiment.run("ewma", tmp_path, quick=True, fresh=True)["cached"]
    assert not experiment.run("ewma", tmp_path, quick=False)["cached"]  # another mode


def test_an_unknown_experiment_is_named_with_the_closest(capsys, tmp_path):
    assert main(["lab", "run", "ewm", "--out", str(tmp_path)]) == 2
    assert "did you mean 'ewma'" in capsys.readouterr().err


def render(page: Path, tmp_path: Path) -> tuple[str, bytes]:
    """The page's body tag after load, and a screenshot, from headless Chromium."""
    common = [CHROMIUM, *BROWSER_FLAGS, "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*common, f"--user-data-dir={tmp_path / 'profile1'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            *common,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return re.search(r"<body[^>]*>", dom).group(0), shot.read_bytes()


@needs_chromium
def test_the_lab_report_renders_in_a_real_browser(tmp_path):
    out = tmp_path / "lab"
    assert main(["lab", "run", "ewma", "--quick", "--out", str(out)]) == 0
    assert main(["lab", "run", "adam_bias_correction", "--quick", "--out", str(out)]) == 0
    assert main(["report", str(out), "-o", str(tmp_path / "lab.html")]) == 0
    page = tmp_path / "lab.html"
    text = page.read_text()
    assert not re.search(r"(src|href)=['\"]https?://", text)  # nothing to fetch
    assert "holds" in text and "Rule:" in text
    body, shot = render(page, tmp_path)
    assert 'data-figures="2"' in body  # every figure embedded and loaded
    assert 'data-empty-figures="0"' in body and 'data-errors="0"' in body
    assert shot.startswith(b"\x89PNG") and len(shot) > 50_000


@needs_chromium
def test_a_training_run_gets_the_same_report(tmp_path):
    run_dir = tmp_path / "run"
    settings = [*TINY, "diagnostics.enabled=true", "diagnostics.every=5"]
    assert main(["train", "--run-dir", str(run_dir), *set_args(settings)]) == 0
    assert main(["report", str(run_dir)]) == 0
    page = run_dir / "report.html"
    assert "generalization_gap" in page.read_text() and "config.toml" in page.read_text()
    body, shot = render(page, tmp_path)
    assert 'data-figures="2"' in body and 'data-empty-figures="0"' in body  # curves, layers
    assert 'data-errors="0"' in body and len(shot) > 50_000


@needs_chromium
def test_a_seeds_run_gets_its_members_mean_and_ensemble_in_the_report(tmp_path):
    parent = tmp_path / "seeds"
    argv = ["train", "--run-dir", str(parent), "--seeds", "2"]
    assert main([*argv, *set_args(fixed_test_split(tmp_path))]) == 0  # one test set: ensembled
    assert main(["report", str(parent), "-o", str(tmp_path / "seeds.html")]) == 0
    text = (tmp_path / "seeds.html").read_text()
    summary = json.loads((parent / "summary.json").read_text())
    cells = re.findall(
        r"<tr><td>(member-\d)</td><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td>", text
    )
    assert cells == [
        (m["dir"], str(m["seed"]), f"{m['test_accuracy']:.4g}", f"{m['test_loss']:.4g}")
        for m in summary["members"]
    ]
    mean = (
        f"test accuracy {summary['test_accuracy_mean']:.4g} ± {summary['test_accuracy_std']:.4g}, "
        f"test loss {summary['test_loss_mean']:.4g} ± {summary['test_loss_std']:.4g}"
    )
    assert mean in text
    together = summary["ensemble"]
    for label in ("test accuracy", "test loss", "test ECE"):
        value = together[label.replace(" ", "_").replace("ECE", "ece")]
        assert f"<tr><td>{label}</td><td>{value:.4g}</td></tr>" in text
    assert f"<td>{together['gain'] * 100:+.2f} points</td>" in text
    for member in ("member-1", "member-2"):  # each member's own run section, once
        assert text.count(f"<h2 id='seeds/{member}'>run seeds/{member}</h2>") == 1
    body, shot = render(tmp_path / "seeds.html", tmp_path)
    assert 'data-figures="2"' in body and 'data-empty-figures="0"' in body  # members' curves
    assert 'data-errors="0"' in body and len(shot) > 50_000


def test_a_seeds_run_without_an_ensemble_shows_why_in_the_report(tmp_path):
    runs = tmp_path / "runs"
    argv = ["train", "--run-dir", str(runs / "seeds"), "--seeds", "2", *set_args(TINY)]
    assert main(argv) == 0  # digits: run.seed carves the test set, so no ensemble
    assert main(["report", str(runs)]) == 0  # a folder holding a seeds run
    text = (runs / "report.html").read_text()
    note = json.loads((runs / "seeds" / "summary.json").read_text())["ensemble_note"]
    assert note and f"<b>No ensemble:</b> {html.escape(note)}" in text
    assert re.findall(r"<h2 id='([^']*)'>", text) == ["seeds", "seeds/member-1", "seeds/member-2"]


@needs_chromium
def test_a_sweep_gets_the_same_report(tmp_path):
    config, space = tmp_path / "tiny.toml", tmp_path / "space.toml"
    config.write_text(SWEEP_CONFIG)
    space.write_text(SWEEP_SPACE)
    out = tmp_path / "sweep"
    argv = ["sweep", str(config), "--space", str(space), "--out", str(out), "--trials", "3"]
    assert main(argv) == 0
    assert main(["report", str(out)]) == 0
    text = (out / "report.html").read_text()
    assert not re.search(r"(src|href)=['\"]https?://", text)  # nothing to fetch
    assert "sweep tiny" in text and "best trial" in text and "trials (3)" in text
    assert "trainlab train" in text  # best.toml's text
    body, shot = render(out / "report.html", tmp_path)
    assert 'data-figures="3"' in body and 'data-empty-figures="0"' in body  # the 3 plots
    assert 'data-errors="0"' in body and len(shot) > 50_000


def test_report_of_a_folder_with_nothing_in_it_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no experiment" in capsys.readouterr().err


def test_workers_run_experiments_in_parallel_processes_with_the_same_results(tmp_path):
    names = ["ewma", "adam_bias_correction"]
    alone = list(experiments.run_all(names, tmp_path / "one", quick=True))
    together = list(experiments.run_all(names, tmp_path / "two", quick=True, workers=2))
    assert [r["name"] for r in together] == names  # in order
    assert [r["evidence"] for r in together] == [r["evidence"] for r in alone]
    assert all((tmp_path / "two" / n / "results.json").is_file() for n in names)


@pytest.fixture
def probes():
    """Two throw-away experiments that record the threads they ran with; removed after."""
    seen: list[tuple[str, int]] = []

    def probe(name: str):
        def function(ctx):
            seen.append((name, torch.get_num_threads()))
            return experiment.Outcome.judge(True, f"{name} ran with {ctx.threads} thread(s)")

        return function

    experiment.experiment("probe_timed", claim="c", seed="000", rule="r", timed=True)(
        probe("probe_timed")
    )
    experiment.experiment("probe_plain", claim="c", seed="000", rule="r")(probe("probe_plain"))
    yield seen
    for name in ("probe_timed", "probe_plain"):
        experiment.EXPERIMENTS.pop(name)


def test_an_experiment_runs_with_the_threads_asked_for_and_they_key_the_cache(tmp_path, probes):
    before = torch.get_num_threads()
    results = experiment.run("probe_plain", tmp_path, threads=3)
    assert probes == [("probe_plain", 3)] and torch.get_num_threads() == before
    assert results["threads"] == 3 and results["evidence"] == "probe_plain ran with 3 thread(s)"
    again = experiment.run("probe_plain", tmp_path, threads=3)
    assert again["cached"] and len(probes) == 1  # not run again
    assert again["cache_key"] == results["cache_key"] and again["evidence"] == results["evidence"]
    assert not experiment.run("probe_plain", tmp_path, threads=3, fresh=True)["cached"]
    assert not experiment.run("probe_plain", tmp_path, threads=1)["cached"]
    with pytest.raises(ValueError, match=r"Invalid threads: 0 \(must be an integer >= 1\)"):
        experiment.run("probe_plain", tmp_path, threads=0)


def test_timed_experiments_run_after_the_others(tmp_path, probes):
    names = ["probe_timed", "probe_plain"]
    order = [r["name"] for r in experiments.run_all(names, tmp_path, quick=True)]
    assert order == ["probe_plain", "probe_timed"] == [name for name, _ in probes]


def test_lab_threads_must_be_positive(tmp_path, capsys):
    assert main(["lab", "run", "ewma", "--threads", "0", "--out", str(tmp_path)]) == 2
    assert "Invalid --threads: 0 (must be >= 1)" in capsys.readouterr().err
