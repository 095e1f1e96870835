"""backend="auto" decides by step costs measured on this machine and cached per device."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

import trainlab.optim as optim
from trainlab.optim import _fused, calibration
from trainlab.optim.calibration import Costs

CHEAP_FUSED = Costs(5.0, 7.0, 0.001, 1.0, 0.0005, 0.0)
NEVER_FUSED = Costs(5.0, 7.0, 0.001, None, None, 0.0)
CHEAP_TORCH = Costs(5.0, 7.0, 0.001, 3.0, 0.0005, 0.0, torch_us=1.0, torch_us_per_element=0.0004)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty calibration file of this test's own, and no costs remembered in memory."""
    path = tmp_path / "costs.json"
    monkeypatch.setenv("TRAINLAB_CALIBRATION", str(path))
    monkeypatch.setattr(calibration, "_costs", {})
    monkeypatch.setattr(calibration, "_warned", set())
    return path


def default_entry(cls: type) -> str:
    """The cache entry of a group of ``cls`` at its default settings (what calibrate fills)."""
    opt = cls([torch.zeros(1, requires_grad=True)])
    switches = calibration._switches(opt, opt.param_groups[0])
    return calibration._entry(cls, torch.device("cpu"), torch.float32, switches=switches)


def fake_measure(monkeypatch, costs: Costs) -> list[str]:
    calls: list[str] = []

    def measure(cls, device, dtype, settings=None):
        calls.append(cls.__name__)
        return costs

    monkeypatch.setattr(calibration, "measure", measure)
    return calls


def test_a_real_calibration_is_measured_once_and_read_back(cache, monkeypatch):
    (measured,) = optim.calibrate([optim.SGD]).values()
    assert measured.eager_us_per_tensor > 0 and measured.eager_us_per_element > 0
    if _fused.compiler_available(torch.device("cpu")):
        assert measured.fused_us is not None and measured.fused_us > 0
    assert measured.torch_us is not None and measured.torch_us_per_element > 0
    saved = json.loads(cache.read_text())
    assert saved["machine"] == calibration.machine_key(torch.device("cpu"))
    assert len(saved["entries"]) == 1
    monkeypatch.setattr(calibration, "_costs", {})  # a new process: only the file is left
    calls = fake_measure(monkeypatch, NEVER_FUSED)
    assert optim.calibrate([optim.SGD]) == {"SGD": measured}
    assert calls == []


MACHINE = calibration.machine_key(torch.device("cpu"))
DEEP = b"[" * 100_000 + b"]" * 100_000  # a RecursionError in json.loads


def document(**changes) -> dict:
    """A calibration file of trainlab's for this machine, with ``changes``."""
    fields = {"format": calibration.FORMAT, "version": calibration.VERSION}
    return {**fields, "machine": MACHINE, "entries": {}, **changes}


def calibrate_two(monkeypatch, reason: str) -> list[warnings.WarningMessage]:
    """Calibrate Adam and SGD with fake costs; the warnings, one expected, matching ``reason``."""
    calls = fake_measure(monkeypatch, CHEAP_FUSED)
    with pytest.warns(RuntimeWarning, match=reason) as caught:
        optim.calibrate([optim.Adam, optim.SGD])
    assert calls == ["Adam", "SGD"]
    assert len(caught) == 1, [str(w.message) for w in caught]
    return list(caught)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (DEEP, "not JSON"),
        (b"[1, 2]", 'no "format"'),
        (b'{"hello": "world"}', 'no "format"'),
        (b'{"version": 99}', 'no "format"'),
        (json.dumps(document(format="someone-else")).encode(), 'no "format"'),
        (b"x" * (calibration.MAX_CACHE_BYTES + 1), "more than"),
    ],
)
def test_a_foreign_file_is_left_untouched_with_one_warning(cache, monkeypatch, content, reason):
    cache.write_bytes(content)
    (warning,) = calibrate_two(monkeypatch, reason)
    message = str(warning.message)
    assert str(cache) in message and "TRAINLAB_CALIBRATION" in message
    assert cache.read_bytes() == content  # never overwritten
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]  # nothing beside it


def test_a_folder_at_the_path_gives_one_warning_and_leaves_nothing_behind(cache, monkeypatch):
    cache.mkdir()
    (warning,) = calibrate_two(monkeypatch, "not a regular file")
    assert str(cache) in str(warning.message)
    assert cache.is_dir() and not any(cache.iterdir())
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]  # no temporary file


@pytest.mark.parametrize(
    "stored, reason",
    [
        (document(version=calibration.VERSION + 1), "version"),
        # measured before the timed steps took their gradients from backward (a copy more)
        (document(version=3), "version"),
        (document(machine="a computer elsewhere"), "another machine"),
        (document(entries=[1, 2]), "entries"),
        # written before the format marker: the three keys alone, still trainlab's
        ({"version": 2, "machine": MACHINE, "entries": {}}, "version"),
        ({"version": calibration.VERSION, "machine": "elsewhere", "entries": {}}, "another"),
    ],
)
def test_an_outdated_or_damaged_cache_of_ours_is_replaced_with_one_warning(
    cache, monkeypatch, stored, reason
):
    cache.write_text(json.dumps(stored))
    (warning,) = calibrate_two(monkeypatch, reason)
    assert "replacing" in str(warning.message)
    rebuilt = json.loads(cache.read_text())
    assert rebuilt == document(entries=rebuilt["entries"]) and len(rebuilt["entries"]) == 2
    assert sorted(p.name for p in cache.parent.iterdir()) == [cache.name]


def test_a_long_machine_name_is_cut_in_the_warning(cache, monkeypatch):
    cache.write_text(json.dumps(document(machine="x" * 100_000)))
    (warning,) = calibrate_two(monkeypatch, "another machine")
    assert len(str(warning.message)) < 500


def test_a_failed_save_warns_once_and_leaves_no_temporary_file(cache, monkeypatch):
    def refuse(source, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(calibration.os, "replace", refuse)
    calibrate_two(monkeypatch, "cannot save")
    assert list(cache.parent.iterdir()) == []


ENTRY = {
    "eager_us": 1.0,
    "eager_us_per_tensor": 1.0,
    "eager_us_per_element": 0.1,
    "fused_us": 1.0,
    "fused_us_per_element": 0.1,
    "compile_s": 1.0,
}


@pytest.mark.parametrize(
    "bad",
    [
        {"eager_us": "fast"},  # other keys
        "fast",  # not a table
        {**ENTRY, "eager_us": "fast"},
        {**ENTRY, "eager_us": None},  # only the compiled costs may be null
        {**ENTRY, "fused_us": None},  # and only both together
        {**ENTRY, "torch_us": 1.0},  # torch's kernel's costs: both or neither
        {**ENTRY, "torch_us": -1.0, "torch_us_per_element": 0.1},
        {**ENTRY, "compile_s": -1.0},
        {**ENTRY, "eager_us_per_tensor": True},
        {**ENTRY, "eager_us": 10**400},  # no float holds it: a model of it would overflow
        {**ENTRY, "eager_us": json.loads("[" * 500 + "]" * 500)},  # too deep to copy
    ],
)
def test_an_entry_with_wrong_numbers_is_measured_again(cache, monkeypatch, bad):
    cache.write_text(json.dumps(document(entries={default_entry(optim.Adam): bad})))
    calls = fake_measure(monkeypatch, CHEAP_FUSED)
    assert optim.calibrate([optim.Adam]) == {"Adam": CHEAP_FUSED}
    assert calls == ["Adam"]


def test_saving_keeps_the_valid_entries_of_others_and_drops_damaged_ones(cache, monkeypatch):
    other = default_entry(optim.SGD)
    damaged = {"deep": json.loads(b"[" * 500 + b"]" * 500), "words": "fast"}
    cache.write_text(json.dumps(document(entries={other: ENTRY, **damaged})))
    fake_measure(monkeypatch, CHEAP_FUSED)
    optim.calibrate([optim.Adam])
    saved = json.loads(cache.read_text())["entries"]
    assert saved == {
        other: dataclasses.asdict(Costs(**ENTRY)),
        **{default_entry(optim.Adam): dataclasses.asdict(CHEAP_FUSED)},
    }


def test_a_cached_entry_that_cannot_compile_is_read_back(cache, monkeypatch):
    stored = {**ENTRY, "fused_us": None, "fused_us_per_element": None}
    cache.write_text(json.dumps(document(entries={default_entry(optim.Adam): stored})))
    calls = fake_measure(monkeypatch, CHEAP_FUSED)
    assert optim.calibrate([optim.Adam]) == {"Adam": Costs(**stored)}
    assert calls == []


def test_a_cache_written_before_the_format_marker_is_read(cache, monkeypatch):
    entry = default_entry(optim.Adam)
    cache.write_text(
        json.dumps({"version": calibration.VERSION, "machine": MACHINE, "entries": {entry: ENTRY}})
    )
    calls = fake_measure(monkeypatch, CHEAP_FUSED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert optim.calibrate([optim.Adam]) == {"Adam": Costs(**ENTRY)}
    assert calls == []


def group(tensors: int, size: int) -> list[torch.Tensor]:
    params = [torch.zeros(size, requires_grad=True) for _ in range(tensors)]
    for p in params:
        p.grad = torch.ones_like(p)
    return params


@pytest.mark.parametrize(
    ("costs", "kernel"), [(CHEAP_FUSED, "compiled"), (NEVER_FUSED, None), (CHEAP_TORCH, "torch")]
)
def test_auto_takes_the_path_the_costs_favour(cache, monkeypatch, costs, kernel):
    monkeypatch.setattr(_fused, "compiler_available", lambda device: True)
    fake_measure(monkeypatch, costs)
    opt = optim.Adam(group(2, 100))
    for _ in range(2):  # the first step creates the state; the second is a flat one
        opt.step()
    assert [(part["numel"], part["kernel"]) for part in opt.backend_info()] == (
        [(200, kernel)] if kernel else []
    )


@pytest.mark.parametrize("compiler", [True, False])
def test_auto_never_takes_a_torch_kernel_a_class_lacks_whatever_the_costs_say(
    cache, monkeypatch, compiler
):
    monkeypatch.setattr(_fused, "compiler_available", lambda device: compiler)
    calls = fake_measure(monkeypatch, CHEAP_TORCH)  # torch's kernel modelled cheapest
    opt = optim.NAdam(group(2, 100))
    for _ in range(2):
        opt.step()
    kernels = [part["kernel"] for part in opt.backend_info()]
    assert kernels == (["compiled"] if compiler else [])  # never "torch"
    assert calls == (["NAdam"] if compiler else [])  # nothing to measure for eager alone


def test_a_group_torch_has_no_kernel_for_is_measured_without_one():
    settings = {"lr": 0.1, "momentum": 0.9, "momentum_form": "ema"}  # torch knows "rho" only
    measured = calibration.measure(optim.SGD, torch.device("cpu"), torch.float32, settings)
    assert measured.torch_us is None and measured.torch_us_per_element is None
    assert measured.eager_us_per_element > 0


def test_the_cost_models_compare_as_written():
    costs = Costs(
        eager_us=10.0,
        eager_us_per_tensor=5.0,
        eager_us_per_element=0.01,
        fused_us=50.0,
        fused_us_per_element=0.001,
        compile_s=2.0,
    )
    assert costs.choose(tensors=4, elements=1000) == "eager"  # 10 + 20 + 10 < 50 + 1
    assert costs.choose(tensors=8, elements=1000) == "fused"  # 10 + 40 + 10 > 50 + 1
    assert costs.choose(tensors=1, elements=10_000) == "fused"  # 10 + 5 + 100 > 50 + 10
    assert costs.choose(tensors=8, elements=1000, compiled=False) == "eager"  # no compiler
    assert NEVER_FUSED.choose(tensors=1000, elements=10**9) == "eager"
    # a known run length must repay the 2 s compilation: 9 µs saved a step needs 222,223 steps
    assert costs.choose(tensors=8, elements=1000, steps=200_000) == "eager"
    assert costs.choose(tensors=8, elements=1000, steps=250_000) == "fused"
    # torch's kernel: T + t·elements, no compilation to repay
    kernel = dataclasses.replace(costs, torch_us=20.0, torch_us_per_element=0.002)
    assert kernel.estimates(8, 1000) == pytest.approx(
        {"eager": 60.0, "fused": 51.0, "torch-fused": 22.0}
    )
    assert kernel.choose(tensors=8, elements=1000) == "torch-fused"  # 22 < 51 < 60
    assert kernel.choose(tensors=8, elements=1000, kernel=False) == "fused"  # no such kernel
    assert kernel.choose(tensors=1, elements=100_000) == "fused"  # 150 < 220 < 1015
    # compiling must beat the best other path, here torch's kernel: 70 µs a step
    assert kernel.choose(tensors=1, elements=100_000, steps=20_000) == "torch-fused"
    assert kernel.choose(tensors=1, elements=100_000, steps=30_000) == "fused"
    assert kernel.choose(tensors=1, elements=0) == "eager"  # 15 < 20 < 50
    # where the two flat paths are close, torch's kernel: compiled must be 5% cheaper
    close = dataclasses.replace(costs, torch_us=40.0, torch_us_per_element=0.00105)
    assert close.choose(tensors=1, elements=10**6) == "torch-fused"  # 1050 vs 1090: 3.7%
    clear = dataclasses.replace(costs, torch_us=40.0, torch_us_per_element=0.0012)
    assert clear.choose(tensors=1, elements=10**6) == "fused"  # 1050 vs 1240: 15%


def test_calibrate_fills_the_entry_a_group_of_default_settings_reads(cache, monkeypatch):
    calls = fake_measure(monkeypatch, CHEAP_TORCH)
    optim.calibrate([optim.Adam, optim.SGD])
    assert calls == ["Adam", "SGD"]
    monkeypatch.setattr(calibration, "_costs", {})  # a new process: only the file is left
    for cls in (optim.Adam, optim.SGD):
        cls(group(2, 100)).step()
    assert calls == ["Adam", "SGD"]  # nothing measured again


def test_the_trainer_tells_the_optimizer_how_long_the_run_is(tmp_path):
    from trainlab.train import load_config
    from trainlab.train.trainer import Trainer

    config = load_config(None, ["run.epochs=2", "data.batch_size=400", "model.kind=mlp"])
    trainer = Trainer(config, tmp_path / "run")
    assert trainer.optimizer.expected_steps == trainer.steps_total == 2 * 8


def test_pinned_costs_make_no_warning_and_no_measurement(monkeypatch):
    calls = fake_measure(monkeypatch, CHEAP_FUSED)  # the session's "*" entry answers
    monkeypatch.setattr(calibration, "_costs", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = optim.Adam(group(2, 100))
        opt.step()
    assert calls == []


def test_a_groups_switches_get_costs_of_their_own(cache, monkeypatch):
    calls = fake_measure(monkeypatch, NEVER_FUSED)
    for options in ({}, {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True}, {}):
        optim.SGD(group(2, 100), lr=0.1, **options).step()
    assert calls == ["SGD", "SGD", "SGD"]  # the fourth is the first's entry again
    assert len(json.loads(cache.read_text())["entries"]) == 3


def test_the_costs_are_of_steps_as_a_training_loop_takes_them(monkeypatch):
    """A flat group copies a gradient assigned by hand into its buffer at every step; in a
    training loop zero_grad hands out views of the buffer and backward fills them, with no
    copy. The timed steps must be the training loop's, copying nothing."""
    monkeypatch.setattr(_fused, "compiler_available", lambda device: False)  # no compiling
    copies: list[str] = []
    copy, timed = torch._foreach_copy_, calibration._timed

    def counting_copy(*args, **kwargs):
        copies.append("copy")
        return copy(*args, **kwargs)

    def timed_with_copies_counted(opt, device):
        monkeypatch.setattr(torch, "_foreach_copy_", counting_copy)
        try:
            return timed(opt, device)
        finally:
            monkeypatch.setattr(torch, "_foreach_copy_", copy)

    monkeypatch.setattr(calibration, "_timed", timed_with_copies_counted)
    measured = calibration.measure(optim.Adam, torch.device("cpu"), torch.float32)
    assert measured.torch_us is not None  # torch's kernel stepped the flat buffers
    assert copies == []
