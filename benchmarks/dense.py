"""Dense-prediction models: which fxpath supports, their l^1 path-norm, and what it costs.

For every model (random weights, eval, float32, batch 1, 3x256x256 by default): supported or
the first refusal reason (with the number of refused ops), the l^1 path-norm (log10, float32),
the model's forward time, and the warm path-norm and path-magnitude scores as ratios to that
forward. Each ratio is the median over ``--repeats`` calls, each timed between two forwards
(`bench_path.paired_ratio`: on shared cores, pairs close in time keep the ratio honest); the
CPU-time ratios, which do not count time the machine spent on other work, are recorded too.

    python benchmarks/dense.py --repeats 9                  # the table (docs/dense.md)
    python benchmarks/dense.py --models smp:Unet:resnet34 --repeats 11 --tag _unet_resnet34
    python benchmarks/dense.py --size 128 --tag _128
    python benchmarks/dense.py --norms --models smp:Unet:resnet18   # one row's norm, no timing
    python benchmarks/dense.py --readme benchmarks/results/dense_cpu.json   # README's table

Writes benchmarks/results/dense_cpu<TAG>.{md,json} (machine, commit, command line, seed and
each model's constructor call described); the README's "Dense prediction" table is
``--readme`` of that JSON (no model is run). Model names: ``smp:ARCH:ENCODER``
(segmentation_models_pytorch), ``torchvision:NAME`` (torchvision.models.segmentation),
``timm:NAME``, ``monai:BasicUNet``.

The models are this benchmark's builds (`constructor`), not the CLI's: smp's with
``classes=2``, torchvision's with ``num_classes=21`` and no backbone weights, MONAI's with two
output channels, all with the random weights of ``torch.manual_seed(SEED)``. The path-norm
depends on these arguments (``fxpath norm smp:Unet:resnet34`` builds smp's default single
class: another model, another norm), so ``--norms`` prints each model's call with its norm.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from bench_path import RESULTS, machine, paired_ratio

import fxpath

DEFAULT_MODELS = [
    "smp:Unet:resnet34", "smp:Unet:resnet18", "smp:UnetPlusPlus:resnet34",
    "smp:Linknet:resnet34", "smp:DeepLabV3Plus:resnet34", "smp:PSPNet:resnet34",
    "smp:Segformer:resnet34", "smp:Unet:vgg11_bn", "smp:Unet:densenet121",
    "smp:Unet:mobilenet_v2", "smp:Unet:tu-resnet26d",
    "smp:FPN:resnet34", "smp:MAnet:resnet34", "smp:PAN:resnet34", "smp:UPerNet:resnet34",
    "smp:Unet:efficientnet-b0", "smp:Segformer:mit_b0",
    "torchvision:fcn_resnet50", "torchvision:deeplabv3_resnet50",
    "torchvision:lraspp_mobilenet_v3_large", "timm:hrnet_w18_small", "monai:BasicUNet",
]


#: the seed of every model's random weights
SEED = 0


def constructor(name: str) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """How `build` makes a benchmark model: ``(the builder's dotted name, positional
    arguments, keyword arguments)``. The norms depend on them (smp's ``classes=2``,
    torchvision's ``num_classes=21``), so every result row records them (`call`)."""
    kind, _, rest = name.partition(":")
    if kind == "smp":
        arch, _, encoder = rest.partition(":")
        return ("segmentation_models_pytorch.create_model", (arch,),
                {"encoder_name": encoder, "encoder_weights": None, "classes": 2})
    if kind == "torchvision":
        return ("torchvision.models.get_model", (rest,),
                {"weights": None, "weights_backbone": None, "num_classes": 21})
    if kind == "timm":
        return "timm.create_model", (rest,), {"pretrained": False}
    if kind == "monai":
        return (f"monai.networks.nets.{rest}", (),
                {"spatial_dims": 2, "in_channels": 3, "out_channels": 2, "act": "relu",
                 "norm": "batch"})
    raise ValueError(f"unknown model {name!r}")


def call(name: str) -> str:
    """The Python call `build` makes for ``name`` (after ``torch.manual_seed(SEED)``), e.g.
    ``segmentation_models_pytorch.create_model('Unet', encoder_name='resnet34', ...)``."""
    builder, args, kwargs = constructor(name)
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{builder}({', '.join(shown)})"


def build(name: str) -> nn.Module:
    """A model by benchmark name: `constructor`'s call, random weights of `SEED`, eval mode."""
    builder, args, kwargs = constructor(name)
    module, _, attr = builder.rpartition(".")
    make = getattr(importlib.import_module(module), attr)
    torch.manual_seed(SEED)
    return make(*args, **kwargs).eval()


def _refusal(exc: fxpath.UnsupportedModelError) -> str:
    first = exc.ops[0]
    reason = first.reason.split(" (")[0]
    more = f" (+{len(exc.ops) - 1} more)" if len(exc.ops) > 1 else ""
    return f"refused: {first.op} at {first.where}: {reason}{more}"


def row(name: str, size: int, repeats: int) -> dict[str, object]:
    """The table row of one model."""
    model = build(name)
    shape = (3, size, size)
    params = sum(p.numel() for p in model.parameters())
    out: dict[str, object] = {"model": name, "constructor": call(name),
                              "params_M": round(params / 1e6, 2)}
    try:
        prog = fxpath.compile(model, shape)
    except fxpath.UnsupportedModelError as exc:
        return {**out, "status": _refusal(exc)}
    x = torch.randn(1, *shape)

    @torch.no_grad()
    def forward() -> None:
        model(x)

    calls: dict[str, Callable[[], object]] = {"path_norm": prog.path_norm,
                                              "scores": prog.path_magnitude}
    out |= {"status": "supported", "log10_l1": prog.path_norm().log10,
            "outputs": list(prog.output_names),
            "forward_ms": paired_ratio(forward, forward, 3, "cpu")[0]}
    for key, fn in calls.items():
        ms, ratio, cpu_ratio = paired_ratio(fn, forward, repeats, "cpu")
        out |= {f"{key}_ms": ms, key: ratio, f"{key}_cpu": cpu_ratio}
    return out


def markdown(rows: list[dict[str, object]], info: dict[str, str], size: int) -> str:
    """The results table."""
    lines = [f"# Dense-prediction models at 3x{size}x{size}", "", f"Machine: {info}", "",
             "Random weights, float32, batch 1, CPU. Ratios to the model's own forward "
             "(paired medians; CPU-time ratios in parentheses).", "",
             "| model | params (M) | fxpath | l^1 path-norm (log10) | forward ms | "
             "warm path-norm | warm scores |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "supported":
            lines.append(f"| {r['model']} | {r['params_M']} | {r['status']} | - | - | - | - |")
            continue
        lines.append(
            f"| {r['model']} | {r['params_M']} | supported | {r['log10_l1']:.4f} | "
            f"{r['forward_ms']:.0f} | {r['path_norm']:.2f}x ({r['path_norm_cpu']:.2f}x) | "
            f"{r['scores']:.2f}x ({r['scores_cpu']:.2f}x) |")
    lines += ["", f"Each model is built, after `torch.manual_seed({SEED})`, by:", ""]
    lines += [f"- {r['model']}: `{r['constructor']}`" for r in rows if "constructor" in r]
    return "\n".join(lines) + "\n"


def readme_table(rows: list[dict[str, object]]) -> str:
    """The README's table: model, supported or the first refusal, the l^1 path-norm (log10),
    and the warm path-norm and scores as ratios to the model's forward."""
    lines = ["| model | fxpath | l^1 path-norm (log10) | path-norm / forward | "
             "scores / forward |", "|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "supported":
            lines.append(f"| {r['model']} | {r['status']} | - | - | - |")
        else:
            lines.append(f"| {r['model']} | supported | {r['log10_l1']:.4f} | "
                         f"{r['path_norm']:.2f}x | {r['scores']:.2f}x |")
    return "\n".join(lines) + "\n"


def norm_line(name: str, size: int) -> str:
    """One model's l^1 path-norm as the table shows it (log10, 4 decimals), or its refusal,
    with the call that built the model: ``--norms``, which times nothing."""
    shape = (3, size, size)
    try:
        norm = (f"l^1 path-norm (log10) "
                f"{fxpath.compile(build(name), shape).path_norm().log10:.4f}")
    except fxpath.UnsupportedModelError as exc:
        norm = _refusal(exc)
    return (f"{name} at 3x{size}x{size}: {norm}; built after torch.manual_seed({SEED}) by "
            f"{call(name)}")


_EPILOG = """\
examples:
  python benchmarks/dense.py --repeats 9        # every default model: results/dense_cpu.{md,json}
  python benchmarks/dense.py --models smp:Unet:resnet34 --repeats 11 --tag _unet_resnet34
  python benchmarks/dense.py --norms --models smp:Unet:resnet18   # a row's norm, in seconds
  python benchmarks/dense.py --readme benchmarks/results/dense_cpu.json   # the README table

The models are built as `constructor` says (smp: classes=2; torchvision: num_classes=21, no
backbone weights; seed 0), which is not how `fxpath norm` builds them: --norms prints each call.
Run it on a quiet machine: the ratios are paired medians, but a busy machine still moves them.
"""


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python benchmarks/dense.py",
                                description=__doc__.splitlines()[0], epilog=_EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="MODEL",
                   help="smp:ARCH:ENCODER, torchvision:NAME, timm:NAME or monai:BasicUNet "
                        f"(default: the table's {len(DEFAULT_MODELS)} models)")
    p.add_argument("--repeats", type=int, default=5,
                   help="paired calls per ratio, median taken (default: %(default)s)")
    p.add_argument("--size", type=int, default=256,
                   help="input height and width, 3 channels (default: %(default)s)")
    p.add_argument("--tag", default="",
                   help="suffix of the result file names: results/dense_cpu<TAG>.{md,json}")
    p.add_argument("--norms", action="store_true",
                   help="print each model's l^1 path-norm (log10) and the call that built it, "
                        "and exit (times nothing, writes nothing)")
    p.add_argument("--readme", metavar="FILE.json",
                   help="print the README's table from a results file and exit (runs nothing)")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    if args.readme:
        data = json.loads(Path(args.readme).read_text())
        print(f"At 3x{data['size']}x{data['size']}, float32, batch 1, CPU "
              f"(commit {data['machine'].get('commit', '?')}, {data['repeats']} repeats):\n")
        print(readme_table(data["rows"]), end="")
        return
    if args.norms:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in args.models:
                print(norm_line(name, args.size), flush=True)
        return
    info = machine("cpu")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in args.models:
            r = row(name, args.size, args.repeats)
            rows.append(r)
            shown = {k: (round(v, 3) if isinstance(v, float) and math.isfinite(v) else v)
                     for k, v in r.items()}
            print(shown, flush=True)
    stem = RESULTS / f"dense_cpu{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(
        {"machine": info, "command": shlex.join(["python", "benchmarks/dense.py", *argv]),
         "seed": SEED, "size": args.size, "repeats": args.repeats, "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text(markdown(rows, info, args.size))
    print(markdown(rows, info, args.size))


if __name__ == "__main__":
    main()
