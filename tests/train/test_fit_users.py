"""trainlab.fit as Keras, Lightning and fastai users expect it: NumPy input, progress by
default, a script run twice, Ctrl-C caught as KeyboardInterrupt, float labels, predict."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import tqdm.auto
from torch import nn
from torch.utils.data import TensorDataset

import trainlab
from trainlab import data as data_lib
from trainlab.cli import main
from trainlab.train import TrainingError
from trainlab.train.build import prepared_data
from trainlab.train.run_folder import RunFolder

from .test_trainer import TINY, set_args

QUICK = {"epochs": 2, "batch_size": 16, "threads": 1, "progress": False}


def numpy_data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features as NumPy makes them (float64) and integer labels of three classes."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4))
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def tensor_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = numpy_data(n)
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)


# -- NumPy arrays and anything torch.as_tensor takes ------------------------------------------


def test_fit_takes_numpy_arrays_as_keras_does(tmp_path):
    x, y = numpy_data(96)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    summary = trainlab.fit(
        model,
        (x[:64], y[:64]),
        val=(x[64:80], y[64:80].astype(np.int32)),  # int32 labels, as on Windows
        test=(x[80:].tolist(), y[80:].tolist()),  # nested lists: anything torch.as_tensor takes
        run_dir=tmp_path / "r",
        **QUICK,
    )
    assert summary["steps"] == 8 and summary["task"] == "classification"
    # the same run on float32 tensors: NumPy's float64 is cast to the model's dtype
    same = torch.as_tensor(x[:64], dtype=torch.float32), torch.as_tensor(y[:64])
    torch.manual_seed(0)
    tensors = trainlab.fit(nn.Linear(4, 3), same, run_dir=tmp_path / "s", **QUICK)
    assert tensors["train_loss"] == summary["train_loss"]


def test_numpy_regression_targets_take_the_models_dtype(tmp_path):
    x, _ = numpy_data()
    summary = trainlab.fit(nn.Linear(4, 1), (x, x[:, :1] * 2.0), run_dir=tmp_path / "r", **QUICK)
    assert summary["task"] == "regression" and np.isfinite(summary["train_loss"])


def test_what_torch_as_tensor_cannot_take_is_named(tmp_path):
    x = np.array([{"a": 1}] * 8, dtype=object)
    with pytest.raises(TrainingError, match=r"Invalid train: x is an? ndarray .*torch\.as_tensor"):
        trainlab.fit(nn.Linear(4, 3), (x, np.zeros(8, dtype=np.int64)), run_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()


# -- progress ---------------------------------------------------------------------------------


def test_progress_by_default_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    trainlab.fit(nn.Linear(4, 3), tensor_data(), val=tensor_data(32), run_dir=tmp_path / "r",
                 epochs=2, batch_size=16, threads=1)  # fmt: skip
    err = capsys.readouterr().err
    assert re.search(r"epoch +\d+ step +\d+/8 loss ", err), err
    assert "\r" not in err  # no bar redrawn in a log file


def test_progress_false_prints_nothing(tmp_path, capsys):
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "r", **QUICK)
    assert capsys.readouterr().err == ""


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_the_live_bar(tmp_path, monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "r",
                 epochs=2, batch_size=16, threads=1)  # fmt: skip
    shown = terminal.getvalue()
    assert "\r" in shown and "8/8" in shown and "step/s" in shown
    assert not re.search(r"epoch +\d+ step ", shown)


def test_a_notebook_gets_the_live_bar_though_its_stderr_is_no_terminal(
    tmp_path, monkeypatch, capsys
):
    """The bar is tqdm.auto's: in a kernel that imported trainlab, the notebook widget."""
    from trainlab.train import callbacks

    assert callbacks.tqdm is tqdm.auto.tqdm  # chosen when trainlab was imported
    drawn = []

    class Drawn(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            drawn.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(callbacks, "tqdm", Drawn)
    kernel = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "r",
                 epochs=2, batch_size=16, threads=1)  # fmt: skip
    err = capsys.readouterr().err
    assert len(drawn) == 1 and drawn[0].total == 8
    assert "8/8" in err and not re.search(r"epoch +\d+ step ", err)


# -- a script run twice: numbered folders, resume, overwrite ----------------------------------


def test_a_script_run_twice_goes_to_a_numbered_folder_beside_the_first(tmp_path, capsys):
    folder = tmp_path / "runs" / "x"
    first = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    weights = (folder / "model.safetensors").read_bytes()
    assert first["run_dir"] == str(folder) and capsys.readouterr().err == ""
    second = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    announced = capsys.readouterr().err.strip().splitlines()
    assert second["run_dir"] == str(tmp_path / "runs" / "x-2")
    assert len(announced) == 1
    assert re.fullmatch(
        r"trainlab: .*runs/x' already holds a run; this run goes to .*runs/x-2' "
        r"\(resume=True continues '.*runs/x', overwrite=True replaces it\)",
        announced[0],
    ), announced
    third = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    assert third["run_dir"] == str(tmp_path / "runs" / "x-3")
    assert (folder / "model.safetensors").read_bytes() == weights  # the first run untouched


def test_two_scripts_at_once_never_share_a_numbered_folder(tmp_path):
    from trainlab.train.api import claim_run_folder

    folder = tmp_path / "x"
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    one = claim_run_folder(folder, resume=False)
    two = claim_run_folder(folder, resume=False)  # while `one` is held
    three = claim_run_folder(tmp_path / "new", resume=False)
    four = claim_run_folder(tmp_path / "new", resume=False)
    try:
        assert [f.path.name for f in (one, two, three, four)] == ["x-2", "x-3", "new", "new-2"]
    finally:
        for claimed in (one, two, three, four):
            claimed.release(remove_if_unused=True)


def test_an_empty_folder_is_used_as_it_is(tmp_path):
    (tmp_path / "empty").mkdir()
    summary = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "empty", **QUICK)
    assert summary["run_dir"] == str(tmp_path / "empty")


def test_resume_true_continues_the_existing_run_in_its_folder(tmp_path):
    folder = tmp_path / "x"
    first = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    again = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, resume=True, **QUICK)
    assert again["run_dir"] == str(folder) and again["steps"] == first["steps"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_overwrite_true_replaces_the_run(tmp_path):
    folder = tmp_path / "x"
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **{**QUICK, "epochs": 3})
    assert (folder / "checkpoints" / "step-00000012").is_dir()
    summary = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, overwrite=True, **QUICK)
    assert summary["run_dir"] == str(folder) and summary["steps"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]
    assert not (folder / "checkpoints" / "step-00000012").exists()  # the old run's last
    assert trainlab.load_run(folder).summary["steps"] == 8


def test_overwrite_keeps_the_old_run_when_the_new_one_cannot_start(tmp_path):
    folder = tmp_path / "x"
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    with pytest.raises(TrainingError, match=r"Invalid averaging\.swa_start: 1000 "):
        trainlab.fit(
            nn.Linear(4, 3), tensor_data(), run_dir=folder, overwrite=True,
            settings={"averaging.swa_start": 1000}, **QUICK,
        )  # fmt: skip
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


@pytest.mark.parametrize(
    ("arrange", "options", "message"),
    [
        (
            "nothing",
            {"resume": True},
            r"Invalid resume: True, but '.*x' holds no run to continue \(.*drop resume=True",
        ),
        (
            "run",
            {"resume": True, "overwrite": True},
            r"Invalid arguments: resume=True and overwrite=True \(",
        ),
        (
            "foreign",
            {"overwrite": True},
            r"Invalid overwrite: True, but '.*x' holds files trainlab did not create "
            r"\(notes\.txt;.*choose another run_dir",
        ),
        (
            "run",
            {"resume": True, "lr": 0.5},
            r"Invalid resume: True, but the model, data or settings differ from the run in "
            r"'.*x' .*drop resume=True",
        ),
    ],
)
def test_run_dir_refusals_speak_python(tmp_path, arrange, options, message):
    folder = tmp_path / "x"
    if arrange == "run":
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    elif arrange == "foreign":
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(TrainingError, match=message) as refused:
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **{**QUICK, **options})
    assert "trainlab train" not in str(refused.value) and "--" not in str(refused.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing written or lost


def test_a_full_disk_names_the_python_resume(tmp_path, monkeypatch):
    import errno

    from trainlab.train import checkpoint

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_write_file", full)
    with pytest.raises(checkpoint.CheckpointError) as failed:
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "x", **QUICK)
    assert re.search(r"trainlab\.fit\(\.\.\., run_dir='.*x', resume=True\)", str(failed.value))
    assert "trainlab train" not in str(failed.value)


# -- Ctrl-C -----------------------------------------------------------------------------------

STOPPED_BY_CTRL_C = """
import sys, time
import torch
import trainlab
from trainlab.train import Callback


class Slow(Callback):
    def on_step_end(self, trainer, step):
        if step.step == 3:
            print("ready", flush=True)
        if step.step >= 3:
            time.sleep(0.05)


g = torch.Generator().manual_seed(0)
x, y = torch.randn(256, 4, generator=g), torch.randint(0, 3, (256,), generator=g)
try:
    trainlab.fit(torch.nn.Linear(4, 3), (x, y), run_dir=sys.argv[1], callbacks=[Slow()],
                 epochs=2, batch_size=8, threads=1, checkpoint_seconds=0, progress=False)
    print("finished", flush=True)
except KeyboardInterrupt as stopped:
    print("caught:", stopped, flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child needs POSIX")
def test_the_first_ctrl_c_saves_a_checkpoint_and_reaches_the_script_as_keyboard_interrupt(
    tmp_path,
):
    script = tmp_path / "script.py"
    script.write_text(STOPPED_BY_CTRL_C)
    folder = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd() / "src")}
    process = subprocess.Popen(
        [sys.executable, "-W", "error", str(script), str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert re.search(
        r"caught: stopped by SIGINT at step (\d+); the checkpoint of step \1 is saved\. "
        r"Continue with: trainlab\.fit\(\.\.\., run_dir='.*r', resume=True\)",
        out,
    ), out
    step = int(re.search(r"at step (\d+)", out).group(1))
    assert (folder / "checkpoints" / f"step-{step:08d}").is_dir()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 4, generator=g), torch.randint(0, 3, (256,), generator=g)
    summary = trainlab.fit(
        nn.Linear(4, 3), (x, y), run_dir=folder, resume=True, epochs=2, batch_size=8,
        threads=1, checkpoint_seconds=0, progress=False,
    )  # fmt: skip
    assert summary["steps"] == 64 and summary["run_dir"] == str(folder)
    resumed = [r for r in trainlab.load_run(folder).metrics if r.get("event") == "resumed"]
    assert resumed and resumed[0]["step"] == step


# -- float labels on a classifier -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tensor", "numpy"])
def test_float_labels_on_a_classifier_name_both_fixes(tmp_path, kind):
    x, y = tensor_data()
    labels = y.float() if kind == "tensor" else y.numpy().astype(np.float64)
    with pytest.raises(
        TrainingError,
        match=r"Invalid targets: (torch\.)?float32 labels for a model with 3 outputs, as a "
        r"classifier gives \(.*y\.long\(\).*task='regression'",
    ):
        trainlab.fit(nn.Linear(4, 3), (x, labels), run_dir=tmp_path / "r", **QUICK)
    assert not (tmp_path / "r").exists()


# -- predict ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config_run(tmp_path_factory):
    """A run of `trainlab train` on digits, normalized per feature, with dropout."""
    folder = tmp_path_factory.mktemp("predict") / "run"
    settings = [*TINY, "run.epochs=1", "data.normalize=feature", "run.threads=1"]
    assert main(["train", "--run-dir", str(folder), *set_args(settings)]) == 0
    run = trainlab.load_run(folder)
    raw = dataclasses.replace(
        run.config, data=dataclasses.replace(run.config.data, normalize="none")
    )
    return run, prepared_data(raw)


def test_predict_on_a_run_matches_evaluate_on_its_test_split(config_run):
    run, raw = config_run
    x, y = raw["test"]
    probabilities = trainlab.predict(run, x.numpy(), batch_size=50)
    assert probabilities.shape == (len(x), run.about["classes"])
    assert torch.allclose(probabilities.sum(1), torch.ones(len(x)))
    accuracy = (probabilities.argmax(1) == y).double().mean().item()
    assert accuracy == pytest.approx(run.summary["test_accuracy"], abs=1e-12)


def test_predict_applies_the_runs_normalization(config_run):
    run, raw = config_run
    x = raw["test"][0][:40]
    normalizer = data_lib.Normalizer("feature").fit(raw["train"][0])
    run.model.eval()
    with torch.no_grad():
        expected = torch.softmax(run.model(normalizer(x)), 1)
    assert torch.allclose(run.predict(x), expected, atol=1e-6)
    with torch.no_grad():
        unnormalized = torch.softmax(run.model(x), 1)
    assert not torch.allclose(run.predict(x), unnormalized, atol=1e-3)


def test_predict_is_in_eval_mode_and_leaves_the_mode_alone(config_run):
    run, raw = config_run
    x = raw["test"][0][:40]
    run.model.train()  # dropout on
    first, second = run.predict(x), run.predict(TensorDataset(x, torch.zeros(len(x))))
    assert torch.equal(first, second)
    assert run.model.training


def test_predict_on_a_fit_run_and_on_a_model(tmp_path):
    x, y = numpy_data()
    torch.manual_seed(0)
    summary = trainlab.fit(nn.Linear(4, 3), (x, y), run_dir=tmp_path / "r", **QUICK)
    model = nn.Linear(4, 3)
    run = trainlab.load_run(tmp_path / "r", model=model)
    probabilities = run.predict(x)
    accuracy = (probabilities.argmax(1).numpy() == y).mean()
    assert accuracy == pytest.approx(summary["train_accuracy"], abs=1e-12)
    assert torch.equal(trainlab.predict(model, x, task="classification"), probabilities)
    with pytest.raises(TrainingError, match=r"Invalid task: None .*task='classification'"):
        trainlab.predict(model, x)
    with pytest.raises(TrainingError, match=r"load_run\(.*model=.*\)"):
        trainlab.predict(trainlab.load_run(tmp_path / "r"), x)


def test_predict_gives_regression_outputs_as_they_are(tmp_path):
    x, _ = numpy_data()
    model = nn.Linear(4, 2)
    trainlab.fit(model, (x, x[:, :2]), run_dir=tmp_path / "r", **QUICK)
    outputs = trainlab.predict(trainlab.load_run(tmp_path / "r", model=model), x, batch_size=7)
    with torch.no_grad():
        assert torch.allclose(outputs, model(torch.as_tensor(x, dtype=torch.float32)))


def test_a_folder_another_process_trains_in_gets_a_numbered_folder_beside_it(tmp_path):
    """A folder another process trains in: the numbered folder, never a refusal."""
    folder = tmp_path / "x"
    held = RunFolder.claim_new(folder)
    try:
        summary = trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    finally:
        held.release()
    assert summary["run_dir"] == str(tmp_path / "x-2")


# -- names other libraries give a setting -------------------------------------------------------

WEIGHT_DECAY_HINT = r"did you mean settings=\{'optimizer\.options': \{'weight_decay': \.\.\.\}\}\?"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"learning_rate": 0.1}, r"Invalid option: 'learning_rate' \(unknown; did you mean 'lr'\?"),
        ({"wd": 0.1}, rf"Invalid option: 'wd' \(unknown; {WEIGHT_DECAY_HINT}"),
        ({"weight_decay": 0.1}, rf"Invalid option: 'weight_decay' \(unknown; {WEIGHT_DECAY_HINT}"),
        (
            {"criterion": "mse"},
            r"Invalid option: 'criterion' \(unknown; did you mean 'loss'\?",
        ),
        (
            {"settings": {"optimizer.learning_rate": 0.1}},
            r"Invalid setting: 'optimizer\.learning_rate' \(unknown; "
            r"did you mean 'optimizer\.lr'\?",
        ),
        (
            {"settings": {"optimizer.weight_decay": 0.1}},
            r"Invalid setting: 'optimizer\.weight_decay' \(unknown; did you mean "
            r"\{'optimizer\.options': \{'weight_decay': \.\.\.\}\}\?",
        ),
        ({"lrr": 0.1}, r"Invalid option: 'lrr' \(unknown; did you mean 'lr'\?"),  # spelling
    ],
)
def test_names_other_libraries_use_are_answered_in_fits_own_words(tmp_path, given, message):
    with pytest.raises(TrainingError, match=message) as refused:
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "r", **QUICK, **given)
    assert str(refused.value).endswith("see help(trainlab.fit))")
    assert "trainlab train" not in str(refused.value) and "no_decay" not in str(refused.value)
    assert not (tmp_path / "r").exists()


def test_a_setting_fit_does_not_take_gets_no_guess(tmp_path):
    """dropout is model.dropout, a setting of trainlab's own models: no "did you mean"."""
    with pytest.raises(TrainingError, match=r"Invalid option: 'dropout' \(unknown; see help"):
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=tmp_path / "r", dropout=0.1)


# -- damaged run files ---------------------------------------------------------------------------


@pytest.fixture
def fit_run(tmp_path):
    """A finished run of trainlab.fit, alone in a folder of runs."""
    folder = tmp_path / "runs" / "r"
    torch.manual_seed(0)
    trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=folder, **QUICK)
    return folder


def test_a_run_json_that_is_no_object_is_named(fit_run):
    (fit_run / "run.json").write_text("[1, 2]")
    with pytest.raises(
        TrainingError, match=r"Invalid run file: .*run\.json holds a JSON list, not"
    ):
        trainlab.load_run(fit_run, model=nn.Linear(4, 3))


@pytest.mark.parametrize(
    ("text", "cause"),
    [("[1, 2]", r"holds a JSON list, not an object"), ("[" * 100_000, r"nested deeper")],
)
def test_a_damaged_summary_warns_and_the_run_still_loads(fit_run, text, cause):
    weights = nn.Linear(4, 3)
    trainlab.load_run(fit_run, model=weights)
    (fit_run / "summary.json").write_text(text)
    model = nn.Linear(4, 3)
    with pytest.warns(UserWarning, match=rf"summary\.json .*{cause}.*Run\.summary is empty"):
        run = trainlab.load_run(fit_run, model=model)
    assert run.summary == {} and torch.equal(model.weight, weights.weight)


def test_evaluate_warns_of_a_damaged_summary_and_evaluates(config_run, tmp_path, capsys):
    run, _ = config_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "summary.json").write_text('["not", "an", "object"]')
    with pytest.warns(UserWarning, match=r"summary\.json holds a JSON list, not an object"):
        assert main(["evaluate", str(copy)]) == 0
    assert re.search(r"test .*\d", capsys.readouterr().out)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("x = " + "[" * 100_000 + "]" * 100_000, r"nested deeper than the TOML reader"),
        (" " * (1 << 20) + "\n", r"cannot be read \(.*more than the"),
    ],
)
def test_a_nested_or_oversized_config_of_a_fit_run_is_named(fit_run, text, cause):
    (fit_run / "config.toml").write_text(text)
    with pytest.raises(TrainingError, match=rf"Invalid run file: .*config\.toml .*{cause}"):
        trainlab.load_run(fit_run, model=nn.Linear(4, 3))


# -- predict on Datasets of NumPy arrays ---------------------------------------------------------


class NumpyExamples(torch.utils.data.Dataset):
    """A Dataset of NumPy float64 rows, as a user's own Dataset often returns them."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        return self.x[i], 0


def test_predict_on_a_dataset_of_numpy_rows_casts_them_to_the_models_dtype():
    x, _ = numpy_data()
    model = nn.Linear(4, 3)
    expected = trainlab.predict(model, x, task="classification")
    for inputs in (
        NumpyExamples(x),
        torch.utils.data.DataLoader(NumpyExamples(x), batch_size=10),
        TensorDataset(torch.as_tensor(x)),  # float64 tensors
    ):
        assert torch.equal(trainlab.predict(model, inputs, task="classification"), expected)


def test_a_runs_normalization_is_computed_once(config_run, monkeypatch):
    from trainlab.train import api

    run, raw = config_run
    run = trainlab.load_run(run.path)
    loads = []
    monkeypatch.setattr(api, "prepared_data", lambda c: loads.append(c) or raw)
    first = run.predict(raw["test"][0][:10])
    assert torch.equal(run.predict(raw["test"][0][:10]), first)
    assert len(loads) == 1


# -- overwrite=True: a half-done replacement ----------------------------------------------------


def test_a_replaced_runs_hidden_folder_is_not_listed_as_a_run(fit_run):
    from trainlab.train.runs import list_runs

    shutil.copytree(fit_run, fit_run.parent / ".r.replaced-abc123")  # the process died there
    assert [run["name"] for run in list_runs(fit_run.parent)] == ["r"]


def test_overwrite_keeps_the_old_run_when_the_new_one_fails_after_claiming_the_folder(
    fit_run, monkeypatch
):
    from trainlab.train.trainer import Trainer

    def half_written(trainer):  # a disk that fills up while the new run writes its files
        (trainer.run_dir / "config.toml").write_text("[run]\nepochs = 1\n")
        (trainer.run_dir / "checkpoints" / "step-00000001").mkdir(parents=True)
        raise OSError(28, "No space left on device")

    before = {p.relative_to(fit_run): p.read_bytes() for p in fit_run.rglob("*") if p.is_file()}
    monkeypatch.setattr(Trainer, "_write_run_files", half_written)
    with pytest.raises(OSError, match="No space left on device"):
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=fit_run, overwrite=True, **QUICK)
    after = {p.relative_to(fit_run): p.read_bytes() for p in fit_run.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in fit_run.parent.iterdir()) == ["r"]


def test_a_failed_restore_names_both_folders_and_keeps_the_first_error(fit_run, monkeypatch):
    from trainlab.train import api
    from trainlab.train.trainer import Trainer

    def fails(trainer):
        raise OSError(28, "No space left on device")

    move = api._move_contents

    def cannot_move_back(source, target, skip=""):
        if target == fit_run:
            raise PermissionError(13, "Permission denied", str(target))
        move(source, target, skip)

    monkeypatch.setattr(Trainer, "_write_run_files", fails)
    monkeypatch.setattr(api, "_move_contents", cannot_move_back)
    with pytest.raises(TrainingError) as failed:
        trainlab.fit(nn.Linear(4, 3), tensor_data(), run_dir=fit_run, overwrite=True, **QUICK)
    (aside,) = [p for p in fit_run.parent.iterdir() if p.name.startswith(".r.replaced-")]
    assert re.search(
        rf"the old run's files stay in '{re.escape(str(aside))}' .*could not be moved back "
        rf"to '{re.escape(str(fit_run))}' \(.*Permission denied",
        str(failed.value),
    ), failed.value
    assert isinstance(failed.value.__cause__, OSError) and failed.value.__cause__.errno == 28
    assert (aside / "model.safetensors").is_file()  # nothing of the old run lost


def test_the_command_line_shows_trainlabs_warnings_as_its_own_lines(config_run, tmp_path):
    """At a shell, a warning is a `trainlab: warning: …` line, not Python's file:line and
    class (the run still evaluates)."""
    run, _ = config_run
    copy = tmp_path / "run"
    shutil.copytree(run.path, copy)
    (copy / "summary.json").write_text('["not", "an", "object"]')
    done = subprocess.run(
        [sys.executable, "-m", "trainlab", "evaluate", str(copy)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        r"trainlab: warning: [^\n]*summary\.json holds a JSON list, not an object[^\n]*\n",
        done.stderr,
    ), done.stderr
