"""The README's lab table and its thumbnails, from a folder that ``trainlab lab all`` wrote.

For every experiment of the folder (in ``trainlab lab list`` order): a row with its
claim, verdict and evidence, and its first figure shrunk to 480 px wide into docs/lab/.

    python docs/lab_readme.py LAB_FOLDER > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

from trainlab.lab import experiments

WIDTH = 480
THUMBNAILS = Path(__file__).parent / "lab"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/lab_readme.py LAB_FOLDER")
    folder = Path(sys.argv[1])
    THUMBNAILS.mkdir(exist_ok=True)
    print("| experiment | lecture's claim | verdict (full mode) | figure |")
    print("|---|---|---|---|")
    for name in experiments.load():
        results_file = folder / name / "results.json"
        if not results_file.is_file():
            print(f"{name}: no results in {folder}", file=sys.stderr)
            continue
        results = json.loads(results_file.read_text())
        if results["mode"] != "full":
            print(f"{name}: quick-mode results; the README shows full mode", file=sys.stderr)
        with Image.open(folder / name / results["figures"][0]) as image:
            height = round(image.height * WIDTH / image.width)
            image.convert("RGB").resize((WIDTH, height), Image.LANCZOS).save(
                THUMBNAILS / f"{name}.png", optimize=True
            )
        print(
            f"| `{name}` (seed {results['seed']}) | {results['claim']} | "
            f"**{results['verdict']}** — {results['evidence']} | "
            f"![{name}](docs/lab/{name}.png) |"
        )


if __name__ == "__main__":
    main()
