"""The search space of a sweep: config keys and the ranges their values are drawn from.

A SPACE.toml file names config keys (as ``--set`` does) and a distribution for each::

    "optimizer.lr" = {type = "log-uniform", low = 1e-4, high = 1e-1}
    "optimizer.options.weight_decay" = {type = "uniform", low = 0.0, high = 0.1}
    "model.hidden" = {type = "categorical", choices = [[64], [128, 64]]}
    "data.batch_size" = {type = "int", low = 32, high = 256}

``log-uniform`` draws log(x) uniformly (the lecture's advice for learning rates and
regularization strengths: equal effort per decade), ``uniform`` draws x uniformly, ``int``
an integer in [low, high], ``categorical`` one of ``choices``. For the grid sampler a
continuous parameter takes ``points`` values (default 4), evenly spaced on its scale.
"""

from __future__ import annotations

import difflib
import math
import numbers
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import fail
from ..train.config import Config, dump_toml, load_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

KINDS = ("log-uniform", "uniform", "int", "categorical")
"""The kinds of parameter a SPACE.toml may declare (its ``type``): ``"log-uniform"`` and
``"uniform"`` floats, ``"int"`` and ``"categorical"``.
"""
_KEYS = {
    "log-uniform": ("type", "low", "high", "points"),
    "uniform": ("type", "low", "high", "points"),
    "int": ("type", "low", "high"),
    "categorical": ("type", "choices"),
}
DEFAULT_POINTS = 4


@dataclass(frozen=True)
class Param:
    """One dimension of the space: a config key and the distribution of its values."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    points: int = DEFAULT_POINTS

    @property
    def log(self) -> bool:
        return self.kind == "log-uniform"

    def labels(self) -> list[Any]:
        """The choices as Optuna stores them: scalars as they are, lists and tables as TOML
        text (Optuna's storages hold only None, bool, int, float and str)."""
        return [c if _scalar(c) else _toml(c) for c in self.choices]

    def value(self, stored: Any) -> Any:
        """The config value of what Optuna stored for this parameter."""
        if self.kind == "categorical":
            return self.choices[self.labels().index(stored)]
        return stored

    def suggest(self, trial: Any) -> Any:
        """The value of this parameter for an Optuna trial."""
        if self.kind == "categorical":
            return self.value(trial.suggest_categorical(self.key, self.labels()))
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def grid(self) -> list[Any]:
        """The values the grid sampler visits."""
        if self.kind == "categorical":
            return self.labels()
        if self.kind == "int":
            return list(range(self.low, self.high + 1))
        spaced = np.geomspace if self.log else np.linspace
        return [
            float(min(max(v, self.low), self.high))
            for v in spaced(self.low, self.high, self.points)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The TOML table this parameter was read from, normalized (stored with the study)."""
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices)}
        table: dict[str, Any] = {"type": self.kind, "low": self.low, "high": self.high}
        if self.kind != "int":
            table["points"] = self.points
        return table


def _number(name: str, value: Any, integer: bool) -> float | int:
    allowed = "must be an integer" if integer else "must be a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, allowed)
    if integer and not isinstance(value, numbers.Integral):
        raise fail(name, value, allowed)
    if not math.isfinite(value):
        raise fail(name, value, allowed)
    return int(value) if integer else float(value)


def parse_param(key: str, table: Any) -> Param:
    """One entry of SPACE.toml, its kind and range checked (not yet against the config)."""
    name = f"space {key}"
    if not isinstance(table, Mapping):
        raise fail(name, table, 'must be a table such as {type = "uniform", low = 0, high = 1}')
    kind = table.get("type")
    if kind not in KINDS:
        close = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise fail(f"{name} type", kind, f"unknown; {hint}allowed: {', '.join(KINDS)}")
    for item in table:
        if item not in _KEYS[kind]:
            raise fail(
                f"{name} key", item, f"unknown for {kind}; allowed: {', '.join(_KEYS[kind])}"
            )
    if kind == "categorical":
        choices = table.get("choices")
        if not isinstance(choices, list) or not choices:
            raise fail(f"{name}.choices", choices, "must be a non-empty list of values")
        return Param(key, kind, choices=tuple(choices))
    missing = [item for item in ("low", "high") if item not in table]
    if missing:
        raise fail(name, dict(table), f"missing {', '.join(map(repr, missing))}")
    integer = kind == "int"
    low = _number(f"{name}.low", table["low"], integer)
    high = _number(f"{name}.high", table["high"], integer)
    if low >= high:
        what = "an empty range" if low == high else "an inverted range"
        raise fail(f"{name}.high", high, f"must be above low = {low}: this is {what}")
    if kind == "log-uniform" and low <= 0:
        raise fail(f"{name}.low", low, "must be > 0 for a log-uniform range")
    points = table.get("points", DEFAULT_POINTS)
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise fail(f"{name}.points", points, "must be an integer >= 2")
    return Param(key, kind, low, high, points=points)


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _toml(value: Any) -> str:
    """One TOML value on one line."""
    return dump_toml({"v": value}).removeprefix("v = ").removesuffix("\n")


def override(key: str, value: Any) -> str:
    """``key=value`` as a ``--set`` override, the value written as TOML."""
    return f"{key}={_toml(value)}"


@dataclass(frozen=True)
class Space:
    """The parameters of a sweep, in file order."""

    params: tuple[Param, ...]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The space as TOML tables, key → normalized parameter table (stored with the study)."""
        return {p.key: p.to_dict() for p in self.params}

    def grid(self) -> dict[str, list[Any]]:
        """The values the grid sampler visits, per parameter key."""
        return {p.key: p.grid() for p in self.params}

    def grid_size(self) -> int:
        """The number of points of the full grid: the product of every parameter's grid length."""
        return math.prod(len(values) for values in self.grid().values())

    def by_key(self) -> dict[str, Param]:
        """The parameters by config key."""
        return {p.key: p for p in self.params}


#: The largest SPACE.toml, trials.csv or sweep.json read; a larger one is refused unread.
MAX_SWEEP_FILE_BYTES = 16 << 20


def read_bounded(path: str | Path, option: str) -> str:
    """The UTF-8 text of the regular file ``path``, refused before reading when larger than
    ``MAX_SWEEP_FILE_BYTES`` (a device such as /dev/zero never ends): ``Invalid <option>``.
    """
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise fail(option, str(path), "not a regular file (a folder, device or pipe)")
        if info.st_size > MAX_SWEEP_FILE_BYTES:
            raise fail(
                option, str(path), f"has {info.st_size:,} bytes, more than {MAX_SWEEP_FILE_BYTES:,}"
            )
        with open(path, "rb") as file:
            data = file.read(MAX_SWEEP_FILE_BYTES + 1)
        if len(data) > MAX_SWEEP_FILE_BYTES:
            raise fail(option, str(path), f"grew past {MAX_SWEEP_FILE_BYTES:,} bytes while read")
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(option, str(path), "not UTF-8 text") from None
    except OSError as error:
        raise fail(option, str(path), error.strerror or str(error)) from None


def load_space(path: str | Path, config: str | Path | None, sets: list[str]) -> Space:
    """Read SPACE.toml and check every key and range against the config.

    Each key is checked by building the config with the lowest and the highest value of its
    range (every choice of a categorical one): an unknown key, a wrong type or a value
    outside what the config allows is refused with the config's own message.

    Raises:
        ValueError: ``Invalid <what>: <value> (<allowed>)``.
    """
    text = read_bounded(path, "--space")
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise fail("--space", str(path), f"TOML syntax error: {error}") from None
    if not tree:
        raise fail("space file", str(path), "holds no parameters")
    params = tuple(parse_param(key, table) for key, table in tree.items())
    for param in params:
        values = param.choices if param.kind == "categorical" else (param.low, param.high)
        for value in values:
            try:
                load_config(config, [*sets, override(param.key, value)])
            except ValueError as error:
                raise ValueError(f"{error} [in the search space {path}]") from None
    return Space(params)


def trial_config(config: str | Path | None, sets: list[str], params: Mapping[str, Any]) -> Config:
    """The config of one trial: the base config and ``--set`` values, then the trial's."""
    return load_config(config, [*sets, *(override(k, v) for k, v in params.items())])


def differences(saved: Mapping[str, Any], space: Mapping[str, Any]) -> list[str]:
    """What differs between two spaces, one phrase per key."""
    found = []
    for key in sorted(set(saved) | set(space)):
        if key not in space:
            found.append(f"{key} is in the study but not in SPACE")
        elif key not in saved:
            found.append(f"{key} is in SPACE but not in the study")
        elif saved[key] != space[key]:
            found.append(f"{key} was {saved[key]} and is now {space[key]}")
    return found


__all__ = [
    "KINDS",
    "MAX_SWEEP_FILE_BYTES",
    "Param",
    "Space",
    "differences",
    "load_space",
    "override",
    "parse_param",
    "read_bounded",
]
