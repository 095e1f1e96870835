"""Data-parallel training under torchrun: 2 CPU processes (gloo) against 1, resume, bad input.

The runs are real: ``python -m torch.distributed.run`` starts two processes that join a
gloo group on this host. The model has no BatchNorm and no dropout, whose per-process
statistics and masks make a sharded batch differ from the whole one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import safetensors.torch
import torch

from trainlab.cli import main
from trainlab.data import Batches, Noise1d
from trainlab.train import distributed
from trainlab.train.distributed import (
    NOTES_FOLDER,
    LostRank,
    RankDied,
    _collective,
    check_batches,
    exit_code,
)
from trainlab.train.errors import TrainingError

TINY = """
[data]
name = "digits"
batch_size = 8
[model]
kind = "mlp"
hidden = [16]
batch_norm = false
dropout = 0.0
[optimizer]
name = "adam"
lr = 0.01
[run]
steps = 12
checkpoint_every = 4
checkpoint_seconds = 0
threads = 1
"""
WORKER = Path(__file__).with_name("distributed_run.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


def torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(run_dir / "model.safetensors")


def losses(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if "loss" in r and "event" not in r]


def records(run_dir: Path) -> list[tuple[int, list[str]]]:
    """Each record's step and keys."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], sorted(r)) for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """An uninterrupted run of 2 processes, started by `trainlab train --nproc 2`."""
    folder = tmp_path_factory.mktemp("ddp")
    (folder / "tiny.toml").write_text(TINY)
    run_dir = folder / "two"
    assert (
        main(["train", str(folder / "tiny.toml"), "--nproc", "2", "--run-dir", str(run_dir)]) == 0
    )
    return run_dir


def test_the_parts_of_the_ranks_make_up_the_single_process_batch():
    x, y = torch.randn(37, 12), torch.arange(37)
    augment = Noise1d(p=0.5, std=0.1)
    whole = Batches(x, y, 8, seed=3, augment=augment)
    parts = [Batches(x, y, 8, seed=3, augment=augment, shard=(r, 2)) for r in range(2)]
    for _ in range(2):  # two epochs, the last batch of each (5 examples) shared 3 + 2
        for (xb, yb), (x0, y0), (x1, y1) in zip(whole, *parts, strict=True):
            assert torch.equal(torch.cat([x0, x1]), xb) and torch.equal(torch.cat([y0, y1]), yb)
            assert abs(len(y0) - len(y1)) <= 1


def test_a_shard_outside_the_ranks_is_refused():
    with pytest.raises(ValueError, match=r"Invalid shard: \(2, 2\) \(must be \(rank, world\)"):
        Batches(torch.zeros(4, 1), torch.zeros(4), 2, shard=(2, 2))


def test_two_processes_reach_the_weights_of_one_with_the_whole_batch(tmp_path, two_processes):
    (tmp_path / "tiny.toml").write_text(TINY)
    assert main(["train", str(tmp_path / "tiny.toml"), "--run-dir", str(tmp_path / "one")]) == 0
    one, two = weights(tmp_path / "one"), weights(two_processes)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=1e-6, rtol=0)
    # The logged loss is the whole batch's, not rank 0's part of it.
    assert losses(two_processes) == pytest.approx(losses(tmp_path / "one"), abs=1e-6)
    # Rank 0 alone wrote the logs: the records of one process, each once.
    assert records(two_processes) == records(tmp_path / "one")
    assert sorted(p.name for p in (two_processes / "checkpoints").iterdir()) == [
        "step-00000008",
        "step-00000012",
    ]


def test_a_run_stopped_on_one_rank_then_resumed_ends_as_the_uninterrupted_one(
    tmp_path, two_processes
):
    (tmp_path / "tiny.toml").write_text(TINY)
    run_dir = tmp_path / "run"
    # Rank 1 alone asks to stop at step 3: both ranks stop there, rank 0 saves the step.
    done = torchrun(str(WORKER), "tiny.toml", str(run_dir), "3", "stop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0 stopped at step 3" in done.stdout and "rank 1 stopped at step 3" in done.stdout
    assert (run_dir / "checkpoints" / "step-00000003").is_dir()
    # Resumed, rank 1 alone gets SIGTERM at step 7: both stop, rank 0 saves step 7, exit 143.
    done = torchrun(str(WORKER), "tiny.toml", str(run_dir), "7", "signal", "resume", cwd=tmp_path)
    assert "exitcode  : 143" in done.stderr and done.returncode == 1, done.stderr[-3000:]
    assert (run_dir / "checkpoints" / "step-00000007").is_dir()
    assert not (run_dir / "checkpoints" / "step-00000008").exists()
    # Resumed again to the end, by the command line.
    assert main(["train", "--resume", str(run_dir), "--nproc", "2"]) == 0
    resumed, uninterrupted = weights(run_dir), weights(two_processes)
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    # The logs were cut back at each checkpoint: every training record once, as uninterrupted.
    assert losses(run_dir) == losses(two_processes)


def test_without_run_dir_rank_0_claims_one_default_folder_for_all(tmp_path, monkeypatch):
    (tmp_path / "tiny.toml").write_text(TINY)
    monkeypatch.chdir(tmp_path)  # the default folder is runs/<stem>-… under the cwd
    assert main(["train", "tiny.toml", "--nproc", "2"]) == 0
    folders = list((tmp_path / "runs").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").is_file()


def test_early_stopping_with_batch_norm_stops_every_rank_at_the_same_step(tmp_path):
    # BatchNorm's running statistics differ between the ranks: each decides on rank 0's.
    config = TINY.replace("batch_norm = false", "batch_norm = true").replace(
        "steps = 12", "steps = 300\neval_every = 1\nearly_stopping = {patience = 1}"
    )
    (tmp_path / "tiny.toml").write_text(config)  # before the fix: rank 1 stopped alone, hung
    run_dir = tmp_path / "run"
    done = torchrun(str(WORKER), "tiny.toml", str(run_dir), "0", "none", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = sorted(line for line in done.stdout.splitlines() if "stopped at step" in line)
    assert len(stopped) == 2, done.stdout
    steps = {line.rsplit(" ", 1)[1] for line in stopped}
    assert len(steps) == 1 and int(steps.pop()) < 300, stopped


def descendants(pid: int) -> list[int]:
    """The processes below ``pid``, children first (Linux: /proc/PID/task/*/children)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the task ended meanwhile
            continue
    return found + [d for child in found for d in descendants(child)]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_run_killed_by_sigkill_then_resumed_ends_as_the_uninterrupted_one(
    tmp_path, two_processes
):
    (tmp_path / "tiny.toml").write_text(
        TINY.replace("checkpoint_every = 4", "checkpoint_every = 1")
    )
    run_dir, log = tmp_path / "run", (tmp_path / "torchrun.log").open("w")
    # From step 3 on each step lasts 0.25 s more: the kill lands mid-run, past step 5.
    torchrun = subprocess.Popen(
        [*TORCHRUN, str(WORKER), "tiny.toml", str(run_dir), "3", "slow"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    checkpoints, deadline = run_dir / "checkpoints", time.monotonic() + 60
    try:
        while not any(
            p.name >= "step-00000005"
            for p in (checkpoints.iterdir() if checkpoints.is_dir() else ())
        ):
            assert time.monotonic() < deadline and torchrun.poll() is None, (
                tmp_path / "torchrun.log"
            ).read_text()[-3000:]
            time.sleep(0.02)
        # torchrun starts each rank in a session of its own: kill their groups with its own.
        ranks = descendants(torchrun.pid)
        groups = {os.getpgid(torchrun.pid)}
        for pid in ranks:
            try:
                groups.add(os.getpgid(pid))
            except ProcessLookupError:
                continue
        for group in groups:
            os.killpg(group, signal.SIGKILL)
    finally:
        torchrun.kill()
        torchrun.wait()
        log.close()
    assert torchrun.returncode == -signal.SIGKILL
    while any(alive(pid) for pid in ranks):  # no rank trains on (or writes) after the kill
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert not (run_dir / "model.safetensors").exists()  # killed before the end
    assert not (checkpoints / "step-00000012").exists()
    assert main(["train", "--resume", str(run_dir), "--nproc", "2"]) == 0
    resumed, uninterrupted = weights(run_dir), weights(two_processes)
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in uninterrupted)
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    resumed_from = [e for e in events if e.get("event") == "resumed"]
    assert len(resumed_from) == 1 and 5 <= resumed_from[0]["step"] < 12
    assert losses(run_dir) == losses(two_processes)


def test_nproc_that_does_not_divide_the_batch_exits_2_naming_the_divisors(tmp_path, capsys):
    (tmp_path / "tiny.toml").write_text(TINY)
    code = main(
        ["train", str(tmp_path / "tiny.toml"), "--nproc", "3", "--run-dir", str(tmp_path / "x")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "Invalid --nproc: 3 (must divide data.batch_size 8" in err and "1, 2, 4, 8" in err
    assert not (tmp_path / "x").exists()


def test_bad_input_that_the_ranks_find_exits_2_with_their_error_line(tmp_path, capfd, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")  # rank 0 refuses to claim the folder
    code = main(["train", "tiny.toml", "--nproc", "2", "--run-dir", "x"])
    err = capfd.readouterr().err
    assert code == 2, err[-3000:]
    assert re.search(
        r"^trainlab: error: Invalid --run-dir: 'x' holds files trainlab did not", err, re.M
    )
    assert "Traceback" not in err and "died" not in err
    assert (tmp_path / "x" / "notes.txt").read_text() == "mine"


def test_more_processes_than_examples_in_a_batch_or_in_the_last_batch_are_refused():
    with pytest.raises(TrainingError, match=r"Invalid --nproc: 16 \(must divide data.batch_size 8"):
        check_batches(8, 100, False, 16)
    with pytest.raises(TrainingError, match=r"the last batch of each epoch has 1 example\(s\)"):
        check_batches(8, 97, False, 2)
    check_batches(8, 97, True, 2)  # drop_last: no small batch


def rank_of(pid: int) -> int | None:
    """The torchrun rank of process ``pid`` (its ``RANK`` variable), None for other processes."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)


def kill_rank_1_mid_run(command: list[str], folder: Path) -> tuple[int, str]:
    """Run ``command`` (2 ranks training ``folder``/tiny.toml into ``folder``/run, 400 steps),
    SIGKILL rank 1 once the first checkpoint (step 20) is saved: its exit code and stderr."""
    config = TINY.replace("steps = 12", "steps = 400")
    (folder / "tiny.toml").write_text(config.replace("every = 4", "every = 20"))
    run_dir, err = folder / "run", folder / "stderr.txt"
    with err.open("w") as stderr:
        train = subprocess.Popen(
            command,
            cwd=folder,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 60
    try:
        while not (run_dir / "checkpoints" / "step-00000020").is_dir():
            assert time.monotonic() < deadline and train.poll() is None, err.read_text()[-3000:]
            time.sleep(0.01)
        rank_1 = next(pid for pid in descendants(train.pid) if rank_of(pid) == 1)
        os.kill(rank_1, signal.SIGSTOP)  # rank 0 waits for it: the run cannot end meanwhile
        os.kill(rank_1, signal.SIGKILL)
        return train.wait(timeout=60), err.read_text()
    finally:
        train.kill()


def test_a_rank_killed_mid_run_exits_1_naming_it_and_the_run_resumes(tmp_path):
    run_dir = tmp_path / "run"
    train = [sys.executable, "-m", "trainlab", "train", "tiny.toml", "--nproc=2", "--run-dir=run"]
    code, stderr = kill_rank_1_mid_run(train, tmp_path)
    assert code == 1, stderr[-3000:]
    # One line explains it: no rank's own line, torchrun's log lines (W1208 …, E1208 …), a
    # traceback or a rank's abort in teardown ("terminate called …") beside the launcher's.
    assert "Traceback" not in stderr, stderr[-3000:]
    assert not re.search(r"^[WE]\d{4} ", stderr, re.M), stderr[-3000:]
    assert len(re.findall(r"^trainlab:", stderr, re.M)) == 1, stderr[-3000:]
    last = stderr.splitlines()[-1]
    assert [line for line in stderr.splitlines() if not line.startswith("epoch ")] == [last]
    match = re.fullmatch(
        r"trainlab: error: rank 1 of 2 died \(killed by SIGKILL\) and the run stopped; .*"
        r"Continue with: (trainlab train --resume \S+ --nproc 2)",
        last,
    )
    assert match, last
    assert not (run_dir / "model.safetensors").exists()  # killed before the end
    command = shlex.split(match[1])
    assert (tmp_path / command[3]).resolve() == run_dir.resolve()  # as given: relative
    assert main([*command[1:3], str(run_dir), *command[4:]]) == 0
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e.get("event") == "resumed"] != []
    assert (run_dir / "model.safetensors").is_file()


def test_under_ones_own_torchrun_the_rank_that_lost_another_says_so_as_an_error(tmp_path):
    train = [*TORCHRUN, "-m", "trainlab", "train", "tiny.toml", "--run-dir=run"]
    code, stderr = kill_rank_1_mid_run(train, tmp_path)
    assert code == 1, stderr[-3000:]  # torchrun's own exit code for a failed rank
    assert re.search(
        r"^trainlab: error: rank 0 of 2 stopped: the .+ failed, so another rank died or cannot "
        r"be reached \(.*Connection (closed|reset) by peer",
        stderr,
        re.M,
    ), stderr[-3000:]


def fake_torchrun(body: str) -> str:
    """The launcher's torchrun program with torchrun's ``run`` replaced by ``body`` (which
    has ``log``, torchrun's agent logger, and ``sys``): torchrun's own ends, no ranks."""
    return (
        "import logging, sys, torch.distributed.run as torchrun_module\n"
        "from trainlab.train.distributed import torchrun\n"
        "log = logging.getLogger('torch.distributed.elastic.agent')\n"
        f"def run(args):\n    {body}\n"
        "torchrun_module.run = run\n"
        "sys.exit(torchrun())\n"
    )


def test_torchruns_log_lines_are_shown_when_no_rank_explains_the_end(monkeypatch, capfd):
    # A torchrun that fails by itself (say its rendezvous), before any rank has started.
    fails_alone = "log.error('rendezvous failed')\n    sys.exit(1)"
    monkeypatch.setattr(distributed, "_TORCHRUN", fake_torchrun(fails_alone))
    assert distributed.launch(["train", "tiny.toml"], 2) == 1
    err = capfd.readouterr().err  # the line held back from torchrun's stderr, shown at its end
    assert re.fullmatch(r"[^\n]*\brendezvous failed\n", err), err


def test_torchruns_held_back_log_lines_stay_out_of_a_run_that_succeeded(monkeypatch, capfd):
    # A torchrun that logs a notice and ends well: the notice was torchrun's to make when
    # it mattered, not a line to print after the run's own summary.
    monkeypatch.setattr(distributed, "_TORCHRUN", fake_torchrun("log.warning('a notice')"))
    assert distributed.launch(["train", "tiny.toml"], 2) == 0
    assert "a notice" not in capfd.readouterr().err


def test_the_launcher_names_the_rank_that_died_not_the_ranks_that_lost_it():
    kill, term = -signal.SIGKILL, -signal.SIGTERM
    # Rank 0 lost rank 1 (its collective failed), then torchrun stopped it: rank 1 died.
    for rank_0 in (1, term, 143, -signal.SIGABRT):
        with pytest.raises(RankDied, match=r"^rank 1 of 2 died \(killed by SIGKILL\) and"):
            exit_code({0: rank_0, 1: kill}, {0}, 2, "runs/a b")
    with pytest.raises(
        RankDied, match=r"Continue with: trainlab train --resume 'runs/a b' --nproc 4$"
    ):
        exit_code({0: term, 1: kill, 2: 1, 3: term}, {0, 3}, 4, "runs/a b")
    with pytest.raises(
        RankDied, match=r"^2 of 4 ranks died \(rank 1: killed by SIGKILL; rank 2: exit"
    ):
        exit_code({0: term, 1: kill, 2: 1, 3: term}, {0, 3}, 4, "runs/a b")
    # An uncaught exception (exit status 1) is a death too; before a folder, nothing to resume.
    with pytest.raises(
        RankDied, match=r"^rank 0 of 2 died \(exit status 1\) before the run folder"
    ):
        exit_code({0: 1, 1: 1}, {1}, 2, None)
    # Stopped as told: the first failed rank's own code (2: bad input, a signal N as 128 + N).
    assert exit_code({0: 2, 1: 2}, set(), 2, "run") == 2
    assert exit_code({0: 1, 1: 2}, {0}, 2, "run") == 2  # rank 1's bad input, which rank 0 lost
    assert exit_code({0: term, 1: 2}, set(), 2, "run") == 2  # rank 0 stopped by torchrun
    assert exit_code({0: 143, 1: term}, set(), 2, "run") == 143
    assert exit_code({1: term}, set(), 2, "run") == 143


LOST_PEER = [  # what a collective raises when a peer's process died (gloo's from this torch)
    RuntimeError(
        "[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:1414. "
        "This is typically caused by a remote worker crashing."
    ),
    RuntimeError("[../gloo/transport/tcp/pair.cc:537] Read error: Connection reset by peer"),
    torch.distributed.DistBackendError("NCCL error: remote process exited"),
    torch.distributed.DistNetworkError("failed to recv, got 0 bytes"),
]
NOT_LOST = [  # this rank's own failure, which says nothing about the others
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("expected scalar type Float but found Double"),
]


@pytest.mark.parametrize("error", LOST_PEER + NOT_LOST, ids=repr)
def test_only_a_lost_peer_turns_a_failed_collective_into_lost_rank(error, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setenv(NOTES_FOLDER, str(tmp_path))
    if error in NOT_LOST:  # raised as it is, not noted as a lost rank for the launcher
        with pytest.raises(type(error)) as raised, _collective("all_reduce of the gradients"):
            raise error
        assert raised.value is error and not isinstance(raised.value, LostRank)
        assert not (tmp_path / "lost-rank-1").exists()
        return
    with (
        pytest.raises(LostRank, match=r"^rank 1 of 2 stopped: the all_reduce of the gradients "),
        _collective("all_reduce of the gradients"),
    ):
        raise error
    assert (tmp_path / "lost-rank-1").exists()
