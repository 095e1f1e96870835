"""Is one process with 2 threads or 2 processes with 1 thread faster for the lab's runs?

Times ``trainlab lab all --quick --fresh`` (every experiment, small models) with one worker
(experiments in turn; each sets torch to one thread, so the second core idles) and with
two worker processes. Writes benchmarks/results/lab_workers.json.

    python benchmarks/lab_workers.py
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from trainlab.lab import experiments


def seconds(workers: int) -> float:
    names = list(experiments.load())
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        for _ in experiments.run_all(names, out, quick=True, fresh=True, workers=workers):
            pass
        return time.perf_counter() - start


def main() -> None:
    times = {workers: seconds(workers) for workers in (1, 2)}
    print("trainlab lab all --quick, 2 cores:")
    for workers, value in times.items():
        print(f"  {workers} worker(s): {value:6.1f} s")
    print(f"  speed-up with 2 workers: {times[1] / times[2]:.2f}x")
    out = Path("benchmarks/results/lab_workers.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seconds": times, "speedup": times[1] / times[2]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
