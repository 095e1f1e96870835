"""Copy a full lab run's results and figures into docs/lab/, where the lecture pages read them.

For every experiment (in ``trainlab lab list`` order): its ``results.json`` and its PNG
figures, reduced to a 256-colour palette (matplotlib's flat colours survive it) to keep
the repository small.

    trainlab lab all --out LAB_FOLDER --workers 2
    python docs/lab_results.py LAB_FOLDER
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from PIL import Image

from trainlab.lab import experiments

DOCS_LAB = Path(__file__).parent / "lab"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python docs/lab_results.py LAB_FOLDER")
    folder = Path(sys.argv[1])
    for name in experiments.load():
        results_file = folder / name / "results.json"
        if not results_file.is_file():
            sys.exit(f"{name}: no results in {folder}; run `trainlab lab all --out {folder}`")
        results = json.loads(results_file.read_text(encoding="utf-8"))
        if results["mode"] != "full":
            sys.exit(f"{name}: quick-mode results; the documentation shows full mode")
        target = DOCS_LAB / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        shutil.copyfile(results_file, target / "results.json")
        for figure in results["figures"]:
            with Image.open(folder / name / figure) as image:
                small = image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
                small.save(target / figure, optimize=True)
        print(f"{name}: {results['verdict']}, {len(results['figures'])} figure(s)")


if __name__ == "__main__":
    main()
