"""A calibration cache that is not trainlab's never stops ``trainlab train``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import trainlab
from trainlab.train.trainer import SUMMARY_FILE


def train(run_dir: Path, calibration: Path) -> subprocess.CompletedProcess:
    """``python -m trainlab train`` of a tiny MLP on 40 random points (an npz file, which
    loads faster than any built-in dataset), reading the calibration cache ``calibration``.

    No C++ compiler is on the PATH, so the uncached calibration times the eager loop and
    torch's kernel only (a fraction of a second) instead of compiling.
    """
    points = run_dir.parent / "points.npz"
    rng = np.random.default_rng(0)
    np.savez(points, x=rng.standard_normal((40, 4)).astype(np.float32), y=np.arange(40) % 2)
    tiny = [
        "data.name=npz",
        f'data.options={{path="{points}"}}',
        "model.kind=mlp",
        "model.hidden=[8]",
        "optimizer.name=adam",  # backend "auto" with torch's kernel: it consults the cache
        "run.epochs=1",
    ]
    env = {**os.environ, "TRAINLAB_CALIBRATION": str(calibration), "OMP_NUM_THREADS": "1"}
    env["PATH"] = str(Path(sys.executable).parent)
    settings = [arg for setting in tiny for arg in ("--set", setting)]
    command = [sys.executable, "-m", "trainlab", "train", "--run-dir", str(run_dir), *settings]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_a_deeply_nested_cache_neither_crashes_train_nor_is_overwritten(tmp_path):
    cache = tmp_path / "cache" / "costs.json"
    cache.parent.mkdir()
    nested = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
    cache.write_text(nested)
    run_dir = tmp_path / "run"
    result = train(run_dir, cache)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("is not a trainlab optimizer calibration cache") == 1
    assert f"{cache} is not a trainlab" in result.stderr
    assert cache.read_text() == nested and list(cache.parent.iterdir()) == [cache]
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())  # the run finished
    assert trainlab.load_run(run_dir).summary == summary
