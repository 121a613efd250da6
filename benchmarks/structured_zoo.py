"""Structured pruning on the zoo: 50% of the channels of eight models, cut by
``fxpath.prune_channels`` (channel path mass, global ranking), against the models' own forward.

The models (random weights, ``torch.manual_seed(0)``; every BatchNorm gets random running
statistics and affine parameters, as a trained network has, and the model is put in eval mode):
torchvision ``resnet18``, ``resnet50``, ``vgg16_bn``, ``densenet121``, ``mobilenet_v2``,
``regnet_x_400mf``; timm ``resnet50d``; smp ``Unet`` with a ``resnet34`` encoder
(``encoder_weights=None``). Input ``--size`` (default 3x224x224).

For each model, measured in one run on the same machine:

- the wall and CPU time of the whole ``prune_channels`` call against a plain forward of one
  image (the median of three forwards before and three after the call): the ratio;
- the parameter and MAC ratios of the small model to the dense one (``report.params``,
  ``report.macs``) and the share of conv/linear output channels left;
- the batch-8 forward of the dense and the small model, alternated ``--repeats`` times: the
  median of the paired ratios is the speed-up;
- the certificate (``report.metric``: value, relative, exact), ``report.twin_gap`` and the
  layers the global ranking spared (``report.spared``);
- or, for a model Torch-Pruning or fxpath refuses, the ``FxPathError``'s message.

Run (from the repository root; about half an hour on two busy cores)::

    python benchmarks/structured_zoo.py
    python benchmarks/structured_zoo.py --models resnet18 mobilenet_v2 --size 3 64 64 \\
        --out short.json                          # a short run
    python benchmarks/structured_zoo.py --render  # measure nothing: rewrite the .md
    python benchmarks/tables.py                   # the table in docs/structured.md

Writes ``benchmarks/results/structured_zoo_cpu.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from bench_path import machine  # benchmarks/ (this script's folder is on sys.path)
from tables import structured_zoo_provenance, structured_zoo_table

import fxpath
from fxpath.tools.zoo.selfcheck import randomize_batchnorm

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "structured_zoo_cpu.json"
AMOUNT = 0.5
BATCH = 8


def _torchvision(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None)
    return build


def _timm(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False)
    return build


def _unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None)


#: name -> (library, builder)
MODELS: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    **{n: ("torchvision", _torchvision(n)) for n in (
        "resnet18", "resnet50", "vgg16_bn", "densenet121", "mobilenet_v2", "regnet_x_400mf")},
    "resnet50d": ("timm", _timm("resnet50d")),
    "Unet(resnet34)": ("smp", _unet),
}


def build(name: str) -> nn.Module:
    """The zoo's ``name``: seed 0, random BatchNorms, eval mode."""
    torch.manual_seed(0)
    return randomize_batchnorm(MODELS[name][1]()).eval()


def forward_times(model: nn.Module, x: torch.Tensor, n: int = 3) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``n`` forwards of ``x``."""
    times = []
    with torch.no_grad():
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            times.append((time.perf_counter() - t, time.process_time() - c))
    return times


def timed_call(model: nn.Module, x: torch.Tensor, call: Callable[[], object]
               ) -> tuple[object, dict]:
    """``call()`` between three forwards of ``x`` before and three after: its result and the
    wall/CPU seconds of the call and of the median forward."""
    around = forward_times(model, x)
    t, c = time.perf_counter(), time.process_time()
    out = call()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    around += forward_times(model, x)
    fw = statistics.median(f[0] for f in around)
    fc = statistics.median(f[1] for f in around)
    return out, {"forward_s": fw, "forward_cpu_s": fc, "call_s": wall, "call_cpu_s": cpu,
                 "ratio": wall / fw, "cpu_ratio": cpu / fc}


def paired_latency(dense: nn.Module, small: nn.Module, x: torch.Tensor, repeats: int) -> dict:
    """Batch forwards of ``dense`` and ``small`` alternated ``repeats`` times (one warm-up
    each): medians and the median of the paired speed-ups, in wall and in CPU time."""
    pairs = []  # (dense wall, small wall, dense CPU, small CPU)
    with torch.no_grad():
        dense(x), small(x)
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            dense(x)
            d, dc = time.perf_counter() - t, time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            small(x)
            pairs.append((d, time.perf_counter() - t, dc, time.process_time() - c))
    return {"dense_s": [p[0] for p in pairs], "small_s": [p[1] for p in pairs],
            "dense_cpu_s": [p[2] for p in pairs], "small_cpu_s": [p[3] for p in pairs],
            "dense_median_s": statistics.median(p[0] for p in pairs),
            "small_median_s": statistics.median(p[1] for p in pairs),
            "speedup": statistics.median(p[0] / p[1] for p in pairs),
            "cpu_speedup": statistics.median(p[2] / p[3] for p in pairs)}


def out_channels(model: nn.Module) -> int:
    """The output channels of every conv and linear layer of ``model``, summed."""
    return sum(m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
               for m in model.modules()
               if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)))


def warm_up(shape: tuple[int, ...]) -> None:
    """One prune of a tiny network: imports and first allocations out of the measured calls."""
    net = nn.Sequential(nn.Conv2d(shape[0], 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 2)).eval()
    fxpath.prune_channels(net, 0.5, (shape[0], 16, 16))


def measure(name: str, shape: tuple[int, ...], repeats: int, log: Callable[[str], None]
            ) -> dict:
    """One model's row (or its refusal)."""
    library = MODELS[name][0]
    row: dict = {"model": name, "library": library, "input_shape": list(shape)}
    model = build(name)
    x = torch.randn(1, *shape)
    forward_times(model, x, 2)  # first allocations
    try:
        (small, report), t = timed_call(
            model, x, lambda: fxpath.prune_channels(model, AMOUNT, shape))
    except fxpath.FxPathError as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{name}: refused: {row['error']}")
        return row
    except Exception as exc:  # not an fxpath error: a bug to report, the run goes on
        row["error"] = f"(escaped, a bug) {type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc()
        log(f"{name}: ESCAPED {row['error']}")
        return row
    row.update(prune=t)
    row["params"], row["macs"] = list(report.params), list(report.macs)
    row["channels"] = [out_channels(model), out_channels(small)]
    row["metric"] = {"value": report.metric.value, "log10": report.metric.log10,
                     "relative": report.metric.relative, "exact": report.metric.exact,
                     "norm": float(report.metric.norm)}
    row["twin_gap"] = report.twin_gap
    row["spared"] = list(report.spared)
    row["groups"] = len(report.groups)
    row["layers_cut"] = len(report.removed)
    row["latency"] = paired_latency(model, small, torch.randn(BATCH, *shape), repeats)
    log(f"{name}: prune {t['call_s']:.1f} s = {t['ratio']:.1f}x a forward "
        f"({t['forward_s'] * 1e3:.0f} ms; CPU time {t['cpu_ratio']:.1f}x), params "
        f"{row['params'][1] / row['params'][0]:.3f}, MACs {row['macs'][1] / row['macs'][0]:.3f}, "
        f"batch-{BATCH} speed-up {row['latency']['speedup']:.2f}x (CPU time "
        f"{row['latency']['cpu_speedup']:.2f}x), relative "
        f"{report.metric.relative:.6g}, exact {report.metric.exact}, twin gap "
        f"{report.twin_gap:.1e}, spared {len(report.spared)}")
    return row


def sources() -> str:
    """A digest of fxpath/apps/structured/*.py as they are now: which code a run measured when
    the working tree differs from the commit."""
    digest = hashlib.sha1()
    for path in sorted((HERE.parent / "fxpath" / "apps" / "structured").glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run(models: list[str], shape: tuple[int, ...], repeats: int, threads: int,
        log: Callable[[str], None] = print) -> dict:
    """Every model's row, with the machine and the load around the run."""
    torch.set_num_threads(threads)
    load = os.getloadavg()
    started = time.perf_counter()
    code = sources()
    warm_up(shape)
    rows = []
    for name in models:
        rows.append(measure(name, shape, repeats, log))
    return {"machine": machine("cpu"), "structured_sources": code, "threads": threads,
            "amount": AMOUNT, "criterion": "path_magnitude", "scope": "global",
            "batch": BATCH, "repeats": repeats, "input_shape": list(shape),
            "load_average_start": list(load), "load_average_end": list(os.getloadavg()),
            "seconds": time.perf_counter() - started, "rows": rows}


# -- writing ------------------------------------------------------------------------------------

def to_markdown(result: dict) -> str:
    """The result file's .md."""
    lines = ["# Structured pruning on the zoo (CPU)", "", structured_zoo_provenance(result), "",
             structured_zoo_table(result), "",
             "Params and MACs: `report.params`, `report.macs` (MACs of one sample, torch's FLOP "
             "counter). Channels left: conv/linear output channels of the small model over the "
             "dense one's. Path-metric: `report.metric` between the dense model and its zeroed "
             "twin, which the small model equals to the twin gap (float64, relative to the "
             "output size); relative: its ratio to the dense path-norm. Spared: layers the "
             "global ranking would have emptied, which keep their best channel.", "",
             "| model | forward (1 image) | prune_channels | batch-8 dense | batch-8 small | "
             "groups cut | layers cut |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "error" in r:
            continue
        p, lat = r["prune"], r["latency"]
        lines.append(f"| {r['model']} | {p['forward_s'] * 1e3:.0f} ms | {p['call_s']:.1f} s | "
                     f"{lat['dense_median_s'] * 1e3:.0f} ms | {lat['small_median_s'] * 1e3:.0f} "
                     f"ms | {r['groups']} | {r['layers_cut']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--size", nargs=3, type=int, default=[3, 224, 224], metavar=("C", "H", "W"))
    p.add_argument("--repeats", type=int, default=5, help="paired batch-8 forwards")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: steadier on a machine shared with other work)")
    p.add_argument("--out", type=Path, default=RESULTS, help="the .json (the .md beside it)")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rewrite the .md from --out")
    args = p.parse_args(argv)
    if args.render:
        args.out.with_suffix(".md").write_text(to_markdown(json.loads(args.out.read_text())))
        return 0
    result = run(args.models, tuple(args.size), args.repeats, args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
