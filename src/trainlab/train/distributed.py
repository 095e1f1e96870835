"""Data-parallel training over several processes started by ``torchrun``.

Every process (a *rank*) holds the whole model and the whole data. Step t's global batch
is the single-process batch — epoch e's order is still a function of (seed, e) — and
rank r of N takes the slice ``[r·n/N, (r+1)·n/N)`` of its n examples. After ``backward``
the gradients and the loss are summed over the ranks, each rank's weighted by its share
n_r/n, in one ``all_reduce`` of a flat buffer. For a loss that is a mean over the batch
that is exactly the single-process gradient,

    g = (1/n) Σ_i ∇ℓ_i = Σ_r (n_r/n) · (1/n_r) Σ_{i ∈ r} ∇ℓ_i,

up to float rounding. Every rank then takes the same optimizer step on the same numbers,
so the weights stay identical without broadcasting them. The gradients are copied back
into ``p.grad`` in place: the fused optimizer's gradients are views of its flat buffers,
and an in-place copy keeps them so (replacing ``p.grad`` would not).

Why not ``DistributedDataParallel``: it would wrap the model (its state_dict keys gain
``module.``, the checkpoints would differ from a single process's) and it averages with
equal weights, which is wrong for the smaller last batch of an epoch.

The process group is joined from torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) only when ``WORLD_SIZE`` > 1: gloo on
CPU, nccl when CUDA is present (each rank on the GPU ``LOCAL_RANK``).

When a rank dies (killed, crashed), the others learn it from a collective that fails:
they stop with `LostRank`, and `launch` names the rank that died — from torchrun's own
record of each rank's exit — rather than the ranks that merely lost it. That one line is
all the user reads: ranks that `launch` started leave the explaining to it, and torchrun's
log lines about its workers go to a note, shown only when `launch` cannot explain the end.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import TrainingError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes the run folder."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


class LostRank(RuntimeError):
    """A collective failed: another rank died or cannot be reached, so this one stops too.

    Not bad input (exit code 1, not 2): the checkpoints already saved are intact and the run
    resumes from its last one.
    """


class RankDied(RuntimeError):
    """A rank of a `launch`ed run died; the message names it and how the run continues."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value else default
    except ValueError:
        raise TrainingError(
            f"Invalid environment variable {name}: {value!r} (must be an integer, as "
            "torchrun sets it)"
        ) from None


def setup() -> Ranks:
    """Join the process group torchrun describes, once; a single process when it describes
    none (``WORLD_SIZE`` unset or 1)."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    local_rank = _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        if torch.cuda.is_available():  # not tested here (CPU-only host)
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
        # Left to the interpreter's exit, gloo's threads can abort the process ("terminate
        # called without an active exception"), turning a good run into a failed one.
        atexit.register(leave)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def leave() -> None:
    """Leave the process group now, if this process is in one (at exit: `setup` registers it).

    A rank that lost another calls it as it stops: left to the interpreter's exit, the
    teardown of a group whose peer died aborts the process ("terminate called without an
    active exception"), a line of noise on the user's terminal.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _device() -> torch.device:
    """Where collectives' tensors live: nccl needs them on the GPU, gloo on the CPU."""
    import torch.distributed as dist

    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


#: What gloo's TCP transport says when a peer's connection closes: its process died. gloo
#: raises a plain ``RuntimeError`` (torch 2.13, a peer SIGKILLed: "Connection closed by
#: peer" or "Read error …: Connection reset by peer"; a write to a closed socket fails
#: with EPIPE, "Broken pipe").
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def _lost_peer(error: RuntimeError) -> bool:
    """Whether a collective's ``error`` means that another rank died or cannot be reached,
    rather than a failure of this rank's own (out of memory, a dtype the backend refuses)."""
    import torch.distributed as dist

    if isinstance(error, (dist.DistBackendError, dist.DistNetworkError)):  # nccl, the store
        return True
    return any(text in str(error) for text in _PEER_GONE)


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn the failure of a collective that lost a peer into `LostRank`, noted for the
    launcher; any other error (this rank's own) passes as it is.

    The note lets `launch` tell this rank, which lost another, from the one that died.
    """
    import torch.distributed as dist

    try:
        yield
    except RuntimeError as error:
        if not _lost_peer(error):
            raise
        rank, world = dist.get_rank(), dist.get_world_size()
        notes = _notes()
        if notes is not None:
            (notes / _LOST.format(rank=rank)).touch()
        cause = str(error).split(". ")[0][:200] or type(error).__name__  # gloo's 1st sentence
        raise LostRank(
            f"rank {rank} of {world} stopped: the {what} failed, so another rank died or "
            f"cannot be reached ({cause})"
        ) from error


def check_batches(batch_size: int, num_samples: int, drop_last: bool, world: int) -> None:
    """Refuse a batch that ``world`` processes cannot share: each takes batch_size / world.

    The last, smaller batch of an epoch (``drop_last`` off) is shared unevenly when it must
    be (the gradients are weighted by each share), but every rank needs an example of it.
    """
    if world > batch_size or batch_size % world:
        divisors = [d for d in range(1, batch_size + 1) if batch_size % d == 0]
        shown = ", ".join(map(str, divisors[:8])) + (", …" if len(divisors) > 8 else "")
        raise TrainingError(
            f"Invalid --nproc: {world} (must divide data.batch_size {batch_size}: each process "
            f"takes batch_size / nproc examples of every batch; use one of {shown}, or change "
            "data.batch_size)"
        )
    last = num_samples % batch_size
    if not drop_last and 0 < last < world:
        raise TrainingError(
            f"Invalid --nproc: {world} (the last batch of each epoch has {last} example(s) of "
            f"{num_samples} = k × {batch_size} + {last}, fewer than the processes; set "
            "data.drop_last = true, or use fewer processes)"
        )


def shard_batches(batches: Any, ranks: Ranks) -> None:
    """Make ``batches`` (a `trainlab.data.Batches`) hand out rank r's part of each
    batch, after checking that the ranks can share its batches."""
    from ..data import Batches

    if not isinstance(batches, Batches):
        raise TrainingError(
            f"Invalid training data for {ranks.world} processes: a {type(batches).__name__} "
            "(several processes shard in-memory tensors only: pass (x, y) tensors, or train "
            "in one process)"
        )
    check_batches(batches.batch_size, batches.num_samples, batches.drop_last, ranks.world)
    batches.shard = (ranks.rank, ranks.world)


def reduce_gradients(grads: Sequence[Tensor], loss: Tensor, examples: int) -> Tensor:
    """The batch-weighted mean over ranks of the gradients and the loss: Σ_r n_r·g_r / Σ_r n_r,
    written back into ``grads`` in place; returns the loss (a 0-dim tensor).

    One ``all_reduce`` of one flat buffer holding n_r·g_r, n_r·loss_r and n_r (``examples``,
    this rank's batch). Every rank must pass gradients of the same shapes in the same order.
    """
    import torch.distributed as dist

    device = _device()
    pieces = [g.reshape(-1).to(device) for g in grads]
    count = torch.tensor([examples], dtype=loss.dtype, device=device)
    flat = torch.cat([*pieces, loss.detach().reshape(1).to(device), count]).mul_(examples)
    flat[-1] = examples
    with _collective("all_reduce of the gradients"):
        dist.all_reduce(flat)
    flat[:-1].div_(flat[-1])
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return flat[offset]


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """Each of ``values`` summed over the ranks (float64)."""
    import torch.distributed as dist

    total = torch.tensor(list(values), dtype=torch.float64, device=_device())
    with _collective("all_reduce of the evaluation's sums"):
        dist.all_reduce(total)
    return total.tolist()


def agree_on_stop(signum: int | None, reason: str | None) -> tuple[int | None, str | None]:
    """The signal and stop request any rank has, for every rank: one stops, all stop.

    A signal reaches the ranks at different moments and a callback may ask one rank only;
    acting on local state would leave the others waiting in the next ``all_reduce``.
    """
    import torch.distributed as dist

    flags = torch.tensor([signum or 0, reason is not None], dtype=torch.int64, device=_device())
    with _collective("agreement on stopping"):
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    agreed_signal, stop = int(flags[0]), bool(flags[1])
    if stop:  # every rank joins the gather, whichever asked
        reasons: list[Any] = [None] * dist.get_world_size()
        with _collective("gather of the reasons to stop"):
            dist.all_gather_object(reasons, reason)
        reason = next(r for r in reasons if r is not None)
    return (agreed_signal or None), reason


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0's checkpoint is on disk before others read it)."""
    import torch.distributed as dist

    with _collective("barrier"):
        dist.barrier()


def from_rank_0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object: a path, an error message)."""
    import torch.distributed as dist

    box = [value]
    with _collective("broadcast from rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


class ReadOnlyFolder:
    """The run folder as ranks other than 0 see it: read on resume, never claimed or written.

    Stands in for `trainlab.train.run_folder.RunFolder` (``acquire``/``release``).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.held = False

    def acquire(self) -> None:
        """Nothing to take: rank 0 holds the lock."""

    def release(self, *, remove_if_unused: bool = False) -> None:
        """Nothing to drop."""


#: The environment variable naming the folder where a `launch`, its torchrun and its ranks
#: leave notes: torchrun's record of the failed ranks, the run folder and rank 0's exit
#: code, the ranks that lost another. Unset (nothing noted) when torchrun is started by hand.
NOTES_FOLDER = "TRAINLAB_LAUNCH_NOTES"
_FAILURES, _RUN_FOLDER, _LOST = "failures.json", "run-folder", "lost-rank-{rank}"
_EXIT_CODE, _TORCHRUN_LOG = "exit-code", "torchrun.log"
#: The exit codes of a rank that stopped as told rather than died: bad input (2, with its
#: error line), SIGINT or SIGTERM handled (130, 143) or not (-2, -15: how torchrun stops
#: the ranks left once one failed).
_STOPPED = {2, 128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGINT, -signal.SIGTERM}
_NOTE_LIMIT = 1 << 20
# torchrun's main, run by `launch` in a process of its own: `torchrun` below.
_TORCHRUN = "import sys; from trainlab.train.distributed import torchrun; sys.exit(torchrun())"


def _notes() -> Path | None:
    folder = os.environ.get(NOTES_FOLDER)
    return Path(folder) if folder else None


def launched() -> bool:
    """Whether this process is a rank that `launch` started (``train --nproc``): the
    launcher, not the rank, tells the user why the run failed."""
    return _notes() is not None


def note_run_folder(path: str | Path) -> None:
    """Rank 0 notes its run folder for `launch`, which names it in the command that resumes."""
    notes = _notes()
    if notes is not None:
        (notes / _RUN_FOLDER).write_text(str(path))


def note_exit_code(code: int) -> None:
    """Rank 0 notes the code its command returns for `launch`: the run's answer (0 when it
    finished), which the process's own exit code may no longer carry — torchrun stops the
    ranks left with SIGTERM, and gloo's threads can abort a process as it exits."""
    notes = _notes()
    if notes is not None and os.environ.get("RANK", "0") == "0":
        (notes / _EXIT_CODE).write_text(str(code))


def _read_note(path: Path) -> str | None:
    """A note's text (at most ``_NOTE_LIMIT`` bytes read), None when it was never written."""
    try:
        with open(path, "rb") as file:
            return file.read(_NOTE_LIMIT).decode(errors="replace")
    except FileNotFoundError:
        return None


def torchrun(argv: Sequence[str] | None = None) -> int:
    """``torchrun ARGS`` (``sys.argv[1:]``) as `launch` runs it: the exit code of every rank
    that failed noted in `NOTES_FOLDER`, torchrun's traceback left out.

    When a rank fails, torchrun stops the others and raises ``ChildFailedError``, whose
    ``failures`` map each failed rank to its exit code (``-N``: killed by signal N).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    notes = _notes()
    if notes is not None:
        _log_to(notes / _TORCHRUN_LOG)
    try:
        run(parse_args(sys.argv[1:] if argv is None else list(argv)))
    except ChildFailedError as failed:
        if notes is not None:
            codes = {rank: failure.exitcode for rank, failure in failed.failures.items()}
            (notes / _FAILURES).write_text(json.dumps(codes))
        return 1
    except SignalException as stopped:  # SIGTERM or Ctrl-C: the ranks were stopped alike
        return 128 + stopped.sigval
    return 0


def _log_to(path: Path) -> None:
    """Send torchrun's log lines about its workers (``torch.distributed.elastic``: "Sending
    process … closing signal SIGTERM", "failed (exitcode: -9) …") to ``path``, not stderr."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("torchrun %(levelname)s: %(message)s"))
    logger = logging.getLogger("torch.distributed.elastic")
    logger.addHandler(handler)
    logger.propagate = False  # torch's handler on ``torch.distributed`` would print them


def launch(argv: Sequence[str], nproc: int) -> int:
    """``torchrun --standalone --nproc_per_node nproc -m trainlab *argv``; its exit code:
    the first failed rank's own (2 for bad input, 143 when stopped by SIGTERM, …).

    Raises `RankDied` when a rank died rather than stopped, naming it and the command
    that resumes the run. Ctrl-C reaches torchrun and its workers directly (one process
    group); SIGTERM sent to this process is passed on to torchrun, which passes it to the
    workers: each finishes its step, they agree to stop, rank 0 saves a checkpoint.
    """
    with tempfile.TemporaryDirectory(prefix="trainlab-launch-") as folder:
        notes = Path(folder)
        command = [sys.executable, "-c", _TORCHRUN, "--standalone"]
        command += [f"--nproc_per_node={nproc}", "-m", "trainlab", *argv]
        process = subprocess.Popen(command, env={**os.environ, NOTES_FOLDER: folder})
        code = _wait(process)
        failures = _read_note(notes / _FAILURES)
        answer = _read_note(notes / _EXIT_CODE)
        if code and failures is None and answer is None:  # a failure no rank explains
            sys.stderr.write(_read_note(notes / _TORCHRUN_LOG) or "")
        if not code or failures is None:  # done, or torchrun itself stopped by a signal
            return code
        if answer is not None:  # rank 0 answered: finished, stopped by a signal, …
            return int(answer)
        codes = {int(rank): int(status) for rank, status in json.loads(failures).items()}
        lost = {rank for rank in codes if (notes / _LOST.format(rank=rank)).exists()}
        return exit_code(codes, lost, nproc, _read_note(notes / _RUN_FOLDER))


def _wait(process: subprocess.Popen) -> int:
    """``process``'s exit code, SIGTERM passed on to it meanwhile."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:  # the workers got it too: wait for their checkpoint
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_code(codes: dict[int, int], lost: set[int], world: int, run_folder: str | None) -> int:
    """The exit code of a launched run whose ranks ``codes`` failed (their exit codes,
    ``-N`` for signal N): the first failed rank's own answer, else a signal N as 128 + N.

    A rank that ``lost`` another (its collective failed) is not the cause, nor one that
    stopped as told (`_STOPPED`); any other failed rank died: raises `RankDied`.
    """
    died = {rank: code for rank, code in codes.items() if rank not in lost and code not in _STOPPED}
    if died:
        raise RankDied(_death(died, world, run_folder))
    # A rank's own answer (2, 130, 143) before a signal, which may be torchrun stopping it.
    own = sorted((code < 0, rank, code) for rank, code in codes.items() if rank not in lost)
    code = own[0][2] if own else 1
    return 128 - code if code < 0 else code


def _death(died: dict[int, int], world: int, run_folder: str | None) -> str:
    """The error line for ranks that died: which, how, and how the run continues."""
    if len(died) == 1:
        [(rank, code)] = died.items()
        who = f"rank {rank} of {world} died ({_how(code)})"
    else:
        hows = "; ".join(f"rank {rank}: {_how(code)}" for rank, code in sorted(died.items()))
        who = f"{len(died)} of {world} ranks died ({hows})"
    if run_folder is None:
        return f"{who} before the run folder was claimed, so nothing was saved: run it again"
    return (
        f"{who} and the run stopped; the checkpoints already saved are intact. Continue "
        f"with: trainlab train --resume {shlex.quote(run_folder)} --nproc {world}"
    )


def _how(code: int) -> str:
    """An exit code in words: ``exit status 1``, ``killed by SIGKILL``."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


__all__ = [
    "SINGLE",
    "LostRank",
    "RankDied",
    "Ranks",
    "ReadOnlyFolder",
    "agree_on_stop",
    "barrier",
    "check_batches",
    "exit_code",
    "from_rank_0",
    "launch",
    "launched",
    "leave",
    "note_exit_code",
    "note_run_folder",
    "reduce_gradients",
    "setup",
    "shard_batches",
    "sum_over_ranks",
    "torchrun",
]
