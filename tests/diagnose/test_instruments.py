"""Live instruments: each verdict fires on the failure it names, not on a healthy run."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from torch import nn

import trainlab
from trainlab.train import Callback, Interrupted, TrainingError

DIAGNOSTICS = {
    "diagnostics.enabled": True,
    "diagnostics.every": 2,
    "diagnostics.window": 4,
    "diagnostics.plots": False,
}


def data(n: int = 400, classes: int = 4, noise: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    y = x[:, :classes].argmax(1)
    flip = torch.rand(n, generator=g) < noise
    y[flip] = torch.randint(0, classes, (int(flip.sum()),), generator=g)
    return x, y


def mlp(width: int = 32, depth: int = 2, activation: type[nn.Module] = nn.ReLU, out: int = 4):
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    size = 10
    for _ in range(depth):
        layers += [nn.Linear(size, width), activation()]
        size = width
    return nn.Sequential(*layers, nn.Linear(size, out))


def verdicts(tmp_path, model, *, train=None, val=None, settings=None, **options):
    torch.manual_seed(0)
    x, y = data()
    summary = trainlab.fit(
        model,
        train if train is not None else (x[:300], y[:300]),
        val=val if val is not None else (x[300:], y[300:]),
        run_dir=tmp_path / "run",
        settings={**DIAGNOSTICS, **(settings or {})},
        **options,
    )
    names = [v["name"] for v in summary["verdicts"]]
    assert names == list(dict.fromkeys(names))  # each verdict once
    return summary, set(names)


def test_a_healthy_run_draws_no_verdict(tmp_path):
    x, y = data(n=2000)
    summary, names = verdicts(
        tmp_path,
        mlp(),
        train=(x[:1500], y[:1500]),
        val=(x[1500:], y[1500:]),
        epochs=3,
        lr=5e-3,
        batch_size=32,
    )
    assert names == set(), summary["verdicts"]
    assert summary["train_accuracy"] > 0.9
    diagnostics = json.loads((tmp_path / "run" / "diagnostics.json").read_text())
    sample = diagnostics["samples"][-1]
    assert set(sample["layers"]) == {"0", "1", "2", "3", "4"}
    ratios = [p["update_ratio"] for p in sample["parameters"].values()]
    assert all(1e-5 < r < 1e-1 for r in ratios)
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert any("diagnostics" in r for r in records)


def test_a_learning_rate_of_10_is_too_high(tmp_path):
    summary, names = verdicts(tmp_path, mlp(), epochs=3, lr=10.0, batch_size=32, nonfinite="skip")
    assert "lr_too_high" in names and "lr_too_low" not in names
    verdict = next(v for v in summary["verdicts"] if v["name"] == "lr_too_high")
    assert verdict["status"] == "fail" and "rose" in verdict["evidence"]


def test_a_learning_rate_of_1e_7_is_too_low(tmp_path):
    _, names = verdicts(tmp_path, mlp(), epochs=4, lr=1e-7, batch_size=32)
    assert "lr_too_low" in names and "lr_too_high" not in names


def test_a_large_negative_bias_kills_relu_units(tmp_path):
    model = mlp()
    with torch.no_grad():
        model[0].bias.fill_(-20.0)
    summary, names = verdicts(tmp_path, model, epochs=2, lr=1e-3, batch_size=32)
    assert "dead_units" in names
    dead = next(v for v in summary["verdicts"] if v["name"] == "dead_units")
    assert dead["data"]["layer"] == "1" and dead["data"]["dead"] == 1.0


def test_tanh_units_driven_hard_saturate(tmp_path):
    model = mlp(activation=nn.Tanh)
    with torch.no_grad():
        model[0].weight.mul_(30.0)
    _, names = verdicts(tmp_path, model, epochs=1, lr=1e-3, batch_size=32)
    assert "saturation" in names


def test_small_init_on_a_deep_tanh_net_vanishes_the_gradients(tmp_path):
    model = mlp(depth=10, activation=nn.Tanh)
    for module in model:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    _, names = verdicts(tmp_path, model, epochs=1, lr=1e-3, batch_size=32)
    assert "vanishing_gradients" in names


def test_a_big_model_on_100_examples_overfits(tmp_path):
    x, y = data(n=600, noise=0.3, seed=1)
    _, names = verdicts(
        tmp_path,
        mlp(width=256),
        train=(x[:100], y[:100]),
        val=(x[100:], y[100:]),
        epochs=60,
        lr=3e-3,
        batch_size=25,
        settings={"diagnostics.every": 10},
    )
    assert "overfitting" in names and "underfitting" not in names


def test_a_tiny_heavily_regularized_model_underfits(tmp_path):
    model = nn.Sequential(nn.Linear(10, 2), nn.ReLU(), nn.Dropout(0.5), nn.Linear(2, 4))
    _, names = verdicts(
        tmp_path,
        model,
        epochs=3,
        lr=1e-3,
        batch_size=32,
        settings={**DIAGNOSTICS, "optimizer.options": {"weight_decay": 0.5}},
    )
    assert "underfitting" in names and "overfitting" not in names


def test_an_instrument_asked_for_a_missing_layer_names_it(tmp_path):
    with pytest.raises(TrainingError, match=r"Invalid diagnostics.layers: 'encoder\*'"):
        verdicts(tmp_path, mlp(), epochs=1, settings={"diagnostics.layers": ["encoder*"]})


class StopAt(Callback):
    def on_step_end(self, trainer, step):
        if step.step == 13:
            signal.raise_signal(signal.SIGTERM)


def test_instruments_resume_exactly(tmp_path):
    x, y = data()

    def run(folder, callbacks=(), resume=False):
        torch.manual_seed(0)
        return trainlab.fit(
            mlp(),
            (x[:300], y[:300]),
            val=(x[300:], y[300:]),
            run_dir=tmp_path / folder,
            resume=resume,
            callbacks=callbacks,
            epochs=3,
            batch_size=32,
            checkpoint_seconds=0,
            settings=DIAGNOSTICS,
        )

    run("reference")
    with pytest.raises(Interrupted):
        run("stopped", callbacks=[StopAt()])
    run("stopped", resume=True)
    reference = json.loads((tmp_path / "reference" / "diagnostics.json").read_text())
    resumed = json.loads((tmp_path / "stopped" / "diagnostics.json").read_text())
    assert [s["step"] for s in resumed["samples"]] == [s["step"] for s in reference["samples"]]
    assert resumed["samples"] == reference["samples"]  # bit-identical, window state included


def test_figures_are_written_when_asked(tmp_path):
    verdicts(
        tmp_path,
        mlp(),
        epochs=1,
        batch_size=32,
        settings={"diagnostics.plots": True, "diagnostics.histograms": True},
    )
    for name in ("curves.png", "layers.png", "histograms.png"):
        data_ = (tmp_path / "run" / name).read_bytes()
        assert data_.startswith(b"\x89PNG") and len(data_) > 10_000, name
