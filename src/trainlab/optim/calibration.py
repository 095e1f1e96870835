"""How ``backend="auto"`` chooses: step costs measured on this machine, cached per device.

Each group is stepped by whichever of the eager loop, trainlab's compiled rule and
torch's own fused kernel (where torch has one for the group's settings) is measured to be
cheapest for its number of tensors and parameters. The costs come from a short
calibration the first time an optimizer class (with its group's switches: momentum,
Nesterov, AMSGrad, ...) meets a device, dtype and thread count here, with linear models
fitted to a few timed steps of small groups of that class (their gradients made by
backward after zero_grad, as in a training loop):

    eager        ≈ a + b·tensors + c·elements   (one update per tensor)
    fused        ≈ F + f·elements               (one compiled pass per group)
    torch-fused  ≈ T + t·elements               (torch's kernel, one call per group)

A run that knows its length (the trainer tells the optimizer through
``expected_steps``) compiles a group only when the time saved over the run repays the
compilation, so a short run never waits for the compiler. The calibration compiles the
class's rule once (seconds; inductor's disk cache makes it faster later) and is saved in
``$TRAINLAB_CACHE/optim-calibration.json`` (default ``~/.cache/trainlab``;
``$TRAINLAB_CALIBRATION`` names another file) per class and its switches, device, dtype
and thread count, under a key naming the machine and torch, so the next process reads it.
An entry named ``"*"`` pins the costs of everything. `calibrate` runs it on demand, e.g.
before timing.

The file is trainlab's when it is a JSON object whose ``"format"`` is `FORMAT` (or, as
written before that marker, an object of exactly ``"version"``, ``"machine"`` and
``"entries"``). One of trainlab's written by another version or machine, or with damaged
entries, is replaced, with one warning. Anything else at the path (a folder, a file that
is not JSON, someone else's JSON, more than `MAX_CACHE_BYTES`) is never written: one
warning names it, and the costs are measured without a cache in every process until
``$TRAINLAB_CALIBRATION`` names another file or the path is freed.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import stat
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import _json

CACHE_FILE = "optim-calibration.json"
#: The marker of trainlab's calibration file (its "format" key): a file without it is not
#: trainlab's, and trainlab never overwrites it.
FORMAT = "trainlab-optim-calibration"
VERSION = 4  # 4: the steps timed take their gradients from backward, as in training
#: The cache is a few kilobytes; anything larger is not ours.
MAX_CACHE_BYTES = 1 << 20
# The timed groups: few tensors, many tensors, many elements.
_SHAPES = {"one": [1000], "few": [1000] * 8, "large": [100_000] * 8}
_STEPS = 15

#: How much cheaper (a fraction) the compiled rule must be modelled than torch's own fused
#: kernel to be chosen over it: the models come from small, cache-resident groups, and
#: where the two are close the kernel is the one that cannot be slower than torch.optim.
COMPILED_MARGIN = 0.05

#: An entry of this name in the cache holds the costs of every class, device and dtype:
#: nothing is measured while it is there (a file of one's own then pins the choice).
OVERRIDE = "*"

_costs: dict[str, Costs] = {}  # this process's costs, by entry key
_warned: set[tuple[str, str]] = set()  # (file, message): every class and group reads the file
#: The keys of the file before it had the format marker: still trainlab's, read as such.
_UNMARKED_KEYS = {"version", "machine", "entries"}


@dataclass(frozen=True)
class Costs:
    """Microseconds of one step of one optimizer class on one device and dtype."""

    eager_us: float  # a: the eager loop's fixed cost
    eager_us_per_tensor: float  # b
    eager_us_per_element: float  # c
    fused_us: float | None  # F: the compiled step's fixed cost (None: it cannot compile)
    fused_us_per_element: float | None  # f
    compile_s: float  # seconds the compiling step took beyond a compiled one
    torch_us: float | None = None  # T: torch's fused kernel (None: no kernel for the settings)
    torch_us_per_element: float | None = None  # t

    def estimates(self, tensors: int, elements: int) -> dict[str, float]:
        """The modelled µs of one step of each available path for a group this shape."""
        eager = self.eager_us + self.eager_us_per_tensor * tensors
        paths = {"eager": eager + self.eager_us_per_element * elements}
        if self.fused_us is not None and self.fused_us_per_element is not None:
            paths["fused"] = self.fused_us + self.fused_us_per_element * elements
        if self.torch_us is not None and self.torch_us_per_element is not None:
            paths["torch-fused"] = self.torch_us + self.torch_us_per_element * elements
        return paths

    def choose(
        self,
        tensors: int,
        elements: int,
        steps: int | None = None,
        *,
        compiled: bool = True,
        kernel: bool = True,
    ) -> str:
        """The cheapest path for a group this shape: "eager", "fused" or "torch-fused".

        The compiled rule ("fused") must beat the best other path by more than
        `COMPILED_MARGIN` where that is torch's kernel (which is as fast as torch.optim's
        fused step by construction), and repay its compilation: with ``steps`` (the run's
        length, when known), the time it saves over the best other path in those steps
        must exceed the compilation time; without it the run is taken to be long.
        ``compiled=False`` (no compiler here) leaves it out, and ``kernel=False`` (torch has
        no kernel of the class, whatever costs a pinned entry states) torch's kernel.
        """
        paths = self.estimates(tensors, elements)
        if not kernel:
            paths.pop("torch-fused", None)
        fused = paths.pop("fused", None)
        best = min(paths, key=paths.__getitem__)  # "eager" on a tie
        if fused is None or not compiled:
            return best
        rival = paths[best] * (1 - COMPILED_MARGIN if best == "torch-fused" else 1)
        if fused >= rival:
            return best
        saved_us = paths[best] - fused
        if steps is not None and saved_us * 1e-6 * steps <= self.compile_s:
            return best
        return "fused"


def cache_path() -> Path:
    """The calibration file: ``$TRAINLAB_CALIBRATION``, else in ``$TRAINLAB_CACHE`` or
    ``~/.cache/trainlab``. Pointing ``TRAINLAB_CALIBRATION`` at a file of one's own pins the
    costs ``auto`` decides by (the tests do, so that their paths do not depend on the machine).
    """
    if explicit := os.environ.get("TRAINLAB_CALIBRATION"):  # e.g. a file with an "*" entry
        return Path(explicit)
    root = Path(os.environ.get("TRAINLAB_CACHE") or Path.home() / ".cache" / "trainlab")
    return root / CACHE_FILE


def machine_key(device: torch.device) -> str:
    """The machine the costs were measured on: processor, cores, torch, device."""
    processor = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        with cpuinfo.open(errors="replace") as lines:  # the first processor's lines suffice
            for line in lines:
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    key = f"{processor}; {os.cpu_count()} cores; torch {torch.__version__}"
    if device.type == "cuda":
        key += f"; {torch.cuda.get_device_name(device)}"
    return key


def _entry(
    cls: type, device: torch.device, dtype: torch.dtype, threads: int | None = None, switches=""
) -> str:
    """An entry of the cache: the class and its switches, the device, dtype and CPU threads."""
    threads = torch.get_num_threads() if threads is None else threads
    name = f"{cls.__module__}.{cls.__qualname__}{switches}"
    return f"{name} {device.type} {str(dtype).removeprefix('torch.')} {threads} threads"


def _switches(opt: torch.optim.Optimizer, group: dict[str, Any]) -> str:
    """The group's switches (momentum on, Nesterov, AMSGrad, ...): they change the step's cost.

    Empty when all are off, as in the class's defaults.
    """
    h = opt.hyperparameters(group)  # type: ignore[attr-defined]
    on = sorted(k for k, v in h.items() if v is True or (isinstance(v, str) and v))
    named = [k if h[k] is True else f"{k}={h[k]}" for k in on]
    return f"[{', '.join(named)}]" if named else ""


def _warn_once(path: Path, message: str) -> None:
    if (str(path), message) not in _warned:
        _warned.add((str(path), message))
        warnings.warn(f"trainlab: {message}", RuntimeWarning, stacklevel=4)


class _NotOurs(Exception):
    """The calibration path holds something that is not trainlab's calibration file."""


def _load(path: Path) -> Any:
    """The JSON document at ``path``, read only when it is a regular file of at most
    `MAX_CACHE_BYTES` (a folder cannot be read, a device or pipe never ends).

    Raises:
        FileNotFoundError: nothing is there.
        _NotOurs: something else is, saying what.
    """
    try:
        info = os.stat(path)  # follows links: the file that would be read
        if not stat.S_ISREG(info.st_mode):
            raise _NotOurs("not a regular file: a folder, device or pipe")
        if info.st_size > MAX_CACHE_BYTES:
            raise _NotOurs(f"{info.st_size:,} bytes, more than {MAX_CACHE_BYTES:,}")
        with open(path, "rb") as file:
            data = file.read(MAX_CACHE_BYTES + 1)
    except FileNotFoundError:
        raise
    except OSError as error:
        raise _NotOurs(f"unreadable: {error.strerror or error}") from None
    if len(data) > MAX_CACHE_BYTES:
        raise _NotOurs(f"grew past {MAX_CACHE_BYTES:,} bytes while read")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the stack
        raise _NotOurs("not JSON") from None


def _is_ours(document: Any) -> bool:
    """Whether a parsed file is trainlab's calibration: only such a file is replaced."""
    if not isinstance(document, dict):
        return False
    if document.get("format") == FORMAT:
        return True
    return document.keys() == _UNMARKED_KEYS and type(document["version"]) is int


def _problem(document: dict[str, Any], key: str) -> str | None:
    """Why a calibration file of trainlab's cannot be used here; None if it can."""
    if document.get("version") != VERSION:
        return f"written by another trainlab version: {_shown(document.get('version'))}"
    if document.get("machine") != key:
        return f"measured on another machine or setup: {_shown(document.get('machine'))}"
    if not isinstance(document.get("entries"), dict):
        return "its entries are not a table"
    return None


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a line: a damaged file may hold a megabyte there."""
    text = repr(value)
    return text if len(text) <= 100 else f"{text[:97]}..."


def _read(path: Path, key: str) -> dict[str, Any] | None:
    """The cached entries for this machine, {} where there are none yet, or None where the
    path holds something that is not trainlab's (never written over).

    A file of trainlab's that cannot be used here gives {} and one warning that it will be
    replaced; something else at the path gives None and one warning saying what to do.
    """
    try:
        document = _load(path)
        if not _is_ours(document):
            raise _NotOurs(f'no "format": {FORMAT!r}')
    except FileNotFoundError:
        return {}
    except _NotOurs as error:
        _warn_once(
            path,
            f"{path} is not a trainlab optimizer calibration cache ({error}); it is left as "
            "it is, and the step costs are measured again in every process: set "
            "TRAINLAB_CALIBRATION to another file, or move this one away",
        )
        return None
    problem = _problem(document, key)
    if problem is not None:
        _warn_once(
            path,
            f"replacing the optimizer calibration cache {path} ({problem}); "
            "measuring the step costs again",
        )
        return {}
    return document["entries"]


def _write(path: Path, key: str, entries: dict[str, Any]) -> None:
    """Save the cache: a temporary file beside it, renamed over it (a reader never sees half
    a file); the temporary file is removed when saving fails."""
    document = {"format": FORMAT, "version": VERSION, "machine": key, "entries": entries}
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(_json.dumps(document, indent=1), encoding="utf-8")
        os.replace(temporary, path)
    except OSError as error:  # a read-only home: measure again next process, no failure
        with contextlib.suppress(OSError):  # an unusable folder: nothing was written there
            temporary.unlink(missing_ok=True)
        _warn_once(path, f"cannot save the optimizer calibration to {path} ({error})")


def _costs_from(raw: Any) -> Costs | None:
    """A cached entry as `Costs`, or None unless every cost is a finite number >= 0.

    Only the two costs of the compiled step and the two of torch's kernel may be null
    (each pair together: it cannot compile; there is no kernel).
    """
    try:
        costs = Costs(**raw)
    except TypeError:  # not a table, or other keys
        return None
    values = dict(vars(costs))  # not asdict: it would copy a value nested a thousand deep
    for pair in (("fused_us", "fused_us_per_element"), ("torch_us", "torch_us_per_element")):
        if all(values[k] is None for k in pair):
            del values[pair[0]], values[pair[1]]

    def cost(v: Any) -> bool:  # an int beyond every float would overflow the models
        return type(v) in (int, float) and 0 <= v <= sys.float_info.max

    return costs if all(cost(v) for v in values.values()) else None


def _valid(entries: dict[str, Any]) -> dict[str, Any]:
    """The entries that are costs, as saved again: the damaged ones are measured again on
    use, so they are dropped (one nested deep enough would stop the writer)."""
    kept = {name: _costs_from(raw) for name, raw in entries.items()}
    return {name: asdict(costs) for name, costs in kept.items() if costs is not None}


def as_in_training(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``opt`` after its first step (which creates the state), its gradients made again as
    a training loop makes them: zero_grad, then one backward of the same values.

    A flat group copies a gradient it does not own (one assigned as ``p.grad = ...``) into
    its buffer at every step; a training loop pays no such copy, since zero_grad hands out
    views of the buffer and backward accumulates into them. The costs measured here (and in
    the benchmarks) are the loop's; torch.optim's implementations take the same path.
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    grads = [p.grad for p in params]
    opt.step()
    opt.zero_grad()
    torch.autograd.backward(params, grads)
    return opt


def _median_step_us(opt: torch.optim.Optimizer, device: torch.device) -> float:
    for _ in range(2):  # after the first step (the state), the fused second one compiles
        opt.step()
    return _timed(opt, device)


def _timed(opt: torch.optim.Optimizer, device: torch.device) -> float:
    samples = []
    for _ in range(_STEPS):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def measure(
    cls: type, device: torch.device, dtype: torch.dtype, settings: dict[str, Any] | None = None
) -> Costs:
    """Time a few steps of ``cls`` on small groups and fit the three cost models.

    ``settings`` are the hyperparameters of the group the costs are for (default: the
    class's defaults).
    """

    def build(shapes: list[int], backend: str) -> torch.optim.Optimizer:
        params = [torch.zeros(n, device=device, dtype=dtype, requires_grad=True) for n in shapes]
        for p in params:
            p.grad = torch.full_like(p, 1e-3)
        opt = cls(params, backend=backend)
        opt.param_groups[0].update(settings or {})  # already validated in their own group
        return as_in_training(opt)

    eager = {name: _median_step_us(build(s, "eager"), device) for name, s in _SHAPES.items()}
    # Solve the eager model from the three groups: "one" and "few" differ in tensors only
    # (of equal size), "few" and "large" in elements only.
    n = {name: sum(shapes) for name, shapes in _SHAPES.items()}  # elements of each group
    extra = n["large"] - n["few"]
    per_element = max(eager["large"] - eager["few"], 0.0) / extra
    tensors = len(_SHAPES["few"]) - len(_SHAPES["one"])
    per_tensor = (
        max(eager["few"] - eager["one"] - per_element * (n["few"] - n["one"]), 0.0) / tensors
    )
    fixed = max(eager["one"] - per_tensor - per_element * n["one"], 0.0)
    fused = torch_fused = None
    compile_s = 0.0
    from ._fused import compiler_available

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a failed compile: stays None
        if compiler_available(device):
            start = time.perf_counter()
            few = build(_SHAPES["few"], "fused")  # its first step creates the state
            few.step()  # compiles (or finds inductor's cache from an earlier process)
            first_two = time.perf_counter() - start
            few_us = _timed(few, device)
            compile_s = max(first_two - 2 * few_us * 1e-6, 0.0)
            fused = _flat_model(few, few_us, build(_SHAPES["large"], "fused"), "compiled")
        if getattr(cls, "has_torch_kernel", False):
            few = build(_SHAPES["few"], "torch-fused")
            few_us = _median_step_us(few, device)
            large = build(_SHAPES["large"], "torch-fused")
            torch_fused = _flat_model(few, few_us, large, "torch")
    fused_us, fused_per_element = fused or (None, None)
    torch_us, torch_per_element = torch_fused or (None, None)
    return Costs(
        fixed,
        per_tensor,
        per_element,
        fused_us,
        fused_per_element,
        compile_s,
        torch_us,
        torch_per_element,
    )


def _flat_model(
    few: torch.optim.Optimizer, few_us: float, large: torch.optim.Optimizer, kernel: str
) -> tuple[float, float] | None:
    """(fixed µs, µs per element) of a flat path from its "few" and "large" groups; None
    unless both stepped over their flat buffers with ``kernel`` ("compiled", "torch")."""
    device = large.param_groups[0]["params"][0].device
    large_us = _median_step_us(large, device)
    parts = few.backend_info() + large.backend_info()  # type: ignore[attr-defined]
    if not parts or not all(part["fused"] and part["kernel"] == kernel for part in parts):
        return None
    n = {name: sum(shapes) for name, shapes in _SHAPES.items()}
    per_element = max(large_us - few_us, 0.0) / (n["large"] - n["few"])
    return max(few_us - per_element * n["few"], 0.0), per_element


def costs(
    cls: type,
    device: torch.device,
    dtype: torch.dtype,
    group: dict[str, Any] | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    force: bool = False,
) -> Costs:
    """The step costs of ``cls`` here: from this process, the cache, or measured now.

    With ``optimizer`` and its ``group``, for that group's switches and hyperparameters.
    """
    switches = _switches(optimizer, group) if optimizer is not None and group else ""
    settings = {k: v for k, v in group.items() if k != "params"} if group else None
    name = _entry(cls, device, dtype, switches=switches)
    if not force and name in _costs:
        return _costs[name]
    path, key = cache_path(), machine_key(device)
    entries = _read(path, key) or {}
    pinned = _costs_from(entries.get(OVERRIDE))
    if pinned is not None:
        _costs[name] = pinned
        return pinned
    found = None if force else _costs_from(entries.get(name))
    if found is None:
        found = measure(cls, device, dtype, settings)
        latest = _read(path, key)  # another process may have added entries meanwhile
        if latest is not None:  # None: not trainlab's file, never written over
            _write(path, key, {**_valid(latest), name: asdict(found)})
    _costs[name] = found
    return found


def calibrate(
    optimizers: list[type] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    force: bool = False,
) -> dict[str, Costs]:
    """Measure (or read from the cache) the step costs ``backend="auto"`` decides by.

    Each class is calibrated at its default settings (the cache entry a group of them
    reads); a group with other switches (momentum, AMSGrad, ...) is measured on first use.

    Args:
        optimizers: the first-order classes to calibrate (default: all of them).
        device: where they will run (default: "cpu").
        dtype: the parameters' dtype (default: torch.float32).
        force: measure again even when the cache has them (default: False).

    Returns:
        {class name: its `Costs`}.
    """
    from ._base import FirstOrderOptimizer
    from .registry import OPTIMIZERS

    if optimizers is None:
        classes = (spec.cls for spec in OPTIMIZERS.values())
        optimizers = [c for c in dict.fromkeys(classes) if issubclass(c, FirstOrderOptimizer)]
    device = torch.device(device)
    measured = {}
    for cls in optimizers:
        # At the class's default settings, under the same entry as a group of them.
        opt = cls([torch.zeros(1, requires_grad=True)], backend="eager")
        group = opt.param_groups[0]
        measured[cls.__name__] = costs(cls, device, dtype, group, optimizer=opt, force=force)
    return measured
