"""A run that test_distributed.py starts under torchrun: one rank stops it at a step.

Usage: distributed_run.py CONFIG RUN_DIR STEP (stop|signal|slow|none) [resume]. At step STEP rank 1
alone asks the trainer to stop (``request_stop``) or sends itself SIGTERM; every rank must
stop at that step, rank 0 having saved its checkpoint. Exits with the run's exit code.
``slow``: no stop; from step STEP on, every rank sleeps 0.25 s after each step, so that a
test can kill the run while it trains. ``none``: no stop from here (the config's own,
e.g. early stopping).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from trainlab.train import Callback
from trainlab.train.config import load_config
from trainlab.train.trainer import Interrupted, Trainer


class StopOnRank1(Callback):
    def __init__(self, step: int, how: str) -> None:
        self.step, self.how = step, how

    def on_step_end(self, trainer, step) -> None:
        if self.how == "slow":
            if step.step >= self.step:
                time.sleep(0.25)
        elif self.how != "none" and step.step == self.step and trainer.ranks.rank == 1:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                trainer.request_stop(f"rank 1 at step {step.step}")


def main() -> int:
    config_file, run_dir, step, how, *resume = sys.argv[1:]
    trainer = Trainer(
        load_config(config_file),
        run_dir,
        resume=resume == ["resume"],
        callbacks=[StopOnRank1(int(step), how)],
    )
    try:
        summary = trainer.fit()
    except Interrupted as interrupted:
        return interrupted.exit_code
    print(f"rank {trainer.ranks.rank} stopped at step {summary['steps']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
