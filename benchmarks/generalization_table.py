"""The path-norm generalization bound of torchvision classifiers, against the published table.

For each model at 3x224x224 (random initialization, ``weights=None``, seed 0),
`fxpath.generalization_bound` reads the depth D, the largest max-pool window K, the max-pooling
types P, the max-pools on a path M and d_in/d_out from the IR, and gives the complexity
constants C and C', the factors ``4 * C * B / sqrt(n)`` and ``4 * C' * B / sqrt(n)`` per unit of
l^1 path-norm, the l^1 path-norm and the bound itself. The setting is the ImageNet one of the
ICLR 2024 path-norm toolkit paper: ``n = floor(0.99 * 1281167)``, ``B = 2.64``; the ResNet rows
are compared with its published factors (4 decimals).

    python benchmarks/generalization_table.py     # about a minute on 2 cores

Writes benchmarks/results/generalization_table.json (rendered by benchmarks/tables.py into
docs/generalization.md).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision

import fxpath
from fxpath.tools.zoo.provenance import git_commit

RESULT = Path(__file__).resolve().parent / "results" / "generalization_table.json"
N_TRAIN = math.floor(0.99 * 1281167)
INPUT_BOUND = 2.64
SHAPE = (3, 224, 224)
SEED = 0
#: the published factors (ICLR 2024 path-norm toolkit, ImageNet table): bound, sharpened
PUBLISHED = {"resnet18": (0.0881, 0.0599), "resnet34": (0.1145, 0.0716),
             "resnet50": (0.1359, 0.0817), "resnet101": (0.1885, 0.1077),
             "resnet152": (0.2294, 0.1286)}
MODELS = (*PUBLISHED, "vgg16", "densenet121")


def row(name: str) -> dict[str, object]:
    """One model's report, every ingredient named."""
    torch.manual_seed(SEED)
    model = torchvision.models.get_model(name, weights=None).eval()
    r = fxpath.generalization_bound(model, SHAPE, N_TRAIN, input_bound=INPUT_BOUND)
    published = PUBLISHED.get(name)
    out: dict[str, object] = {
        "model": name, **r.ingredients._asdict(), "constant": r.constant,
        "sharpened_constant": r.sharpened_constant, "factor": r.factor,
        "sharpened_factor": r.sharpened_factor, "log10_path_norm": r.path_norm.log10,
        "log10_bound": r.log10_bound, "log10_sharpened_bound": r.log10_sharpened_bound,
        "published_factor": None, "published_sharpened_factor": None, "matches": None}
    if published is not None:
        out.update(published_factor=published[0], published_sharpened_factor=published[1],
                   matches=(round(r.factor, 4), round(r.sharpened_factor, 4)) == published)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Compute every row and write the result file; 1 when a published factor is missed."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--out", type=Path, default=RESULT)
    args = p.parse_args(argv)
    rows = []
    for name in args.models:
        rows.append(row(name))
        print(f"{name}: D={rows[-1]['depth']} factor={rows[-1]['factor']:.4f} "
              f"sharpened={rows[-1]['sharpened_factor']:.4f}", flush=True)
    result = {"config": {"n_train": N_TRAIN, "input_bound": INPUT_BOUND, "input_shape": SHAPE,
                         "weights": None, "seed": SEED},
              "machine": {"commit": git_commit(), "torch": torch.__version__,
                          "torchvision": torchvision.__version__,
                          "python": platform.python_version()},
              "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0 if all(r["matches"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
