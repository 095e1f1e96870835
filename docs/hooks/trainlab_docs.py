"""MkDocs hooks for trainlab's site: executed pages in a scratch folder, math as MathML.

* Every page's executed code blocks (markdown-exec) run in a fresh temporary working
  folder, so a guide that trains into ``runs/…`` leaves nothing in the repository and
  cannot see another guide's files, and with one torch thread: the examples' models are
  small, and one thread keeps their printed numbers the same from build to build.
* What the examples write to standard error (the trainer's live verdicts, progress notes)
  goes to the build's log at debug level (``mkdocs build -v`` shows it), so that the
  build's own output holds only what needs a reader — except a warning or a traceback,
  which is logged as a warning and so fails the strict build: it is a defect to fix.
* ``$…$`` and ``$$…$$`` (pymdownx.arithmatex, generic mode) become MathML when the site is
  built, which browsers render natively: no math script to fetch, nothing from a CDN.
"""

from __future__ import annotations

import html
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from latex2mathml.converter import convert

# Not `import torch`: MkDocs registers this module under its file path, which cannot be
# imported, and a module attribute named `torch` here made pickle resolve torch's globals
# (torch.contiguous_format in inductor's cache key) to this module: every compiled graph of
# an executed example then printed a "Failed to pickle cache key" traceback and bypassed
# the compile cache.
from torch import get_num_threads, set_num_threads

HOOKS = Path(__file__).resolve().parent

log = logging.getLogger("mkdocs.hooks.trainlab")

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)

# A Python warning, a traceback or a torch log line (W/E + date) on an example's stderr.
_PROBLEM = re.compile(r"Traceback|Warning:|^[WE]\d{4} ", re.M)

# The page being rendered: its scratch folder, the old cwd, its threads, its stderr.
_scratch: dict[str, object] = {}
# The whole build: the folder of its calibration file.
_build: dict[str, str] = {}


def on_config(config):
    if str(HOOKS) not in sys.path:
        sys.path.insert(0, str(HOOKS))  # executed blocks `import docgen`
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["TQDM_DISABLE"] = "1"  # no progress bars in executed output
    os.environ["NO_COLOR"] = "1"
    # The examples measure the optimizers' costs into a file of the build's own: a user's
    # cache (outdated, or someone else's file) would make them print a warning instead.
    _build["calibration"] = tempfile.mkdtemp(prefix="trainlab-docs-calibration-")
    os.environ["TRAINLAB_CALIBRATION"] = str(Path(_build["calibration"]) / "costs.json")
    return config


def on_page_markdown(markdown, page, config, files):
    _scratch["old"] = os.getcwd()
    _scratch["dir"] = tempfile.mkdtemp(prefix="trainlab-docs-")
    _scratch["start"] = time.perf_counter()
    _scratch["threads"] = get_num_threads()
    set_num_threads(1)
    _scratch["stderr"] = sys.stderr
    sys.stderr = io.StringIO()
    os.chdir(_scratch["dir"])
    return markdown


def _leave_scratch(page_name: str = "") -> None:
    if "start" in _scratch:
        seconds = time.perf_counter() - _scratch.pop("start")
        if seconds > 1:  # pages with executed code: what the build spends its time on
            log.info("%s: %.1f s to run its code", page_name, seconds)
    if "threads" in _scratch:
        set_num_threads(_scratch.pop("threads"))
    if "stderr" in _scratch:
        written, sys.stderr = sys.stderr.getvalue(), _scratch.pop("stderr")
        if _PROBLEM.search(written):  # a warning or traceback: a defect, shown and fatal
            log.warning("%s: its examples wrote to stderr:\n%s", page_name, written.rstrip())
        elif written.strip():  # what the example means to print there (live verdicts)
            log.debug("%s: its examples wrote to stderr:\n%s", page_name, written.rstrip())
    if "dir" in _scratch:
        os.chdir(_scratch.pop("old"))
        shutil.rmtree(_scratch.pop("dir"), ignore_errors=True)


# What latex2mathml leaves when it does not know a construct: a command as text, an
# alignment mark, a line break that MathML Core does not render.
_UNRENDERED = re.compile(r'<mi>\\\w+</mi>|<mi>&</mi>|linebreak="newline"')


def _mathml(latex: str, display: str, page) -> str:
    source = html.unescape(latex).strip()
    # latex2mathml lays out align* as a table, but not aligned (the same columns).
    converted = source.replace(r"\begin{aligned}", r"\begin{align*}").replace(
        r"\end{aligned}", r"\end{align*}"
    )
    try:
        mathml = convert(converted, display=display)
    except Exception as error:  # latex2mathml raises its own exception types
        log.warning("%s: cannot render the math %r: %s", page.file.src_uri, source, error)
        return f"<code>{html.escape(source)}</code>"
    if unrendered := _UNRENDERED.search(mathml):
        log.warning(
            "%s: the math %r has LaTeX MathML cannot show (%s)",
            page.file.src_uri,
            source,
            unrendered.group(0),
        )
    return mathml


def on_page_content(content, page, config, files):
    _leave_scratch(page.file.src_uri)
    content = _BLOCK.sub(
        lambda m: f'<div class="math">{_mathml(m.group(1), "block", page)}</div>', content
    )
    return _INLINE.sub(lambda m: _mathml(m.group(1), "inline", page), content)


def on_build_error(error):
    _leave_scratch()


# --------------------------------------------------------------------------- API coverage

#: The public modules: every name of their ``__all__`` needs a docstring and a reference entry.
PUBLIC_MODULES = (
    "trainlab.optim",
    "trainlab.data",
    "trainlab.models",
    "trainlab.train",
    "trainlab.diagnose",
    "trainlab.lab",
    "trainlab.sweep",
    "trainlab.ensembles",
)
#: trainlab's top-level names are lazy attributes; their entries are where they are defined.
TOP_LEVEL = {
    "fit": "trainlab.train.fit",
    "load_run": "trainlab.train.load_run",
    "predict": "trainlab.train.predict",
    "ensemble": "trainlab.ensembles.ensemble",
}
_ID = re.compile(r'\bid="(trainlab\.[\w.]+)"')


def public_names() -> dict[str, str]:
    """Every public name, as {"trainlab.optim.Adam": its reference entry's id}."""
    import importlib

    import trainlab

    names = {f"trainlab.{name}": TOP_LEVEL[name] for name in trainlab.__all__}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names.update({f"{module_name}.{name}": f"{module_name}.{name}" for name in module.__all__})
    return names


def _undocumented(names: dict[str, str]) -> list[str]:
    """Public names, and public methods of public classes, whose docstring is empty."""
    import griffe

    package = griffe.load(
        "trainlab",
        search_paths=[str(HOOKS.parents[1] / "src")],
        extensions=griffe.load_extensions("griffe_inherited_docstrings"),
        resolve_aliases=True,
        resolve_external=False,
    )
    missing = []
    for entry in sorted(set(names.values())):
        obj = package[entry.removeprefix("trainlab.")]
        obj = obj.final_target if obj.is_alias else obj
        if not obj.docstring or not obj.docstring.value.strip():
            missing.append(entry)
        if obj.is_class:
            for member_name, member in obj.members.items():
                if member_name.startswith("_") or member.is_alias or not member.is_function:
                    continue
                if not member.docstring or not member.docstring.value.strip():
                    missing.append(f"{entry}.{member_name}")
    return missing


def on_post_build(config):
    if "calibration" in _build:
        shutil.rmtree(_build.pop("calibration"), ignore_errors=True)
    names = public_names()
    ids: set[str] = set()
    for page in Path(config["site_dir"]).rglob("*.html"):
        ids.update(_ID.findall(page.read_text(encoding="utf-8")))
    for name, entry in sorted(names.items()):
        if entry not in ids:
            log.warning("the public name %s has no entry in the API reference (id %s)", name, entry)
    for name in _undocumented(names):
        log.warning("the public name %s has no docstring", name)
