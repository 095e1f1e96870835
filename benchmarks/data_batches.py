"""Time one epoch of mini-batches: trainlab ``Batches`` vs indexing by hand vs a DataLoader.

Data the size of MNIST-1D: 4000 x 40 float32 inputs, labels 0..9. Per batch size:

  by hand      perm = torch.randperm(n); x[perm[i:i+b]], y[perm[i:i+b]] for each batch
  Batches      trainlab.data.Batches (shuffle="epoch"): the same indexing, plus a seeded
               per-epoch generator and a resumable position
  DataLoader   torch.utils.data.DataLoader(TensorDataset(x, y), shuffle=True): per-sample
               __getitem__ and collate

Times are medians over repeated epochs, the implementations taking turns epoch by epoch;
overhead is relative to by hand. A training epoch of a small 1-D CNN (forward, backward,
SGD step per batch) shows the batcher's share of real work. One thread, so that
scheduling noise does not swamp microseconds.

    python benchmarks/data_batches.py [--repeats N]

Prints a table and writes benchmarks/results/data_batches.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainlab.data.batches import Batches

N, FEATURES, CLASSES = 4000, 40, 10
BATCH_SIZES = (32, 64, 128)
RESULTS = Path(__file__).parent / "results" / "data_batches.json"


def by_hand(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Callable[[], None]:
    def epoch() -> None:
        perm = torch.randperm(len(x))
        for i in range(0, len(x), batch_size):
            index = perm[i : i + batch_size]
            _ = x[index], y[index]

    return epoch


def with_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Callable[[], None]:
    batches = Batches(x, y, batch_size)

    def epoch() -> None:
        for _ in batches:
            pass

    return epoch


def with_dataloader(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Callable[[], None]:
    data = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)

    def epoch() -> None:
        for _ in data:
            pass

    return epoch


def median_epochs_us(epochs: dict[str, Callable[[], None]], repeats: dict[str, int]) -> dict:
    """Median µs per epoch of each, taking turns; warm-up epochs first."""
    times: dict[str, list[float]] = {name: [] for name in epochs}
    for epoch in epochs.values():
        epoch()
    for r in range(max(repeats.values())):
        for name, epoch in epochs.items():
            if r < repeats[name]:
                start = time.perf_counter_ns()
                epoch()
                times[name].append((time.perf_counter_ns() - start) / 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def cnn() -> nn.Module:
    """A small MNIST-1D classifier: two convolutions and a linear head."""
    return nn.Sequential(
        nn.Unflatten(1, (1, FEATURES)),
        nn.Conv1d(1, 16, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(16, 16, 5, padding=2, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * FEATURES // 2, CLASSES),
    )


def training(batches: Callable[[], object]) -> Callable[[], None]:
    """One epoch of forward + backward + SGD over the batches that ``batches()`` yields."""
    torch.manual_seed(0)
    model = cnn()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()

    def epoch() -> None:
        for xb, yb in batches():
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()

    return epoch


def hand_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    perm = torch.randperm(len(x))
    for i in range(0, len(x), batch_size):
        index = perm[i : i + batch_size]
        yield x[index], y[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="epochs timed per batcher")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, FEATURES, generator=generator)
    y = torch.randint(0, CLASSES, (N,), generator=generator)

    rows = []
    for batch_size in BATCH_SIZES:
        epochs = {
            "by_hand": by_hand(x, y, batch_size),
            "batches": with_batches(x, y, batch_size),
            "dataloader": with_dataloader(x, y, batch_size),
        }
        repeats = {"by_hand": args.repeats, "batches": args.repeats, "dataloader": 15}
        us = median_epochs_us(epochs, repeats)
        rows.append({"batch_size": batch_size, **{f"{k}_us": v for k, v in us.items()}})

    batch_size = 64
    batches = Batches(x, y, batch_size)
    train = {
        "train_by_hand": training(lambda: hand_batches(x, y, batch_size)),
        "train_batches": training(lambda: batches),
    }
    train_us = median_epochs_us(train, {name: 15 for name in train})
    batcher_us = next(r["batches_us"] for r in rows if r["batch_size"] == batch_size)

    print(f"One epoch over {N} x {FEATURES} float32, median µs ({args.repeats} epochs; ", end="")
    print("DataLoader 15), 1 thread")
    header = ("batch", 5), ("by hand", 9), ("Batches", 9), ("overhead", 9), ("DataLoader", 11)
    print(" ".join(f"{name:>{width}}" for name, width in header), f"{'overhead':>9}")
    for row in rows:
        row["batches_overhead_pct"] = 100 * (row["batches_us"] / row["by_hand_us"] - 1)
        row["dataloader_overhead_pct"] = 100 * (row["dataloader_us"] / row["by_hand_us"] - 1)
        print(
            f"{row['batch_size']:>5} {row['by_hand_us']:>9.0f} {row['batches_us']:>9.0f} "
            f"{row['batches_overhead_pct']:>8.1f}% {row['dataloader_us']:>11.0f} "
            f"{row['dataloader_overhead_pct']:>8.0f}%"
        )
    share = 100 * batcher_us / train_us["train_batches"]
    print(f"\nTraining epoch, 1-D CNN, batch {batch_size}: ", end="")
    print(
        f"by hand {train_us['train_by_hand']:.0f} µs, Batches {train_us['train_batches']:.0f} µs;"
    )
    print(f"batching (Batches alone, above) is {share:.1f}% of the training epoch")

    RESULTS.parent.mkdir(exist_ok=True)
    result = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "data": {"samples": N, "features": FEATURES, "classes": CLASSES},
        "repeats": args.repeats,
        "epochs": rows,
        "training": {
            "batch_size": batch_size,
            "by_hand_us": train_us["train_by_hand"],
            "batches_us": train_us["train_batches"],
            "batcher_share_pct": share,
        },
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
