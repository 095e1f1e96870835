"""The configuration of ``trainlab train CONFIG.toml [--set section.key=value ...]``.

A run is described by a TOML file of sections, each a frozen dataclass below::

    [data]
    name = "mnist1d"
    augment = [{name = "shift1d", p = 0.5, max_shift = 4}]

    [optimizer]
    name = "adamw"
    lr = 3e-3

    [optimizer.options]
    betas = [0.9, 0.99]

Every setting has a default (the lectures' recipe for MNIST-1D), so an empty file, or no
file, is a complete config. ``load_config`` reads the file, applies the ``--set`` overrides
and validates everything *before* anything trains: types come from the annotations, ranges
from each field's check, and the registries (datasets, activations, init schemes,
optimizers, schedules, augmentations) validate their own entries by building them. Every
error has one form, ``Invalid <key>: <value> (<what is allowed>)``, naming the config key.

TOML has no null: the string ``"none"`` spells None for the settings that may be None
(``run.steps = "none"``, ``--set run.init_from=none``).

``dump_toml`` writes the fully resolved config into the run folder, ``fingerprint`` hashes it
so that ``--resume`` refuses a folder made with a different config, and ``config_keys`` /
``describe`` list every setting with its default and one line of help.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package
    import tomli as tomllib  # type: ignore[no-redef]

import tomli_w

from .. import _checks
from .._checks import fail
from .schedules import MOMENTUM_SCHEDULES

Check = Callable[[str, Any], None]

# Augmentation names in configs -> classes of trainlab.data (looked up lazily).
AUGMENTATIONS: dict[str, str] = {
    "hflip": "HorizontalFlip",
    "vflip": "VerticalFlip",
    "translate": "Translate",
    "rotate": "Rotate",
    "crop": "RandomResizedCrop",
    "jitter": "ColorJitter",
    "noise": "GaussianNoise",
    "shift1d": "Shift1d",
    "scale1d": "Scale1d",
    "noise1d": "Noise1d",
}

# Keys left out of the fingerprint: where and how a run executes and what it logs, not what
# it computes, so a resumed run may change them. run.epochs and run.steps are *in* it: the
# schedule spans the whole run, so a longer run is a different run (start a new one from
# the old weights with run.init_from instead).
NOT_FINGERPRINTED = (
    # the instruments observe the run and change none of its numbers
    "diagnostics.enabled",
    "diagnostics.every",
    "diagnostics.window",
    "diagnostics.histograms",
    "diagnostics.layers",
    "diagnostics.plots",
    "run.checkpoint_every",
    "run.checkpoint_seconds",
    "run.device",
    "run.keep_last",
    "run.tensorboard",
    "run.threads",
)

#: Keys added after runs were saved with a fingerprint: left out of the fingerprint while
#: they have these (default) values, so a run started before they existed still resumes.
LATER_KEYS: dict[str, Any] = {
    "averaging.warmup": False,
    "averaging.warmup_gamma": 1.0,
    "averaging.warmup_power": 0.75,
    "averaging.swa_start": None,
    "averaging.swa_lr": None,
    "averaging.swa_every": 1,
    "averaging.snapshots": False,
}

#: Largest config file read: a config is a page of settings, not megabytes.
MAX_CONFIG_BYTES = 1 << 20

_PLATEAU_RENAMED = {"start_step": "after_step"}  # ReduceOnPlateau keyword -> config key


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class _Rule:
    """A range check that can also say what it allows (for messages and the docs)."""

    allowed: str  # completes "must be ..."
    ok: Callable[[Any], bool]
    why: str = ""  # appended to the message

    def __call__(self, name: str, value: Any) -> None:
        if not self.ok(value):
            raise fail(name, value, f"must be {self.allowed}{self.why}")


def _at_least(low: int) -> _Rule:
    return _Rule(f"an integer >= {low}", lambda value: value >= low)


def _below(high: int) -> _Rule:
    return _Rule(f"an integer in [0, {high})", lambda value: 0 <= value < high)


class _Threads(_Rule):
    """run.threads: the docs give the rule, the message the number of cores here."""

    def __call__(self, name: str, value: Any) -> None:
        cores = os.cpu_count() or 1
        if not 1 <= value <= 4 * cores:
            raise fail(
                name,
                value,
                f"must be an integer in [1, {4 * cores}]: at most 4 × the {cores} CPU cores "
                "here, since more threads than cores only slow each step down",
            )


_threads = _Threads("an integer in [1, 4 × the CPU cores]", bool)


def _between(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> _Rule:
    def ok(value: Any) -> bool:
        below = value <= low if open_low else value < low
        above = value >= high if open_high else value > high
        return not (math.isnan(value) or below or above)

    interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return _Rule(f"a number in {interval}", ok)


_odd = _Rule(
    "an odd integer >= 1", lambda value: value >= 1 and value % 2 == 1, ", for padding='same'"
)
_pattern = _Rule("a non-empty fnmatch pattern such as '*.bias'", bool)


@dataclass(frozen=True)
class _Each:
    """A rule applied to every item of a list."""

    rule: _Rule

    @property
    def allowed(self) -> str:
        return f"a list, each item {self.rule.allowed}"

    def __call__(self, name: str, values: Any) -> None:
        for i, value in enumerate(values):
            self.rule(f"{name}[{i}]", value)


#: Settings under the names other libraries give them (Keras, Lightning, Hugging Face,
#: torch.optim, timm) or in the wrong table, each with trainlab's key: an unknown key that
#: is one of these (lower case, "-" as "_") is answered "did you mean <key>?", where
#: spelling alone guesses wrong ("learning_rate" is closest to optimizer.name, "wd" to lr).
SYNONYMS: dict[str, str] = {
    **dict.fromkeys(["lr", "learning_rate", "learningrate", "base_lr"], "optimizer.lr"),
    **dict.fromkeys(["optimizer", "optim", "optimizer_name"], "optimizer.name"),
    **dict.fromkeys(["weight_decay", "wd"], "optimizer.options.weight_decay"),
    "momentum": "optimizer.options.momentum",
    "nesterov": "optimizer.options.nesterov",
    **dict.fromkeys(
        ["betas", "beta1", "beta_1", "beta2", "beta_2", "adam_beta1", "adam_beta2"],
        "optimizer.options.betas",
    ),
    **dict.fromkeys(["eps", "epsilon", "adam_epsilon"], "optimizer.options.eps"),
    **dict.fromkeys(
        [
            "batch_size",
            "batchsize",
            "bs",
            "mini_batch_size",
            "train_batch_size",
            "per_device_train_batch_size",
        ],
        "data.batch_size",
    ),
    **dict.fromkeys(["dataset", "dataset_name"], "data.name"),
    **dict.fromkeys(
        ["validation_split", "val_split", "val_size", "validation_fraction"], "data.val_fraction"
    ),
    **dict.fromkeys(["test_size", "test_split"], "data.test_fraction"),
    **dict.fromkeys(["dropout", "dropout_rate", "drop_rate"], "model.dropout"),
    **dict.fromkeys(["activation", "activation_fn"], "model.activation"),
    **dict.fromkeys(
        ["hidden_size", "hidden_sizes", "hidden_units", "hidden_layers"], "model.hidden"
    ),
    **dict.fromkeys(["filters", "conv_channels"], "model.channels"),
    **dict.fromkeys(["batchnorm", "batch_normalization", "use_batch_norm"], "model.batch_norm"),
    **dict.fromkeys(["weight_init", "initializer", "kernel_initializer"], "model.init"),
    **dict.fromkeys(["architecture", "arch", "model_type"], "model.kind"),
    **dict.fromkeys(["loss", "loss_fn", "criterion"], "loss.name"),
    **dict.fromkeys(
        ["label_smoothing", "label_smoothing_factor", "smoothing"], "loss.label_smoothing"
    ),
    "l2": "penalty.l2",
    "l1": "penalty.l1",
    **dict.fromkeys(["scheduler", "lr_scheduler", "lr_scheduler_type"], "schedule.phases"),
    **dict.fromkeys(
        [
            "gradient_clip_val",
            "max_grad_norm",
            "clipnorm",
            "global_clipnorm",
            "clip_norm",
            "grad_clip",
            "clip_grad_norm",
        ],
        "clip.max_norm",
    ),
    **dict.fromkeys(["clipvalue", "clip_value", "clip_grad_value"], "clip.value"),
    **dict.fromkeys(["ema", "use_ema", "model_ema"], "averaging.ema"),
    **dict.fromkeys(["ema_decay", "model_ema_decay"], "averaging.decay"),
    **dict.fromkeys(
        ["epochs", "epoch", "num_epochs", "n_epochs", "max_epochs", "nb_epoch", "num_train_epochs"],
        "run.epochs",
    ),
    **dict.fromkeys(
        ["steps", "max_steps", "num_steps", "n_steps", "total_steps", "num_training_steps"],
        "run.steps",
    ),
    **dict.fromkeys(["seed", "random_seed", "random_state", "manual_seed"], "run.seed"),
    **dict.fromkeys(["device", "accelerator", "gpus"], "run.device"),
    **dict.fromkeys(["threads", "num_threads"], "run.threads"),
    **dict.fromkeys(["patience", "early_stopping_patience"], "run.early_stopping.patience"),
    **dict.fromkeys(["eval_steps", "val_check_interval", "eval_interval"], "run.eval_every"),
    **dict.fromkeys(["save_steps", "save_every", "checkpoint_interval"], "run.checkpoint_every"),
    "save_total_limit": "run.keep_last",
}

#: Top-level tables as other libraries name the one trainlab calls [run].
_SECTION_SYNONYMS = dict.fromkeys(["train", "training", "trainer", "fit"], "run")


def synonym(name: str) -> str | None:
    """The trainlab setting that another library's ``name`` for it means (`SYNONYMS`), as
    "section.key" or "optimizer.options.<keyword>"; None when ``name`` is none of them."""
    return SYNONYMS.get(name.lower().replace("-", "_"))


def _unknown(name: str, value: Any, allowed: Iterable[str], meant: str | None = None) -> ValueError:
    """An unknown key or name, with the one ``meant`` (else the closest allowed one) and the
    full list."""
    allowed = list(allowed)
    if meant is None and isinstance(value, str):
        close = difflib.get_close_matches(value, allowed, n=1)
        meant = close[0] if close else None
    hint = f"did you mean {meant!r}? " if meant else ""
    return fail(name, value, f"unknown; {hint}allowed: {', '.join(allowed)}")


def _meant(key: Any, table: str, allowed: Sequence[str]) -> str | None:
    """The setting an unknown ``key`` of ``table`` most likely means, by `SYNONYMS`, spelled
    as ``allowed`` spells it; None to leave the guess to spelling.

    ``table`` is a section ("optimizer"), a table of keywords ("optimizer.options", whose
    ``allowed`` are bare names) or "" for the top level. A synonym of a keyword the chosen
    optimizer or dataset lacks (adamw's "momentum") gives None: naming it would fail again.
    """
    target = synonym(key) if isinstance(key, str) else None
    if target is None:
        return None
    parent, _, name = target.rpartition(".")
    if name in allowed:  # a keyword of this table: "wd" -> "weight_decay"
        return name
    return target if target in allowed or parent != table else None


def _meant_section(name: str, raw: Any) -> str | None:
    """What an unknown name at the top level most likely means: a table, the section other
    libraries call that ([trainer] is [run]); a value, the setting (epochs = 10 is run.epochs)."""
    if isinstance(raw, Mapping):
        return _SECTION_SYNONYMS.get(name.lower())
    return _meant(name, "", list(SECTIONS))


def _check_keys(
    name: str,
    given: Mapping[str, Any],
    allowed: Iterable[str],
    required: Iterable[str] = (),
    shown: Any = None,
) -> None:
    """Every key of ``given`` allowed, every required one present (``shown`` in the message)."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            raise _unknown(f"{name} key", key, allowed, _meant(key, name, allowed))
    missing = [key for key in required if key not in given]
    if missing:
        shown = dict(given) if shown is None else shown
        raise fail(name, shown, f"missing {', '.join(map(repr, missing))}")


def _check_signature(
    name: str,
    given: Mapping[str, Any],
    function: Callable[..., Any],
    skip: Sequence[str] = (),
    shown: Any = None,
) -> None:
    """``given`` as keyword arguments of ``function``: known names, nothing required missing."""
    parameters = [
        p
        for p in inspect.signature(function).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in skip
    ]
    required = [p.name for p in parameters if p.default is p.empty]
    _check_keys(name, given, [p.name for p in parameters], required, shown)


def _within(error: Exception, name: str, value: Any, inner: Mapping[str, str]) -> ValueError:
    """The error of a nested validator, re-raised under the config key ``name``.

    ``inner`` maps the validator's argument names to suffixes of ``name``:
    "Invalid betas: (0.9, 1.5) (...)" becomes "Invalid optimizer.options.betas: (0.9, 1.5)
    (...)" with ``{"betas": ".betas"}``. Other names stay in parentheses:
    "Invalid schedule.phases[0] (schedule name): 'cosin' (...)".
    """
    match = re.match(r"Invalid (.+?): (.*)", str(error), re.DOTALL)
    if match is None:
        return fail(name, value, str(error))
    head, tail = match.groups()
    for argument, suffix in inner.items():
        if head == argument or head.endswith(f"({argument})"):
            return ValueError(f"Invalid {name}{suffix}: {tail}")
    return ValueError(f"Invalid {name} ({head}): {tail}")


def _suffixes(keys: Iterable[str]) -> dict[str, str]:
    return {key: f".{key}" for key in keys}


# --------------------------------------------------------------------------- types


def _is_optional(kind: Any) -> bool:
    return get_origin(kind) in (Union, UnionType) and type(None) in get_args(kind)


def _expected(kind: Any) -> str:
    """The type ``kind`` in words, for messages."""
    origin, args = get_origin(kind), get_args(kind)
    if _is_optional(kind):
        inner = next(arg for arg in args if arg is not type(None))
        return f'{_expected(inner)} or "none"'
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        return "a list of " + {int: "integers", str: "strings"}.get(args[0], "tables")
    if origin is dict:
        return "a table {key = value, ...}"
    words = {bool: "true or false", int: "an integer", float: "a float", str: "a string"}
    return words.get(kind, "any value")


def _plain(value: Any) -> Any:
    """A deep copy in TOML's shapes: tables as dicts, tuples as lists."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _coerce(
    name: str, value: Any, kind: Any, expected: str | None = None, check: Check | None = None
) -> Any:
    """``value`` as the annotated type ``kind`` (ints widen to floats, lists to tuples).

    An integer beyond 64 bits (TOML's) is refused by the field's range ``check`` when that
    refuses it, so that a setting with a narrower range (run.seed) has one rule and one
    message however large the number; otherwise as not fitting in 64 bits.
    """
    expected = expected or _expected(kind)
    origin, args = get_origin(kind), get_args(kind)
    if _is_optional(kind):
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        inner = next(arg for arg in args if arg is not type(None))
        return _coerce(name, value, inner, expected, check)
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            raise fail(name, value, f"must be {expected}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail(name, value, f"must be {expected}")
        return tuple(_coerce(f"{name}[{i}]", item, args[0]) for i, item in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
            raise fail(name, value, f"must be {expected}")
        return _plain(value)
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        value = int(value) if ok else value
        if ok and not -(2**63) <= value < 2**63:
            if check is not None:
                check(name, value)
            raise fail(name, value, f"must be {expected} that fits in 64 bits")
    elif kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif kind is str:
        ok = isinstance(value, str)
    else:
        ok = True
    if not ok:
        raise fail(name, value, f"must be {expected}")
    return value


# --------------------------------------------------------------------------- sections


def _about(text: str, check: Check | None = None) -> dict[str, Any]:
    """A field's metadata: its one line of help and its range check (after the type check)."""
    return {"help": text, "check": check}


@cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


class _Section:
    """Validation shared by the sections: each field's type, its check, then ``_validate``."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            name, check = f"{self.section}.{f.name}", f.metadata["check"]
            value = _coerce(name, getattr(self, f.name), hints[f.name], check=check)
            if check is not None and value is not None:
                check(name, value)
            object.__setattr__(self, f.name, value)
        self._validate()

    def _validate(self) -> None:
        """Checks between fields and against the registries; sections override it."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # normalized values of a frozen section


@dataclass(frozen=True)
class DataConfig(_Section):
    """[data]: the dataset, its validation split, normalization, batches and augmentation."""

    section: ClassVar[str] = "data"
    name: str = field(
        default="mnist1d", metadata=_about("dataset: a key of trainlab.data.DATASETS")
    )
    options: dict[str, Any] = field(
        default_factory=dict, metadata=_about("keyword arguments of data.load, e.g. root or path")
    )
    val_fraction: float = field(
        default=0.2,
        metadata=_about("fraction of the training set held out for validation", _between(0, 0.5)),
    )
    test_fraction: float | None = field(
        default=None,
        metadata=_about(
            "fraction held out for testing when the dataset has no fixed test split (an error "
            "for one that has); none: the same as val_fraction, or 0.2 if that is 0",
            _between(0, 1, open_high=True),
        ),
    )
    stratify: bool = field(
        default=True, metadata=_about("keep the class proportions in the validation split")
    )
    normalize: Literal["feature", "channel", "mean", "none"] = field(
        default="feature",
        metadata=_about("statistics fitted on the training split only: per feature, channel, mean"),
    )
    batch_size: int = field(default=128, metadata=_about("examples per mini-batch", _at_least(1)))
    shuffle: Literal["epoch", "once", "none", "replacement"] = field(
        default="epoch",
        metadata=_about("example order: reshuffled every epoch, once, never, or with replacement"),
    )
    drop_last: bool = field(
        default=False, metadata=_about("drop the last, incomplete batch of every epoch")
    )
    augment: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata=_about(
            "train-time augmentations [{name = ..., p = ..., ...}]; " + ", ".join(AUGMENTATIONS)
        ),
    )

    def _validate(self) -> None:
        from trainlab.data import DATASETS

        spec = DATASETS.get(self.name)
        if spec is None:
            raise _unknown("data.name", self.name, DATASETS)
        _check_keys("data.options", self.options, spec.options, spec.required)
        if self.test_fraction is not None and self.val_fraction + self.test_fraction >= 1:
            raise fail(
                "data.test_fraction",
                self.test_fraction,
                f"must be < 1 − data.val_fraction = {1 - self.val_fraction:g}, so that data is "
                "left for training",
            )
        self.augmentations()

    def augmentations(self) -> list[Any]:
        """The ``trainlab.data`` augmentation objects ``augment`` lists, in order."""
        from trainlab import data

        built = []
        for i, entry in enumerate(self.augment):
            name = f"data.augment[{i}]"
            kind = entry.get("name")
            if kind not in AUGMENTATIONS:
                raise _unknown(f"{name}.name", kind, AUGMENTATIONS)
            cls = getattr(data, AUGMENTATIONS[kind])
            options = {key: value for key, value in entry.items() if key != "name"}
            _check_signature(name, options, cls, shown=entry)
            try:
                built.append(cls(**options))
            except (ValueError, TypeError) as error:
                raise _within(error, name, entry, _suffixes(options)) from None
        return built


@dataclass(frozen=True)
class ModelConfig(_Section):
    """[model]: the network (trainlab.models.cnn or mlp) and its initialization."""

    section: ClassVar[str] = "model"
    kind: Literal["cnn", "mlp"] = field(
        default="cnn", metadata=_about("convolutional network or multilayer perceptron")
    )
    channels: tuple[int, ...] = field(
        default=(32, 64),
        metadata=_about("output channels of each conv block (cnn)", _Each(_at_least(1))),
    )
    hidden: tuple[int, ...] = field(
        default=(),
        metadata=_about("widths of the dense hidden layers before the head", _Each(_at_least(1))),
    )
    kernel_size: int = field(default=5, metadata=_about("conv kernel size, odd (cnn)", _odd))
    activation: str = field(
        default="relu", metadata=_about("nonlinearity, e.g. relu, gelu, leaky_relu(0.1)")
    )
    batch_norm: bool = field(default=True, metadata=_about("BatchNorm before each nonlinearity"))
    dropout: float = field(
        default=0.2,
        metadata=_about(
            "inverted-dropout probability before the classifier's Linear layers",
            _between(0, 1, open_high=True),
        ),
    )
    global_pool: bool = field(
        default=True, metadata=_about("average each channel over space before the head (cnn)")
    )
    init: str = field(
        default="kaiming_normal",
        metadata=_about("weight init: a key of trainlab.models.INIT_SCHEMES"),
    )
    init_options: dict[str, Any] = field(
        default_factory=dict, metadata=_about("keywords of the init scheme, e.g. gain or mode")
    )

    def _validate(self) -> None:
        import torch

        from trainlab import models

        if self.kind == "cnn" and not self.channels:
            raise fail("model.channels", [], "must list at least one conv block for a cnn")
        try:
            models.parse_activation(self.activation)
        except ValueError as error:
            raise _within(error, "model.activation", self.activation, {"activation": ""}) from None
        scheme = models.INIT_SCHEMES.get(self.init)
        if scheme is None:
            raise _unknown("model.init", self.init, models.INIT_SCHEMES)
        _check_keys("model.init_options", self.init_options, scheme.keywords)
        try:
            models.init_(torch.nn.Linear(2, 2), self.init, **self.init_options)
        except (ValueError, TypeError) as error:
            options = self.init_options
            raise _within(error, "model.init_options", options, _suffixes(options)) from None


@dataclass(frozen=True)
class OptimizerConfig(_Section):
    """[optimizer]: a trainlab.optim optimizer and the parameters exempt from weight decay."""

    section: ClassVar[str] = "optimizer"
    name: str = field(
        default="adamw",
        metadata=_about(
            "a key of trainlab.optim.OPTIMIZERS; lbfgs and newton step on the whole "
            "training set (one step an epoch)"
        ),
    )
    lr: float = field(
        default=1e-3,
        metadata=_about("base learning rate, scaled by the schedule", _checks.positive),
    )
    options: dict[str, Any] = field(
        default_factory=dict, metadata=_about("the optimizer's other keywords, e.g. betas")
    )
    no_decay: tuple[str, ...] = field(
        default=("*.bias", "*.norm.*"),
        metadata=_about(
            "parameter-name patterns put in a second group with weight_decay = 0", _Each(_pattern)
        ),
    )
    backend: Literal["auto", "eager", "fused", "torch-fused"] = field(
        default="auto",
        metadata=_about(
            "eager: one update per parameter; fused: one compiled update per group; "
            "torch-fused: torch's fused kernel per group (sgd, adagrad, adam, adamw); "
            "auto: the one measured fastest"
        ),
    )

    def _validate(self) -> None:
        import torch

        from trainlab.optim import OPTIMIZERS

        spec = OPTIMIZERS.get(self.name)
        if spec is None:
            raise _unknown("optimizer.name", self.name, OPTIMIZERS)
        for own in ("lr", "backend"):
            if own in self.options:
                raise fail("optimizer.options key", own, f"is a setting: use optimizer.{own}")
        _check_signature("optimizer.options", self.options, spec.cls, ("params", "lr", "backend"))
        if self.backend == "torch-fused" and not getattr(spec.cls, "has_torch_kernel", False):
            raise fail(
                "optimizer.backend",
                self.backend,
                f"torch has no fused {self.name} kernel: use 'fused' (trainlab's compiled "
                "step) or 'auto'",
            )
        probe = [torch.zeros(1, requires_grad=True)]
        try:  # the constructor checks values and combinations (Nesterov needs momentum)
            backend = {} if spec.closure else {"backend": "eager"}
            spec.cls(probe, lr=self.lr, **backend, **self.options)
        except (ValueError, TypeError) as error:
            options = self.options
            raise _within(error, "optimizer.options", options, _suffixes(options)) from None


@dataclass(frozen=True)
class LossConfig(_Section):
    """[loss]: the data loss (penalties are in [penalty])."""

    section: ClassVar[str] = "loss"
    name: Literal["cross_entropy", "mse", "huber", "l1"] = field(
        default="cross_entropy",
        metadata=_about(
            "softmax cross-entropy, or squared / Huber / absolute error (against one-hot "
            "targets for classes)"
        ),
    )
    label_smoothing: float = field(
        default=0.0,
        metadata=_about(
            "cross-entropy target: 1 - ε on the class, ε/K spread", _between(0, 1, open_high=True)
        ),
    )


@dataclass(frozen=True)
class PenaltyConfig(_Section):
    """[penalty]: explicit regularization added to the loss, λ₂·‖W‖² + λ₁·‖W‖₁."""

    section: ClassVar[str] = "penalty"
    l2: float = field(
        default=0.0,
        metadata=_about("λ₂ of the L2 penalty (no ½: gradient 2·λ₂·W)", _checks.nonnegative),
    )
    l1: float = field(default=0.0, metadata=_about("λ₁ of the L1 penalty", _checks.nonnegative))
    exclude: tuple[str, ...] = field(
        default=("*.bias", "*.norm.*"),
        metadata=_about("parameter-name patterns the penalties leave out", _Each(_pattern)),
    )


def _plateau_defaults() -> dict[str, Any]:
    """The keys of [schedule] plateau and their defaults, from ReduceOnPlateau's signature."""
    from .plateau import ReduceOnPlateau

    defaults: dict[str, Any] = {"metric": "val_loss"}
    for name, parameter in inspect.signature(ReduceOnPlateau).parameters.items():
        if name != "mode":  # follows from the metric
            defaults[_PLATEAU_RENAMED.get(name, name)] = parameter.default
    return defaults


@dataclass(frozen=True)
class ScheduleConfig(_Section):
    """[schedule]: the learning-rate factor per step, reduce-on-plateau and the momentum."""

    section: ClassVar[str] = "schedule"
    phases: tuple[dict[str, Any], ...] = field(
        default=(),
        metadata=_about(
            'phases for train.build_schedule, e.g. [{name = "cosine", total = 1000}]; [] = constant'
        ),
    )
    plateau: dict[str, Any] | None = field(
        default=None,
        metadata=_about(
            "reduce-on-plateau {metric, patience, factor, cooldown, threshold, after_step}"
        ),
    )
    momentum: dict[str, Any] | None = field(
        default=None,
        metadata=_about(
            'momentum (or Adam\'s β₁) per step, e.g. {name = "linear", start = 0.5, end = 0.99, '
            "steps = 1000}; " + ", ".join(MOMENTUM_SCHEDULES) + "; none: the optimizer's own"
        ),
    )

    def _validate(self) -> None:
        self.schedule()
        if self.plateau is not None:
            self._set("plateau", {**_plateau_defaults(), **self.plateau})
            self.reduce_on_plateau()
        momentum = self.momentum_schedule()
        if momentum is not None:  # every setting written out, defaults included
            self._set("momentum", momentum.to_config())

    def schedule(self) -> Any:
        """The ``trainlab.train`` schedule of ``phases``; None for [] (a constant rate)."""
        from .schedules import build_schedule

        if not self.phases:
            return None
        for i, phase in enumerate(self.phases):  # alone first, to name the phase at fault
            try:
                build_schedule([phase])
            except (ValueError, TypeError) as error:
                raise _within(error, f"schedule.phases[{i}]", phase, _suffixes(phase)) from None
        try:
            return build_schedule(list(self.phases))
        except (ValueError, TypeError) as error:
            raise _within(error, "schedule.phases", list(self.phases), {}) from None

    def momentum_schedule(self) -> Any:
        """The ``trainlab.train`` momentum schedule of ``momentum``, or None."""
        if self.momentum is None:
            return None
        name = self.momentum.get("name")
        cls = MOMENTUM_SCHEDULES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise _unknown("schedule.momentum.name", name, MOMENTUM_SCHEDULES)
        options = {key: value for key, value in self.momentum.items() if key != "name"}
        _check_signature("schedule.momentum", options, cls, shown=self.momentum)
        try:
            return cls(**options)
        except (ValueError, TypeError) as error:
            raise _within(error, "schedule.momentum", self.momentum, _suffixes(options)) from None

    def reduce_on_plateau(self) -> Any:
        """The ``ReduceOnPlateau`` of ``plateau``, or None."""
        from .plateau import METRIC_MODES, ReduceOnPlateau

        if self.plateau is None:
            return None
        defaults = _plateau_defaults()
        _check_keys("schedule.plateau", self.plateau, defaults)
        plateau = {**defaults, **self.plateau}
        metric = plateau.pop("metric")
        if not isinstance(metric, str) or metric not in METRIC_MODES:
            allowed = "must be one of " + ", ".join(map(repr, METRIC_MODES))
            raise fail("schedule.plateau.metric", metric, allowed)
        argument = {key: name for name, key in _PLATEAU_RENAMED.items()}  # config key -> keyword
        keywords = {argument.get(key, key): value for key, value in plateau.items()}
        inner = {argument.get(key, key): f".{key}" for key in plateau}
        try:
            return ReduceOnPlateau(mode=METRIC_MODES[metric], **keywords)
        except (ValueError, TypeError) as error:
            raise _within(error, "schedule.plateau", self.plateau, inner) from None


@dataclass(frozen=True)
class ClipConfig(_Section):
    """[clip]: gradient clipping before each step."""

    section: ClassVar[str] = "clip"
    mode: Literal["none", "norm", "value"] = field(
        default="none", metadata=_about("none, rescale by the global norm, or clamp each element")
    )
    max_norm: float = field(
        default=1.0, metadata=_about("largest global gradient norm (mode = norm)", _checks.positive)
    )
    value: float = field(
        default=1.0,
        metadata=_about("largest gradient element magnitude (mode = value)", _checks.positive),
    )


#: [averaging] settings that do something only with the others named here set.
_AVERAGING_NEEDS: dict[str, tuple[str, ...]] = {
    "warmup": ("ema",),
    "warmup_gamma": ("ema", "warmup"),
    "warmup_power": ("ema", "warmup"),
    "swa_lr": ("swa_start",),
    "swa_every": ("swa_start",),
}


@dataclass(frozen=True)
class AveragingConfig(_Section):
    """[averaging]: averaged weights evaluated beside the raw ones: EMA, SWA, snapshots.

    EMA (Polyak) averages with an exponential window; SWA (from ``swa_start`` on) with equal
    weights, its BatchNorm statistics recomputed at the end; ``snapshots`` saves the weights
    at the end of every cycle of a ``cyclic_cosine`` schedule (a snapshot ensemble).
    """

    section: ClassVar[str] = "averaging"
    ema: bool = field(default=False, metadata=_about("keep EMA weights and evaluate them too"))
    decay: float = field(
        default=0.995,
        metadata=_about(
            "EMA decay β: θ̄ ← β·θ̄ + (1 − β)·θ", _between(0, 1, open_low=True, open_high=True)
        ),
    )
    bias_correction: bool = field(
        default=False, metadata=_about("divide by 1 − βᵗ, as Adam does for its moments")
    )
    warmup: bool = field(
        default=False,
        metadata=_about(
            "EMA decay warmup β_t = min(decay, 1 − (1 + t/γ)^−p) after t updates (timm's "
            "ModelEmaV3); not with bias_correction"
        ),
    )
    warmup_gamma: float = field(
        default=1.0, metadata=_about("γ of the EMA decay warmup", _checks.positive)
    )
    warmup_power: float = field(
        default=0.75,
        metadata=_about(
            "p of the EMA decay warmup (3/4: crowsonkb's value for runs under a million "
            "steps; timm's default is 2/3)",
            _checks.positive,
        ),
    )
    swa_start: int | None = field(
        default=None,
        metadata=_about(
            "SWA: average the weights after steps swa_start + k·swa_every (k >= 1) with "
            "equal weights; none: no SWA",
            _at_least(0),
        ),
    )
    swa_lr: float | None = field(
        default=None,
        metadata=_about(
            "constant learning rate of every param group from step swa_start on, replacing "
            "the schedule; plateau drops and rollbacks still cut it (logged as event "
            "swa_started); none: keep the schedule",
            _checks.positive,
        ),
    )
    swa_every: int = field(
        default=1, metadata=_about("steps between two SWA averages", _at_least(1))
    )
    snapshots: bool = field(
        default=False,
        metadata=_about(
            "save the weights at the end of every cycle of the cyclic_cosine schedule "
            "phase as snapshots/cycle-<k>.safetensors (snapshot ensembles)"
        ),
    )

    def _validate(self) -> None:
        if self.warmup and self.bias_correction:
            raise fail(
                "averaging.warmup",
                True,
                "must be false with averaging.bias_correction = true: both remove the pull "
                "towards the first weights, so choose one",
            )
        # A setting whose feature is off would be ignored without a word: refuse it.
        defaults = {f.name: f.default for f in fields(self)}
        for key, needed in _AVERAGING_NEEDS.items():
            value = getattr(self, key)
            # off: still the default False or None (by identity: swa_start = 0 is a start)
            missing = [name for name in needed if getattr(self, name) is defaults[name]]
            if value == defaults[key] or not missing:
                continue
            shown = [
                f"averaging.{name}" + (" = true" if defaults[name] is False else "")
                for name in missing
            ]
            them = "it" if len(missing) == 1 else "them"
            raise fail(
                f"averaging.{key}",
                value,
                f"needs {' and '.join(shown)}: set {them}, or remove {key}",
            )


@dataclass(frozen=True)
class DiagnosticsConfig(_Section):
    """[diagnostics]: live instruments and verdicts while training (the lectures' babysitting)."""

    section: ClassVar[str] = "diagnostics"
    enabled: bool = field(
        default=False,
        metadata=_about(
            "per-layer activations, dead/saturated units, gradient and update/weight ratios, "
            "and verdicts (lr too high/low, plateau, over/underfitting) in summary.json"
        ),
    )
    every: int = field(
        default=10, metadata=_about("optimizer steps between two samples", _at_least(1))
    )
    window: int = field(
        default=10,
        metadata=_about(
            "samples over which a unit must stay inactive to count as dead, and over which "
            "loss trends are judged",
            _at_least(2),
        ),
    )
    histograms: bool = field(
        default=False, metadata=_about("also keep activation and gradient histograms")
    )
    layers: tuple[str, ...] = field(
        default=(),
        metadata=_about(
            'module-name patterns to instrument, e.g. ["block*"]; empty: every layer',
            _Each(_pattern),
        ),
    )
    plots: bool = field(default=True, metadata=_about("write PNG figures into the run folder"))


_EARLY_STOPPING = {"patience": 10, "restore_best": True}


@dataclass(frozen=True)
class RunConfig(_Section):
    """[run]: length, seed, device, evaluation, checkpoints and warm starts.

    Length: ``steps``, when set, wins; otherwise the run lasts ``epochs`` epochs.
    """

    section: ClassVar[str] = "run"
    epochs: int = field(
        default=30, metadata=_about("epochs to train, unless steps is set", _at_least(1))
    )
    steps: int | None = field(
        default=None, metadata=_about("optimizer steps to train; overrides epochs", _at_least(1))
    )
    seed: int = field(
        default=0,
        metadata=_about("seed of every random choice (split, init, order, dropout)", _below(2**32)),
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata=_about("auto: cuda when available")
    )
    threads: int | None = field(
        default=None, metadata=_about("torch CPU threads; none: torch's default", _threads)
    )
    eval_every: int | None = field(
        default=None, metadata=_about("steps between evaluations; none: every epoch", _at_least(1))
    )
    checkpoint_every: int | None = field(
        default=None, metadata=_about("steps between checkpoints; none: every epoch", _at_least(1))
    )
    checkpoint_seconds: float = field(
        default=30.0,
        metadata=_about(
            "skip a checkpoint_every checkpoint while the last one is younger than this "
            "(a new best, early stopping and the end are always saved); 0: never skip",
            _checks.nonnegative,
        ),
    )
    keep_last: int = field(
        default=2, metadata=_about("checkpoints kept, besides the best", _at_least(1))
    )
    keep_best_by: Literal["val_accuracy", "val_loss"] | None = field(
        default="val_accuracy",
        metadata=_about("metric that picks the best checkpoint; none: keep no best"),
    )
    early_stopping: dict[str, Any] | None = field(
        default=None,
        metadata=_about("{patience, restore_best}: stop when keep_best_by (or val_loss) stalls"),
    )
    nonfinite: Literal["raise", "skip", "rollback"] = field(
        default="raise",
        metadata=_about(
            "on a NaN/inf loss or gradient: stop, skip the step, or reload the last checkpoint"
        ),
    )
    init_from: str | None = field(
        default=None, metadata=_about("weights file (.safetensors) to start from")
    )
    init_skip: tuple[str, ...] = field(
        default=(),
        metadata=_about(
            'weight-name patterns not loaded from init_from, e.g. ["head.*"]', _Each(_pattern)
        ),
    )
    freeze: tuple[str, ...] = field(
        default=(),
        metadata=_about(
            "parameter-name patterns kept fixed (requires_grad = False)", _Each(_pattern)
        ),
    )
    tensorboard: bool = field(default=False, metadata=_about("also write TensorBoard event files"))

    def _validate(self) -> None:
        if self.early_stopping is not None:
            _check_keys("run.early_stopping", self.early_stopping, _EARLY_STOPPING)
            stopping = {**_EARLY_STOPPING, **self.early_stopping}
            patience = _coerce("run.early_stopping.patience", stopping["patience"], int)
            _at_least(0)("run.early_stopping.patience", patience)
            _coerce("run.early_stopping.restore_best", stopping["restore_best"], bool)
            self._set("early_stopping", stopping)
        if self.init_skip and self.init_from is None:
            raise fail("run.init_skip", list(self.init_skip), "needs run.init_from")

    def total_steps(self, steps_per_epoch: int) -> int:
        """The run's length in optimizer steps: ``steps`` when set, else epochs × steps/epoch."""
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch


SECTIONS: dict[str, type[_Section]] = {
    cls.section: cls
    for cls in (
        DataConfig,
        ModelConfig,
        OptimizerConfig,
        LossConfig,
        PenaltyConfig,
        ScheduleConfig,
        ClipConfig,
        AveragingConfig,
        DiagnosticsConfig,
        RunConfig,
    )
}


def _section(cls: type[_Section], raw: Any) -> _Section:
    """A section from its TOML table, refusing unknown keys."""
    if not isinstance(raw, Mapping):
        raise fail(cls.section, raw, f"must be a table [{cls.section}]")
    keys = [f"{cls.section}.{f.name}" for f in fields(cls)]  # type: ignore[arg-type]
    for key in raw:
        if f"{cls.section}.{key}" not in keys:
            meant = _meant(key, cls.section, keys)
            raise _unknown("config key", f"{cls.section}.{key}", keys, meant)
    return cls(**raw)


@dataclass(frozen=True)
class Config:
    """Every setting of a training run, validated; one frozen section per TOML table."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        for name, cls in SECTIONS.items():  # tables may be given as dicts
            value = getattr(self, name)
            if not isinstance(value, cls):
                object.__setattr__(self, name, _section(cls, value))

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> Config:
        """The config a parsed TOML document describes; missing sections and keys default."""
        if not isinstance(tree, Mapping):
            raise fail("config", tree, "must be a table of sections")
        for name, raw in tree.items():
            if name not in SECTIONS:
                raise _unknown("config section", name, SECTIONS, _meant_section(name, raw))
        return cls(**{name: _section(SECTIONS[name], raw) for name, raw in tree.items()})

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting as plain values: {section: {key: value}}, lists for tuples."""
        return {
            name: {f.name: _plain(getattr(section, f.name)) for f in fields(section)}
            for name in SECTIONS
            for section in [getattr(self, name)]
        }


# --------------------------------------------------------------------------- loading


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        if path.exists() and not path.is_file():
            raise fail("config file", str(path), "not a regular file (a folder or a device)")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise fail("config file", str(path), f"larger than {MAX_CONFIG_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("config file", str(path), "no such file") from None
    except UnicodeDecodeError:
        raise fail("config file", str(path), "not UTF-8 text") from None
    except OSError as error:
        raise fail("config file", str(path), error.strerror or str(error)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:  # its message ends "(at line L, column C)"
        raise fail("config file", str(path), f"TOML syntax error: {error}") from None


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value, else the bare text as a string (``run.device=cpu``)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def _apply_override(tree: dict[str, Any], item: str) -> None:
    """Set ``section.key[.subkey...]=value`` in the parsed document ``tree``."""
    allowed = "must be section.key=value, e.g. optimizer.lr=3e-3"
    if not isinstance(item, str):
        raise fail("--set", item, allowed)
    key, equals, text = item.partition("=")
    parts = key.strip().split(".")
    if equals and len(parts) == 1 and (meant := _meant(parts[0], "", [])):  # epochs=10
        suggestion = f"{meant}={text.strip()}"
        raise fail("--set", item, f"must be section.key=value; did you mean {suggestion!r}?")
    if not equals or len(parts) < 2 or not all(parts) or "\n" in text or "\r" in text:
        raise fail("--set", item, allowed)
    node = tree
    for depth, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise fail("--set", item, f"{'.'.join(parts[: depth + 1])} is not a table")
    node[parts[-1]] = _parse_value(text)


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Read a TOML config, apply ``--set`` overrides in order, validate.

    Args:
        path: the TOML file, or None for the defaults.
        overrides: ``"section.key=value"`` strings; the value is parsed as TOML
            (``optimizer.lr=3e-3``, ``model.channels=[32,64]``), or taken as a string when it
            does not parse (``run.device=cpu``). A longer key reaches into a table:
            ``optimizer.options.betas=[0.9,0.99]``. Overrides win over the file.

    Raises:
        ValueError: ``Invalid <key>: <value> (<allowed>)`` for a missing or malformed file,
            a malformed override, an unknown section or key, a wrong type or a bad value.
    """
    tree = {} if path is None else _read_toml(Path(path))
    for item in overrides:
        _apply_override(tree, item)
    return Config.from_dict(tree)


# --------------------------------------------------------------------------- TOML writer


def _toml_ready(value: Any) -> Any:
    """``value`` as the plain types tomli-w writes, refusing what TOML cannot hold.

    tomli-w raises a TypeError for None and writes integers of any size; TOML has no null
    and its integers are 64-bit, so both are refused here, in the one error style.
    """
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        if not -(2**63) <= int(value) < 2**63:
            raise fail("TOML value", value, "integers must fit in 64 bits")
        return int(value)
    if isinstance(value, numbers.Real):  # numpy floats too; inf and nan are TOML floats
        return float(value)
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise fail("TOML key", key, "must be a string")
        return {key: _toml_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(item) for item in value]
    allowed = "must be a bool, integer, float, string, list or table (TOML has no null)"
    raise fail("TOML value", value, allowed)


def _one_line_arrays(text: str) -> str:
    r"""tomli-w's arrays, one item per line, on one line: ``[\n1,\n2,\n]`` → ``[1, 2]``.

    Exact for text written with ``indent=0``: tomli-w escapes the newlines inside strings,
    so the only line breaks within a value are those around array items, and only those
    follow a "," or a "[" (a key/value line ends with its value, a header with "]").
    """
    return text.replace(",\n]", "]").replace("[\n", "[").replace(",\n", ", ")


def _toml_inline(value: Any) -> str:
    """One TOML value on one line (tables inline), for ``describe``'s commented lines.

    tomli-w writes the scalars and keys (quotes, escapes, inf, nan); the brackets are put
    here, since tomli-w writes a table under its own [header].
    """
    if isinstance(value, Mapping):
        pairs = (f"{_toml_key(key)} = {_toml_inline(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml_inline, value)) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").removesuffix("\n")


def _toml_key(key: str) -> str:
    return tomli_w.dumps({key: 0}).removesuffix(" = 0\n")


def dump_toml(config: Config | Mapping[str, Any]) -> str:
    """TOML text of a config (None written as "none") or of any table of TOML values.

    ``load_config`` of the text of a ``Config`` gives an equal ``Config``. Written by
    tomli-w: dicts are [tables], lists of dicts inline tables (or [[arrays of tables]]
    where one holds a list or is long); arrays stay on one line; floats include inf and nan.
    """
    if isinstance(config, Config):
        tree: Mapping[str, Any] = {
            name: {key: "none" if value is None else value for key, value in table.items()}
            for name, table in config.to_dict().items()
        }
    else:
        tree = config
    return _one_line_arrays(tomli_w.dumps(_toml_ready(tree), indent=0))


# --------------------------------------------------------------------------- docs, hashing


def config_keys() -> list[str]:
    """Every setting as "section.key", in file order."""
    return [f"{name}.{f.name}" for name, cls in SECTIONS.items() for f in fields(cls)]  # type: ignore[arg-type]


@dataclass(frozen=True)
class Setting:
    """One config key as ``trainlab train --help`` and the config reference describe it."""

    key: str  # "section.name"
    default: Any  # the TOML value ("none" for None)
    type: str  # the accepted type in words, e.g. 'one of "epoch", "once"'
    allowed: str | None  # the range check's rule, e.g. "an integer >= 1"
    help: str
    resumable: bool  # may differ when a run resumes (left out of the fingerprint)

    @property
    def default_toml(self) -> str:
        """The default as it is written in a config file, e.g. ``[32, 64]`` or ``{}``."""
        return _toml_inline(self.default)


def settings() -> list[Setting]:
    """Every setting of a run with its default, type, allowed range and meaning, in file order.

    The one source of ``trainlab train --help`` and of the documentation's config reference.
    """
    rows = []
    for name, cls in SECTIONS.items():
        hints = _hints(cls)
        for f in fields(cls):  # type: ignore[arg-type]
            default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            check = f.metadata["check"]
            key = f"{name}.{f.name}"
            rows.append(
                Setting(
                    key=key,
                    default=_toml_ready("none" if default is None else default),
                    type=_expected(hints[f.name]),
                    allowed=getattr(check, "allowed", None),
                    help=f.metadata["help"],
                    resumable=key in NOT_FINGERPRINTED,
                )
            )
    return rows


def section_summaries() -> dict[str, str]:
    """Each section's one-line description, e.g. {"data": "[data]: the dataset, ..."}."""
    return {name: (cls.__doc__ or "").splitlines()[0] for name, cls in SECTIONS.items()}


def describe() -> str:
    """Every setting with its default and its help: a commented TOML file of the defaults."""
    lines = ["# trainlab train: every setting, its default and what it does"]
    summaries, section = section_summaries(), None
    for setting in settings():
        name, key = setting.key.split(".", 1)
        if name != section:
            section = name
            lines += ["", f"# {summaries[name]}", f"[{name}]"]
        lines.append(f"{f'{key} = {setting.default_toml}':<40} # {setting.help}")
    return "\n".join(lines) + "\n"


def fingerprint(config: Config) -> str:
    """SHA-256 (hex) of the resolved config, less ``NOT_FINGERPRINTED`` (and ``LATER_KEYS``
    at their defaults).

    ``--resume`` compares it with the run folder's to refuse continuing a run under a
    different config.
    """
    tree = config.to_dict()
    for key in NOT_FINGERPRINTED:
        section, name = key.split(".")
        del tree[section][name]
    for key, default in LATER_KEYS.items():
        section, name = key.split(".")
        if tree[section][name] == default:
            del tree[section][name]
    text = json.dumps(tree, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = [
    "AUGMENTATIONS",
    "LATER_KEYS",
    "NOT_FINGERPRINTED",
    "SECTIONS",
    "AveragingConfig",
    "ClipConfig",
    "Config",
    "DataConfig",
    "DiagnosticsConfig",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PenaltyConfig",
    "RunConfig",
    "ScheduleConfig",
    "config_keys",
    "describe",
    "dump_toml",
    "fingerprint",
    "load_config",
]
