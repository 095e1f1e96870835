"""Two processes with one thread each, or one process with two threads, for the lab's runs?

Times ``trainlab lab all --quick --fresh`` (the untimed experiments: small models, many
short runs) three ways on the same machine, one after another:

- 1 process × 1 thread: experiments in turn, the second core idle (the baseline);
- 1 process × 2 threads: experiments in turn, torch's intra-op threads on both cores;
- 2 processes × 1 thread: two experiments at once (``--workers 2``).

Writes benchmarks/results/lab_workers.json.

    python benchmarks/lab_workers.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from trainlab.lab import experiments

LAYOUTS = {
    "1 process × 1 thread": (1, 1),
    "1 process × 2 threads": (1, 2),
    "2 processes × 1 thread": (2, 1),
}


def seconds(names: list[str], workers: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for _ in experiments.run_all(
            names, out, quick=True, fresh=True, workers=workers, threads=threads
        ):
            pass
        return time.perf_counter() - start


def main() -> None:
    registry = experiments.load()
    names = [name for name, entry in registry.items() if not entry.timed]
    print(f"trainlab lab all --quick ({len(names)} untimed experiments), {os.cpu_count()} cores:")
    times = {}
    for label, (workers, threads) in LAYOUTS.items():
        times[label] = seconds(names, workers, threads)
        print(f"  {label:<24} {times[label]:6.1f} s", flush=True)
    base = times["1 process × 1 thread"]
    for label, value in times.items():
        print(f"  speed-up of {label:<24} {base / value:5.2f}×")
    out = Path("benchmarks/results/lab_workers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"cores": os.cpu_count(), "seconds": times}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
