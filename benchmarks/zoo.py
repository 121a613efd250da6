"""The zoo benchmark: ``fxpath zoo`` with its results written under benchmarks/results/.

Every flag of ``fxpath zoo`` applies (``python benchmarks/zoo.py --help``); the default output is
``benchmarks/results/zoo_cpu.{csv,md}``. The committed tables come from:

    python benchmarks/zoo.py --jobs 1 --size 3 128 128 --out benchmarks/results/zoo_cpu
    python benchmarks/zoo.py --mode status --all --out benchmarks/results/zoo_status \
        --expected tests/tools/zoo_expected.csv

The time ratios (path-norm and scores against the model's forward) are measured side by side
in the same worker, warm, median of ``--repeats`` paired runs; see docs/zoo.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fxpath.tools.zoo.command import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a == "--out" or a.startswith("--out=") for a in argv):
        argv += ["--out", str(RESULTS / "zoo_cpu")]
    sys.exit(main(argv))
