"""Run folders under stress: two processes, foreign files, edits, crashes, signals, bad disks."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainlab.cli import main
from trainlab.train import checkpoint
from trainlab.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from trainlab.train.config import load_config
from trainlab.train.run_folder import RunFolder, RunFolderError
from trainlab.train.trainer import Trainer, write_atomic

from .test_trainer import TINY, set_args, weights

# The CLI with every step after the 5th slowed down, so that a test can act mid-run.
SLOW_CLI = """
import sys, time
from trainlab import cli
from trainlab.train.trainer import Trainer, write_atomic

original = Trainer._train_step

def slow_step(self, xb, yb):
    stepped = original(self, xb, yb)
    if self.state.step >= 5:
        time.sleep(0.05)
    return stepped

Trainer._train_step = slow_step
sys.exit(cli.main(sys.argv[1:]))
"""


def start_slow_cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, name: str) -> None:
    deadline = time.time() + 60
    while not (run_dir / "checkpoints" / name).exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, "the run made no checkpoint in 60 s"
        time.sleep(0.02)


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def reference_weights(tmp_path: Path, settings: list[str]) -> dict[str, torch.Tensor]:
    reference = tmp_path / "reference"
    Trainer(load_config(None, settings), reference).fit()
    return weights(reference)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- 1. one process per run folder ------------------------------------------------------------


def test_a_second_process_is_refused_with_the_holders_pid_and_a_dead_holder_blocks_nothing(
    tmp_path, capsys
):
    run_dir = tmp_path / "run"
    process = start_slow_cli("train", "--run-dir", str(run_dir), *set_args(TINY))
    try:
        wait_for_checkpoint(run_dir, process, "step-00000005")
        assert main(["train", "--resume", str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert f"is in use by process {process.pid}" in err
        assert main(["train", "--run-dir", str(run_dir), *set_args(TINY)]) == 2
        assert f"is in use by process {process.pid}" in capsys.readouterr().err
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    # The OS dropped the dead process's lock: the resume goes ahead and finishes.
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert (run_dir / "summary.json").exists()


def test_one_process_cannot_claim_a_folder_twice(tmp_path):
    first = RunFolder.claim_new(tmp_path / "run")
    with pytest.raises(RunFolderError, match=rf"in use by process {os.getpid()}"):
        RunFolder.claim_new(tmp_path / "run")
    first.release()
    RunFolder.claim_new(tmp_path / "run").release()  # free again


# --- 2. foreign files -------------------------------------------------------------------------


def test_a_folder_of_someone_elses_files_is_never_written_to(tmp_path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "model.safetensors").write_text("mine\n")
    assert main(["train", "--run-dir", str(folder), *set_args(TINY)]) == 2
    err = capsys.readouterr().err
    assert "holds files trainlab did not create (model.safetensors)" in err
    assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors"]
    assert (folder / "model.safetensors").read_text() == "mine\n"


def test_a_file_as_run_dir_is_refused(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("keep")
    assert main(["train", "--run-dir", str(path), *set_args(TINY)]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert path.read_text() == "keep"


def test_a_path_too_long_for_the_file_system_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / ("x" * 5000)
    assert main(["train", "--run-dir", str(path), *set_args(TINY)]) == 2
    err = capsys.readouterr().err
    assert "path is too long" in err and "Traceback" not in err


# --- 3. unique default names ------------------------------------------------------------------


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *args: "20261130-120000")
    for _ in range(3):
        assert main(["train", *set_args([*TINY, "run.steps=2"])]) == 0
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["run-20261130-120000", "run-20261130-120000-2", "run-20261130-120000-3"]
    assert all((tmp_path / "runs" / name / "summary.json").exists() for name in folders)


def test_a_run_that_fails_before_training_leaves_no_default_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = [*TINY, f"run.init_from={tmp_path / 'missing.safetensors'}"]
    assert main(["train", *set_args(bad)]) == 2
    assert list((tmp_path / "runs").iterdir()) == []


# --- 4. hand edits to config.toml -------------------------------------------------------------


@pytest.mark.parametrize(
    "edit", ["lr = 0.01|lr = 0.5", "epochs = 3|epochs = 9", "hidden = [32]|hidden = [16]"]
)
def test_a_hand_edited_config_is_refused_on_resume(tmp_path, capsys, edit):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *set_args(TINY)]) == 0
    config = run_dir / "config.toml"
    old, new = edit.split("|")
    assert old in config.read_text()
    config.write_text(config.read_text().replace(old, new))
    before = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "the settings in its config.toml change the run" in err and "Traceback" not in err
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == before


def test_settings_that_do_not_change_the_run_may_be_edited(tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *set_args(TINY)]) == 0
    config = run_dir / "config.toml"
    config.write_text(config.read_text().replace("threads = 1", "threads = 2"))
    assert main(["train", "--resume", str(run_dir)]) == 0


# --- 5. a crash before the first checkpoint was complete --------------------------------------


def test_a_run_without_a_complete_checkpoint_resumes_from_the_start(tmp_path, capsys):
    expected = reference_weights(tmp_path, TINY)
    run_dir = tmp_path / "run"
    trainer = Trainer(load_config(None, TINY), run_dir)
    trainer.folder.release()  # as if the process died here, during its first save
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.3}\n')
    (run_dir / "checkpoints" / ".tmp-step-00000005-123-abcd").mkdir(parents=True)

    assert main(["train", "--run-dir", str(run_dir), *set_args(TINY)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "starting over from step 0" in capsys.readouterr().err
    assert same(weights(run_dir), expected)
    steps = [r["step"] for r in records(run_dir) if "loss" in r]
    assert steps == sorted(set(steps))  # the dead segment's record is gone


# --- 6. one consistent history and the total time after a resume ------------------------------


def test_after_sigkill_and_resume_the_history_is_one_sequence_and_time_is_total(tmp_path):
    run_dir = tmp_path / "run"
    # logged at steps 1, 10, 20, ...; checkpoints at 8, 16, 24, ...
    settings = [*TINY, "run.checkpoint_every=8", "run.keep_best_by=none"]
    process = start_slow_cli("train", "--run-dir", str(run_dir), *set_args(settings))
    wait_for_checkpoint(run_dir, process, "step-00000016")
    deadline = time.time() + 60
    while not any(r["step"] == 20 for r in records(run_dir)) and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # before step 24's checkpoint (0.2 s away)
    process.communicate()
    killed_log = records(run_dir)
    last = latest_checkpoint(run_dir)
    resumed_at = load_checkpoint(last).state["progress"]
    assert max(r["step"] for r in killed_log) > resumed_at["step"]  # records past the checkpoint

    assert main(["train", "--resume", str(run_dir)]) == 0
    log = records(run_dir)
    events = [r for r in log if r.get("event") == "resumed"]
    assert events == [{"step": resumed_at["step"], "event": "resumed", "from": last.name}]
    steps = [r["step"] for r in log if "event" not in r]
    assert steps == sorted(steps)  # never back in time
    logged = [r["step"] for r in log if "loss" in r]
    assert len(logged) == len(set(logged))  # no step logged twice
    summary = json.loads((run_dir / "summary.json").read_text())
    assert resumed_at["seconds"] > 0.2  # steps 5.. of the killed segment slept 0.05 s each
    assert summary["seconds"] > resumed_at["seconds"]


# --- 11. signals ------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_says_how_to_resume_and_resumes_exactly(tmp_path, signum, code):
    expected = reference_weights(tmp_path, TINY)
    run_dir = tmp_path / "run"
    process = start_slow_cli("train", "--run-dir", str(run_dir), *set_args(TINY))
    wait_for_checkpoint(run_dir, process, "step-00000005")
    time.sleep(0.12)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    name = signal.Signals(signum).name
    assert f"stopped by {name} at step" in err and f"--resume {run_dir}" in err
    assert "Traceback" not in err
    stopped_at = int(err.split(f"stopped by {name} at step ")[1].split(";")[0])
    assert load_checkpoint(latest_checkpoint(run_dir)).step == stopped_at > 5
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert same(weights(run_dir), expected)


def test_a_second_ctrl_c_stops_at_once_and_corrupts_nothing(tmp_path):
    run_dir = tmp_path / "run"
    process = start_slow_cli("train", "--run-dir", str(run_dir), *set_args(TINY))
    wait_for_checkpoint(run_dir, process, "step-00000005")
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    load_checkpoint(latest_checkpoint(run_dir))  # complete and verified
    assert main(["train", "--resume", str(run_dir)]) == 0


# --- 8, 12. reads that never end, tampered checkpoints, models too big, full disks ------------


def test_init_from_a_device_is_refused_without_reading_it(tmp_path, capsys):
    settings = [*TINY, 'run.init_from="/dev/zero"']
    assert main(["train", "--run-dir", str(tmp_path / "run"), *set_args(settings)]) == 2
    assert "not a regular file" in capsys.readouterr().err


def test_a_safetensors_header_that_claims_more_data_than_the_file_has(tmp_path):
    path = tmp_path / "w.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}})
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"declares 4,000,000,\d+ bytes.*file has \d+"):
        checkpoint.load_weights_file(path)


def finished_run(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    assert main(["train", "--run-dir", str(run_dir), *set_args([*TINY, "run.epochs=1"])]) == 0
    return run_dir


def rehash(checkpoint_dir: Path, filename: str) -> None:
    """Make meta.json vouch for a tampered file, as an attacker would."""
    meta = json.loads((checkpoint_dir / "meta.json").read_text())
    data = (checkpoint_dir / filename).read_bytes()
    meta["files"][filename] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (checkpoint_dir / "meta.json").write_text(json.dumps(meta))


def test_a_checkpoint_file_linked_to_a_device_is_refused(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    latest = latest_checkpoint(run_dir)
    (latest / "weights.safetensors").unlink()
    (latest / "weights.safetensors").symlink_to("/dev/zero")
    assert main(["train", "--resume", str(run_dir)]) == 2
    assert "weights.safetensors is not a regular file" in capsys.readouterr().err


def test_a_deeply_nested_state_with_a_valid_hash_is_refused(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    latest = latest_checkpoint(run_dir)
    (latest / "state.json").write_text("[" * 100_000 + "]" * 100_000)
    rehash(latest, "state.json")
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "nests deeper than any" in err and "Traceback" not in err


def test_weights_of_the_wrong_shape_with_a_valid_hash_are_refused(tmp_path, capsys):
    run_dir = finished_run(tmp_path)
    latest = latest_checkpoint(run_dir)
    tampered = {k: torch.zeros(3) for k in load_checkpoint(latest).weights}
    (latest / "weights.safetensors").write_bytes(safetensors.torch.save(tampered))
    rehash(latest, "weights.safetensors")
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "does not fit this run's model" in err and "Traceback" not in err


def test_optimizer_state_of_the_wrong_shape_is_refused(tmp_path):
    run_dir = finished_run(tmp_path)
    trainer = Trainer(load_config(run_dir / "config.toml"), run_dir, resume=True)
    state = trainer.optimizer.state_dict()
    first = next(iter(state["state"].values()))
    first["exp_avg"] = torch.zeros(7)
    loaded = load_checkpoint(latest_checkpoint(run_dir))
    loaded.state["optimizer"] = state
    with pytest.raises(CheckpointError, match=r"optimizer state 'exp_avg' has shape \(7,\)"):
        trainer._restore(loaded)
    trainer.folder.release()


def test_a_model_larger_than_memory_is_refused_before_allocating(tmp_path, capsys):
    settings = [*TINY, "model.hidden=[1000000000000]"]
    assert main(["train", "--run-dir", str(tmp_path / "run"), *set_args(settings)]) == 2
    err = capsys.readouterr().err
    assert re.search(r"Invalid model: [\d.e+]+ parameters .* need about [\d.e+]+ GiB", err)
    assert not (tmp_path / "run").exists()


def test_a_device_as_config_file_is_refused(capsys):
    assert main(["train", "/dev/zero"]) == 2
    assert "not a regular file" in capsys.readouterr().err


# A real full disk and a real read-only folder: a small tmpfs in a private mount namespace.
DISK_SCRIPT = """
mount -t tmpfs -o size={size}k tmpfs {mount} || exit 99
{command}
"""


def in_small_disk(tmp_path: Path, size_kib: int, command: str) -> subprocess.CompletedProcess:
    mount = tmp_path / "disk"
    mount.mkdir()
    script = DISK_SCRIPT.format(size=size_kib, mount=mount, command=command)
    try:
        return subprocess.run(
            ["unshare", "--mount", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except FileNotFoundError:
        pytest.skip("needs unshare (util-linux) to mount a small file system")


def can_mount() -> bool:
    probe = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(
    sys.platform != "linux" or not can_mount(), reason="needs permission to mount a tmpfs"
)


@needs_mount
def test_a_full_disk_is_a_clear_error_that_says_how_much_was_needed(tmp_path):
    run = tmp_path / "disk" / "run"
    cli = f"{sys.executable} -m trainlab train --run-dir {run} " + " ".join(
        f"--set '{s}'" for s in [*TINY, "model.hidden=[256]"]
    )
    done = in_small_disk(tmp_path, 160, f"{cli}; echo rc=$? >&2")
    assert "rc=2" in done.stderr, done.stderr
    assert "disk is full" in done.stderr and "Traceback" not in done.stderr
    assert re.search(r"needs [\d,]+ bytes in .*where [\d,]+ bytes are free", done.stderr)


@needs_mount
def test_a_read_only_folder_is_a_clear_error(tmp_path):
    mount = tmp_path / "disk"
    cli = f"{sys.executable} -m trainlab train --run-dir {mount}/run " + " ".join(
        f"--set '{s}'" for s in TINY
    )
    done = in_small_disk(tmp_path, 64, f"mount -o remount,ro {mount}\n{cli}; echo rc=$? >&2")
    assert "rc=2" in done.stderr, done.stderr
    assert "read-only" in done.stderr and "Traceback" not in done.stderr


def test_a_checkpoint_of_an_earlier_version_keeps_the_whole_log(tmp_path):
    run_dir = finished_run(tmp_path)
    latest = latest_checkpoint(run_dir)
    state = json.loads((latest / "state.json").read_text())
    del state["callbacks"]  # as trainlab 0.1 wrote them
    (latest / "state.json").write_text(json.dumps(state))
    rehash(latest, "state.json")
    before = (run_dir / "metrics.jsonl").read_text()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert (run_dir / "metrics.jsonl").read_text().startswith(before)


def test_a_refused_claim_leaves_the_holders_lock_and_folder_alone(tmp_path):
    owner = RunFolder.claim_unique(tmp_path, "run")  # holds an empty new folder
    for _ in range(2):
        with pytest.raises(RunFolderError, match="in use by process"):
            RunFolder.claim_new(owner.path)
    assert (owner.path / "run.lock").is_file()
    with pytest.raises(RunFolderError, match="in use by process"):  # still one owner
        RunFolder.claim_new(owner.path)
    owner.release()


def test_write_atomic_gives_each_writer_its_own_temporary_file_and_cleans_up(tmp_path, monkeypatch):
    """Two writers of one path never share a temporary file (a fixed name let one rename
    the other's half-written bytes into place), and a failed write leaves nothing."""
    target = tmp_path / "report.html"
    renamed: list[str] = []
    real_replace = os.replace

    def spying_replace(source, destination):
        renamed.append(Path(source).name)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spying_replace)
    write_atomic(target, b"first")
    write_atomic(target, b"second")
    assert len(set(renamed)) == 2 and target.read_bytes() == b"second"
    with pytest.raises(TypeError):
        write_atomic(target, 12345)  # a write that fails midway
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_write_atomic_removes_the_temporary_files_of_writers_that_died(tmp_path):
    """A kill mid-write leaves `.<name>.<pid>-<hex>.tmp`; the next write of the same file
    removes those of dead processes and keeps those of live ones (a write under way)."""
    target = tmp_path / "summary.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".summary.json.{dead.stdout.strip()}-abcd1234.tmp"
    live = tmp_path / f".summary.json.{os.getppid()}-abcd1234.tmp"
    other = tmp_path / f".other.json.{dead.stdout.strip()}-abcd1234.tmp"
    for path in (stale, live, other):
        path.write_text("half")
    write_atomic(target, "{}")
    assert not stale.exists() and live.exists() and other.exists()
