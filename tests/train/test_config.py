"""trainlab.train.config: TOML → validated, frozen settings → TOML, with one error style."""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from trainlab.optim import OPTIMIZERS
from trainlab.train import Phases
from trainlab.train.config import (
    NOT_FINGERPRINTED,
    SECTIONS,
    SYNONYMS,
    Config,
    config_keys,
    describe,
    dump_toml,
    fingerprint,
    load_config,
    settings,
)
from trainlab.train.schedules import LinearAnneal, OneCycle, OneCycleMomentum


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def reload(tmp_path: Path, config: Config) -> Config:
    return load_config(write(tmp_path, dump_toml(config), "dumped.toml"))


def error(pattern: str, *overrides: str) -> None:
    """``--set`` overrides alone must fail with a message matching ``pattern``."""
    with pytest.raises(ValueError, match=pattern):
        load_config(None, list(overrides))


# --------------------------------------------------------------------------- defaults


def test_defaults_load_without_a_file() -> None:
    config = load_config(None)
    assert config == Config()
    assert (config.data.name, config.model.kind, config.optimizer.name) == (
        "mnist1d",
        "cnn",
        "adamw",
    )
    assert config.schedule.phases == () and config.schedule.schedule() is None  # constant
    assert config.schedule.plateau is None and config.run.steps is None


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_sections_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().optimizer.lr = 1.0  # type: ignore[misc]


def test_config_keys_cover_every_field_with_help() -> None:
    keys = config_keys()
    assert [f.name for f in dataclasses.fields(Config)] == list(SECTIONS)
    assert len(keys) == len(set(keys)) == sum(len(dataclasses.fields(c)) for c in SECTIONS.values())
    assert {"optimizer.lr", "run.nonfinite", "schedule.plateau", "data.augment"} <= set(keys)
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            assert f.metadata["help"] and "\n" not in f.metadata["help"], f.name


def test_describe_is_a_commented_toml_file_of_the_defaults() -> None:
    text = describe()
    assert tomllib.loads(text) == tomllib.loads(dump_toml(Config()))
    for key in config_keys():
        assert re.search(rf"^{key.split('.')[1]} = .* # \S", text, re.MULTILINE), key


# --------------------------------------------------------------------------- round trips

NON_DEFAULT = {
    "data": """
        name = "digits"
        val_fraction = 0.25
        test_fraction = 0.15
        stratify = false
        normalize = "channel"
        batch_size = 32
        shuffle = "replacement"
        drop_last = true
        augment = [
            {name = "translate", p = 0.5, max_shift = 1},
            {name = "crop", p = 1.0, scale = [0.5, 1.0]},
            {name = "noise", p = 0.25, std = 0.1},
        ]
    """,
    "model": """
        kind = "mlp"
        channels = [8]
        hidden = [64, 32]
        kernel_size = 3
        activation = "leaky_relu(0.1)"
        batch_norm = false
        dropout = 0.5
        global_pool = false
        init = "xavier_uniform"
        init_options = {gain = 1.5}
    """,
    "optimizer": """
        name = "sgd"
        lr = 3e-2
        no_decay = ["*.bias"]
        backend = "eager"
        [optimizer.options]
        momentum = 0.9
        nesterov = true
        weight_decay = 5e-4
    """,
    "loss": """
        name = "mse"
        label_smoothing = 0.1
    """,
    "penalty": """
        l2 = 1e-4
        l1 = 1e-5
        exclude = []
    """,
    "schedule": """
        phases = [{name = "warmup", steps = 100}, {name = "cosine", total = 900, floor = 0.01}]
        plateau = {metric = "val_accuracy", patience = 3, factor = 0.5, after_step = 100}
        momentum = {name = "linear", start = 0.5, steps = 1000}
    """,
    "clip": """
        mode = "norm"
        max_norm = 5.0
        value = 0.5
    """,
    "averaging": """
        ema = true
        decay = 0.999
        bias_correction = true
    """,
    "run": """
        epochs = 3
        steps = 500
        seed = 7
        device = "cpu"
        threads = 2
        eval_every = 50
        checkpoint_every = 100
        keep_last = 5
        keep_best_by = "none"
        early_stopping = {patience = 4}
        nonfinite = "rollback"
        init_from = "runs/a/model.safetensors"
        init_skip = ["head.*"]
        freeze = ["block1.*"]
        tensorboard = true
    """,
}


@pytest.mark.parametrize("section", list(NON_DEFAULT))
def test_every_section_round_trips(tmp_path: Path, section: str) -> None:
    text = f"[{section}]\n" + "\n".join(line.strip() for line in NON_DEFAULT[section].splitlines())
    config = load_config(write(tmp_path, text))
    changed = getattr(config, section)
    assert changed != getattr(Config(), section)  # the text set something
    assert all(
        getattr(config, other) == getattr(Config(), other) for other in SECTIONS if other != section
    )
    again = reload(tmp_path, config)
    assert again == config
    assert dump_toml(again) == dump_toml(config)


def test_resolved_values_are_typed_and_filled_in(tmp_path: Path) -> None:
    text = "\n".join(
        f"[{s}]\n" + "\n".join(l.strip() for l in t.splitlines()) for s, t in NON_DEFAULT.items()
    )
    config = load_config(write(tmp_path, text))
    assert config.model.hidden == (64, 32) and config.penalty.l2 == 1e-4
    assert config.run.keep_best_by is None and config.run.threads == 2
    assert config.run.early_stopping == {"patience": 4, "restore_best": True}
    plateau = config.schedule.plateau
    assert plateau is not None and plateau["cooldown"] == 0 and plateau["after_step"] == 100
    assert config.schedule.reduce_on_plateau().mode == "max"
    assert config.schedule.schedule()(100) == 1.0  # warmup over, cosine starts at 1
    assert config.data.test_fraction == 0.15
    momentum = {"name": "linear", "steps": 1000, "start": 0.5, "end": 0.99}  # end filled in
    assert config.schedule.momentum == momentum
    assert config.schedule.momentum_schedule() == LinearAnneal(1000, start=0.5, end=0.99)
    assert config.schedule.momentum_schedule()(500) == pytest.approx(0.745)
    assert [type(a).__name__ for a in config.data.augmentations()] == [
        "Translate",
        "RandomResizedCrop",
        "GaussianNoise",
    ]
    assert reload(tmp_path, config) == config


def test_float_settings_accept_integers() -> None:
    config = load_config(None, ["optimizer.lr=1", "penalty.l2=0"])
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)


def test_dump_toml_writes_every_kind_of_value() -> None:
    tree = {
        "a": {
            "flag": False,
            "n": -3,
            "x": 1e-7,
            "big": 1e300,
            "inf": math.inf,
            "ninf": -math.inf,
            "nan": math.nan,
            "text": 'quote " back \\ tab \t line \n del \x7f é',
            "list": [1, 2.5, "x", [True]],
            "rows": [{"name": "shift1d", "p": 0.5}, {}],
            "empty": {},
            "odd key": 1,
            "nested": {"inner": {"deep": [1]}, "v": 2},
        }
    }
    back = tomllib.loads(dump_toml(tree))
    assert math.isnan(back["a"].pop("nan"))
    del tree["a"]["nan"]
    assert back == tree


def test_dump_toml_refuses_null_inside_tables() -> None:
    with pytest.raises(ValueError, match=r"Invalid TOML value: None \(.*no null"):
        dump_toml({"a": {"b": [None]}})


def test_dump_toml_refuses_what_toml_cannot_hold() -> None:
    # tomli-w writes integers of any size and raises TypeErrors; these are ours
    with pytest.raises(ValueError, match=r"^Invalid TOML value: 9223372036854775808 \(integ"):
        dump_toml({"a": {"n": [2**63]}})
    dump_toml({"a": {"n": [2**63 - 1, -(2**63)]}})
    with pytest.raises(ValueError, match=r"^Invalid TOML key: 3 \(must be a string\)$"):
        dump_toml({"a": {3: 1}})
    with pytest.raises(ValueError, match=r"^Invalid TOML value: \{1, 2\} \(must be a bool, "):
        dump_toml({"a": {"s": {1, 2}}})


def test_dump_toml_keeps_arrays_on_one_line() -> None:
    text = dump_toml(load_config(None, ["model.channels=[8, 16]", 'penalty.exclude=["a, ]", "b"]']))
    assert "\nchannels = [8, 16]\n" in text and "\nhidden = []\n" in text
    assert '\nexclude = ["a, ]", "b"]\n' in text
    nested = dump_toml({"a": {"m": [[1, 2], [], ["x\ny"]], "t": [{"k": [1]}]}})
    assert 'm = [[1, 2], [], ["x\\ny"]]' in nested
    assert tomllib.loads(nested) == {"a": {"m": [[1, 2], [], ["x\ny"]], "t": [{"k": [1]}]}}


# --------------------------------------------------------------------------- overrides


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[optimizer]\nlr = 0.1\nname = "adam"\n[run]\ndevice = "cuda"\n')
    config = load_config(
        path,
        [
            "optimizer.lr=3e-3",
            "model.channels=[16, 32, 64]",
            'run.nonfinite="skip"',
            "run.device=cpu",  # a bare string
            "run.steps=200",
            "optimizer.options.betas=[0.8, 0.99]",  # reaches into a table
            "model.activation=leaky_relu(0.2)",
        ],
    )
    assert config.optimizer.lr == 3e-3 and config.optimizer.name == "adam"
    assert config.model.channels == (16, 32, 64)
    assert (config.run.nonfinite, config.run.device, config.run.steps) == ("skip", "cpu", 200)
    assert config.optimizer.options == {"betas": [0.8, 0.99]}
    assert config.model.activation == "leaky_relu(0.2)"


def test_later_overrides_win_and_none_resets() -> None:
    config = load_config(None, ["run.steps=10", "run.steps=none", "run.keep_best_by=none"])
    assert config.run.steps is None and config.run.keep_best_by is None


def test_steps_take_precedence_over_epochs() -> None:
    assert load_config(None, ["run.epochs=3"]).run.total_steps(25) == 75
    assert load_config(None, ["run.epochs=3", "run.steps=10"]).run.total_steps(25) == 10


@pytest.mark.parametrize("item", ["optimizer.lr", "rate=3e-3", "=3", "optimizer.=1", "a.b=1\nc=2"])
def test_malformed_set_is_refused(item: str) -> None:
    error(r"Invalid --set: .* \(must be section\.key=value, e\.g\. optimizer\.lr=3e-3\)", item)


def test_set_through_a_value_is_refused() -> None:
    error(
        r"Invalid --set: 'optimizer\.lr\.x=1' \(optimizer\.lr is not a table\)",
        "optimizer.lr=1",
        "optimizer.lr.x=1",
    )


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid config file: '.*nope\.toml' \(no such file\)"):
        load_config(tmp_path / "nope.toml")


def test_toml_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[optimizer]\nlr 0.1\n", "bad.toml")
    pattern = r"Invalid config file: '.*bad\.toml' \(TOML syntax error: .*line 2, column \d+"
    with pytest.raises(ValueError, match=pattern):
        load_config(path)


def test_section_must_be_a_table(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Invalid optimizer: 3 \(must be a table \[optimizer\]\)"):
        load_config(write(tmp_path, "optimizer = 3\n"))


# --------------------------------------------------------------------------- errors


def test_unknown_key_suggests_the_closest(tmp_path: Path) -> None:
    pattern = (
        r"Invalid config key: 'optimizer\.lrr' \(unknown; did you mean 'optimizer\.lr'\? "
        r"allowed: optimizer\.name, optimizer\.lr, "
    )
    with pytest.raises(ValueError, match=pattern):
        load_config(write(tmp_path, "[optimizer]\nlrr = 0.1\n"))


# Keys as other libraries name them or in the wrong table, what they are set to, and the
# setting "did you mean" must name (spelling alone named optimizer.name for learning_rate).
MEANT = [
    ("optimizer.learning_rate", "0.1", "optimizer.lr"),
    ("optimizer.learning-rate", "0.1", "optimizer.lr"),
    ("run.lr", "0.1", "optimizer.lr"),
    ("optimizer.wd", "0.01", "optimizer.options.weight_decay"),
    ("optimizer.weight_decay", "0.01", "optimizer.options.weight_decay"),
    ("optimizer.options.wd", "0.01", "weight_decay"),  # a keyword of adamw, as such
    ("optimizer.options.learning_rate", "0.1", "optimizer.lr"),
    ("optimizer.momentum", "0.9", "optimizer.options.momentum"),
    ("optimizer.beta1", "0.9", "optimizer.options.betas"),
    ("optimizer.epsilon", "1e-7", "optimizer.options.eps"),
    ("epochs", "10", "run.epochs"),  # outside every table
    ("data.epochs", "10", "run.epochs"),
    ("optimizer.epochs", "10", "run.epochs"),
    ("run.max_epochs", "10", "run.epochs"),  # Lightning
    ("run.num_train_epochs", "10", "run.epochs"),  # Hugging Face
    ("run.max_steps", "100", "run.steps"),
    ("batch_size", "32", "data.batch_size"),
    ("run.batch_size", "32", "data.batch_size"),
    ("optimizer.batch_size", "32", "data.batch_size"),
    ("data.per_device_train_batch_size", "32", "data.batch_size"),
    ("data.seed", "1", "run.seed"),
    ("run.random_state", "1", "run.seed"),
    ("run.accelerator", '"cpu"', "run.device"),
    ("run.dropout", "0.1", "model.dropout"),
    ("model.dropout_rate", "0.1", "model.dropout"),
    ("clip.gradient_clip_val", "1.0", "clip.max_norm"),  # Lightning
    ("clip.clipnorm", "1.0", "clip.max_norm"),  # Keras
    ("run.max_grad_norm", "1.0", "clip.max_norm"),  # Hugging Face
    ("run.patience", "5", "run.early_stopping.patience"),
    ("run.label_smoothing", "0.1", "loss.label_smoothing"),
    ("run.early_stopping.early_stopping_patience", "5", "patience"),
]


def _meant_pattern(key: str, value: str, meant: str, in_set: bool) -> str:
    """The hint of an unknown ``key``: a --set outside every table is answered whole."""
    whole = in_set and "." not in key
    return "did you mean " + re.escape(repr(f"{meant}={value}" if whole else meant)) + r"\?"


@pytest.mark.parametrize(("key", "value", "meant"), MEANT, ids=[m[0] for m in MEANT])
def test_unknown_key_names_the_setting_it_means_in_a_set(key, value, meant) -> None:
    error(_meant_pattern(key, value, meant, in_set=True), f"{key}={value}")


@pytest.mark.parametrize(("key", "value", "meant"), MEANT, ids=[m[0] for m in MEANT])
def test_unknown_key_names_the_setting_it_means_in_a_file(tmp_path, key, value, meant) -> None:
    table, _, name = key.rpartition(".")
    text = f"[{table}]\n{name} = {value}\n" if table else f"{name} = {value}\n"
    with pytest.raises(ValueError, match=_meant_pattern(key, value, meant, in_set=False)):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize("section", ["train", "training", "trainer"])
def test_a_training_section_is_run(section: str) -> None:
    error(
        rf"Invalid config section: '{section}' \(unknown; did you mean 'run'\?",
        f"{section}.epochs=3",
    )


def test_a_keyword_the_chosen_optimizer_lacks_falls_back_on_spelling() -> None:
    # adamw has no momentum: pointing at optimizer.options.momentum would fail again
    message = r"Invalid optimizer\.options key: 'momentum' \(unknown; allowed: "
    error(message, "optimizer.options.momentum=0.9")


def test_every_synonym_names_a_setting() -> None:
    keywords = {p for spec in OPTIMIZERS.values() for p in inspect.signature(spec.cls).parameters}
    for synonym, target in SYNONYMS.items():
        assert synonym == synonym.lower().replace("-", "_"), synonym  # as looked up
        table, _, name = target.rpartition(".")
        if table == "optimizer.options":
            assert name in keywords, (synonym, target)
        elif table == "run.early_stopping":
            assert load_config(None, [f"{target}=1"]).run.early_stopping[name] == 1
        else:
            assert target in config_keys(), (synonym, target)


def test_unknown_section_suggests_the_closest() -> None:
    error(
        r"Invalid config section: 'optimiser' "
        r"\(unknown; did you mean 'optimizer'\? allowed: data, ",
        "optimiser.lr=1",
    )
    # a table is a section: [dataset] means [data], not the key data.name
    error(r"Invalid config section: 'dataset' \(unknown; did you mean 'data'\?", "dataset.name=x")


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        ("optimizer.lr=fast", r"Invalid optimizer\.lr: 'fast' \(must be a float\)"),
        ("data.batch_size=12.5", r"Invalid data\.batch_size: 12\.5 \(must be an integer\)"),
        ("data.stratify=1", r"Invalid data\.stratify: 1 \(must be true or false\)"),
        ("model.channels=[8, true]", r"Invalid model\.channels\[1\]: True \(must be an integer\)"),
        ("model.channels=8", r"Invalid model\.channels: 8 \(must be a list of integers\)"),
        ("run.steps=ten", r"Invalid run\.steps: 'ten' \(must be an integer or \"none\"\)"),
        ("optimizer.options=[1]", r"Invalid optimizer\.options: \[1\] \(must be a table"),
    ],
)
def test_wrong_type(item: str, pattern: str) -> None:
    error(pattern, item)


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (
            "data.val_fraction=0.7",
            r"Invalid data\.val_fraction: 0\.7 \(must be a number in \[0, 0\.5\]\)",
        ),
        ("optimizer.lr=-0.1", r"Invalid optimizer\.lr: -0\.1 \(must be a finite number > 0\)"),
        ("optimizer.lr=nan", r"Invalid optimizer\.lr: nan \(must be a finite number > 0\)"),
        ("model.dropout=1", r"Invalid model\.dropout: 1\.0 \(must be a number in \[0, 1\)\)"),
        ("averaging.decay=1", r"Invalid averaging\.decay: 1\.0 \(must be a number in \(0, 1\)\)"),
        ("data.batch_size=0", r"Invalid data\.batch_size: 0 \(must be an integer >= 1\)"),
        ("model.kernel_size=4", r"Invalid model\.kernel_size: 4 \(must be an odd integer >= 1"),
        ("model.hidden=[64, 0]", r"Invalid model\.hidden\[1\]: 0 \(must be an integer >= 1\)"),
        ("run.seed=-1", r"Invalid run\.seed: -1 \(must be an integer in \[0, 4294967296\)\)"),
        # np.random.seed takes 32 bits: a larger seed passed validation, then failed
        ("run.seed=4294967296", r"Invalid run\.seed: 4294967296 \(must be an integer in \["),
        # beyond 64 bits too, the seed's own rule speaks (it said "fits in 64 bits")
        (
            "run.seed=18446744073709551616",
            r"Invalid run\.seed: 18446744073709551616 \(must be an integer in \[0, 4294967296\)\)",
        ),
        # integers beyond 64 bits passed validation, then failed without naming the key
        (
            "run.epochs=9223372036854775808",
            r"Invalid run\.epochs: 9223372036854775808 \(must be an integer that fits in 64",
        ),
        ("run.threads=4000", r"Invalid run\.threads: 4000 \(must be an integer in \[1, \d+\]"),
        ("penalty.l2=-1", r"Invalid penalty\.l2: -1\.0 \(must be a finite number >= 0\)"),
    ],
)
def test_out_of_range(item: str, pattern: str) -> None:
    error(pattern, item)


@pytest.mark.parametrize(
    ("item", "pattern"),
    [
        (
            "run.nonfinite=ignore",
            r"Invalid run\.nonfinite: 'ignore' \(must be one of 'raise', 'skip', 'rollback'\)",
        ),
        (
            "data.normalize=global",
            r"Invalid data\.normalize: 'global' \(must be one of 'feature', ",
        ),
        (
            "run.keep_best_by=loss",
            r"Invalid run\.keep_best_by: 'loss' \(must be one of .* or \"none\"\)",
        ),
        (
            "data.name=mnist2d",
            r"Invalid data\.name: 'mnist2d' \(unknown; did you mean 'mnist1d'\? allowed: mnist1d, ",
        ),
        (
            "model.init=kaiming",
            r"Invalid model\.init: 'kaiming' \(unknown; did you mean 'kaiming_\w+'\?",
        ),
    ],
)
def test_bad_choice(item: str, pattern: str) -> None:
    error(pattern, item)


@pytest.mark.parametrize(
    ("items", "pattern"),
    [
        (
            ["averaging.swa_lr=0.01"],
            r"^Invalid averaging\.swa_lr: 0\.01 \(needs averaging\.swa_start: set it, or remove "
            r"swa_lr\)$",
        ),
        (
            ["averaging.swa_every=3"],
            r"^Invalid averaging\.swa_every: 3 \(needs averaging\.swa_start: set it, or remove "
            r"swa_every\)$",
        ),
        (
            ["averaging.warmup=true"],
            r"^Invalid averaging\.warmup: True \(needs averaging\.ema = true: set it, or remove "
            r"warmup\)$",
        ),
        (
            ["averaging.warmup_gamma=2"],
            r"^Invalid averaging\.warmup_gamma: 2\.0 \(needs averaging\.ema = true and "
            r"averaging\.warmup = true: set them, or remove warmup_gamma\)$",
        ),
        (  # with the EMA on, the warmup's power still needs the warmup
            ["averaging.ema=true", "averaging.warmup_power=0.5"],
            r"^Invalid averaging\.warmup_power: 0\.5 \(needs averaging\.warmup = true: set it, "
            r"or remove warmup_power\)$",
        ),
    ],
)
def test_averaging_settings_that_would_be_ignored_are_refused(items, pattern) -> None:
    error(pattern, *items)


def test_averaging_settings_with_what_they_need_are_accepted() -> None:
    ema = ["averaging.ema=true", "averaging.warmup=true", "averaging.warmup_gamma=2"]
    assert load_config(None, [*ema, "averaging.warmup_power=0.5"]).averaging.warmup_power == 0.5
    # swa_start = 0 is a start (== False, but not off); defaults restated are not settings
    swa = load_config(None, ["averaging.swa_start=0", "averaging.swa_lr=0.01"]).averaging
    assert (swa.swa_start, swa.swa_lr) == (0, 0.01)
    assert load_config(None, ["averaging.swa_every=1", "averaging.warmup_power=0.75"])


def test_unknown_optimizer() -> None:
    error(
        r"Invalid optimizer\.name: 'adamm' \(unknown; did you mean 'adam'\? allowed: sgd, ",
        "optimizer.name=adamm",
    )


@pytest.mark.parametrize("name", ["lbfgs", "newton"])
def test_full_batch_optimizers_are_accepted_and_their_options_checked(name: str) -> None:
    assert load_config(None, [f"optimizer.name={name}"]).optimizer.name == name
    error(
        r"Invalid optimizer\.options\.line_search_fn: 'wolfe' \(must be one of",
        f"optimizer.name={name}",
        'optimizer.options={line_search_fn="wolfe"}',
    )


def test_torch_fused_backend_only_for_optimizers_torch_has_a_kernel_of() -> None:
    config = load_config(None, ["optimizer.name=sgd", "optimizer.backend=torch-fused"])
    assert config.optimizer.backend == "torch-fused"
    error(
        r"Invalid optimizer\.backend: 'torch-fused' \(torch has no fused nadam kernel: "
        r"use 'fused'",
        "optimizer.name=nadam",
        "optimizer.backend=torch-fused",
    )


def test_unknown_optimizer_option() -> None:
    pattern = (
        r"Invalid optimizer\.options key: 'betaz' "
        r"\(unknown; did you mean 'betas'\? allowed: betas, eps, "
    )
    error(pattern, "optimizer.name=adam", "optimizer.options.betaz=[0.9, 0.99]")
    error(
        r"Invalid optimizer\.options key: 'lr' \(is a setting: use optimizer\.lr\)",
        "optimizer.options.lr=1",
    )


def test_bad_optimizer_option_value_is_prefixed() -> None:
    error(
        r"Invalid optimizer\.options\.betas: \(0\.9, 1\.5\) \(must be a pair",
        "optimizer.options.betas=[0.9, 1.5]",
    )
    error(
        r"Invalid optimizer\.options\.nesterov: True \(requires momentum > 0",
        "optimizer.name=sgd",
        "optimizer.options.nesterov=true",
    )


@pytest.mark.parametrize(
    ("phases", "pattern"),
    [
        (
            '[{name = "cosine", total = -5}]',
            r"Invalid schedule\.phases\[0\]\.total: -5 \(must be an integer >= 1\)",
        ),
        (
            '[{name = "warmup", steps = 10}, {name = "cosin"}]',
            r"Invalid schedule\.phases\[1\] \(schedule name\): 'cosin' \(must be one of",
        ),
        (
            '[{name = "cosine", totl = 5}]',
            r"Invalid schedule\.phases\[0\] \(key for 'cosine'\): 'totl' \(must be one of",
        ),
        (
            '[{name = "constant"}, {name = "cosine", total = 5}]',
            r"Invalid schedule\.phases \(duration of phase 0\): None \(must be given",
        ),
        ('["cosine"]', r"Invalid schedule\.phases\[0\]: 'cosine' \(must be a table"),
    ],
)
def test_bad_schedule_phase(phases: str, pattern: str) -> None:
    error(pattern, f"schedule.phases={phases}")


def test_momentum_schedule_config() -> None:
    assert Config().schedule.momentum is None and Config().schedule.momentum_schedule() is None
    config = load_config(
        None,
        [
            'schedule.phases=[{name = "one_cycle", total = 580}]',
            'schedule.momentum={name = "one_cycle", total = 580, max = 0.95, min = 0.85}',
        ],
    )
    lr, momentum = config.schedule.schedule(), config.schedule.momentum_schedule()
    assert momentum == OneCycleMomentum(580) and lr == Phases([(None, OneCycle(580))])
    assert max(range(580), key=lr) == min(range(580), key=momentum) == 173  # p = 0.3·580 − 1
    assert config.schedule.momentum == {
        "name": "one_cycle",
        "total": 580,
        "peak_at": 0.3,
        "max": 0.95,
        "min": 0.85,
    }


@pytest.mark.parametrize(
    ("momentum", "pattern"),
    [
        (
            '{name = "lineer", steps = 10}',
            r"Invalid schedule\.momentum\.name: 'lineer' \(unknown; did you mean 'linear'\? "
            r"allowed: linear, cosine, one_cycle\)",
        ),
        ("{steps = 10}", r"Invalid schedule\.momentum\.name: None \(unknown; allowed: linear, "),
        (
            '{name = "linear", stpes = 10}',
            r"Invalid schedule\.momentum key: 'stpes' \(unknown; did you mean 'steps'\? "
            r"allowed: steps, start, end\)",
        ),
        (
            '{name = "cosine"}',
            r"Invalid schedule\.momentum: \{'name': 'cosine'\} \(missing 'steps'\)",
        ),
        (
            '{name = "linear", steps = 10, end = 1.0}',
            r"Invalid schedule\.momentum\.end: 1\.0 \(must be a number in \[0, 1\)\)",
        ),
        (
            '{name = "one_cycle", total = 100, min = 0.99}',
            r"Invalid schedule\.momentum\.min: 0\.99 \(must be <= max = 0\.95\)",
        ),
        ("3", r"Invalid schedule\.momentum: 3 \(must be a table \{key = value, \.\.\.\} or"),
    ],
)
def test_bad_momentum_schedule(momentum: str, pattern: str) -> None:
    error(pattern, f"schedule.momentum={momentum}")


def test_test_fraction() -> None:
    assert Config().data.test_fraction is None  # the test split: val_fraction (or 0.2)
    config = load_config(None, ["data.val_fraction=0.3", "data.test_fraction=0.2"])  # 5:3:2
    assert (config.data.val_fraction, config.data.test_fraction) == (0.3, 0.2)
    assert load_config(None, ["data.test_fraction=0"]).data.test_fraction == 0.0
    error(
        r"^Invalid data\.test_fraction: 1\.0 \(must be a number in \[0, 1\)\)$",
        "data.test_fraction=1",
    )
    error(r"^Invalid data\.test_fraction: -0\.1 \(must be", "data.test_fraction=-0.1")
    error(
        r"^Invalid data\.test_fraction: 0\.5 \(must be < 1 − data\.val_fraction = 0\.5, so "
        r"that data is left for training\)$",
        "data.val_fraction=0.5",
        "data.test_fraction=0.5",
    )
    error(
        r"^Invalid data\.test_fraction: 0\.8 \(must be < 1 − data\.val_fraction = 0\.8, ",
        "data.test_fraction=0.8",
    )


def test_bad_plateau() -> None:
    error(
        r"Invalid schedule\.plateau\.metric: 'val_acc' "
        r"\(must be one of 'val_loss', 'val_accuracy'\)",
        'schedule.plateau={metric = "val_acc"}',
    )
    error(
        r"Invalid schedule\.plateau\.after_step: -1 \(must be an integer >= 0\)",
        "schedule.plateau={after_step = -1}",
    )
    error(r"Invalid schedule\.plateau\.factor: 2\.0 \(must be", "schedule.plateau={factor = 2.0}")
    error(
        r"Invalid schedule\.plateau key: 'patiense' \(unknown; did you mean 'patience'\?",
        "schedule.plateau={patiense = 2}",
    )


def test_bad_activation() -> None:
    error(
        r"Invalid model\.activation: 'swish' \(must be one of 'sigmoid', 'tanh', 'relu'",
        "model.activation=swish",
    )


def test_bad_init_options() -> None:
    error(
        r"Invalid model\.init_options key: 'gian' \(unknown; did you mean 'gain'\?",
        "model.init=xavier_normal",
        "model.init_options={gian = 2.0}",
    )


def test_bad_augmentations() -> None:
    error(
        r"Invalid data\.augment\[0\]\.name: 'shift' \(unknown; did you mean 'shift1d'\?",
        'data.augment=[{name = "shift", p = 0.5}]',
    )
    error(
        r"Invalid data\.augment\[0\]: \{'name': 'shift1d'\} \(missing 'p'\)",
        'data.augment=[{name = "shift1d"}]',
    )
    error(
        r"Invalid data\.augment\[1\]\.p: 2\.0 \(must be a number in \[0, 1\]\)",
        'data.augment=[{name = "hflip", p = 1}, {name = "noise1d", p = 2.0}]',
    )
    error(
        r"Invalid data\.augment\[0\] key: 'shift' \(unknown; did you mean 'max_shift'\?",
        'data.augment=[{name = "shift1d", p = 1, shift = 2}]',
    )


def test_bad_dataset_options() -> None:
    error(
        r"Invalid data\.options key: 'sed' \(unknown; did you mean 'seed'\?", "data.options.sed=1"
    )
    error(r"Invalid data\.options: \{\} \(missing 'path'\)", "data.name=npz")


def test_bad_run_tables() -> None:
    error(
        r"Invalid run\.early_stopping\.patience: 'x' \(must be an integer\)",
        "run.early_stopping={patience = 'x'}",
    )
    error(
        r"Invalid run\.early_stopping key: 'restore' \(unknown; did you mean 'restore_best'\?",
        "run.early_stopping={restore = true}",
    )
    error(
        r"Invalid run\.init_skip: \['head\.\*'\] \(needs run\.init_from\)",
        'run.init_skip=["head.*"]',
    )


def test_cnn_needs_channels_and_sections_accept_tables() -> None:
    error(r"Invalid model\.channels: \[\] \(must list at least one conv block", "model.channels=[]")
    assert load_config(None, ["model.kind=mlp", "model.channels=[]"]).model.channels == ()
    config = Config(optimizer={"lr": 0.5})  # type: ignore[arg-type]
    assert config.optimizer.lr == 0.5 and config == load_config(None, ["optimizer.lr=0.5"])


# --------------------------------------------------------------------------- fingerprint


def test_fingerprint_follows_what_the_run_computes() -> None:
    base = fingerprint(Config())
    assert re.fullmatch(r"[0-9a-f]{64}", base) and base == fingerprint(load_config(None))
    assert fingerprint(load_config(None, ["optimizer.lr=3e-3"])) != base
    assert fingerprint(load_config(None, ["run.epochs=60"])) != base
    assert fingerprint(load_config(None, ["run.tensorboard=true"])) == base
    assert "run.tensorboard" in NOT_FINGERPRINTED and "run.epochs" not in NOT_FINGERPRINTED
    assert set(NOT_FINGERPRINTED) <= set(config_keys())


def _just_outside(allowed: str) -> list:
    """Values just outside a rule as settings() states it, and far outside where it has an
    upper bound ([] for rules without bounds)."""
    if m := re.fullmatch(r"an integer >= (\d+)", allowed):
        return [int(m.group(1)) - 1]
    if m := re.fullmatch(r"an integer in \[0, (\d+)\)", allowed):
        return [-1, int(m.group(1)), 2**64, -(2**64)]  # beyond 64 bits: still this rule
    if m := re.fullmatch(r"a number in ([\[(])([\d.]+), ([\d.]+)([\])])", allowed):
        low, high = float(m.group(2)), float(m.group(3))
        below = low if m.group(1) == "(" else low - 0.01
        above = high if m.group(4) == ")" else high + 0.01
        return [below, above]
    return []


RULED = [s for s in settings() if s.allowed and _just_outside(s.allowed)]


def test_settings_cover_every_key_with_its_help_type_and_default():
    rows = settings()
    assert [row.key for row in rows] == config_keys()
    assert all(row.help and row.type for row in rows)
    defaults = Config().to_dict()
    for row in rows:
        section, key = row.key.split(".", 1)
        assert row.default == ("none" if defaults[section][key] is None else defaults[section][key])
    assert len(RULED) >= 12  # the range rules the reference states


@pytest.mark.parametrize("setting", RULED, ids=lambda s: s.key)
def test_the_range_the_reference_states_is_the_range_enforced(setting):
    for bad in _just_outside(setting.allowed):
        with pytest.raises(ValueError, match=re.escape(f"must be {setting.allowed}")):
            load_config(None, [f"{setting.key}={bad}"])
