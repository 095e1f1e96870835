"""The documentation site: built as `make docs` builds it, then read in a real headless Chromium.

The build is strict (any warning fails it: a guide whose code fails, a broken reference, a
public name without a docstring or reference entry), so building it here is itself the
check on every executed example. The pages are then served over a local HTTP server and
rendered: the test records every request the browser makes, so a figure, a stylesheet or a
script that does not load is seen, and Chromium's console log must stay empty.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

from .lab.test_lab import BROWSER_FLAGS, CHROMIUM, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
RESOURCE = re.compile(r"""<(?:img|script|link|source|iframe)\b[^>]*\b(?:src|href)=["']([^"']+)""")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site, built by mkdocs --strict into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    build = subprocess.run(
        [str(bin_dir / "mkdocs"), "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stderr[-6000:]
    return out


class _Recorder(SimpleHTTPRequestHandler):
    requests: list[tuple[str, int]]

    def log_request(self, code="-", size="-"):
        self.requests.append((self.path, int(code)))

    def log_message(self, format, *args):  # quiet: the requests are recorded instead
        pass


@pytest.fixture(scope="session")
def served(site):
    """(base URL, the list of (path, status) requests the server has answered)."""
    requests: list[tuple[str, int]] = []
    handler = type("Handler", (_Recorder,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def render(url: str, tmp_path: Path) -> tuple[str, str, bytes]:
    """The page's DOM after its scripts ran, Chromium's log, and a screenshot."""
    flags = [*BROWSER_FLAGS, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000"]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return dom.stdout, dom.stderr, shot.read_bytes()


def console(log: str) -> list[str]:
    """The console messages (errors, warnings, logs) in Chromium's stderr."""
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def test_every_page_needs_nothing_from_the_network(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 25  # home, guides, lectures, reference
    for page in pages:
        for resource in RESOURCE.findall(page.read_text(encoding="utf-8")):
            assert not re.match(r"(https?:)?//", resource), f"{page.name} fetches {resource}"


@needs_chromium
@pytest.mark.parametrize(
    "page, figures, math",
    [
        ("index.html", 1, 1),  # the home page: a lab figure and the update rule
        ("guides/optimizers.html", 2, 2),  # a guide: the lab's comparison figures, equations
        ("lectures/optimization.html", 7, 0),  # a lecture page: generated from results.json
    ],
)
def test_a_page_renders_with_its_math_and_figures_and_no_console_message(
    served, tmp_path, page, figures, math
):
    base, requests = served
    requests.clear()
    dom, log, shot = render(f"{base}/{page}", tmp_path)
    assert console(log) == []
    failed = [(path, status) for path, status in requests if status != 200]
    assert failed == []
    images = re.findall(r'<img\b[^>]*\bsrc="([^"]+\.png)"', dom)
    assert len(images) >= figures
    fetched = {urlparse(path).path for path, _ in requests}
    for image in images:  # each figure was fetched (and answered 200: see `failed`)
        assert urlparse(urljoin(f"{base}/{page}", image)).path in fetched, image
    assert len(re.findall(r"<math\b", dom)) >= math
    assert "<mtext>\\" not in dom  # no LaTeX command left unconverted
    assert shot.startswith(b"\x89PNG") and len(shot) > 50_000
