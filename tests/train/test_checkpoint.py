"""Checkpoints: pickle-free round trips, atomic saves that survive crashes, retention."""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import trainlab.optim
from trainlab.train import checkpoint
from trainlab.train.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_weights_file,
    prune_checkpoints,
    save_checkpoint,
)
from trainlab.train.state_tree import flatten, rng_state, set_rng_state, unflatten

# --- helpers --------------------------------------------------------------------------------


def assert_same(a, b, where="root"):
    """Equal values of the same types, tensors bit for bit with their dtype, -0.0 and nan."""
    assert type(a) is type(b), where
    if isinstance(a, Tensor):
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}/{i}")
    elif isinstance(a, float):
        assert (math.isnan(a) and math.isnan(b)) or a == b, where
        assert math.copysign(1, a) == math.copysign(1, b), where
    else:
        assert a == b, where


def round_trip(tree):
    """flatten → safetensors bytes + JSON text → unflatten, as a checkpoint stores it."""
    tensors, skeleton = flatten(tree)
    text = json.dumps(skeleton, allow_nan=False)
    return unflatten(safetensors.torch.load(safetensors.torch.save(tensors)), json.loads(text))


def small_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def deep_model(seed: int) -> nn.Module:
    """20 parameter tensors, so that the fused backend lays out flat buffers."""
    torch.manual_seed(seed)
    return nn.Sequential(*[nn.Linear(16, 16) for _ in range(10)])


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int) -> None:
    """Steps on batches drawn from the global RNG, so that resuming needs the RNG state too."""
    inputs = model[0].in_features
    for _ in range(steps):
        x, y = torch.randn(8, inputs), torch.randn(8, model[-1].out_features)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()


def resume_matches_uninterrupted(tmp_path, make_model, make_opt, before: int, after: int):
    """Train before + after steps in one go, and again through a checkpoint; compare."""
    reference = make_model(0)
    reference_opt = make_opt(reference)
    torch.manual_seed(1)
    train(reference, reference_opt, before + after)

    model = make_model(0)
    opt = make_opt(model)
    torch.manual_seed(1)
    train(model, opt, before)
    state = {"optimizer": opt.state_dict(), "rng": rng_state(), "step": before}
    path = save_checkpoint(
        tmp_path, "step-1", weights=model.state_dict(), state=state, metrics={"step": before}
    )
    saved = copy.deepcopy(opt.state_dict())  # the live one changes as training goes on

    torch.manual_seed(999)  # the resumed process starts from other weights and RNG
    resumed = make_model(5)
    resumed_opt = make_opt(resumed)
    loaded = load_checkpoint(path)
    resumed.load_state_dict(loaded.weights)
    resumed_opt.load_state_dict(loaded.state["optimizer"])
    set_rng_state(loaded.state["rng"])
    train(resumed, resumed_opt, after)

    for p, q in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    return saved, load_checkpoint(path), opt


def save_steps(run_dir, *steps: int) -> None:
    for step in steps:
        weights = {"w": torch.full((3,), float(step))}
        save_checkpoint(
            run_dir, f"step-{step}", weights=weights, state={"step": step}, metrics={"step": step}
        )


def names(paths) -> list[str]:
    return [p.name for p in paths]


# --- tensor trees ---------------------------------------------------------------------------


def test_tree_round_trip_keeps_types_special_floats_and_tuples():
    tree = {
        "ints": [0, -3, 2**70],
        "floats": [1.5, -0.0, math.inf, -math.inf, math.nan, 1e-300],
        "flags": (True, False, None),
        "text": "héllo/~",
        "nested": {"a/b": {"~x": [torch.arange(3)]}, 0: "int key", "__tensor__": "not a tag"},
        "tensors": {
            "f32": torch.randn(2, 3),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
            "scalar": torch.tensor(7),
            "bool": torch.tensor([True, False]),
            "empty": torch.empty(0, 4),
        },
        "tuples": ((1, 2), (3.0, "x"), ()),
        "empty": [{}, []],
    }
    assert_same(round_trip(tree), tree)


def test_flatten_keys_are_stable_paths():
    tree = {"state": {0: {"exp_avg": torch.zeros(2)}}, "a/b": [torch.ones(1)], "~": torch.ones(1)}
    tensors, skeleton = flatten(tree)
    assert list(tensors) == ["state/0/exp_avg", "a~1b/0", "~0"]
    assert list(flatten(tree)[0]) == list(tensors)
    assert skeleton["a/b"] == [{"__tensor__": "a~1b/0"}]


def test_flatten_saves_views_as_compact_clones():
    buffer = torch.arange(1000.0)
    tensors, _ = flatten({"view": buffer[10:20].view(2, 5), "strided": buffer[::100]})
    for tensor in tensors.values():
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
        assert tensor.is_contiguous()
    assert torch.equal(tensors["strided"], buffer[::100])


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ({"x": np.float32(1.0)}, r"Invalid value at 'x': a float32 \(must be a tensor"),
        ({"s": [{1, 2}]}, r"Invalid value at 's/0': a set"),
        ({(1, 2): 3}, r"Invalid dict key at 'the root': \(1, 2\)"),
    ],
)
def test_flatten_rejects_other_types(tree, message):
    with pytest.raises(CheckpointError, match=message):
        flatten(tree)


def test_unflatten_rejects_mismatched_halves():
    with pytest.raises(CheckpointError, match=r"no tensor 'x'"):
        unflatten({}, {"__tensor__": "x"})
    with pytest.raises(CheckpointError, match=r"tensors \['extra'\] are not referred to"):
        unflatten({"extra": torch.ones(1)}, {})


# --- optimizer state and RNG ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make_opt",
    [
        pytest.param(lambda m: torch.optim.Adam(m.parameters(), lr=1e-2), id="torch-Adam"),
        pytest.param(
            lambda m: torch.optim.SGD(m.parameters(), lr=1e-2, momentum=0.9), id="torch-SGD"
        ),
        pytest.param(
            lambda m: trainlab.optim.Adam(m.parameters(), lr=1e-2, backend="eager"),
            id="trainlab-Adam",
        ),
    ],
)
def test_resume_from_checkpoint_is_bit_identical(tmp_path, make_opt):
    saved, loaded, _ = resume_matches_uninterrupted(tmp_path, small_model, make_opt, 3, 3)
    assert_same(loaded.state["optimizer"]["param_groups"], saved["param_groups"])  # betas tuple
    assert_same(loaded.state["optimizer"]["state"], saved["state"])  # 0-dim step dtype too


@pytest.mark.parametrize("spec", trainlab.optim.OPTIMIZERS.values(), ids=lambda s: s.name)
def test_every_trainlab_optimizer_state_round_trips(spec):
    """The registry's optimizers (their last variant) continue in lockstep after a round trip."""
    options = {**spec.variants[-1], **({} if spec.closure else {"backend": "eager"})}
    models = [small_model(0), small_model(0)]
    opts = [spec.cls(m.parameters(), **options) for m in models]

    def step(model, opt, x, y):
        def closure():
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            if spec.name != "newton":  # Newton differentiates the loss twice itself
                loss.backward()
            return loss

        opt.step(closure)

    torch.manual_seed(1)
    batches = [(torch.randn(8, 4), torch.randn(8, 1)) for _ in range(4)]
    for x, y in batches[:2]:
        step(models[0], opts[0], x, y)
    models[1].load_state_dict(models[0].state_dict())
    opts[1].load_state_dict(round_trip(opts[0].state_dict()))
    for x, y in batches[2:]:
        for model, opt in zip(models, opts):
            step(model, opt, x, y)
    for p, q in zip(*(m.parameters() for m in models)):
        assert torch.equal(p, q)


def test_fused_optimizer_state_is_saved_compactly_and_resumes(tmp_path):
    def make_opt(model):
        return trainlab.optim.Adam(model.parameters(), lr=1e-2, backend="fused")

    saved, loaded, opt = resume_matches_uninterrupted(tmp_path, deep_model, make_opt, 2, 2)
    assert all(part["fused"] for part in opt.backend_info())
    assert_same(loaded.state["optimizer"], saved)
    exp_avg = opt.state_dict()["state"][0]["exp_avg"]
    buffer_bytes = exp_avg.untyped_storage().nbytes()
    assert buffer_bytes > 10 * exp_avg.numel() * exp_avg.element_size()  # a view, as meant
    # 40 state tensors: saving whole storages would take 40 buffers, the clones take ~2
    assert (loaded.path / "state.safetensors").stat().st_size < 4 * buffer_bytes


def test_rng_state_round_trip_repeats_draws():
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    state = round_trip(rng_state())

    def draw():
        return torch.rand(4), np.random.standard_normal(3), random.random(), random.gauss(0, 1)

    first = draw()
    draw()
    set_rng_state(state)
    second = draw()
    assert torch.equal(first[0], second[0])
    assert np.array_equal(first[1], second[1])
    assert first[2:] == second[2:]


def test_set_rng_state_rejects_other_values():
    with pytest.raises(CheckpointError, match=r"Invalid RNG state: .*must be what rng_state"):
        set_rng_state({"torch": torch.get_rng_state()})


# --- atomic saves ---------------------------------------------------------------------------


def test_save_writes_verified_files_and_meta(tmp_path):
    weights = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
    state = {"step": 7, "history": [0.5, math.inf]}
    path = save_checkpoint(tmp_path, "step-7", weights=weights, state=state, metrics={"step": 7})
    assert path == tmp_path / "checkpoints" / "step-7"
    assert sorted(os.listdir(path)) == [
        "meta.json",
        "state.json",
        "state.safetensors",
        "weights.safetensors",
    ]
    loaded = load_checkpoint(path)
    assert_same(dict(sorted(loaded.weights.items())), dict(sorted(weights.items())))
    assert_same(loaded.state, state)
    assert (loaded.step, loaded.meta["complete"], loaded.meta["metrics"]) == (7, True, {"step": 7})
    assert list(loaded.meta)[-1] == "complete"


def test_save_replaces_a_checkpoint_of_the_same_name(tmp_path):
    for value in (1.0, 2.0):
        save_checkpoint(tmp_path, "last", weights={"w": torch.tensor(value)}, state={})
    assert os.listdir(tmp_path / "checkpoints") == ["last"]
    assert load_checkpoint(tmp_path / "checkpoints" / "last").weights["w"] == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ".hidden"}, r"Invalid checkpoint name: '.hidden'"),
        ({"name": "a/b"}, r"Invalid checkpoint name: 'a/b'"),
        ({"weights": {"w": 1.0}}, r"Invalid weights: must be a dict of str -> tensor"),
        (
            {"metrics": {"loss": torch.tensor(1.0)}},
            r"Invalid metrics: .*convert tensors with .item\(\)",
        ),
        ({"metrics": {"step": 1.5}}, r"Invalid step in metrics: 1.5 \(must be an int >= 0\)"),
    ],
)
def test_save_rejects_invalid_arguments(tmp_path, kwargs, message):
    arguments = {"name": "ok", "weights": {}, "state": {}, **kwargs}
    with pytest.raises(CheckpointError, match=message):
        save_checkpoint(tmp_path, **arguments)
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("cleanup", [True, False], ids=["exception", "died-before-cleanup"])
def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch, cleanup):
    save_steps(tmp_path, 1)
    real_write = checkpoint._write_file
    written = []

    def failing_write(path, data):
        written.append(path.name)
        if len(written) == 2:
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", failing_write)
    if not cleanup:
        monkeypatch.setattr(checkpoint, "_remove_tree", lambda path: None)
    with pytest.raises(CheckpointError, match=r"No space left.*disk is full.*needs [\d,]+ bytes"):
        save_steps(tmp_path, 2)

    directory = tmp_path / "checkpoints"
    assert not (directory / "step-2").exists()
    assert len(list(directory.glob(".tmp-step-2-*"))) == (0 if cleanup else 1)
    assert names(list_checkpoints(tmp_path)) == ["step-1"]
    assert load_checkpoint(latest_checkpoint(tmp_path)).weights["w"][0] == 1.0


def test_background_writer_saves_the_tensors_as_they_were_at_submit(tmp_path):
    writer = CheckpointWriter()
    w, m = torch.ones(1000), torch.zeros(3)
    ran = []
    path = writer.submit(
        tmp_path,
        "step-1",
        weights={"w": w},
        state={"m": m, "history": [1, 2]},
        metrics={"step": 1},
        then=lambda: ran.append(latest_checkpoint(tmp_path)),
    )
    w.add_(5.0)  # training goes on while the checkpoint is written
    m.fill_(7.0)
    writer.wait()
    saved = load_checkpoint(path)
    assert torch.equal(saved.weights["w"], torch.ones(1000))
    assert torch.equal(saved.state["m"], torch.zeros(3)) and saved.state["history"] == [1, 2]
    assert ran == [path]  # ``then`` ran after the checkpoint was complete


def test_background_writer_checks_inputs_at_once_and_reraises_write_errors(tmp_path, monkeypatch):
    writer = CheckpointWriter()
    with pytest.raises(CheckpointError, match="Invalid checkpoint name"):
        writer.submit(tmp_path, ".hidden", weights={}, state={})
    writer.submit(tmp_path, "step-1", weights={"w": torch.ones(2)}, state={}, metrics={"step": 1})
    writer.wait()

    def full_disk(path, data):
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "_write_file", full_disk)
    writer.submit(tmp_path, "step-2", weights={"w": torch.zeros(2)}, state={}, metrics={"step": 2})
    with pytest.raises(CheckpointError, match="No space left"):
        writer.wait()
    writer.wait()  # reported once
    assert names(list_checkpoints(tmp_path)) == ["step-1"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


KILLED_SAVE = """
import sys, time
from pathlib import Path
import torch
from trainlab.train import checkpoint

run_dir = Path(sys.argv[1])
checkpoint.save_checkpoint(run_dir, "step-1", weights={"w": torch.ones(3)}, state={"n": 1},
                           metrics={"step": 1})
real_write = checkpoint._write_file

def stalling_write(path, data):
    if path.name == "state.safetensors":  # half of the second file, then wait to be killed
        with open(path, "xb") as file:
            file.write(data[: len(data) // 2])
        print("saving", flush=True)
        time.sleep(30)
    real_write(path, data)

checkpoint._write_file = stalling_write
checkpoint.save_checkpoint(run_dir, "step-2", weights={"w": torch.zeros(2_000_000)},
                           state={"big": torch.zeros(100_000)}, metrics={"step": 2})
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    script = tmp_path / "killed_save.py"
    script.write_text(textwrap.dedent(KILLED_SAVE))
    run_dir = tmp_path / "run"
    with subprocess.Popen([sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE) as p:
        try:
            assert p.stdout.readline() == b"saving\n"
            temps = list((run_dir / "checkpoints").glob(".tmp-step-2-*"))
            assert len(temps) == 1
            assert (temps[0] / "weights.safetensors").stat().st_size > 8_000_000
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(timeout=5)
    assert p.returncode == -signal.SIGKILL

    assert names(list_checkpoints(run_dir)) == ["step-1"]
    assert torch.equal(load_checkpoint(latest_checkpoint(run_dir)).weights["w"], torch.ones(3))
    save_steps(run_dir, 3)  # the resumed run saves again; its prune clears the crashed save
    prune_checkpoints(run_dir, keep_last=1)
    assert os.listdir(run_dir / "checkpoints") == ["step-3"]


# --- verification and listing ---------------------------------------------------------------


def flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[:-10])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: flip_byte(p / "weights.safetensors"), r"weights.safetensors fails its SHA-256"),
        (lambda p: truncate(p / "state.safetensors"), r"SHA-256 check \(\d+ of \d+ bytes\)"),
        (lambda p: (p / "state.json").unlink(), r"state.json is missing"),
        (lambda p: flip_byte(p / "meta.json"), r"meta.json is not valid JSON"),
    ],
    ids=["flipped-byte", "truncated", "missing-file", "corrupt-meta"],
)
def test_damaged_checkpoint_names_problem_and_alternatives(tmp_path, damage, message):
    save_steps(tmp_path, 1, 2)
    path = tmp_path / "checkpoints" / "step-2"
    damage(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    earlier = str(tmp_path / "checkpoints" / "step-1")
    assert f"delete it or resume from an earlier checkpoint: {earlier}" in str(info.value)


def test_incomplete_checkpoints_are_not_listed(tmp_path):
    save_steps(tmp_path, 9, 10, 11, 12)
    directory = tmp_path / "checkpoints"
    (directory / "step-11" / "meta.json").unlink()
    meta = json.loads((directory / "step-12" / "meta.json").read_text())
    (directory / "step-12" / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    (directory / ".tmp-step-13-1-abcd").mkdir()
    (directory / "notes.txt").write_text("not a checkpoint")
    assert names(list_checkpoints(tmp_path)) == ["step-9", "step-10"]  # by step, not by name
    assert latest_checkpoint(tmp_path).name == "step-10"
    with pytest.raises(CheckpointError, match=r"meta.json is missing, so its save never finished"):
        load_checkpoint(directory / "step-11")
    with pytest.raises(CheckpointError, match=r'lacks "complete": true'):
        load_checkpoint(directory / "step-12")


def test_other_format_version_is_refused(tmp_path):
    save_steps(tmp_path, 1)
    meta_file = tmp_path / "checkpoints" / "step-1" / "meta.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "format_version": 2}))
    with pytest.raises(CheckpointError, match=r"version 2, this trainlab reads .* version 1"):
        load_checkpoint(meta_file.parent)
    assert list_checkpoints(tmp_path) == []


def test_empty_run_has_no_checkpoints(tmp_path):
    assert list_checkpoints(tmp_path) == []
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match=r"not a directory\. Fix: .*\(none found\)"):
        load_checkpoint(tmp_path / "checkpoints" / "nothing")


# --- retention ------------------------------------------------------------------------------


def test_prune_keeps_last_k_and_best(tmp_path):
    save_steps(tmp_path, 1, 2, 3, 4, 5)
    deleted = prune_checkpoints(tmp_path, keep_last=2, best="step-2")
    assert names(deleted) == ["step-1", "step-3"]
    assert names(list_checkpoints(tmp_path)) == ["step-2", "step-4", "step-5"]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-2", "step-4", "step-5"]


def test_prune_removes_only_stale_temp_dirs(tmp_path):
    directory = tmp_path / "checkpoints"
    directory.mkdir()
    (directory / ".tmp-step-1-1-aaaa").mkdir()
    save_steps(tmp_path, 2)
    os.utime(directory / ".tmp-step-1-1-aaaa", (0, 0))  # crashed long ago
    (directory / ".tmp-step-3-2-bbbb").mkdir()
    in_progress = directory / "step-2" / "meta.json"
    os.utime(in_progress, (1, 1))  # the newest checkpoint is older than the save in progress
    prune_checkpoints(tmp_path, keep_last=1)
    assert sorted(os.listdir(directory)) == [".tmp-step-3-2-bbbb", "step-2"]


def test_prune_rejects_invalid_arguments(tmp_path):
    save_steps(tmp_path, 1)
    with pytest.raises(ValueError, match=r"Invalid keep_last: 0 \(must be an integer >= 1\)"):
        prune_checkpoints(tmp_path, keep_last=0)
    with pytest.raises(CheckpointError, match=r"Invalid best checkpoint: 'step-9'"):
        prune_checkpoints(tmp_path, keep_last=1, best="step-9")
    assert names(list_checkpoints(tmp_path)) == ["step-1"]


# --- weights for init_from ------------------------------------------------------------------


class CreatesFileWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_load_weights_file_refuses_pickle_without_unpickling(tmp_path):
    pickle.loads(pickle.dumps(CreatesFileWhenUnpickled(tmp_path / "proof"))).close()
    assert (tmp_path / "proof").exists()  # the trap works when unpickled
    marker = tmp_path / "marker"
    model_file = tmp_path / "model.pt"
    model_file.write_bytes(pickle.dumps({"w": CreatesFileWhenUnpickled(marker)}))
    refused = r"pickle file, not a safetensors file\. Only safetensors .*arbitrary code"
    with pytest.raises(CheckpointError, match=refused):
        load_weights_file(model_file)
    assert not marker.exists()


def test_load_weights_file_refuses_torch_save_and_garbage(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match=r"zip archive .*safetensors.torch.save_file"):
        load_weights_file(tmp_path / "model.pt")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes((5).to_bytes(8, "little") + b"{oops")
    with pytest.raises(CheckpointError, match=r"not followed by a safetensors header \(JSON\)"):
        load_weights_file(garbage)
    garbage.write_bytes(b"abc")
    with pytest.raises(CheckpointError, match=r"too short to be a safetensors file \(3 bytes\)"):
        load_weights_file(garbage)
    garbage.write_bytes(b"plain text, not weights")  # 8 bytes that give no plausible length
    with pytest.raises(CheckpointError, match=r"more than the file's 23 bytes"):
        load_weights_file(garbage)


def test_two_tensors_at_one_path_are_refused():
    with pytest.raises(CheckpointError, match=r"two tensors at path '1'"):
        flatten({1: torch.zeros(1), "1": torch.ones(1)})


def test_load_weights_file_accepts_safetensors_run_dir_and_checkpoint(tmp_path):
    weights = small_model(0).state_dict()
    safetensors.torch.save_file(weights, tmp_path / "model.safetensors")
    expected = dict(sorted(weights.items()))
    for source in (tmp_path / "model.safetensors", tmp_path):
        assert_same(dict(sorted(load_weights_file(source).items())), expected)
    path = save_checkpoint(tmp_path, "step-1", weights=weights, state={})
    assert_same(dict(sorted(load_weights_file(path).items())), expected)
    with pytest.raises(CheckpointError, match=r"has no model.safetensors"):
        load_weights_file(tmp_path / "checkpoints")
