"""What a whole ``fxpath.quantize`` call costs, as a multiple of the model's own forward (CPU).

The call the user waits for: compile the path network, one score pass, quantize, build the
copy, certify it, and the per-layer report (``layer_metrics=True``, the default, in float64,
the default). torchvision's ResNet-18 and ResNet-50 (``weights=None``, ``torch.manual_seed(0)``,
eval mode, input ``(3, 224, 224)``) at ``--threads`` threads, for int8 per channel, int8 per
tensor, int8 per channel with the bit allocator (``budget=0.5``), and int8 per channel with the
certificate in float32 (what ``fxpath quantize`` computes without ``--float64``).

Measured in pairs, back to back: three forwards of one image, one call, three forwards; the
ratio of the call to the median of the six forwards, and the median over ``--pairs`` pairs (one
warm-up call first). In wall-clock time (what the user waits for) and in CPU time (the
process's, all threads: steadier when other work shares the cores). Each call also counts the
score passes (``PathProgram.path_magnitude``) and certificates (``PathProgram.path_metric``)
it ran.

Run: ``python benchmarks/quantize_cost.py`` (a few minutes on two cores). Writes
``benchmarks/results/quantize_cost_cpu.{json,md}``. ``--out`` writes elsewhere (for a run of an
older checkout: ``PYTHONPATH=<checkout> python benchmarks/quantize_cost.py --pairs 1 --out
before.json``); ``--baseline before.json`` shows such a run next to this one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from bench_path import machine  # benchmarks/ (this script's folder is on sys.path)
from torch import nn

import fxpath
from fxpath.program import PathProgram

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "quantize_cost_cpu.json"
SHAPE = (3, 224, 224)
SETTINGS: dict[str, dict] = {
    "int8, per channel": {"per_channel": True},
    "int8, per tensor": {},
    "int8, per channel, budget 0.5": {"per_channel": True, "budget": 0.5},
    "int8, per channel, float32 (the CLI's default)": {"per_channel": True,
                                                       "dtype": torch.float32},
}


def build(name: str) -> nn.Module:
    """torchvision's ``name`` with its random initialization of seed 0, in eval mode."""
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(weights=None).eval()


class Counter:
    """Counts the calls of some PathProgram methods while active."""

    def __init__(self, *names: str) -> None:
        self.names, self.counts = names, dict.fromkeys(names, 0)
        self._saved: dict[str, Callable] = {}

    def __enter__(self) -> Counter:
        for name in self.names:
            method = self._saved[name] = getattr(PathProgram, name)

            def counted(*args, _m=method, _n=name, **kwargs):
                self.counts[_n] += 1
                return _m(*args, **kwargs)

            setattr(PathProgram, name, counted)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, method in self._saved.items():
            setattr(PathProgram, name, method)


def forward_times(model: nn.Module, x: torch.Tensor) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of three forwards of ``x``."""
    times = []
    with torch.no_grad():
        for _ in range(3):
            t, c = time.perf_counter(), time.process_time()
            model(x)
            times.append((time.perf_counter() - t, time.process_time() - c))
    return times


def measure(name: str, setting: str, pairs: int, log: Callable[[str], None],
            warmup: bool = True) -> dict:
    """``pairs`` (forward, call) pairs of one model and setting."""
    model = build(name)
    x = torch.randn(1, *SHAPE)
    kwargs = SETTINGS[setting]
    forward_times(model, x)
    if warmup:  # imports, first allocations
        fxpath.quantize(model, SHAPE, "int8", **kwargs)
    forwards, calls = [], []  # (wall, CPU) seconds
    with Counter("path_magnitude", "path_metric") as counter:
        for _ in range(pairs):
            around = forward_times(model, x)
            t, c = time.perf_counter(), time.process_time()
            _, report = fxpath.quantize(model, SHAPE, "int8", **kwargs)
            calls.append((time.perf_counter() - t, time.process_time() - c))
            around += forward_times(model, x)
            forwards.append(tuple(statistics.median(f[i] for f in around) for i in (0, 1)))
            log(f"{name} {setting}: forward {forwards[-1][0] * 1e3:.1f} ms, call "
                f"{calls[-1][0]:.2f} s = {calls[-1][0] / forwards[-1][0]:.1f}x (CPU time "
                f"{calls[-1][1] / forwards[-1][1]:.1f}x)")
    ratios = [c[0] / f[0] for c, f in zip(calls, forwards)]
    cpu_ratios = [c[1] / f[1] for c, f in zip(calls, forwards)]
    return {"model": name, "setting": setting, "kwargs": {k: str(v) for k, v in kwargs.items()},
            "pairs": pairs,
            "forward_s": [f[0] for f in forwards], "call_s": [c[0] for c in calls],
            "forward_cpu_s": [f[1] for f in forwards], "call_cpu_s": [c[1] for c in calls],
            "ratios": ratios, "cpu_ratios": cpu_ratios,
            "forward_median_s": statistics.median(f[0] for f in forwards),
            "call_median_s": statistics.median(c[0] for c in calls),
            "ratio_median": statistics.median(ratios),
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "score_passes_per_call": counter.counts["path_magnitude"] / pairs,
            "certificates_per_call": counter.counts["path_metric"] / pairs,
            "relative": report.relative, "average_bits": report.average_bits,
            "rounds": report.rounds,
            "size_bytes": getattr(report, "size_bytes", None),
            "float32_bytes": getattr(report, "float32_bytes", None)}


def run(models: list[str], settings: list[str], pairs: int, threads: int,
        log: Callable[[str], None] = print, warmup: bool = True) -> dict:
    torch.set_num_threads(threads)
    load = os.getloadavg()
    started = time.perf_counter()
    rows = [measure(m, s, pairs, log, warmup) for m in models for s in settings]
    return {"machine": machine("cpu"), "threads": threads, "input_shape": list(SHAPE),
            "load_average_start": load, "load_average_end": os.getloadavg(),
            "seconds": time.perf_counter() - started, "rows": rows}


def _ratio(row: dict | None, key: str = "ratio_median") -> str:
    return "-" if row is None or key not in row else f"{row[key]:.1f}x"


def to_markdown(result: dict, baseline: dict | None = None) -> str:
    m = result["machine"]
    start, end = result["load_average_start"][0], result["load_average_end"][0]
    lines = ["# Cost of a whole `fxpath.quantize` call (CPU)", "",
             f"Machine: {m.get('cpu', 'unknown CPU')}, {result['threads']} torch threads of "
             f"{m['cpu_count']} CPUs, python {m['python']}, torch {m['torch']}; fxpath at "
             f"commit `{m['commit']}`. Load average at the start {start:.1f}, at the end "
             f"{end:.1f} (other work shares the "
             f"cores: the ratios of pairs measured back to back are steadier than the times).",
             "",
             "The call: `fxpath.quantize(model, (3, 224, 224), \"int8\", ...)` with the defaults "
             "(certificate in float64, `layer_metrics=True`), torchvision's models with "
             "`weights=None`, seed 0, eval mode. Ratio: call time / the median of the six "
             "forwards of one image measured around it (three before, three after); the "
             "median over the pairs (each pair's ratio in parentheses). CPU time: the same "
             "with the process's CPU time.", ""]
    if baseline is not None:
        b, n = baseline["machine"], baseline["rows"][0]["pairs"]
        lines += [f"Before: commit `{b['commit']}` on the same machine, {n} pair(s) per row "
                  f"(load average {baseline['load_average_start'][0]:.1f}).", ""]
    old = {(r["model"], r["setting"]): r for r in (baseline or {}).get("rows", [])}
    lines += ["| model | setting | forward | call | call / forward | before | CPU time: call / "
              "forward | before | score passes | certificates | relative d | average bits | "
              "size / float32 |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        size = (f"{r['size_bytes'] / r['float32_bytes']:.3f}" if r.get("size_bytes") else "-")
        lines.append(
            f"| {r['model']} | {r['setting']} | {r['forward_median_s'] * 1e3:.1f} ms | "
            f"{r['call_median_s']:.2f} s | {r['ratio_median']:.1f}x "
            f"({', '.join(f'{x:.1f}' for x in r['ratios'])}) | "
            f"{_ratio(old.get((r['model'], r['setting'])))} | {r['cpu_ratio_median']:.1f}x | "
            f"{_ratio(old.get((r['model'], r['setting'])), 'cpu_ratio_median')} | "
            f"{r['score_passes_per_call']:g} | {r['certificates_per_call']:g} | "
            f"{r['relative']:.4g} | {r['average_bits']:.3f} | {size} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-warmup", action="store_true",
                   help="no warm-up call (for a slow older checkout)")
    p.add_argument("--out", type=Path, default=RESULTS, help="the .json (the .md beside it)")
    p.add_argument("--baseline", type=Path, help="an earlier run's .json to show beside")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: rewrite the .md of this run (with --baseline)")
    args = p.parse_args(argv)
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    if args.render:
        result = json.loads(args.render.read_text())
        baseline = baseline or result.get("baseline")
        args.out = args.render
    else:
        result = run(args.models, args.settings, args.pairs, args.threads,
                     warmup=not args.no_warmup)
    if baseline is not None:
        result["baseline"] = baseline
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result, baseline))
    print(to_markdown(result, baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
