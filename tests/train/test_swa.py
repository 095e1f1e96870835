"""SWA and snapshot ensembles in the trainer: the averaged weights and their BatchNorm
statistics by hand, the SWA learning rate, snapshots at the cycle ends, exact resumes,
refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainlab.train import Callback
from trainlab.train.config import load_config
from trainlab.train.plateau import LRController, ReduceOnPlateau
from trainlab.train.schedules import Cosine
from trainlab.train.trainer import Interrupted, Trainer, TrainingError

from .test_trainer import TINY, StopAt, inject_nan_at, script_validation

# TINY trains 3 epochs × 17 batches = 51 steps; SWA averages after steps 22, 25, ..., 49.
SWA_SETTINGS = [
    *TINY,
    "averaging.swa_start=19",
    "averaging.swa_every=3",
    "averaging.swa_lr=0.004",
    "averaging.warmup=true",
]
# Snapshots: 2 epochs = 34 steps; warmup 4, then 3 cycles of 10 steps end after 14, 24, 34.
SNAPSHOT_SETTINGS = [
    *TINY,
    "run.epochs=2",
    "run.keep_last=100",
    'schedule.phases=[{name="warmup", steps=4}, {name="cyclic_cosine", total=30, cycles=3}]',
    "averaging.snapshots=true",
]
CYCLE_ENDS = [14, 24, 34]


def load(path: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(path))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Recorder(Callback):
    """Copies of the model's state dict after the given steps."""

    def __init__(self, steps: set[int]) -> None:
        self.steps, self.seen = steps, {}

    def on_step_end(self, trainer, step):
        if step.step in self.steps:
            self.seen[step.step] = {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_swa_is_the_mean_of_the_weights_at_the_averaged_steps_and_leaves_the_raw_ones(tmp_path):
    averaged = set(range(22, 52, 3))
    recorder = Recorder(averaged | {51})
    trainer = Trainer(load_config(None, SWA_SETTINGS), tmp_path, callbacks=[recorder])
    summary = trainer.fit()
    assert summary["swa_updates"] == len(averaged) == 10
    swa, raw = load(tmp_path / "swa.safetensors"), load(tmp_path / "model.safetensors")
    assert swa.keys() == raw.keys()  # the same keys as model.safetensors
    for name, _ in trainer.model.named_parameters():
        mean = torch.stack([recorder.seen[s][name].double() for s in sorted(averaged)]).mean(0)
        torch.testing.assert_close(swa[name].double(), mean, rtol=1e-5, atol=1e-6)
    for name, value in recorder.seen[51].items():  # the raw weights are untouched, bit for bit
        assert torch.equal(raw[name], value), name
        assert torch.equal(trainer.model.state_dict()[name], value), name
    for key in ("swa_val_loss", "swa_val_accuracy", "swa_test_loss", "swa_test_accuracy"):
        assert isinstance(summary[key], float) and summary[key] == summary[key], key
    assert summary["swa_test_accuracy"] > 0.8


def test_swa_batch_norm_statistics_match_a_pass_over_the_training_set_by_hand(tmp_path):
    # With augmentation on for training: the statistics must be of the un-augmented inputs.
    settings = [*SWA_SETTINGS, 'data.augment=[{name="noise", p=1.0, std=0.5}]']
    trainer = Trainer(load_config(None, settings), tmp_path)
    trainer.fit()
    swa = load(tmp_path / "swa.safetensors")
    source = trainer.batches  # trainlab's batches: 17 of 64 in order, the last 54
    x, size = source.x.flatten(1).double(), source.batch_size
    h = x @ swa["block1.fc.weight"].double().T  # the BN layer's inputs, averaged weights
    batches = [h[b * size : (b + 1) * size] for b in range(len(source))]
    assert len(batches) == 17 and len(batches[-1]) == 1078 - 16 * 64
    # cumulative averages over the batches of each batch's mean and unbiased variance
    mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    var = torch.stack([b.var(0, unbiased=True) for b in batches]).mean(0)
    torch.testing.assert_close(swa["block1.norm.running_mean"].double(), mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(swa["block1.norm.running_var"].double(), var, rtol=1e-4, atol=1e-5)
    assert int(swa["block1.norm.num_batches_tracked"]) == 17
    raw = load(tmp_path / "model.safetensors")  # the raw model keeps its own statistics
    assert not torch.allclose(raw["block1.norm.running_var"], swa["block1.norm.running_var"])
    assert trainer.model.block1.norm.momentum == 0.1


def test_swa_lr_takes_over_from_the_schedule_at_swa_start_and_says_so(tmp_path):
    trainer = Trainer(load_config(None, [*SWA_SETTINGS, "run.epochs=2"]), tmp_path)
    rates = []
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        rates.append([group["lr"] for group in trainer.optimizer.param_groups])
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.fit()
    schedule, base = trainer.parts.schedule, trainer.lr.base_lrs
    for t, lrs in enumerate(rates):  # t: the step under way, from 0
        expected = [0.004] * len(base) if t >= 19 else [b * schedule(t) for b in base]
        assert lrs == pytest.approx(expected, rel=1e-12), t
    events = [r for r in records(tmp_path) if r.get("event") == "swa_started"]
    assert events == [{"step": 19, "event": "swa_started", "lr": 0.004}]


def test_a_rollback_after_swa_start_cuts_the_swa_rate_too(tmp_path):
    # A NaN at step 27, past swa_start = 19: the run rolls back to step 25's checkpoint and
    # retries at swa_lr / 10, not at swa_lr again (which would end after MAX_ROLLBACKS).
    settings = [*SWA_SETTINGS, "run.nonfinite=rollback"]
    trainer = Trainer(load_config(None, settings), tmp_path)
    inject_nan_at(trainer, 27)
    rates = []  # (the step under way, every group's lr) at each optimizer step
    real_step = trainer.optimizer.step

    def step(*args, **kwargs):
        rates.append((trainer.state.step, [g["lr"] for g in trainer.optimizer.param_groups]))
        return real_step(*args, **kwargs)

    trainer.optimizer.step = step
    summary = trainer.fit()
    assert summary["rollbacks"] == 1
    rollback = [r for r in records(tmp_path) if r.get("event") == "rollback"]
    assert rollback == [{"step": 27, "event": "rollback", "to_step": 25}]
    groups = len(trainer.optimizer.param_groups)
    assert [t for t, _ in rates] == [*range(27), *range(25, 51)]
    assert [lrs for _, lrs in rates[19:27]] == [[0.004] * groups] * 8  # steps 19..26
    for t, lrs in rates[27:]:  # steps 25..50 again, after the rollback
        assert lrs == pytest.approx([0.004 * 0.1] * groups, rel=1e-12), t
    assert trainer.lr.swa_lr == pytest.approx(0.0004, rel=1e-12)


def test_plateau_drops_cut_the_swa_rate_too(tmp_path):
    settings = [
        *SWA_SETTINGS,
        "run.eval_every=5",
        'schedule.plateau={metric="val_loss", patience=0, factor=0.5}',
    ]
    trainer = Trainer(load_config(None, settings), tmp_path)
    script_validation(trainer, [1.0] * 100)  # never improves: halved after every evaluation
    trainer.fit()
    lrs = {r["step"]: r["lr"] for r in records(tmp_path) if "lr" in r and "event" not in r}
    # step 30 (index 29) ran after the evaluations at 5, 10, ..., 25: 4 drops (the first
    # evaluation sets the best)
    assert lrs[30] == pytest.approx(0.004 * 0.5**4)


def test_the_controller_applies_swa_lr_from_swa_start_with_cuts_and_plateau_drops():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.SGD([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.03}])
    plateau = ReduceOnPlateau(patience=0, factor=0.5)
    controller = LRController(opt, Cosine(10), plateau, swa_lr=0.004, swa_start=6)
    assert controller.step(5) == pytest.approx([0.1 * Cosine(10)(5), 0.03 * Cosine(10)(5)])
    assert controller.step(6) == [0.004, 0.004]
    assert [g["lr"] for g in opt.param_groups] == [0.004, 0.004]
    controller.cut(0.1)  # a rollback's cut: the schedule's rates and SWA's alike
    assert controller.step(7) == pytest.approx([0.0004] * 2, rel=1e-12)
    assert controller.step(5) == pytest.approx([0.01 * Cosine(10)(5), 0.003 * Cosine(10)(5)])
    controller.report(1.0, 7), controller.report(1.0, 8)  # the second report drops by 0.5
    assert controller.step(9) == pytest.approx([0.0002] * 2, rel=1e-12)
    state = controller.state_dict()
    assert state["swa_lr"] == pytest.approx(0.0004, rel=1e-12)
    resumed = LRController(opt, Cosine(10), ReduceOnPlateau(), swa_lr=0.004, swa_start=6)
    resumed.load_state_dict(state)
    assert resumed.step(9) == controller.step(9)
    old = {"base_lrs": [0.1, 0.03], "plateau": ReduceOnPlateau().state_dict()}
    resumed.load_state_dict(old)  # saved before the SWA rate was kept here: as configured
    assert resumed.swa_lr == 0.004
    with pytest.raises(ValueError, match=r"^Invalid swa_lr: 0\.004 \(needs swa_start, the step"):
        LRController(opt, Cosine(10), swa_lr=0.004)
    with pytest.raises(ValueError, match=r"^Invalid controller state: .*keys base_lrs, plateau\)"):
        LRController(opt, Cosine(10)).load_state_dict({**old, "plateau": None, "swa_lr": 0.1})


def test_swa_and_ema_warmup_resume_bit_exactly(tmp_path):
    config = load_config(None, SWA_SETTINGS)
    Trainer(config, tmp_path / "reference").fit()
    stopped = Trainer(config, tmp_path / "stopped", callbacks=[StopAt(30)])
    with pytest.raises(Interrupted, match="at step 30"):
        stopped.fit()
    assert stopped.swa.num_updates == 3  # after steps 22, 25, 28: the mean is mid-way
    Trainer(config, tmp_path / "stopped", resume=True).fit()
    for name in ("swa.safetensors", "ema.safetensors", "model.safetensors"):
        expected, got = load(tmp_path / "reference" / name), load(tmp_path / "stopped" / name)
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), name
    started = [r for r in records(tmp_path / "stopped") if r.get("event") == "swa_started"]
    assert len(started) == 1


def test_snapshots_are_the_weights_at_the_cycle_ends(tmp_path):
    recorder = Recorder(set(CYCLE_ENDS))
    trainer = Trainer(load_config(None, SNAPSHOT_SETTINGS), tmp_path, callbacks=[recorder])
    assert trainer.snapshot_steps == CYCLE_ENDS
    summary = trainer.fit()
    names = [f"snapshots/cycle-{k}.safetensors" for k in (1, 2, 3)]
    assert summary["snapshots"] == names
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        "cycle-1.safetensors",
        "cycle-2.safetensors",
        "cycle-3.safetensors",
    ]
    for name, step in zip(names, CYCLE_ENDS):
        saved = load(tmp_path / name)
        assert saved.keys() == recorder.seen[step].keys()  # buffers included
        assert all(torch.equal(saved[k], recorder.seen[step][k]) for k in saved), name
    # the cycle ends are where the schedule restarts
    lrs = {r["step"]: r["lr"] for r in records(tmp_path) if "lr" in r and "event" not in r}
    snapshot_events = [r["step"] for r in records(tmp_path) if r.get("event") == "snapshot"]
    assert snapshot_events == CYCLE_ENDS and lrs[1] < lrs[10]
    assert trainer.parts.schedule(14) == trainer.parts.schedule(24) == 1.0


@pytest.mark.parametrize("resume_from", [20, 10], ids=["after-a-snapshot", "before-a-snapshot"])
def test_resume_neither_loses_nor_duplicates_snapshots(tmp_path, resume_from):
    config = load_config(None, SNAPSHOT_SETTINGS)
    Trainer(config, tmp_path / "reference").fit()
    run_dir = tmp_path / "stopped"
    with pytest.raises(Interrupted):
        Trainer(config, run_dir, callbacks=[StopAt(20)]).fit()
    assert [p.name for p in (run_dir / "snapshots").iterdir()] == ["cycle-1.safetensors"]
    for checkpoint in (run_dir / "checkpoints").iterdir():  # as if killed before they were saved
        if int(checkpoint.name.removeprefix("step-")) > resume_from:
            for file in checkpoint.iterdir():
                file.unlink()
            checkpoint.rmdir()
    summary = Trainer(config, run_dir, resume=True).fit()
    assert summary["snapshots"] == [f"snapshots/cycle-{k}.safetensors" for k in (1, 2, 3)]
    assert sorted(p.name for p in (run_dir / "snapshots").iterdir()) == [
        f"cycle-{k}.safetensors" for k in (1, 2, 3)
    ]
    for k in (1, 2, 3):
        name = f"snapshots/cycle-{k}.safetensors"
        expected, got = load(tmp_path / "reference" / name), load(run_dir / name)
        assert all(torch.equal(expected[key], got[key]) for key in expected), name
    # the log, cut back to the checkpoint on resume, has each cycle's event exactly once
    events = [(r["step"], r["path"]) for r in records(run_dir) if r.get("event") == "snapshot"]
    assert events == [
        (end, f"snapshots/cycle-{k}.safetensors") for k, end in enumerate(CYCLE_ENDS, 1)
    ]


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        (
            ["averaging.swa_start=51"],
            TrainingError,
            r"^Invalid averaging\.swa_start: 51 \(must be below the run's total steps 51: "
            r"run\.epochs = 3 × 17 batches an epoch",
        ),
        (
            ["run.steps=30", "averaging.swa_start=40"],
            TrainingError,
            r"^Invalid averaging\.swa_start: 40 \(must be below the run's total steps 30: "
            r"run\.steps = 30",
        ),
        (
            ["averaging.swa_start=45", "averaging.swa_every=10"],
            TrainingError,
            r"^Invalid averaging\.swa_every: 10 \(the first average would come after step "
            r"swa_start \+ swa_every = 55, past the run's 51 steps.*must be at most 6\)$",
        ),
        (["averaging.swa_start=-1"], ValueError, r"^Invalid averaging\.swa_start: -1 \(must be"),
        (
            ["averaging.swa_start=5", "averaging.swa_every=0"],
            ValueError,
            r"^Invalid averaging\.swa_every: 0 \(must be an integer >= 1\)$",
        ),
        (
            ["averaging.swa_start=5", "averaging.swa_lr=-0.01"],
            ValueError,
            r"^Invalid averaging\.swa_lr: -0\.01 \(must be a finite number > 0\)$",
        ),
        (
            ["averaging.warmup=true", "averaging.bias_correction=true"],
            ValueError,
            r"^Invalid averaging\.warmup: True \(must be false with averaging\.bias_correction",
        ),
        (
            ["averaging.snapshots=true"],
            TrainingError,
            r"^Invalid averaging\.snapshots: True \(needs a cyclic_cosine schedule phase, e\.g\. "
            r"schedule\.phases = \[\{name = \"cyclic_cosine\", total = 300, cycles = 3\}\]: "
            r"Invalid schedule: .*must have exactly one 'cyclic_cosine' phase",
        ),
        (
            [
                "averaging.snapshots=true",
                'schedule.phases=[{name="cyclic_cosine", total=60, cycles=3}]',
            ],
            TrainingError,
            r"^Invalid averaging\.snapshots: True \(the cyclic_cosine phase's last cycle ends "
            r"after step 60, past the run's 51 steps: run\.epochs = 3 × 17 batches an epoch; "
            r"only 2 of its 3 cycles would end",
        ),
    ],
)
def test_bad_averaging_settings_are_refused_before_anything_is_written(
    tmp_path, settings, error, message
):
    with pytest.raises(error, match=message):
        Trainer(load_config(None, [*TINY, *settings]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_runs_saved_before_the_new_averaging_keys_keep_their_fingerprint():
    import hashlib

    from trainlab.train.config import NOT_FINGERPRINTED, fingerprint

    def old_fingerprint(config):  # the hash of a config of [averaging]'s first three keys
        tree = config.to_dict()
        for key in NOT_FINGERPRINTED:
            section, name = key.split(".")
            del tree[section][name]
        tree["averaging"] = {k: tree["averaging"][k] for k in ("ema", "decay", "bias_correction")}
        text = json.dumps(tree, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    config = load_config(None, TINY)
    assert fingerprint(config) == old_fingerprint(config)  # an old run still resumes
    for setting in ("averaging.swa_start=5", "averaging.warmup=true", "averaging.snapshots=true"):
        assert fingerprint(load_config(None, [*TINY, setting])) != fingerprint(config), setting
