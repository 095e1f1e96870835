"""Weights files: "is this safetensors?" is decided by parsing the header as the format
defines it, so every valid file loads back through every reader, whatever its header length."""

from __future__ import annotations

import json
import pickle
import re
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import trainlab
from trainlab.cli import main
from trainlab.train import CheckpointError, load_weights_file
from trainlab.train.checkpoint import safetensors_problem

from .test_seeds import fixed_test_split
from .test_trainer import set_args

WEIGHT = torch.arange(6, dtype=torch.float32).reshape(2, 3)


def header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def hand_written(length: int) -> bytes:
    """A safetensors file holding WEIGHT as "w", its header padded with spaces (as the format
    allows) to exactly ``length`` bytes."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}})
    padded = header.encode().ljust(length, b" ")
    assert len(padded) == length
    return struct.pack("<Q", length) + padded + WEIGHT.numpy().tobytes()


@pytest.mark.parametrize("residue", range(256))
def test_every_header_length_modulo_256_loads_back(tmp_path, residue):
    length = 256 + residue  # 256..511: longer than the unpadded header (~60 bytes)
    path = tmp_path / "model.safetensors"
    path.write_bytes(hand_written(length))
    assert header_length(path) % 256 == residue
    assert torch.equal(safetensors.torch.load_file(str(path))["w"], WEIGHT)  # a valid file
    assert torch.equal(load_weights_file(path)["w"], WEIGHT)


def test_files_the_safetensors_library_writes_load_back_at_every_aligned_length(tmp_path):
    """The library pads its header to a multiple of 8: metadata of growing length takes the
    header through all 32 such residues modulo 256, 128 (a first byte of 0x80) among them."""
    seen = set()
    for size in range(0, 400):
        path = tmp_path / f"m{size}.safetensors"
        safetensors.torch.save_file({"w": WEIGHT}, str(path), metadata={"note": "x" * size})
        seen.add(header_length(path) % 256)
        assert torch.equal(load_weights_file(path)["w"], WEIGHT)
    assert seen == set(range(0, 256, 8))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d[:-1], r"declares 104 bytes in all, but the file has 103 \(truncated"),
        (lambda d: d + b"\0", r"declares 104 bytes in all, but the file has 105"),
        (lambda d: d[:8] + b"[" + d[9:], r"not followed by a safetensors header"),
        (lambda d: d.replace(b"[0, 24]", b"[4, 28]"), r"gap or overlap at byte 0"),
        (lambda d: d.replace(b"[2, 3]", b"[3, 3]"), r"do not span a F32 tensor of shape \[3, 3\]"),
        (lambda d: struct.pack("<Q", 1 << 40) + d[8:], r"header of 1,099,511,627,776 bytes"),
    ],
)
def test_a_header_that_does_not_describe_the_file_is_refused_with_its_cause(
    tmp_path, change, problem
):
    path = tmp_path / "model.safetensors"
    path.write_bytes(change(hand_written(72)))
    with pytest.raises(CheckpointError, match=problem) as refused:
        load_weights_file(path)
    # A damaged file is not a pickle: the fix offered is a fresh copy, not a conversion.
    assert "damaged or is not a weights file" in str(refused.value)
    assert "torch.load" not in str(refused.value)


def test_pickle_and_zip_are_named_only_when_the_header_does_not_parse(tmp_path):
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    assert safetensors_problem(pickled) == "it is a pickle file, not a safetensors file"
    zipped = tmp_path / "model.pt"
    torch.save({"w": WEIGHT}, zipped)
    assert safetensors_problem(zipped).startswith("it is a zip archive")
    valid = tmp_path / "valid.safetensors"
    valid.write_bytes(hand_written(128 + 256))  # starts with 0x80 0x01: pickle-like bytes
    assert valid.read_bytes()[0] == 0x80 and safetensors_problem(valid) is None


def test_the_suggested_conversion_runs_and_its_output_loads(tmp_path, monkeypatch):
    """The error's fix, executed as written, turns a torch.save file (of a Lightning-style
    checkpoint, with tensors sharing storage) into one that loads."""
    base = torch.randn(4, 3)
    original = tmp_path / "net.ckpt"
    torch.save({"state_dict": {"a": base, "b": base[:2]}, "epoch": 3}, original)
    with pytest.raises(CheckpointError) as refused:
        load_weights_file(original)
    fix = re.search(
        r"Fix: convert it once, in a Python session you trust: (.*)$", str(refused.value)
    )
    assert fix is not None
    monkeypatch.chdir(tmp_path)
    exec(fix.group(1).replace("; ", "\n"), {})
    converted = load_weights_file(tmp_path / "net.safetensors")
    assert torch.equal(converted["a"], base) and torch.equal(converted["b"], base[:2])


def test_a_run_whose_header_length_is_128_modulo_256_goes_through_every_reader(tmp_path, capsys):
    """The tests' tiny run with one hidden layer of 64 units writes a model.safetensors whose
    header length is 128 modulo 256: its first byte is 0x80, the pickle protocol marker."""
    parent = tmp_path / "seeds"
    fixed = fixed_test_split(tmp_path)  # members tested on the same examples: an ensemble
    settings = [s for s in fixed if not s.startswith("model.hidden")] + ["model.hidden=[64]"]
    assert main(["train", "--run-dir", str(parent), "--seeds", "2", *set_args(settings)]) == 0
    member = parent / "member-1"
    assert header_length(member / "model.safetensors") % 256 == 128

    run = trainlab.load_run(member)
    assert isinstance(run.model, nn.Module)
    capsys.readouterr()
    assert main(["evaluate", str(member), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)["splits"]["test"]["accuracy"]
    summary = json.loads((member / "summary.json").read_text())
    assert evaluated == pytest.approx(summary["test_accuracy"])
    assert main(["ensemble", str(parent), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ensemble"]["size"] == 2

    warm = tmp_path / "warm"
    init = f'run.init_from="{member / "model.safetensors"}"'
    assert main(["train", "--run-dir", str(warm), *set_args([*settings, init])]) == 0
    assert (warm / "model.safetensors").is_file()


def test_a_dtype_newer_than_the_library_is_named_with_the_upgrade_not_as_damage(tmp_path):
    header = json.dumps({"w": {"dtype": "F4X", "shape": [2], "data_offsets": [0, 2]}})
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode() + b"ab")
    with pytest.raises(
        CheckpointError, match=r"tensor type this safetensors .* upgrade"
    ) as refused:
        load_weights_file(path)
    assert "damaged" not in str(refused.value)
