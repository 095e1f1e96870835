"""The trainer against a hand-written PyTorch loop doing the same work.

Same model (the demo's MNIST-1D CNN), optimizer (AdamW, one-cycle), batches and epochs.
Two hand-written loops: the bare one does only forward, loss, backward, step and the
learning-rate update; the second also evaluates on the validation split after every
epoch, as the trainer does. On top of that the trainer does what makes it dependable —
the non-finite checks, logging every 10 steps, crash-safe checkpoints (the first epoch's,
then one whenever the last is older than run.checkpoint_seconds, and the last) — and the
ratios show what that costs. Medians over alternating repeats; writes
benchmarks/results/trainer_overhead.json.

    python benchmarks/trainer_overhead.py [--repeats N] [--epochs N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from trainlab.cli import DEMO_SETTINGS
from trainlab.train import Callback, LRController, OneCycle, Step
from trainlab.train.config import load_config
from trainlab.train.trainer import Trainer


def settings(epochs: int) -> list[str]:
    steps = epochs * 29  # ceil(3600 / 128) batches per epoch
    return [
        *[
            s
            for s in DEMO_SETTINGS
            # no augmentation: the plain loop below has none either
            if not s.startswith(("run.epochs", "schedule.phases", "data.augment"))
        ],
        f"run.epochs={epochs}",
        f'schedule.phases=[{{name="one_cycle", total={steps}}}]',
        "averaging.ema=false",
        "run.keep_best_by=none",
    ]


class NoOp(Callback):
    """A callback on every step that does nothing: the cost of dispatch."""

    def on_step_end(self, trainer: Trainer, step: object) -> None:
        pass


def trainer_seconds(epochs: int) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs)), run_dir)
        start = time.perf_counter()
        trainer.fit()
        return time.perf_counter() - start - _final_evaluation_seconds(trainer)


def _final_evaluation_seconds(trainer: Trainer) -> float:
    # fit() ends with train/val/test evaluations and saving; the hand loops do neither.
    start = time.perf_counter()
    for data in (trainer._train_data(), trainer.val, trainer.test):
        trainer.evaluate(data)
    return time.perf_counter() - start


def built(epochs: int) -> Trainer:
    """The objects the trainer builds (data, model, optimizer), in a throw-away folder."""
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(load_config(None, settings(epochs)), run_dir)
        trainer.folder.release()
    return trainer


def hand_seconds(epochs: int, validate: bool = False) -> float:
    # The same objects the trainer builds, driven by the plainest loop.
    trainer = built(epochs)
    model, optimizer, batches = trainer.model, trainer.optimizer, trainer.batches
    x_val, y_val = trainer.val
    controller = LRController(optimizer, OneCycle(epochs * len(batches)))
    loss_fn = torch.nn.functional.cross_entropy
    start = time.perf_counter()
    step = 0
    model.train()
    for _ in range(epochs):
        for xb, yb in batches:
            controller.step(step)
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
            step += 1
        if validate:
            validate_once(model, x_val, y_val)
    return time.perf_counter() - start


def validate_once(model: torch.nn.Module, x_val: torch.Tensor, y_val: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(x_val)
        torch.nn.functional.cross_entropy(logits, y_val).item()
        (logits.argmax(1) == y_val).float().mean().item()
    model.train()


def plain_pytorch_seconds(epochs: int) -> float:
    """The loop a user writes instead: torch.optim.AdamW, OneCycleLR, randperm batches."""
    trainer = built(epochs)  # the same data and a model of the same architecture and init
    model = trainer.model
    x, y = trainer.batches.x, trainer.batches.y
    x_val, y_val = trainer.val
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias") and ".norm." not in n]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or ".norm." in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=0.01,
        weight_decay=0.001,
    )
    steps_per_epoch = -(-len(x) // 128)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for b in range(steps_per_epoch):
            index = order[b * 128 : (b + 1) * 128]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            scheduler.step()
        validate_once(model, x_val, y_val)
    return time.perf_counter() - start


def dispatch_nanoseconds(trainer: Trainer, repeats: int = 100_000) -> tuple[float, float]:
    """Per-step cost of the step-end dispatch: with no callback on steps (one empty check),
    and with one no-op callback (building the ``Step`` and calling it)."""
    x = torch.zeros(1)

    def one_step() -> None:
        if trainer._events["on_step_end"]:
            info = Step(1, 0, 0.0, 0.0, 0.0, 0.0, x, x, x)
            trainer._emit("on_step_end", info)

    timings = []
    for callbacks in ([], [NoOp()]):
        trainer._events["on_step_end"] = callbacks
        start = time.perf_counter_ns()
        for _ in range(repeats):
            one_step()
        timings.append((time.perf_counter_ns() - start) / repeats)
    return timings[0], timings[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(2)
    runs = {
        "hand": lambda: hand_seconds(args.epochs),
        "hand_validated": lambda: hand_seconds(args.epochs, validate=True),
        "plain_pytorch": lambda: plain_pytorch_seconds(args.epochs),
        "trainer": lambda: trainer_seconds(args.epochs),
    }
    for run in runs.values():  # warm up: first-call costs (allocator, kernels) out of the way
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # alternating, so that drift hits every variant alike
        for name, run in runs.items():
            times[name].append(run())
    median = {name: statistics.median(values) for name, values in times.items()}
    steps = args.epochs * 29
    step_us = median["trainer"] / steps * 1e6
    empty_ns, noop_ns = dispatch_nanoseconds(built(args.epochs))
    ours = median["trainer"]
    print(f"{args.epochs} epochs of the MNIST-1D demo CNN, 2 threads, median of {args.repeats}:")
    labels = {
        "plain_pytorch": "plain PyTorch loop (AdamW, OneCycleLR, randperm, validation)",
        "hand": "hand-written loop on trainlab's objects",
        "hand_validated": "the same + validation every epoch",
    }
    for name, label in labels.items():
        print(f"  {label:<62}{median[name]:6.2f} s")
    print(
        f"  {'trainlab Trainer':<62}{ours:6.2f} s   "
        f"({ours / median['plain_pytorch']:.2f}x plain PyTorch, {ours / median['hand']:.2f}x the "
        f"bare loop, {ours / median['hand_validated']:.2f}x the validated one)"
    )
    print(
        f"  event dispatch: {empty_ns:.0f} ns a step with no callback on steps "
        f"({empty_ns / 1e3 / step_us:.4%} of a {step_us:.0f} µs step); with a no-op callback "
        f"on steps {noop_ns:.0f} ns ({noop_ns / 1e3 / step_us:.3%})"
    )
    out = Path("benchmarks/results/trainer_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "epochs": args.epochs,
                "seconds": median,
                "all_seconds": times,
                "ratio_plain_pytorch": ours / median["plain_pytorch"],
                "ratio": ours / median["hand"],
                "ratio_validated": ours / median["hand_validated"],
                "step_microseconds": step_us,
                "empty_dispatch_nanoseconds": empty_ns,
                "noop_callback_dispatch_nanoseconds": noop_ns,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
