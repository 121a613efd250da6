"""The ``fxpath`` command line: path-norms, scores and pruning of timm/torchvision models.

    fxpath norm resnet18                       # timm model, l^1 and l^2 path-norms
    fxpath norm torchvision:resnet50 --size 3 224 224
    fxpath scores resnet18 --top 10            # tensors carrying the most path mass
    fxpath prune torchvision:resnet18 --amount 0.6
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from .api import compile as compile_program
from .errors import FxPathError
from .prune import prune

__all__ = ["build_model", "main"]


def build_model(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build ``timm-name`` or ``torchvision:name`` with random weights, in eval mode.

    Returns the model and its default input shape.
    """
    if spec.startswith("torchvision:"):
        import torchvision

        model = torchvision.models.get_model(spec.split(":", 1)[1], weights=None)
        return model.eval(), (3, 224, 224)
    import timm

    name = spec.split(":", 1)[1] if spec.startswith("timm:") else spec
    model = timm.create_model(name, pretrained=False)
    return model.eval(), tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fxpath", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_ in (("norm", "l^1 and l^2 path-norms"),
                        ("scores", "path-magnitude scores per parameter tensor"),
                        ("prune", "prune by path-magnitude and print the certified metric")):
        c = sub.add_parser(name, help=help_)
        c.add_argument("model", help="timm model name, or torchvision:NAME")
        c.add_argument("--size", type=int, nargs="+", help="input shape, e.g. 3 224 224")
        c.add_argument("--seed", type=int, default=0, help="seed of the random init")
        c.add_argument("--float64", action="store_true", help="compute in float64")
        if name == "norm":
            c.add_argument("--q", type=float, nargs="+", default=[1.0, 2.0])
        if name == "scores":
            c.add_argument("--top", type=int, default=10)
        if name == "prune":
            c.add_argument("--amount", type=float, default=0.6)
            c.add_argument("--criterion", default="path_magnitude",
                           choices=["path_magnitude", "magnitude"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxpath`` console script."""
    args = _parser().parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        model, shape = build_model(args.model)
        shape = tuple(args.size) if args.size else shape
        dtype = torch.float64 if args.float64 else torch.float32
        t0 = time.perf_counter()
        if args.command == "prune":
            report = prune(model, args.amount, shape, criterion=args.criterion)
            print(f"{args.model} at {shape}: pruned {report.overall_sparsity:.1%} of conv/linear "
                  f"weights by {args.criterion}")
            print(f"certified path-metric to the dense model: {report.metric}")
            return 0
        prog = compile_program(model, shape, dtype=dtype)
        if args.command == "norm":
            for q in args.q:
                pn = prog.path_norm(q)
                print(f"l^{q:g} path-norm of {args.model} at {shape}: {pn.value:.10g} "
                      f"(log10 {pn.log10:.10f})")
        else:
            scores = prog.path_magnitude()
            mass = sorted(((float(s.sum()), n) for n, s in scores.items()), reverse=True)
            print(f"path mass fraction through each tensor of {args.model} at {shape}:")
            for m, n in mass[:args.top]:
                print(f"  {m:10.6f}  {n}")
        print(f"({time.perf_counter() - t0:.2f} s, {dtype})", file=sys.stderr)
    except FxPathError as exc:
        print(f"fxpath: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
