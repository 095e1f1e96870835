"""The training loop end to end: CLI, exact resume after SIGKILL, non-finite, warm start."""

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

from trainlab.cli import main
from trainlab.train import Callback
from trainlab.train.config import load_config
from trainlab.train.run_folder import RunFolderError
from trainlab.train.trainer import Interrupted, NonFiniteError, Trainer, TrainingError

# A small, fast run: an MLP on scikit-learn's digits, a few epochs, checkpoint every 5 steps.
TINY = [
    "data.name=digits",
    "data.batch_size=64",
    "model.kind=mlp",
    "model.hidden=[32]",
    "model.dropout=0.1",
    "optimizer.name=adam",
    "optimizer.lr=0.01",
    'schedule.phases=[{name="warmup", steps=5}, {name="cosine", total=40}]',
    "averaging.ema=true",
    "run.epochs=3",
    "run.checkpoint_every=5",
    "run.checkpoint_seconds=0",
    "run.threads=1",
]


def set_args(settings: list[str]) -> list[str]:
    """["--set", s1, "--set", s2, ...] for the CLI."""
    return [arg for setting in settings for arg in ("--set", setting)]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run_dir / "model.safetensors"))


def test_cli_train_writes_the_run_folder(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "--run-dir", str(run_dir)]
    assert main([*args, *set_args(TINY)]) == 0
    out = capsys.readouterr().out
    assert "test" in out and "generalization gap" in out and str(run_dir) in out
    for name in ("config.toml", "metrics.jsonl", "model.safetensors", "ema.safetensors"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["test_accuracy"] > 0.8  # digits are easy: 3 epochs suffice
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in r for r in records) and any("loss" in r for r in records)
    assert 1 <= len(list((run_dir / "checkpoints").iterdir())) <= 3  # keep_last 2 + best
    # the saved config is the resolved one: it loads back to the same settings
    assert load_config(run_dir / "config.toml") == load_config(None, TINY)


def test_cli_refuses_to_overwrite_a_run_and_names_the_fix(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = set_args([*TINY, "run.epochs=1"])
    assert main(["train", "--run-dir", str(run_dir), *sets]) == 0
    before = weights(run_dir)
    assert main(["train", "--run-dir", str(run_dir), *sets]) == 2
    assert "already holds a run" in capsys.readouterr().err
    after = weights(run_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_cli_bad_config_exits_2_naming_the_key(tmp_path, capsys):
    assert main(["train", "--run-dir", str(tmp_path / "r"), "--set", "optimizer.lrr=1"]) == 2
    assert "optimizer.lrr" in capsys.readouterr().err


def test_resume_with_a_changed_config_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = set_args([*TINY, "run.epochs=1"])
    assert main(["train", "--run-dir", str(run_dir), *sets]) == 0
    assert main(["train", "--resume", str(run_dir), "--set", "optimizer.lr=0.5"]) == 2
    assert "change the run" in capsys.readouterr().err


KILL_SCRIPT = """
import sys, time
from trainlab.train.config import load_config
from trainlab.train import trainer as t

config = load_config(None, sys.argv[2:])
run = t.Trainer(config, sys.argv[1])
original = run._train_step

def slow_step(xb, yb):  # slow enough to be killed mid-epoch, after some checkpoints
    stepped = original(xb, yb)
    if run.state.step >= 12:
        time.sleep(0.2)
    return stepped

run._train_step = slow_step
run.fit()
"""


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    # with the averages' state in the checkpoints too: EMA with decay warmup, SWA mid-way
    settings = [*TINY, "averaging.warmup=true", "averaging.swa_start=5", "averaging.swa_every=2"]
    reference = tmp_path / "reference"
    config = load_config(None, settings)
    reference.mkdir()
    Trainer(config, reference).fit()

    killed = tmp_path / "killed"
    killed.mkdir()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(killed), *settings], env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list((killed / "checkpoints").glob("step-0000001*")):
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "summary.json").exists(), "the run should have been killed mid-way"

    Trainer(config, killed, resume=True).fit()
    for name in ("model.safetensors", "ema.safetensors", "swa.safetensors"):
        expected = safetensors.torch.load_file(str(reference / name))
        got = safetensors.torch.load_file(str(killed / name))
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), (name, key)


def inject_nan_at(trainer: Trainer, step: int) -> None:
    """Make the loss NaN once, at the first attempt of optimizer step ``step``."""
    original = trainer.loss_fn
    fired = []

    def loss(logits, y):
        value = original(logits, y)
        if trainer.state.step == step and not fired:
            fired.append(step)
            return value * float("nan")
        return value

    trainer.loss_fn = loss


def test_nonfinite_raise_names_the_step_and_keeps_checkpoints(tmp_path):
    trainer = Trainer(load_config(None, TINY), tmp_path)
    inject_nan_at(trainer, 7)
    with pytest.raises(NonFiniteError, match=r"Non-finite loss at step 7 .*lower optimizer.lr"):
        trainer.fit()
    assert (tmp_path / "checkpoints" / "step-00000005").exists()


def test_a_checkpoint_write_failing_in_the_background_stops_training(tmp_path, monkeypatch):
    from trainlab.train import checkpoint

    real_write = checkpoint._write_snapshot

    def write(run_dir, snapshot, *how_to_resume):
        if snapshot.step == 10:
            raise OSError("No space left on device")
        return real_write(run_dir, snapshot, *how_to_resume)

    monkeypatch.setattr(checkpoint, "_write_snapshot", write)
    trainer = Trainer(load_config(None, TINY), tmp_path)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit()
    # reported as soon as the writer thread failed, by the next save (step 15) at the
    # latest; step 5's checkpoint is intact
    assert 10 <= trainer.state.step <= 15
    saved = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert saved == ["step-00000005"]


def test_periodic_checkpoints_wait_checkpoint_seconds_but_bests_and_the_end_do_not(tmp_path):
    def saved_steps(settings):
        run_dir = tmp_path / str(len(list(tmp_path.iterdir())))
        trainer = Trainer(load_config(None, [*TINY, *settings, "run.keep_last=100"]), run_dir)
        steps = []
        real_save = trainer.save

        def save(**options):
            steps.append(trainer.state.step)
            return real_save(**options)

        trainer.save = save
        trainer.fit()
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
            f"step-{step:08d}" for step in steps
        ]
        return steps, trainer.steps_total, trainer.state.history

    steps, total, _ = saved_steps(["run.keep_best_by=none"])
    assert steps == sorted({*range(5, total + 1, 5), total})  # checkpoint_seconds=0
    steps, _, _ = saved_steps(["run.keep_best_by=none", "run.checkpoint_seconds=3600"])
    assert steps == [5, total]  # the first periodic one, then only the end
    steps, _, history = saved_steps(["run.checkpoint_seconds=3600"])
    accuracy = [record["val_accuracy"] for record in history]
    bests = [
        r["step"]
        for i, r in enumerate(history)
        if r["val_accuracy"] > max(accuracy[:i], default=-1)
    ]
    assert len(bests) >= 2
    assert steps == sorted({5, *bests, total})  # each new best is saved when it is found


def test_nonfinite_skip_counts_and_continues(tmp_path):
    trainer = Trainer(load_config(None, [*TINY, "run.nonfinite=skip"]), tmp_path)
    inject_nan_at(trainer, 7)
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1
    assert all(torch.isfinite(w).all() for w in weights(tmp_path).values())


def test_nonfinite_rollback_restores_and_cuts_the_rate(tmp_path):
    trainer = Trainer(load_config(None, [*TINY, "run.nonfinite=rollback"]), tmp_path)
    base = list(trainer.lr.base_lrs)
    inject_nan_at(trainer, 7)
    summary = trainer.fit()
    assert summary["rollbacks"] == 1
    assert trainer.lr.base_lrs == pytest.approx([b * 0.1 for b in base])
    events = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"step": 7, "event": "rollback", "to_step": 5} in events


def test_rollbacks_are_saved_so_a_persistent_nan_ends_after_the_limit(tmp_path):
    # The NaN comes back at the same step after every rollback; each rollback's rate cut
    # and count must be checkpointed at once (not after run.checkpoint_seconds), or every
    # rollback would start again from the first one's checkpoint.
    settings = [*TINY, "run.nonfinite=rollback", "run.checkpoint_seconds=3600"]
    trainer = Trainer(load_config(None, settings), tmp_path)
    original, attempts = trainer.loss_fn, []

    def loss(logits, y):
        if trainer.state.step == 7:
            attempts.append(1)
            return original(logits, y) * float("nan")
        return original(logits, y)

    trainer.loss_fn = loss
    with pytest.raises(NonFiniteError, match=r"again at step 7 after 5 rollbacks"):
        trainer.fit()
    assert len(attempts) == 6 and trainer.state.rollbacks == 5
    assert trainer.optimizer.param_groups[0]["lr"] < 1e-5 * 0.01


def test_a_skipped_step_is_not_evaluated_twice(tmp_path):
    trainer = Trainer(load_config(None, [*TINY, "run.nonfinite=skip"]), tmp_path)
    per_epoch, original, fired = len(trainer.batches), trainer.loss_fn, []

    def loss(logits, y):  # NaN once, in the training step right after the first evaluation
        value = original(logits, y)
        if trainer.state.step == per_epoch and trainer.model.training and not fired:
            fired.append(1)
            return value * float("nan")
        return value

    trainer.loss_fn = loss
    summary = trainer.fit()
    assert summary["skipped_steps"] == 1
    steps = [record["step"] for record in trainer.state.history]
    assert len(steps) == len(set(steps)) == 3


def test_value_clipping_does_not_hide_an_infinite_gradient(tmp_path):
    settings = [*TINY, "clip.mode=value", "clip.value=1.0"]
    trainer = Trainer(load_config(None, settings), tmp_path)

    def infinite_at_step_7(grad):
        if trainer.state.step == 7:
            grad = grad.clone()
            grad.view(-1)[0] = float("inf")
        return grad

    next(trainer.model.parameters()).register_hook(infinite_at_step_7)
    with pytest.raises(NonFiniteError, match=r"Non-finite gradient at step 7 .*lower"):
        trainer.fit()
    assert (tmp_path / "checkpoints" / "step-00000005").exists()


def test_the_penalty_reaches_the_gradients_of_all_but_the_excluded(tmp_path):
    settings = [*TINY, "penalty.l2=0.5", "model.dropout=0"]
    trainer = Trainer(load_config(None, settings), tmp_path)
    model, (xb, yb) = trainer.model, next(iter(trainer.batches))
    trainer.loss_fn(model(xb), yb).backward()
    plain = {name: p.grad.clone() for name, p in model.named_parameters()}
    captured = {}

    def capture(*args, **kwargs):
        captured.update({name: p.grad.clone() for name, p in model.named_parameters()})

    trainer.optimizer.step = capture
    assert trainer._train_step(xb, yb)
    excluded = [name for name in plain if name.endswith(".bias") or ".norm." in name]
    assert excluded and len(excluded) < len(plain)
    for name, p in model.named_parameters():
        extra = 0.0 if name in excluded else 2 * 0.5 * p.detach()
        torch.testing.assert_close(captured[name], plain[name] + extra)


def test_nan_in_the_input_data_is_refused_before_training(tmp_path):
    x = torch.randn(50, 4)
    x[3, 1] = float("nan")
    import numpy as np

    np.savez(tmp_path / "d.npz", x=x.numpy(), y=np.arange(50) % 3)
    with pytest.raises(ValueError, match=r"NaN"):
        Trainer(
            load_config(
                None,
                [
                    "data.name=npz",
                    f'data.options={{path="{tmp_path / "d.npz"}"}}',
                    "model.kind=mlp",
                ],
            ),
            tmp_path / "run",
        )


def test_init_from_all_but_the_classifier_and_freeze(tmp_path):
    first = tmp_path / "first"
    first.mkdir()
    Trainer(load_config(None, [*TINY, "run.epochs=1"]), first).fit()
    source = weights(first)
    settings = [
        *TINY,
        "run.epochs=1",
        f'run.init_from="{first}"',
        'run.init_skip=["head.*"]',
        'run.freeze=["block1.*"]',
    ]
    second = Trainer(load_config(None, settings), tmp_path / "second")
    state = second.model.state_dict()
    assert torch.equal(state["block1.fc.weight"], source["block1.fc.weight"])
    assert not torch.equal(state["head.fc.weight"], source["head.fc.weight"])
    second.fit()
    after = weights(tmp_path / "second")
    assert torch.equal(after["block1.fc.weight"], source["block1.fc.weight"])  # frozen


def test_init_from_another_architecture_names_the_weight_and_the_fix(tmp_path):
    source = tmp_path / "weights.safetensors"
    wider = {"block1.fc.weight": torch.zeros(48, 64)}
    safetensors.torch.save_file(wider, str(source))
    settings = [*TINY, f'run.init_from="{source}"']
    with pytest.raises(TrainingError, match=r"'block1.fc.weight' has shape \(48, 64\).*init_skip"):
        Trainer(load_config(None, settings), tmp_path / "a")
    safetensors.torch.save_file({"other.weight": torch.zeros(2)}, str(source))
    with pytest.raises(TrainingError, match=r"has weight 'other.weight', which this model lacks"):
        Trainer(load_config(None, settings), tmp_path / "b")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match=r"run.device: 'cuda' \(no CUDA device"):
        Trainer(load_config(None, [*TINY, "run.device=cuda"]), tmp_path)


def test_resuming_a_folder_that_holds_no_run_is_refused(tmp_path):
    with pytest.raises(RunFolderError, match=r"has no config\.toml \(it is not a trainlab run"):
        Trainer(load_config(None, TINY), tmp_path, resume=True)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_cli_refuses_a_config_together_with_resume(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text("")
    assert main(["train", str(config), "--resume", str(tmp_path)]) == 2
    assert "both a CONFIG.toml and --resume" in capsys.readouterr().err


def test_init_from_a_pickle_file_is_refused(tmp_path):
    bad = tmp_path / "weights.pt"
    bad.write_bytes(b"\x80\x04\x95not a safetensors file")
    with pytest.raises(ValueError, match=r"safetensors"):
        Trainer(load_config(None, [*TINY, f'run.init_from="{bad}"']), tmp_path / "run")


def test_demo_runs_the_recipe(tmp_path, capsys):
    assert main(["demo", "--run-dir", str(tmp_path / "demo"), "--set", "run.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "a CNN on MNIST-1D" in out and "generalization gap" in out
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["steps"] == 29 and summary["test_accuracy"] > 0.3


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ValueError, match=r"tensorboard package is not installed"):
        Trainer(load_config(None, [*TINY, "run.tensorboard=true"]), tmp_path)


def script_validation(trainer: Trainer, losses: list[float]) -> None:
    """Make the first len(losses) validation evaluations report the given losses."""
    real = trainer.evaluate
    scripted = list(losses)

    def evaluate(data):
        result = real(data)
        if data is trainer.val and scripted:
            result["loss"] = scripted.pop(0)
        return result

    trainer.evaluate = evaluate


def test_early_stopping_restores_the_best_weights(tmp_path):
    settings = [
        *TINY,
        "averaging.ema=false",  # the EMA evaluation would consume scripted losses too
        "run.epochs=10",
        "run.checkpoint_every=none",
        'run.keep_best_by="val_loss"',
        "run.early_stopping={patience=2, restore_best=true}",
    ]
    trainer = Trainer(load_config(None, settings), tmp_path)
    script_validation(trainer, [1.0, 0.5, 0.6, 0.7, 0.1])  # best at the 2nd evaluation
    summary = trainer.fit()
    per_epoch = len(trainer.batches)
    assert summary["steps"] == 4 * per_epoch  # stopped after 2 evaluations without progress
    best = load_checkpoint_weights(tmp_path / "checkpoints" / f"step-{2 * per_epoch:08d}")
    final = weights(tmp_path)
    assert all(torch.equal(best[k], final[k]) for k in final)


def load_checkpoint_weights(path: Path) -> dict[str, torch.Tensor]:
    from trainlab.train import load_checkpoint

    return load_checkpoint(path).weights


def test_plateau_starts_watching_after_the_warmup(tmp_path):
    settings = [
        *TINY,
        "run.epochs=4",
        "run.eval_every=2",
        'schedule.phases=[{name="warmup", steps=10}]',
        'schedule.plateau={metric="val_loss", patience=0, factor=0.5, after_step=10}',
    ]
    trainer = Trainer(load_config(None, settings), tmp_path)
    script_validation(trainer, [1.0] * 100)  # never improves
    trainer.fit()
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    lr = {r["step"]: r["lr"] for r in records if "lr" in r}
    base = trainer.lr.base_lrs[0]
    assert lr[10] == pytest.approx(0.9 * base)  # step 10 ran at warmup factor 9/10: no drop yet
    assert lr[20] < base * 0.5  # after the warmup the stalled loss halves it


def test_resume_from_a_corrupt_checkpoint_exits_2_and_keeps_files(tmp_path, capsys):
    run_dir = tmp_path / "run"
    sets = set_args([*TINY, "run.epochs=1"])
    assert main(["train", "--run-dir", str(run_dir), *sets]) == 0
    latest = sorted((run_dir / "checkpoints").iterdir())[-1]
    damaged = latest / "weights.safetensors"
    data = bytearray(damaged.read_bytes())
    data[-1] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "SHA-256" in capsys.readouterr().err
    assert damaged.read_bytes() == bytes(data)  # nothing was deleted or rewritten


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "has no config.toml" in capsys.readouterr().err


LOGISTIC = [
    "data.name=digits",
    "model.kind=mlp",
    "model.hidden=[]",  # softmax (logistic) regression: convex, 650 parameters
    "model.dropout=0",
    "model.batch_norm=false",
    "optimizer.lr=1",
    "penalty.l2=1e-3",
    "run.epochs=8",
    "run.checkpoint_seconds=0",
    "run.threads=1",
]


class StopAt(Callback):
    """Send this process SIGTERM after step ``step``: the trainer saves and stops there."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step):
        if step.step == self.step:
            signal.raise_signal(signal.SIGTERM)


@pytest.mark.parametrize(
    "optimizer",
    [
        ["optimizer.name=lbfgs", 'optimizer.options={line_search_fn="strong_wolfe"}'],
        ["optimizer.name=newton", 'optimizer.options={line_search_fn="backtracking"}'],
    ],
    ids=["lbfgs", "newton"],
)
def test_full_batch_methods_train_on_the_whole_set_and_resume_exactly(tmp_path, optimizer):
    config = load_config(None, [*LOGISTIC, *optimizer])
    reference = Trainer(config, tmp_path / "reference")
    summary = reference.fit()
    assert len(reference.batches) == 1 and summary["steps"] == 8  # one step an epoch
    assert summary["test_accuracy"] > 0.93

    stopped = Trainer(config, tmp_path / "stopped", callbacks=[StopAt(3)])
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 3"):
        stopped.fit()
    Trainer(config, tmp_path / "stopped", resume=True).fit()
    expected, got = weights(tmp_path / "reference"), weights(tmp_path / "stopped")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
