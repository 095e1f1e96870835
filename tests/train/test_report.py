"""What a person sees: the plain progress lines of a log, and the summary tables."""

from __future__ import annotations

import io
from types import SimpleNamespace

from trainlab.train.callbacks import ProgressBar
from trainlab.train.report import summary_table


def run_progress(records: list[dict], every: int) -> list[str]:
    stream = io.StringIO()  # not a terminal: plain lines
    bar = ProgressBar(stream, every=every)
    trainer = SimpleNamespace(state=SimpleNamespace(step=0), steps_total=100)
    bar.on_fit_start(trainer)
    for record in records:
        trainer.state.step = record["step"]
        bar.on_record(trainer, record)
    return stream.getvalue().splitlines()


def train_record(step: int) -> dict:
    return {"step": step, "epoch": 0, "loss": 1.0, "smoothed_loss": 0.9, "lr": 0.1}


def test_a_log_gets_the_first_record_and_every_every_th_after_it():
    lines = run_progress([train_record(s) for s in range(1, 8)], every=3)
    assert [int(line.split("step")[1].split("/")[0]) for line in lines] == [1, 4, 7]


def test_validation_metrics_show_as_soon_as_they_exist():
    records = [
        train_record(1),
        train_record(2),
        {"step": 2, "epoch": 1, "val_loss": 0.5, "val_accuracy": 0.75},
        train_record(3),
    ]
    lines = run_progress(records, every=100)
    assert "val_loss" not in lines[0]
    assert "val_loss 0.5000 val_acc 0.750" in lines[1]  # printed at once, not at every=100
    assert len(lines) == 2


def test_the_regression_summary_names_its_metrics_and_the_loss_gap():
    summary = {
        "task": "regression",
        "steps": 10,
        "epochs": 1,
        "seconds": 0.5,
        "skipped_steps": 0,
        "rollbacks": 0,
        "generalization_gap": 0.25,
    }
    for split in ("train", "val", "test"):
        summary.update(
            {f"{split}_loss": 1.0, f"{split}_mae": 0.5, f"{split}_rmse": 1.0, f"{split}_r2": 0.9}
        )
    text = summary_table(summary, "runs/x")
    assert text.splitlines()[0].split() == ["loss", "mae", "rmse", "r2"]
    assert "test − train loss): 0.25" in text and "accuracy" not in text
