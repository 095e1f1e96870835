"""trainlab.fit on a user's own model and data; load_run, evaluate and runs; bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import trainlab
from trainlab.cli import main
from trainlab.train import Callback, TrainingError
from trainlab.train.evaluation import evaluate
from trainlab.train.sources import LoaderBatches

from .test_trainer import TINY, set_args

# A user's own model, defined here: residual blocks, batch norm, a shared layer, a frozen
# part and a buffer — what the trainer must handle without knowing it.
MODEL_AND_DATA = """
import json, sys, time
import torch
from torch import nn
from torch.utils.data import TensorDataset
import trainlab
from trainlab.train import Callback


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x):
        return x + torch.relu(self.norm(self.fc(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(12, 32)
        self.frozen = nn.Linear(12, 32)
        self.frozen.requires_grad_(False)
        self.shared = Residual(32)  # applied twice: parameter sharing
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(32, 4)
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, x):
        h = self.stem(x) + self.scale * self.frozen(x)
        return self.head(self.dropout(self.shared(self.shared(h))))


class Tally(Callback):
    '''A callback with state: its count and loss sum must survive a resume exactly.'''

    def __init__(self, slow_after=None):
        self.steps, self.total, self.slow_after = 0, 0.0, slow_after

    def on_step_end(self, trainer, step):
        self.steps += 1
        self.total += step.loss
        if self.slow_after is not None and step.step >= self.slow_after:
            time.sleep(0.05)  # slow enough to be killed mid-run

    def state_dict(self):
        return {"steps": self.steps, "total": self.total}

    def load_state_dict(self, state):
        self.steps, self.total = state["steps"], state["total"]


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 12, generator=g)
    y = (x[:, :4].argmax(1) + (x[:, 4] > 1).long()) % 4
    return x, y


def run(run_dir, kind, resume=False, slow_after=None):
    torch.manual_seed(0)
    model = Net()
    x, y = data()
    train = (x[:400], y[:400]) if kind == "tensors" else TensorDataset(x[:400], y[:400])
    tally = Tally(slow_after)
    summary = trainlab.fit(
        model, train, val=(x[400:500], y[400:500]), test=(x[500:], y[500:]),
        run_dir=run_dir, resume=resume, callbacks=[tally], epochs=4, seed=3,
        batch_size=32, lr=3e-3, checkpoint_every=5, checkpoint_seconds=0, threads=1,
        settings={"averaging.ema": True},
    )
    return summary, tally


if __name__ == "__main__":
    summary, tally = run(sys.argv[1], sys.argv[2], sys.argv[3] == "resume", 8)
    json.dump({"steps": tally.steps, "total": tally.total}, open(sys.argv[4], "w"))
"""


@pytest.fixture
def user_script(tmp_path):
    path = tmp_path / "user_model.py"
    path.write_text(MODEL_AND_DATA)
    sys.path.insert(0, str(tmp_path))
    try:
        import user_model

        yield path, user_model
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_model", None)


def run_script(script: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, str(script), *args], env=env)


def model_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run_dir / "model.safetensors"))


@pytest.mark.parametrize("kind", ["tensors", "dataset"])
def test_a_users_model_killed_and_resumed_ends_bit_identical(tmp_path, user_script, kind):
    script, user = user_script
    reference = tmp_path / "reference"
    summary, tally = user.run(reference, kind)
    assert summary["steps"] == 4 * 13 and tally.steps == 52

    killed = tmp_path / "killed"
    process = run_script(script, str(killed), kind, "new", str(tmp_path / "tally.json"))
    deadline = time.time() + 60
    while not list((killed / "checkpoints").glob("step-0000001*")):
        assert process.poll() is None and time.time() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    time.sleep(0.12)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists(), "the run should have been killed mid-way"

    resumed = run_script(script, str(killed), kind, "resume", str(tmp_path / "tally.json"))
    assert resumed.wait(timeout=120) == 0
    expected, got = model_weights(reference), model_weights(killed)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    saved = json.loads((tmp_path / "tally.json").read_text())
    assert saved == {"steps": tally.steps, "total": tally.total}  # the callback's state too
    assert json.loads((killed / "summary.json").read_text())["test_loss"] == summary["test_loss"]


def regression_data(noise: float = 0.1):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 5, generator=g)
    w = torch.tensor([[2.0], [-1.0], [0.5], [0.0], [3.0]])
    y = (x @ w).squeeze(1) + 1.0 + noise * torch.randn(300, generator=g)
    return x, y


def test_ridge_regression_reports_regression_metrics(tmp_path):
    x, y = regression_data()
    model = nn.Linear(5, 1)
    summary = trainlab.fit(
        model,
        (x[:200], y[:200]),
        val=(x[200:250], y[200:250]),
        test=(x[250:], y[250:]),
        run_dir=tmp_path / "ridge",
        epochs=60,
        lr=0.05,
        settings={"penalty.l2": 1e-4},
    )
    assert summary["task"] == "regression"
    assert {"test_mae", "test_rmse", "test_r2", "test_loss"} <= summary.keys()
    assert "test_accuracy" not in summary
    assert summary["test_r2"] > 0.99 and summary["test_rmse"] < 0.2
    assert summary["test_loss"] == pytest.approx(summary["test_rmse"] ** 2, rel=1e-5)
    assert torch.allclose(
        model.weight.detach(), torch.tensor([[2.0, -1.0, 0.5, 0.0, 3.0]]), atol=0.15
    )  # the generating weights, up to Adam's noise at a constant rate
    records = trainlab.load_run(tmp_path / "ridge", model=nn.Linear(5, 1)).metrics
    assert any("val_r2" in r for r in records)


@pytest.mark.parametrize("loss", ["huber", "l1"])
def test_other_regression_losses(tmp_path, loss):
    x, y = regression_data()
    summary = trainlab.fit(
        nn.Linear(5, 1), (x, y), test=(x, y), run_dir=tmp_path / "r", epochs=30, lr=0.05, loss=loss
    )
    assert summary["test_r2"] > 0.95


def test_torch_optimizer_and_lr_scheduler_are_used_as_given(tmp_path):
    x, y = regression_data()
    model = nn.Linear(5, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=30)
    trainlab.fit(
        model,
        (x, y),
        test=(x, y),
        run_dir=tmp_path / "r",
        steps=30,
        batch_size=10,
        optimizer=optimizer,
        schedule=scheduler,
    )
    lrs = [r["lr"] for r in trainlab.load_run(tmp_path / "r", model=model).metrics if "lr" in r]
    # the same schedule stepped by hand
    ref_opt = torch.optim.SGD(nn.Linear(5, 1).parameters(), lr=0.01, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.05, total_steps=30)
    expected = []
    for _ in range(30):
        expected.append(ref_opt.param_groups[0]["lr"])
        ref_opt.step()
        ref.step()
    assert lrs[0] == pytest.approx(expected[0]) and lrs[1] == pytest.approx(expected[9])
    assert "[optimizer]" not in (tmp_path / "r" / "config.toml").read_text()


def test_load_run_and_evaluate_reproduce_the_summary_exactly(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *set_args(TINY)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    for split in ("train", "val", "test"):
        for metric in ("loss", "accuracy"):
            assert splits[split][metric] == summary[f"{split}_{metric}"], (split, metric)
    assert main(["evaluate", str(run_dir), "--weights", "ema", "--json"]) == 0
    ema = json.loads(capsys.readouterr().out)["splits"]
    assert ema["test"]["accuracy"] == summary["ema_test_accuracy"]

    run = trainlab.load_run(run_dir)
    assert run.summary == summary and run.config.run.epochs == 3
    per_epoch = summary["steps"] // 3
    assert [r["step"] for r in run.metrics if "val_loss" in r] == [per_epoch * e for e in (1, 2, 3)]
    from trainlab.train.build import make_loss, prepared_data

    loss = make_loss("cross_entropy", "classification", 10)
    test = prepared_data(run.config)["test"]
    assert evaluate(run.model, test, loss, "classification")["loss"] == summary["test_loss"]


def test_runs_lists_finished_and_stopped_runs(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "a"), *set_args(TINY)]) == 0
    stopped = trainlab.train.Trainer(trainlab.train.load_config(None, TINY), tmp_path / "b")
    stopped.folder.release()
    capsys.readouterr()
    assert main(["runs", str(tmp_path), "--json"]) == 0
    runs = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    finished = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert runs["a"]["status"] == "finished" and runs["a"]["steps"] == finished["steps"]
    assert runs["b"]["status"] == "stopped at step 0"
    assert main(["runs", str(tmp_path)]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "missing")]) == 2


def test_events_arrive_in_order_with_what_instruments_need(tmp_path):
    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_fit_start(self, trainer):
            self.events.append("start")

        def on_step_end(self, trainer, step):
            assert step.outputs.shape == (len(step.inputs), 3)
            assert step.lr == trainer.optimizer.param_groups[0]["lr"]  # a trainlab schedule
            self.events.append(("step", step.step, step.loss, step.smoothed_loss))

        def on_record(self, trainer, record):
            if "val_loss" in record:
                self.events.append(("eval", record["step"]))

        def on_checkpoint(self, trainer, path):
            self.events.append(("checkpoint", path.name))

        def on_fit_end(self, trainer, summary):
            self.events.append(("end", summary["steps"]))

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    recorder = Recorder()
    trainlab.fit(
        nn.Linear(4, 3),
        (x, y),
        val=(x, y),
        run_dir=tmp_path / "r",
        epochs=2,
        batch_size=16,
        callbacks=[recorder],
        checkpoint_seconds=0,
    )
    events = recorder.events
    assert events[0] == "start" and events[-1] == ("end", 8)
    steps = [e for e in events if e[0] == "step"]
    assert [e[1] for e in steps] == list(range(1, 9))
    assert steps[0][3] == pytest.approx(steps[0][2])  # bias-corrected: the first loss itself
    assert events.index(("eval", 4)) < events.index(("checkpoint", "step-00000004"))


def test_the_logs_hold_the_smoothed_loss_and_optimizer_statistics(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    trainlab.fit(
        nn.Linear(4, 3),
        (x, y),
        run_dir=tmp_path / "r",
        epochs=2,
        batch_size=8,
        settings={"optimizer.options": {"track_stats": True}},
    )
    text = (tmp_path / "r" / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    logged = [r for r in records if "loss" in r]
    assert logged[0]["smoothed_loss"] == pytest.approx(logged[0]["loss"])
    assert {"grad_norm", "group0_grad_norm", "group0_update_ratio"} <= logged[-1].keys()
    csv_lines = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,epoch,loss,smoothed_loss,lr,grad_norm")
    assert len(csv_lines) >= len(logged) + 1


def test_a_dataloader_of_ones_own_resumes_at_the_next_epoch():
    loader = DataLoader(
        TensorDataset(torch.arange(10.0), torch.arange(10)), batch_size=2, shuffle=True
    )
    source = LoaderBatches(loader)
    assert not source.exact
    iterator = iter(source)
    next(iterator), next(iterator)
    state = source.state_dict()
    fresh = LoaderBatches(loader)
    fresh.load_state_dict(state)
    assert len(list(fresh)) == 5 and fresh.epoch == 2  # epoch 1 from its start, not batch 2


def bad_fit(tmp_path, **changes):
    g = torch.Generator().manual_seed(0)
    arguments = {
        "model": nn.Linear(4, 3),
        "train": (torch.randn(20, 4, generator=g), torch.randint(0, 3, (20,), generator=g)),
        "run_dir": tmp_path / "run",
        "epochs": 1,
    }
    arguments.update(changes)
    model, train = arguments.pop("model"), arguments.pop("train")
    return trainlab.fit(model, train, **arguments)


class Exploding(Callback):
    def on_step_end(self, trainer, step):
        if step.step == 2:
            raise RuntimeError("boom")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": nn.Linear(4, 3).requires_grad_(False)}, r"no trainable parameters"),
        (
            {"train": (torch.randn(20, 4), torch.zeros(19, dtype=torch.long))},
            r"x has 20 rows and y has 19",
        ),
        (
            {"train": (torch.randn(20, 4), torch.full((20,), 7))},
            r"labels from 7 to 7, but the model gives 3 outputs",
        ),
        (
            {"train": (torch.randn(20, 4), torch.rand(20)), "task": "classification"},
            r"float32 labels for classification",
        ),
        ({"loss": lambda out, y: (out - out).sum(1)}, r"returns \(\d+,\) on the first batch"),
        ({"loss": lambda out, y: out.sum() * float("nan")}, r"nan at step 0"),
        (
            {"callbacks": [Exploding()], "batch_size": 4},
            r"Callback Exploding.on_step_end raised RuntimeError: boom \(at step 2",
        ),
        (
            {"train": DataLoader(TensorDataset(torch.randn(8, 4)), batch_size=4)},
            r"its batches are a list of 1",
        ),
        ({"model": nn.Linear(5, 3)}, r"forward pass fails on the first training batch"),
        ({"lrr": 0.1}, r"Invalid option: 'lrr' \(unknown; did you mean 'lr'"),
        ({"name": "x"}, r"'name' names optimizer.name and loss.name"),
    ],
    ids=[
        "frozen",
        "lengths",
        "labels",
        "float-labels",
        "non-scalar-loss",
        "nan-loss",
        "callback",
        "loader-batches",
        "forward",
        "typo",
        "ambiguous",
    ],
)
def test_bad_input_names_the_cause_and_the_fix(tmp_path, changes, message):
    with pytest.raises(TrainingError, match=message):
        bad_fit(tmp_path, **changes)


def test_a_failing_callback_leaves_the_saved_checkpoints_intact(tmp_path):
    with pytest.raises(TrainingError):
        bad_fit(
            tmp_path,
            callbacks=[Exploding()],
            batch_size=4,
            checkpoint_every=1,
            checkpoint_seconds=0,
        )
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-00000001"]


def test_fit_returns_what_summary_json_holds(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 4, generator=g), torch.randint(0, 3, (32,), generator=g)
    summary = trainlab.fit(nn.Linear(4, 3), (x, y), val=(x, y), test=(x, y), run_dir=tmp_path / "r")
    assert summary == json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["run_dir"] == str(tmp_path / "r")


def test_a_label_out_of_range_deep_in_a_dataset_is_named(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 4, generator=g), torch.randint(0, 3, (600,), generator=g)
    y[500] = 7  # beyond the first batch the checks before training look at
    with pytest.raises(TrainingError, match=r"labels here run from 0 to 7, the model gives 3"):
        trainlab.fit(
            nn.Linear(4, 3),
            TensorDataset(x, y),
            run_dir=tmp_path / "r",
            epochs=1,
            batch_size=100,
            settings={"data.shuffle": "none"},
        )
    resumed = trainlab.fit(nn.Linear(4, 3), (x[:100], y[:100]), run_dir=tmp_path / "r2")
    assert resumed["steps"] > 0  # the process holds no stale lock that would stop a new run


def test_a_failed_start_gives_back_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 3, (40,), generator=g)
    model = nn.Linear(4, 3)
    with pytest.raises(ValueError, match=r"Invalid optimizer: 'Adagrad'"):
        trainlab.fit(
            model,
            (x, y),
            optimizer=torch.optim.Adagrad(model.parameters()),
            settings={"schedule.momentum": {"name": "linear", "steps": 10}},
        )
    assert list((tmp_path / "runs").iterdir()) == []  # no folder, no lock left behind


def test_instruments_take_their_hooks_away_when_fit_raises(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with pytest.raises(trainlab.train.NonFiniteError):
        trainlab.fit(
            model,
            (x, y),
            run_dir=tmp_path / "r",
            lr=1e30,
            optimizer="sgd",
            epochs=3,
            batch_size=8,
            settings={"diagnostics.enabled": True, "diagnostics.every": 1},
        )
    assert all(not m._forward_hooks for m in model.modules())


class StopAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step):
        if step.step == self.step:
            signal.raise_signal(signal.SIGTERM)


def test_a_stopped_fit_resumes_in_the_same_process_with_the_objects_it_moved(tmp_path, capsys):
    from trainlab.train import Interrupted, OneCycle

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 4, generator=g), torch.randint(0, 3, (96,), generator=g)

    def run(folder, callbacks=(), model=None, optimizer=None, resume=False):
        if model is None:
            torch.manual_seed(0)
            model = nn.Linear(4, 3)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        summary = trainlab.fit(
            model,
            (x, y),
            run_dir=tmp_path / folder,
            resume=resume,
            callbacks=callbacks,
            epochs=4,
            batch_size=16,
            threads=1,
            checkpoint_seconds=0,
            optimizer=optimizer,
            schedule=OneCycle(total=24),
        )
        return summary, model, optimizer

    reference, _, _ = run("reference")
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(Interrupted, match=r"trainlab\.fit\(\.\.\., run_dir=.*resume=True\)"):
        run("stopped", [StopAtStep(9)], model, optimizer)
    resumed, _, _ = run("stopped", (), model, optimizer, resume=True)
    assert resumed["train_loss"] == reference["train_loss"]
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 2  # not from the CLI
    assert "trained with trainlab.fit" in capsys.readouterr().err


def test_metrics_csv_is_one_table_with_every_column(tmp_path):
    import csv

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    trainlab.fit(
        nn.Linear(4, 3),
        (x, y),
        val=(x, y),
        run_dir=tmp_path / "r",
        epochs=3,
        batch_size=8,
        settings={"diagnostics.enabled": True, "diagnostics.plots": False},
    )
    rows = list(csv.reader((tmp_path / "r" / "metrics.csv").read_text().splitlines()))
    header, body = rows[0], rows[1:]
    assert {"loss", "smoothed_loss", "val_loss", "val_accuracy", "update_ratio_median"} <= set(
        header
    )
    assert all(len(row) == len(header) for row in body) and header not in body
    text = (tmp_path / "r" / "metrics.jsonl").read_text()
    records = [json.loads(line) for line in text.splitlines()]
    assert len(body) == sum("event" not in r for r in records)


def test_a_callback_that_requests_a_stop_ends_the_run_there_and_resume_goes_on(tmp_path):
    class StopAt(Callback):
        def on_step_end(self, trainer, step):
            if step.step == 5:
                trainer.request_stop("target reached")
                trainer.request_stop("a second reason is ignored")

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
    run = tmp_path / "r"
    options = {"val": (x, y), "run_dir": run, "epochs": 3, "batch_size": 8}
    summary = trainlab.fit(nn.Linear(4, 3), (x, y), callbacks=[StopAt()], **options)
    assert summary["steps"] == 5 and summary["stop_reason"] == "target reached"
    assert (run / "checkpoints" / "step-00000005").is_dir()  # the last step is saved
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    stops = [r for r in records if r.get("event") == "stop_requested"]
    assert stops == [{"step": 5, "event": "stop_requested", "reason": "target reached"}]
    resumed = trainlab.fit(nn.Linear(4, 3), (x, y), resume=True, **options)
    assert resumed["steps"] == 24 and "stop_reason" not in resumed


def test_request_stop_needs_a_reason(tmp_path):
    class Blank(Callback):
        def on_fit_start(self, trainer):
            trainer.request_stop("")

    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(TrainingError, match=r"Blank\.on_fit_start raised TypeError: Invalid"):
        trainlab.fit(nn.Linear(4, 3), (x, y), run_dir=tmp_path / "r", callbacks=[Blank()])
