"""The lab report embeds only an experiment's own figures: PNGs inside its folder, regular
files of bounded size; anything else a results.json names is left unread, with a note."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import threading
from pathlib import Path

from trainlab.cli import main
from trainlab.lab import experiment, report

from .test_lab_safety import NESTED, tiny_png


def _experiment_folder(tmp_path: Path, figures: list[str]) -> Path:
    folder = tmp_path / "lab" / "exp"
    folder.mkdir(parents=True)
    results = {"name": "exp", "claim": "c", "verdict": "holds", "evidence": "e", "rule": "r"}
    (folder / "results.json").write_text(json.dumps({**results, "figures": figures}))
    return folder


def test_the_report_embeds_only_figures_inside_the_experiment_folder(tmp_path, monkeypatch):
    secret = tmp_path / "secret.png"
    secret.write_bytes(tiny_png(b"secret"))
    outside = [
        "../../secret.png",  # climbs out of the folder
        str(secret),  # an absolute path
        "link.png",  # a link inside that points outside
        "notes.txt",  # not a figure type
        "big.png",  # over the size limit
        "half.png",  # a truncated PNG
    ]
    folder = _experiment_folder(tmp_path, ["own.png", *outside])
    (folder / "own.png").write_bytes(tiny_png(b"own"))
    (folder / "half.png").write_bytes(tiny_png(b"half")[:-12])
    (folder / "link.png").symlink_to(secret)
    (folder / "notes.txt").write_bytes(tiny_png(b"notes"))
    (folder / "big.png").write_bytes(tiny_png(b"big" * 100))
    limit = len(tiny_png(b"big" * 50))
    monkeypatch.setattr(experiment, "MAX_FIGURE_BYTES", limit, raising=False)
    assert main(["report", str(tmp_path / "lab")]) == 0
    page = (tmp_path / "lab" / "report.html").read_text()
    assert base64.b64encode(tiny_png(b"own")).decode() in page
    for marker in (b"secret", b"notes", b"big" * 100):
        assert base64.b64encode(tiny_png(marker)).decode() not in page
    assert "data:image/png;base64,iVBORw0KGgo" in page  # the one embedded is a PNG
    assert page.count("<img") == 1
    for name in outside:
        assert html.escape(f"Figure {name!r} not shown") in page


def test_a_missing_figure_is_a_note_in_the_report_not_an_error(tmp_path):
    folder = _experiment_folder(tmp_path, ["missing.png"])
    assert main(["report", str(folder)]) == 0
    page = (folder / "report.html").read_text()
    assert html.escape("Figure 'missing.png' not shown: the file is missing") in page


def test_the_report_never_opens_a_pipe_a_results_json_names(tmp_path):
    folder = _experiment_folder(tmp_path, ["stuck.png"])
    fifo = folder / "stuck.png"
    os.mkfifo(fifo)
    done = threading.Event()

    def unblock() -> None:  # lets a reader that opened the pipe go on (with nothing read)
        while not done.wait(0.5):
            with contextlib.suppress(OSError):  # no reader yet
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    helper = threading.Thread(target=unblock, daemon=True)
    helper.start()
    try:
        page = report.write_report(folder).read_text()
    finally:
        done.set()
        helper.join()
    assert html.escape("Figure 'stuck.png' not shown") in page and "not a regular file" in page


def test_the_report_of_a_results_json_that_cannot_be_read_says_so(tmp_path, capsys):
    folder = tmp_path / "lab" / "exp"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(NESTED)
    assert main(["report", str(tmp_path / "lab")]) == 0
    page = (tmp_path / "lab" / "report.html").read_text()
    assert "results.json cannot be read" in page and "nests deeper" in page


def test_a_figure_named_many_times_is_embedded_once_and_the_figures_are_capped(
    tmp_path, monkeypatch
):
    """results.json naming one file a hundred thousand times, or more figures than a
    section shows, cannot blow the report up: each name once, a count and a byte cap."""
    folder = _experiment_folder(tmp_path, ["own.png"] * 100_000 + [f"f{k}.png" for k in range(5)])
    (folder / "own.png").write_bytes(tiny_png(b"own"))
    for k in range(5):
        (folder / f"f{k}.png").write_bytes(tiny_png(b"f%d" % k))
    monkeypatch.setattr(report, "MAX_FIGURES_SHOWN", 4)
    assert main(["report", str(folder)]) == 0
    page = html.unescape((folder / "report.html").read_text())
    assert page.count("<img") == 4 and "2 more figures not shown (at most 4 a section)" in page
    monkeypatch.setattr(report, "MAX_FIGURE_BYTES_SHOWN", 2 * len(tiny_png(b"own")))
    assert main(["report", str(folder)]) == 0
    page = html.unescape((folder / "report.html").read_text())
    assert page.count("<img") == 2 and "Figure 'f1.png' and any after it not shown" in page
