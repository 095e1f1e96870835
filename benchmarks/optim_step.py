"""Time one optimizer step: trainlab vs torch.optim's for-loop, foreach and fused kernels.

Parameter shapes are ResNet-18's (11.7M parameters in 62 tensors) and a small MLP's.
Medians over repeated steps; the gradients are fixed random tensors, so only the
optimizer is timed. A streaming "roofline" — one in-place pass reading and writing
the same number of bytes that Adam moves (param, grad, m, v read; param, m, v written) —
puts the times in proportion to what the memory system allows.

    python benchmarks/optim_step.py [--quick] [--threads N] [--out FILE]

Prints a table and writes JSON (default benchmarks/results/optim_step.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

import trainlab.optim as tl
from trainlab.optim import OPTIMIZERS


def resnet18_shapes() -> list[tuple[int, ...]]:
    """The 62 parameter shapes of ResNet-18 (ImageNet head)."""
    shapes: list[tuple[int, ...]] = [(64, 3, 7, 7), (64,), (64,)]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for block in range(2):
            first = block == 0
            shapes += [(c_out, c_in if first else c_out, 3, 3), (c_out,), (c_out,)]
            shapes += [(c_out, c_out, 3, 3), (c_out,), (c_out,)]
            if first and (stride != 1 or c_in != c_out):
                shapes += [(c_out, c_in, 1, 1), (c_out,), (c_out,)]
        c_in = c_out
    return [*shapes, (1000, 512), (1000,)]


def mlp_shapes() -> list[tuple[int, ...]]:
    """A small MLP (40 → 256 → 256 → 10), 77k parameters in 6 tensors."""
    return [(256, 40), (256,), (256, 256), (256,), (10, 256), (10,)]


MODELS = {"resnet18": resnet18_shapes, "mlp": mlp_shapes}


def make_params(shapes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return params


def time_steps(opt, repeats: int, warmup: int = 3) -> float:
    """Median seconds per step()."""
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def roofline(shapes, repeats: int) -> float:
    """Seconds for an in-place streaming pass moving Adam's 28 bytes per fp32 parameter.

    Adam reads param, grad, m, v (16 B) and writes param, m, v (12 B). An in-place
    multiply reads and writes 4 B per element, so 3.5 elements per parameter move the
    same 28 B.
    """
    n = sum(torch.Size(s).numel() for s in shapes)
    buffer = torch.randn(n * 7 // 2)
    times = []
    for _ in range(repeats + 2):
        start = time.perf_counter()
        buffer.mul_(1.0)
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def variants(spec):
    """(label, factory) pairs for one optimizer."""
    name, options = spec.torch_name, dict(spec.variants[0])
    torch_cls = getattr(torch.optim, name)
    yield "trainlab", lambda ps: spec.cls(ps, **options)
    yield "torch for-loop", lambda ps: torch_cls(ps, foreach=False, **options)
    yield "torch foreach", lambda ps: torch_cls(ps, foreach=True, **options)
    if name in ("Adam", "AdamW", "SGD", "Adagrad"):
        yield "torch fused", lambda ps: torch_cls(ps, fused=True, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/optim_step.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 3 if args.quick else 15

    results = []
    for model, shapes_fn in MODELS.items():
        shapes = shapes_fn()
        n = sum(torch.Size(s).numel() for s in shapes)
        floor = roofline(shapes, repeats)
        print(f"\n{model}: {n:,} parameters in {len(shapes)} tensors, {args.threads} threads")
        print(f"  streaming roofline (28 B/param in-place pass): {floor * 1e3:.2f} ms")
        header = (
            f"  {'optimizer':<9} {'implementation':<15} {'ms/step':>9} {'vs torch for-loop':>18}"
        )
        print(header + "\n  " + "-" * (len(header) - 2))
        for spec in OPTIMIZERS.values():
            if spec.closure or spec.torch_name is None:
                continue
            rows = []
            for label, factory in variants(spec):
                opt = factory(make_params(shapes))
                rows.append((label, time_steps(opt, repeats)))
            loop = dict(rows)["torch for-loop"]
            for label, seconds in rows:
                print(
                    f"  {spec.name:<9} {label:<15} {seconds * 1e3:>9.3f} {seconds / loop:>17.2f}x"
                )
                results.append(
                    dict(
                        model=model,
                        params=n,
                        tensors=len(shapes),
                        optimizer=spec.name,
                        implementation=label,
                        seconds=seconds,
                        ratio_to_torch_for_loop=seconds / loop,
                        roofline_seconds=floor,
                    )
                )
    meta = dict(
        torch=torch.__version__,
        trainlab=tl.__name__,
        threads=args.threads,
        repeats=repeats,
        machine=platform.machine(),
        processor=platform.processor(),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
