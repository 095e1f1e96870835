"""The lab's files on disk: pool workers that die with their parent, figures written whole
and checked before the cache serves them, and results.json files read with bounds."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from trainlab.cli import main
from trainlab.lab import experiment

NESTED = "[" * 100_000 + "]" * 100_000  # deeper than Python's recursion limit


def tiny_png(marker: bytes) -> bytes:
    """A valid 1 x 1 PNG whose text chunk holds ``marker`` (so two of them differ)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"tEXt", b"note\0" + marker)
        + chunk(b"IDAT", zlib.compress(b"\0\0"))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def plotter():
    """A throw-away experiment that draws one small figure (``line``); removed after."""

    def draw(ctx):
        figure, axes = ctx.figure("line", width=2, height=1.5)
        axes[0][0].plot([0, 1], [0, 1])
        ctx.save(figure)
        return experiment.Outcome.judge(True, "drew a line")

    experiment.experiment("probe_plot", claim="c", seed="000", rule="r")(draw)
    yield "probe_plot"
    experiment.EXPERIMENTS.pop("probe_plot")


# --- D2: pool workers die with the process that started them -------------------------------


def _children(parent: int) -> list[int]:
    """The pool workers (spawned Python processes) whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_lab_all_workers_die_when_the_parent_is_killed(tmp_path):
    out = tmp_path / "lab"
    command = [sys.executable, "-m", "trainlab", "lab", "all", "--quick", "--workers", "2"]
    parent = subprocess.Popen(
        [*command, "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.2)
            workers = _children(parent.pid)
        assert len(workers) == 2, "the pool never started two workers"
        while not any(out.glob("*/")) and time.monotonic() < deadline:
            time.sleep(0.2)  # a worker has begun an experiment
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "workers outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# --- D4: figures written whole, and checked before the cache serves them --------------------


@pytest.mark.parametrize(
    ("figure", "damage"),
    [
        ("line.png", lambda data: b""),  # a killed write: 0 bytes
        ("line.png", lambda data: data[: len(data) // 2]),  # no IEND chunk
        ("line.svg", lambda data: data[: len(data) // 2]),  # no closing </svg>
        ("line.svg", lambda data: b""),
    ],
)
def test_a_damaged_cached_figure_is_a_cache_miss_and_redrawn(tmp_path, plotter, figure, damage):
    first = experiment.run(plotter, tmp_path)
    folder = tmp_path / plotter
    whole = (folder / figure).read_bytes()
    (folder / figure).write_bytes(damage(whole))
    again = experiment.run(plotter, tmp_path)
    assert not again["cached"] and again["evidence"] == first["evidence"]
    assert len(experiment.read_figure(folder, figure)) > len(damage(whole))  # redrawn whole
    assert experiment.run(plotter, tmp_path)["cached"]  # and whole again, it is served


class Killed(Exception):
    """Stands for the process dying while matplotlib writes a figure."""


def test_a_figure_killed_while_written_leaves_the_previous_one_whole(
    tmp_path, plotter, monkeypatch
):
    experiment.run(plotter, tmp_path)
    folder = tmp_path / plotter
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def dying_savefig(self, target, *args, **kwargs):
        partial = b"\x89PNG\r\n"
        if isinstance(target, (str, os.PathLike)):
            Path(target).write_bytes(partial)
        else:
            target.write(partial)
        raise Killed

    monkeypatch.setattr(Figure, "savefig", dying_savefig)
    with pytest.raises(Killed):
        experiment.run(plotter, tmp_path, fresh=True)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --- D9: results.json that cannot be read is a cache miss, never a traceback ---------------


@pytest.mark.parametrize(
    "content",
    [
        NESTED.encode(),
        b"[1, 2]",  # JSON, but not an object
        b'{"cache_key": "KEY", "figures": 5}',  # the key matches, figures is not a list
        b"\xff\xfe not UTF-8",
    ],
    ids=["nested", "list", "figures-not-a-list", "not-utf8"],
)
def test_lab_run_redoes_an_experiment_whose_results_json_cannot_be_read(
    tmp_path, plotter, capsys, content
):
    folder = tmp_path / plotter
    folder.mkdir()
    key = experiment.cache_key(experiment.EXPERIMENTS[plotter], False, 0).encode()
    (folder / "results.json").write_bytes(content.replace(b"KEY", key))
    assert main(["lab", "run", plotter, "--out", str(tmp_path)]) == 0
    assert "(cached)" not in capsys.readouterr().out
    assert json.loads((folder / "results.json").read_text())["evidence"] == "drew a line"


def test_a_results_json_over_the_limit_is_not_read(tmp_path, plotter, monkeypatch):
    experiment.run(plotter, tmp_path)
    saved = tmp_path / plotter / "results.json"
    limit = saved.stat().st_size - 1
    monkeypatch.setattr(experiment, "MAX_RESULTS_BYTES", limit, raising=False)
    assert not experiment.run(plotter, tmp_path)["cached"]
