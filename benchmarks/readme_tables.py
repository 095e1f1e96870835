"""Print the README's benchmark tables (markdown) from benchmarks/results/optim_step.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

LABELS = [
    "trainlab default",
    "trainlab fused",
    "trainlab torch-fused",
    "trainlab eager",
    "torch for-loop",
    "torch foreach",
    "torch fused",
]


def ratio_to_torch(rows: dict[str, dict]) -> float:
    """trainlab's default over torch's fastest, paired round by round (see optim_step.py)."""
    return rows["trainlab default"]["ratio_to_torch_best"]


def table(rows: list[dict], unit: float, digits: int) -> str:
    head = "| optimizer | " + " | ".join(LABELS) + " | default ÷ best torch | % roofline |"
    lines = [head, "|---" * (len(LABELS) + 3) + "|"]
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        mine = {r["implementation"]: r for r in rows if r["optimizer"] == name}
        cells = [
            f"{mine[label]['seconds'] * unit:.{digits}f}" if label in mine else "—"
            for label in LABELS
        ]
        default = mine["trainlab default"]
        ratio = f"{ratio_to_torch(mine):.2f}"
        share = f"{default['roofline_fraction'] * 100:.0f}%"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ratio} | {share} |")
    return "\n".join(lines)


def pivot(rows: list[dict], column, heading, cell) -> str:
    """A table of optimizers (rows) by ``column(row)`` (columns, titled ``heading(key)``); each
    cell is ``cell(rows)``, that optimizer's rows in that column, by implementation."""
    keys = list(dict.fromkeys(column(r) for r in rows))
    lines = ["| optimizer | " + " | ".join(heading(k) for k in keys) + " |"]
    lines.append("|---" * (len(keys) + 1) + "|")
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        mine = [r for r in rows if r["optimizer"] == name]
        cells = [cell({r["implementation"]: r for r in mine if column(r) == k}) for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(rows: list[dict]) -> str:
    """default ÷ torch's fastest per optimizer and size."""
    rows = sorted(rows, key=lambda r: r["params"])
    return pivot(rows, lambda r: r["params"], "{:.0e}".format, lambda m: f"{ratio_to_torch(m):.2f}")


def roofline_table(rows: list[dict]) -> str:
    """% of the roofline of the default path per optimizer and size."""
    rows = sorted(rows, key=lambda r: r["params"])

    def share(mine: dict[str, dict]) -> str:
        return f"{mine['trainlab default']['roofline_fraction'] * 100:.0f}%"

    return pivot(rows, lambda r: r["params"], "{:.0e}".format, share)


def fixed_table(rows: list[dict]) -> str:
    """The fixed-cost table of optim_step's interleaved run: µs per step of each path."""
    paths = ["trainlab default", "trainlab fused", "trainlab torch-fused", "trainlab eager"]
    lines = [
        "| optimizer | " + " | ".join(paths) + " | torch fastest |",
        "|---" * (len(paths) + 2) + "|",
    ]
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        mine = {r["implementation"]: r["seconds"] * 1e6 for r in rows if r["optimizer"] == name}
        best = min(v for k, v in mine.items() if k.startswith("torch"))
        cells = [f"{mine[k]:.0f}" if k in mine else "—" for k in paths]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best:.0f} |")
    return "\n".join(lines)


def alone_table(runs: dict) -> str:
    """fixed_cost.py's runs: each path of the "current" run alone, beside the "before" run."""
    now, before = runs["current"]["us"], runs.get("before", {}).get("us", {})
    lines = [
        "| optimizer | fused before | default | fused | torch-fused | torch fastest "
        "| default ÷ fused before |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in now.items():
        old = before.get(name, {}).get("fused")
        cells = [
            f"{old:.0f}" if old else "—",
            *(f"{row[k]:.0f}" if k in row else "—" for k in ("default", "fused", "torch-fused")),
            f"{row['torch fastest']:.0f}",
            f"{row['default'] / old:.2f}" if old else "—",
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def shapes_table(rows: list[dict]) -> str:
    """default ÷ torch's fastest for each (tensors × parameters) workload of the "tensors" run."""
    return pivot(
        rows,
        lambda r: (r["tensors"], r["params"]),
        lambda key: f"{key[0]} × {key[1] // key[0]:,}",
        lambda mine: f"{ratio_to_torch(mine):.2f}",
    )


def main(path: Path | None = None) -> None:
    """Print every table; ``path`` defaults to the first argument, else the checked-in JSON."""
    if path is None:
        default = Path(__file__).parent / "results" / "optim_step.json"
        path = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    data = json.loads(path.read_text())
    print("ResNet-18 shapes (11.7M parameters, 62 tensors), ms per step:\n")
    print(table(data["resnet18"], 1e3, 2))
    print("\n1,000 tensors of 256 parameters, ms per step:\n")
    print(table(data["small"], 1e3, 2))
    print(
        "\nSize sweep (8 equal tensors), trainlab's default (backend auto) ÷ the fastest "
        "torch.optim implementation:\n"
    )
    print(sweep_table(data["sweep"]))
    big = [
        r
        for r in data["sweep"]
        if r["params"] >= 10**7 and r["implementation"] == "trainlab default"
    ]
    if big:
        print(
            "\n% of the streaming roofline, trainlab's default path taking turns with the "
            "other implementations (8 equal tensors):\n"
        )
        print(roofline_table(big))
    if "roofline" in data:
        print(
            "\n% of the streaming roofline, trainlab's default path alone beside the "
            "roofline pass (8 equal tensors):\n"
        )
        print(roofline_table(data["roofline"]))
    if "tensors" in data:
        print(
            "\nTensors per group (tensors × parameters each), trainlab's default ÷ the "
            "fastest torch.optim implementation:\n"
        )
        print(shapes_table(data["tensors"]))
    alone = path.with_name("fixed_cost.json")
    if alone.exists():
        runs = json.loads(alone.read_text())
        print(
            "\nFixed cost: one step of 8 tensors of 1,000 parameters, each path alone, µs "
            f"({runs.get('before', {}).get('note') or 'no earlier run'} beside this one):\n"
        )
        print(alone_table(runs))
    elif "fixed" in data:
        print("\nFixed cost: one step of 8 tensors of 1,000 parameters, µs:\n")
        print(fixed_table(data["fixed"]))
    if "stats" in data:
        print("\n`track_stats=True` (fused, ResNet-18 shapes), ms per step:\n")
        print("| optimizer | plain | with statistics | extra |\n|---|---|---|---|")
        for row in data["stats"]:
            extra = row["stats_seconds"] / row["seconds"] - 1
            print(
                f"| {row['optimizer']} | {row['seconds'] * 1e3:.2f} | "
                f"{row['stats_seconds'] * 1e3:.2f} | +{extra * 100:.0f}% |"
            )
    if "compile" in data:
        print("\nFirst-call compile time, seconds:\n")
        print("| optimizer | empty cache | first call | second process |\n|---|---|---|---|")
        for row in data["compile"]:
            print(
                f"| {row['optimizer']} | {row.get('empty_cache_seconds', float('nan')):.1f} | "
                f"{row['cold_seconds']:.1f} | {row['warm_seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
