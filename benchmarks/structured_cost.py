"""The aims of structured pruning (issue 23), measured on torchvision's ResNet-50 at 3x224x224
on the CPU, each against the model's own forward in the same run.

1. Warm channel scores cost at most 3x a forward: the channel path masses of the model
   (``ChannelMass.masses()``: one score pass on the already compiled path program, after a
   weight changed), and the scores Torch-Pruning asks of ``PathMagnitudeImportance`` for every
   group of the dependency graph (the same pass, plus the group sums).
2. ``fxpath.prune_channels(model, 0.5, ...)``, cold (a fresh compile, as every call does) and
   whole, costs at most 30x a forward.
3. At 50% of the channels the small model has at most 40% of the dense MACs, and its batch-8
   forward is at least 1.8x faster than the dense one.

Timing: each call sits between three forwards of one image before and three after; its ratio
is to the median of those six, and the figure is the median over ``--pairs`` such pairs (wall
time, and the process's CPU time, steadier when other work shares the cores). The batch-8
speed-up is the median of ``--repeats`` dense/small forwards alternated. One more whole call
runs under cProfile: its top costs go in the .md. The model: ``weights=None``, seed 0, every
BatchNorm with random running statistics and affine parameters (as a trained one), eval mode.

Run (from the repository root; about a quarter of an hour on two busy cores)::

    python benchmarks/structured_cost.py              # --pairs 3 --repeats 7
    python benchmarks/structured_cost.py --pairs 1 --size 3 64 64 --out short.json
    python benchmarks/structured_cost.py --render     # rewrite the .md from the .json

Writes ``benchmarks/results/structured_cost_cpu.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from bench_path import machine  # benchmarks/ (this script's folder is on sys.path)
from quantize_cost import Counter
from structured_zoo import build, paired_latency, sources, timed_call, warm_up

import fxpath
from fxpath.apps.structured.mass import ChannelMass

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "structured_cost_cpu.json"
MODEL = "resnet50"
AMOUNT = 0.5
BATCH = 8
#: aim name -> (the row's figure, the bound, "<=" or ">=")
AIMS = {"warm channel scores (ChannelMass) / forward": ("mass", 3.0, "<="),
        "warm channel scores (PathMagnitudeImportance, every group) / forward":
            ("importance", 3.0, "<="),
        "prune_channels, cold and whole / forward": ("prune", 30.0, "<="),
        "MACs small / dense": ("macs", 0.40, "<="),
        "batch-8 forward: dense / small": ("speedup", 1.8, ">="),
        "batch-8 forward: dense / small, CPU time": ("cpu_speedup", 1.8, ">=")}


def _touch(model: nn.Module) -> None:
    """Change a weight in place (by nothing): the next score pass must recompute."""
    with torch.no_grad():
        next(model.parameters()).mul_(1.0)


def _median(rows: list[dict]) -> dict:
    out = {"pairs": rows}
    for key in ("ratio", "cpu_ratio", "call_s", "forward_s"):
        out[key] = statistics.median(r[key] for r in rows)
    return out


def _scores(model: nn.Module, x: torch.Tensor, shape: tuple[int, ...], pairs: int,
            log: Callable[[str], None]) -> tuple[dict, dict]:
    """Warm ChannelMass passes and warm PathMagnitudeImportance over every group."""
    import torch_pruning as tp

    from fxpath.torch_pruning import PathMagnitudeImportance

    mass = ChannelMass(model, shape)
    mass.masses()  # compiles
    rows = []
    for _ in range(pairs):
        _touch(model)
        rows.append(timed_call(model, x, mass.masses)[1])
        log(f"warm ChannelMass: {rows[-1]['ratio']:.2f}x a forward")
    masses = _median(rows)

    imp = PathMagnitudeImportance(model, shape)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    groups = list(graph.get_all_groups(root_module_types=[nn.Conv2d, nn.Linear]))
    [imp(g) for g in groups]  # compiles
    rows = []
    for _ in range(pairs):
        _touch(model)
        rows.append(timed_call(model, x, lambda: [imp(g) for g in groups])[1])
        log(f"warm PathMagnitudeImportance, {len(groups)} groups: {rows[-1]['ratio']:.2f}x")
    importance = _median(rows)
    importance["groups"] = len(groups)
    return masses, importance


def _layer_scope(model: nn.Module, shape: tuple[int, ...], repeats: int,
                 log: Callable[[str], None]) -> dict:
    """Not an aim, a comparison: the same amount with ``scope="layer"`` (half of every
    layer's channels): its MACs and batch-8 speed-up."""
    small, report = fxpath.prune_channels(model, AMOUNT, shape, scope="layer")
    latency = paired_latency(model, small, torch.randn(BATCH, *shape), repeats)
    log(f"scope=layer: MACs {report.macs[1] / report.macs[0]:.3f}, batch-{BATCH} speed-up "
        f"{latency['speedup']:.2f}x")
    return {"params": list(report.params), "macs": list(report.macs),
            "relative": report.metric.relative, "latency": latency}


def _short(path: str) -> str:
    """A source path without the machine's part: from the package folder on."""
    root = f"{HERE.parent}/"
    if path.startswith(root):
        return path[len(root):]
    return re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", path)


#: (file ending, function, what it is): the phases of a call, found in the profile
PHASES = (("structured/api.py", "prune_channels", "the whole call"),
          ("apps/rescale.py", "copy_model", "copying the model"),
          ("engine/compiled.py", "__init__", "compiling path programs (trace, passes)"),
          ("structured/api.py", "_cut", "the cut: scores and Torch-Pruning"),
          ("base_pruner.py", "__init__", "Torch-Pruning's pruner and dependency graph"),
          ("structured/mass.py", "masses", "channel path masses (incl. their compile)"),
          ("structured/api.py", "_certify", "the certificate"),
          ("structured/twin.py", "zeroed_twin", "building the zeroed twin"),
          ("structured/twin.py", "check_twin", "small model against the twin, float64"),
          ("fxpath/program.py", "path_metric", "the exact path-metric"),
          ("structured/api.py", "_sizes", "parameters and MACs (FLOP counter)"))


def profile(model: nn.Module, shape: tuple[int, ...], top: int) -> dict:
    """One whole call under cProfile: the top functions by cumulative and by own time."""
    prof = cProfile.Profile()
    prof.enable()
    fxpath.prune_channels(model, AMOUNT, shape)
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = max(ct for _, _, _, ct, _ in stats.values())
    rows = [{"function": f"{_short(f)}:{line}({name})", "calls": nc, "own_s": tt,
             "cumulative_s": ct} for (f, line, name), (_, nc, tt, ct, _) in stats.items()]
    phases = []
    for end, func, what in PHASES:
        hits = [(nc, ct) for (f, _, name), (_, nc, _, ct, _) in stats.items()
                if name == func and f.endswith(end)]
        if hits:
            phases.append({"phase": what, "function": f"{end}:{func}",
                           "calls": sum(h[0] for h in hits),
                           "cumulative_s": sum(h[1] for h in hits)})
    return {"total_s": total, "phases": phases,
            "cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:top],
            "own": sorted(rows, key=lambda r: -r["own_s"])[:top]}


def run(shape: tuple[int, ...], pairs: int, repeats: int, threads: int, top: int,
        log: Callable[[str], None] = print) -> dict:
    torch.set_num_threads(threads)
    load = os.getloadavg()
    started = time.perf_counter()
    code = sources()
    warm_up(shape)
    model = build(MODEL)
    x = torch.randn(1, *shape)
    masses, importance = _scores(model, x, shape, pairs, log)
    rows = []
    with Counter("__init__", "path_magnitude", "path_metric") as counter:
        for _ in range(pairs):
            (small, report), t = timed_call(
                model, x, lambda: fxpath.prune_channels(model, AMOUNT, shape))
            rows.append(t)
            log(f"prune_channels: {t['call_s']:.1f} s = {t['ratio']:.1f}x a forward (CPU time "
                f"{t['cpu_ratio']:.1f}x)")
    prune = _median(rows)
    prune.update({"compiles_per_call": counter.counts["__init__"] / pairs,
                  "score_passes_per_call": counter.counts["path_magnitude"] / pairs,
                  "metrics_per_call": counter.counts["path_metric"] / pairs})
    latency = paired_latency(model, small, torch.randn(BATCH, *shape), repeats)
    log(f"batch-{BATCH}: speed-up {latency['speedup']:.2f}x; MACs "
        f"{report.macs[1] / report.macs[0]:.3f}")
    layer = _layer_scope(model, shape, repeats, log)
    prof = profile(model, shape, top)
    figures = {"mass": masses["ratio"], "importance": importance["ratio"],
               "prune": prune["ratio"], "macs": report.macs[1] / report.macs[0],
               "speedup": latency["speedup"], "cpu_speedup": latency["cpu_speedup"]}
    return {"machine": machine("cpu"), "structured_sources": code, "threads": threads,
            "model": MODEL, "input_shape": list(shape), "amount": AMOUNT, "batch": BATCH,
            "load_average_start": list(load), "load_average_end": list(os.getloadavg()),
            "seconds": time.perf_counter() - started, "figures": figures,
            "mass": masses, "importance": importance, "prune": prune, "latency": latency,
            "params": list(report.params), "macs": list(report.macs),
            "relative": report.metric.relative, "exact": report.metric.exact,
            "spared": list(report.spared), "layer_scope": layer, "profile": prof}


def _met(value: float, bound: float, how: str) -> bool:
    return value <= bound if how == "<=" else value >= bound


def provenance(r: dict) -> str:
    """Where and how the figures were measured (one paragraph)."""
    m = r["machine"]
    start, end = r["load_average_start"][0], r["load_average_end"][0]
    shape = "x".join(map(str, r["input_shape"]))
    return (f"torchvision `{r['model']}` at {shape} (random weights, random BatchNorm "
            f"statistics and affine parameters, eval mode), {r['amount']:.0%} of the channels "
            f"by channel path mass, global scope. Commit `{m['commit']}` (fxpath/apps/"
            f"structured/ digest `{r['structured_sources']}`), {m.get('cpu', 'CPU')}, "
            f"{r['threads']} torch thread(s) of {m['cpu_count']} CPUs, torch {m['torch']}. The "
            f"machine is shared with other work: load average {start:.1f} at the start, "
            f"{end:.1f} at the end; the ratios are of measurements side by side (median of "
            f"{len(r['prune']['pairs'])} pairs, each against the median of six one-image "
            f"forwards around the call), the CPU-time ratios are steadier than the wall ones.")


def aims(r: dict) -> str:
    """The aims table."""
    lines = ["| aim | measured | bound | met |", "|---|---|---|---|"]
    for name, (key, bound, how) in AIMS.items():
        v = r["figures"][key]
        shown = f"{v:.3f}" if key == "macs" else f"{v:.3f}x"
        lines.append(f"| {name} | {shown} | {how} {bound:g} | "
                     f"{'yes' if _met(v, bound, how) else '**no**'} |")
    return "\n".join(lines) + "\n"


def to_markdown(r: dict) -> str:
    lines = ["# Structured pruning: the aims, measured (CPU)", "", provenance(r), "", aims(r)]
    p, lat = r["prune"], r["latency"]
    lines += ["| measurement | wall: call / forward | CPU time: call / forward | call | "
              "forward |", "|---|---|---|---|---|"]
    for label, key in (("warm ChannelMass.masses()", "mass"),
                       (f"warm PathMagnitudeImportance, all {r['importance']['groups']} groups",
                        "importance"), ("prune_channels (whole, cold)", "prune")):
        row = r[key]
        each = ", ".join(f"{q['ratio']:.2f}" for q in row["pairs"])
        lines.append(f"| {label} | {row['ratio']:.2f}x ({each}) | "
                     f"{row['cpu_ratio']:.2f}x | {row['call_s']:.2f} s | "
                     f"{row['forward_s'] * 1e3:.0f} ms |")
    lines += ["", f"Per prune_channels call: {p['compiles_per_call']:g} path programs compiled, "
              f"{p['score_passes_per_call']:g} score passes, {p['metrics_per_call']:g} "
              f"path-metrics. Small model: params {r['params'][1] / r['params'][0]:.3f} of the "
              f"dense, MACs {r['macs'][1] / r['macs'][0]:.3f}; batch-{r['batch']} forward "
              f"{lat['dense_median_s'] * 1e3:.0f} ms dense, {lat['small_median_s'] * 1e3:.0f} "
              f"ms small, paired speed-up {lat['speedup']:.2f}x (CPU time "
              f"{lat['cpu_speedup']:.2f}x) over {len(lat['dense_s'])} pairs. "
              f"Certificate: relative {r['relative']:.6g}, exact {r['exact']}; spared "
              f"layers: {', '.join(f'`{s}`' for s in r['spared']) or 'none'}.", ""]
    if "layer_scope" in r:
        q = r["layer_scope"]
        lines += [f"For comparison (not an aim), `scope=\"layer\"` (half of every layer's "
                  f"channels): params {q['params'][1] / q['params'][0]:.3f}, MACs "
                  f"{q['macs'][1] / q['macs'][0]:.3f}, batch-{r['batch']} speed-up "
                  f"{q['latency']['speedup']:.2f}x (CPU time {q['latency']['cpu_speedup']:.2f}x)"
                  f", relative path-metric {q['relative']:.6g}.", ""]
    prof = r["profile"]
    lines += [f"## Where a whole call spends its time (cProfile, one call, {prof['total_s']:.1f} "
              "s under the profiler)", "",
              "| phase | function | calls | cumulative | share |", "|---|---|---|---|---|"]
    lines += [f"| {q['phase']} | `{q['function']}` | {q['calls']} | {q['cumulative_s']:.2f} s | "
              f"{q['cumulative_s'] / prof['total_s']:.0%} |" for q in prof.get("phases", [])]
    lines += ["", "Phases overlap (a compile inside the scores, the scores inside the cut).", "",
              "| by cumulative time | calls | cumulative | own |", "|---|---|---|---|"]
    lines += [f"| `{q['function']}` | {q['calls']} | {q['cumulative_s']:.2f} s | "
              f"{q['own_s']:.2f} s |" for q in prof["cumulative"]]
    lines += ["", "| by own time | calls | own | cumulative |", "|---|---|---|---|"]
    lines += [f"| `{q['function']}` | {q['calls']} | {q['own_s']:.2f} s | "
              f"{q['cumulative_s']:.2f} s |" for q in prof["own"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs=3, type=int, default=[3, 224, 224], metavar=("C", "H", "W"))
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=7, help="paired batch-8 forwards")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: steadier on a machine shared with other work)")
    p.add_argument("--top", type=int, default=25, help="profile rows")
    p.add_argument("--out", type=Path, default=RESULTS, help="the .json (the .md beside it)")
    p.add_argument("--render", action="store_true", help="measure nothing: rewrite the .md")
    args = p.parse_args(argv)
    if args.render:
        result = json.loads(args.out.read_text())
    else:
        result = run(tuple(args.size), args.pairs, args.repeats, args.threads, args.top)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
