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
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
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
        atexit.register(dist.destroy_process_group)
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank)


def _device() -> torch.device:
    """Where collectives' tensors live: nccl needs them on the GPU, gloo on the CPU."""
    import torch.distributed as dist

    return torch.device("cuda") if dist.get_backend() == "nccl" else torch.device("cpu")


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
    dist.all_reduce(total)
    return total.tolist()


def agree_on_stop(signum: int | None, reason: str | None) -> tuple[int | None, str | None]:
    """The signal and stop request any rank has, for every rank: one stops, all stop.

    A signal reaches the ranks at different moments and a callback may ask one rank only;
    acting on local state would leave the others waiting in the next ``all_reduce``.
    """
    import torch.distributed as dist

    flags = torch.tensor([signum or 0, reason is not None], dtype=torch.int64, device=_device())
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    agreed_signal, stop = int(flags[0]), bool(flags[1])
    if stop:  # every rank joins the gather, whichever asked
        reasons: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(reasons, reason)
        reason = next(r for r in reasons if r is not None)
    return (agreed_signal or None), reason


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0's checkpoint is on disk before others read it)."""
    import torch.distributed as dist

    dist.barrier()


def from_rank_0(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a picklable object: a path, an error message)."""
    import torch.distributed as dist

    box = [value]
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


def launch(argv: Sequence[str], nproc: int) -> int:
    """``torchrun --standalone --nproc_per_node nproc -m trainlab *argv``; its exit code.

    Ctrl-C reaches torchrun and its workers directly (one process group); SIGTERM sent to
    this process is passed on to torchrun, which passes it to the workers: each finishes
    its step, they agree to stop, rank 0 saves a checkpoint.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "trainlab",
        *argv,
    ]
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:  # the workers got it too: wait for their checkpoint
                continue
    finally:
        signal.signal(signal.SIGTERM, previous)


__all__ = [
    "SINGLE",
    "Ranks",
    "ReadOnlyFolder",
    "agree_on_stop",
    "barrier",
    "check_batches",
    "from_rank_0",
    "launch",
    "reduce_gradients",
    "setup",
    "shard_batches",
    "sum_over_ranks",
]
