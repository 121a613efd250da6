"""Side-by-side timings of fxpath against the model's own forward pass (and the published style).

Every figure is a ratio to the plain forward of the same model, measured in the same run
(float32, batch 1, eval, no grad, medians). Run:

    python benchmarks/bench_path.py                      # resnet18/50, vgg16, densenet121 at 224
    python benchmarks/bench_path.py --models resnet18 --repeats 5
    python benchmarks/bench_path.py --scaling            # cost vs depth and vs input pixels
    python benchmarks/bench_path.py --device cuda        # on a GPU

Writes benchmarks/results/bench_<device>.md and .json (with the machine described).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

import fxpath
from fxpath.engine.precision import ieee_float32
from fxpath.tools.zoo.provenance import cpu_name, git_commit

RESULTS = Path(__file__).resolve().parent / "results"


def build(name: str) -> nn.Module:
    """``torchvision`` names unless prefixed with ``timm:``; random init, eval mode."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        import timm

        return timm.create_model(name[5:], pretrained=False).eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval()


def machine(device: str) -> dict[str, str]:
    """A description of where the numbers come from."""
    info = {"commit": git_commit(), "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": str(os.cpu_count()),
            "threads": str(torch.get_num_threads()), "device": device,
            "THP_MEM_ALLOC_ENABLE": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}
    if (cpu := cpu_name()) is not None:
        info["cpu"] = cpu
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


OPS = ("forward", "cold_path_norm", "warm_path_norm", "warm_path_magnitude",
       "warm_path_magnitude_out", "warm_path_metric", "prune")


def _setup(name: str, device: str) -> tuple[nn.Module, nn.Module, torch.Tensor,
                                            tuple[int, ...]]:
    model = build(name).to(device)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.9)
    shape = (3, 224, 224)
    return model, other, torch.randn(1, *shape, device=device), shape


def operations(model: nn.Module, other: nn.Module, x: torch.Tensor, shape: tuple[int, ...],
               spares: list[nn.Module]) -> dict[str, Callable[[], object]]:
    """The timed calls; the warm ones share one compiled program (built on first use).

    ``prune`` modifies its model: it takes a copy from ``spares`` (made before the clock starts)
    and falls back to copying inside the timed region only when none is left.
    """
    progs: dict[tuple[bool | None, bool | None], fxpath.PathProgram] = {}
    reuse: dict[str, torch.Tensor] = {}

    def prog(graphs: bool | None = None, interior: bool | None = None) -> fxpath.PathProgram:
        if (graphs, interior) not in progs:
            progs[graphs, interior] = fxpath.compile(model, shape, cuda_graphs=graphs,
                                                     interior=interior)
        return progs[graphs, interior]

    @torch.no_grad()
    def forward() -> None:
        model(x)

    ops = {"forward": forward,
            "cold_path_norm": lambda: fxpath.path_norm(model, shape),
            "warm_path_norm": lambda: prog().path_norm(),
            "warm_path_magnitude": lambda: prog().path_magnitude(),
            # repeated use: write into the previous call's tensors (out=), no fresh memory
            "warm_path_magnitude_out": lambda: reuse.update(
                prog().path_magnitude(out=reuse or None)),
            "warm_path_metric": lambda: prog().path_metric(other),
            "prune": lambda: fxpath.prune(spares.pop() if spares else copy.deepcopy(model),
                                          0.5, shape)}
    if x.is_cuda:  # the model's forward without TF32, as the path networks run (like for like)
        def forward_ieee() -> None:
            with torch.no_grad(), ieee_float32():
                model(x)

        ops["forward_ieee"] = forward_ieee
        # the same warm calls without CUDA graphs (one launch per kernel)
        ops["warm_path_norm_eager"] = lambda: prog(False).path_norm()
        ops["warm_path_magnitude_eager"] = lambda: prog(False).path_magnitude()
    # the other setting of `interior` (constant-interior convs: on by default on the CPU only)
    flip = "interior" if x.is_cuda else "dense"
    ops[f"warm_path_norm_{flip}"] = lambda: prog(interior=x.is_cuda).path_norm()
    ops[f"warm_path_magnitude_{flip}"] = lambda: prog(interior=x.is_cuda).path_magnitude()
    return ops


def peak_memory(fn: Callable[[], object], device: str) -> float:
    """Peak of the tensor memory one call of ``fn`` allocates on top of what already exists (MiB).

    CPU: replays the allocation events of the PyTorch profiler (``profile_memory``), so the
    figure is the tensors' high-water mark, free of the C allocator's caching. CUDA: the caching
    allocator's peak.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def timeit(fn: Callable[[], object], repeats: int, device: str, warmup: int = 1) -> float:
    """Median wall time in milliseconds."""
    return statistics.median(_times(fn, repeats, device, warmup))


def _times(fn: Callable[[], object], repeats: int, device: str, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def ratio_rows(names: list[str], repeats: int, device: str,
               calls: Callable[[nn.Module, tuple[int, ...]], dict[str, Callable[[], object]]],
               shape: tuple[int, ...] = (3, 224, 224)) -> dict[str, dict[str, float]]:
    """``{model: {call: paired ratio to the forward, call_ms: ms, forward_ms: ms}}`` for the
    calls ``calls(model, shape)`` makes (warnings silenced: fallbacks are expected here)."""
    import warnings

    rows: dict[str, dict[str, float]] = {}
    for name in names:
        model = build(name).to(device)
        x = torch.randn(1, *shape, device=device)

        @torch.no_grad()
        def forward(model: nn.Module = model, x: torch.Tensor = x) -> None:
            model(x)

        row: dict[str, float] = {"forward_ms": paired_ratio(forward, forward, 3, device)[0]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, fn in calls(model, shape).items():
                ms, ratio, _ = paired_ratio(fn, forward, repeats, device)
                row[key], row[f"{key}_ms"] = ratio, ms
        rows[name] = row
        print(name, {k: round(v, 3) for k, v in row.items()}, flush=True)
    return rows


def ratio_main(doc: str, prefix: str, calls: Callable[..., dict[str, Callable[[], object]]],
               markdown: Callable[[dict[str, dict[str, float]], dict[str, str]], str],
               models: list[str], repeats: int) -> None:
    """The command line shared by the ratio benchmarks: run ``ratio_rows`` over ``--models``
    and write ``results/<prefix>_<device><tag>.{json,md}`` with the machine described."""
    import argparse

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--models", nargs="+", default=models)
    p.add_argument("--repeats", type=int, default=repeats)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tag", default="", help="suffix of the result file names")
    args = p.parse_args()
    info = machine(args.device)
    rows = ratio_rows(args.models, args.repeats, args.device, calls)
    stem = RESULTS / f"{prefix}_{args.device.split(':')[0]}{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    stem.with_suffix(".md").write_text(markdown(rows, info))
    print(markdown(rows, info))


def paired_ratio(fn: Callable[[], object], forward: Callable[[], object], repeats: int,
                 device: str, warmup: int = 1) -> tuple[float, float, float]:
    """``(median ms, median wall-time ratio, median CPU-time ratio)`` of ``fn`` to the forward.

    Each call of ``fn`` is timed between two forwards and compared with their mean: on a
    machine whose speed drifts (shared cores), pairs close in time keep the ratio honest. The
    CPU-time ratio (this process's user + system time, all threads) does not count time the
    virtual machine spent descheduled; on a GPU it is not meaningful and is reported as NaN.
    """
    def clock(f: Callable[[], object]) -> tuple[float, float]:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        f()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3

    for _ in range(warmup):
        fn()
    ms, ratios, cpu_ratios = [], [], []
    for _ in range(repeats):
        before, t, after = clock(forward), clock(fn), clock(forward)
        ms.append(t[0])
        ratios.append(2 * t[0] / (before[0] + after[0]))
        cpu_ratios.append(2 * t[1] / (before[1] + after[1]) if device == "cpu" else math.nan)
    return statistics.median(ms), statistics.median(ratios), statistics.median(cpu_ratios)


def bench_model(name: str, repeats: int, device: str, baseline: bool,
                memory: bool = True) -> dict[str, float]:
    """All timings of one model, as milliseconds and paired ratios to its forward."""
    model, other, x, shape = _setup(name, device)
    spares: list[nn.Module] = []
    ops = operations(model, other, x, shape, spares)
    forward = ops["forward"]
    row: dict[str, float] = {"forward_ms": timeit(forward, repeats, device, warmup=2)}
    few = max(1, repeats // 3)
    for op in list(ops)[1:]:
        n = few if op == "prune" else repeats
        if op == "prune":
            spares.extend(copy.deepcopy(model) for _ in range(n))
        row[f"{op}_ms"], row[f"{op}_x"], row[f"{op}_cpu_x"] = paired_ratio(
            ops[op], forward, n, device, warmup=0 if op == "prune" else 1)
    if baseline and not name.startswith("timm:"):
        from baselines import published_style_path_magnitude, published_style_path_norm

        for key, fn in (("published_path_norm", published_style_path_norm),
                        ("published_path_magnitude", published_style_path_magnitude)):
            row[f"{key}_ms"], row[f"{key}_x"], row[f"{key}_cpu_x"] = paired_ratio(
                lambda f=fn: f(model, shape), forward, few, device)
    if memory:  # after the timings: every call is warm, as in the time columns
        spares.append(copy.deepcopy(model))
        for op in ops:
            row[f"{op}_peak_mib"] = peak_memory(ops[op], device)
    return row


def _norm_and_scores(prog: fxpath.PathProgram, repeats: int, device: str) -> dict[str, float]:
    x = torch.randn(1, *prog.input_shapes[0], device=device)

    @torch.no_grad()
    def forward() -> None:
        prog.model(x)

    return {"forward_ms": timeit(forward, repeats, device),
            "path_norm_ms": timeit(prog.path_norm, repeats, device),
            "path_magnitude_ms": timeit(prog.path_magnitude, max(1, repeats // 2), device)}


def bench_scaling(repeats: int, device: str) -> dict[str, list[dict[str, float]]]:
    """Warm path-norm and path-magnitude vs depth (ResNets) and vs input pixels (ResNet-18)."""
    out: dict[str, list[dict[str, float]]] = {"depth": [], "pixels": []}
    for arch in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        model = build(arch).to(device)
        prog = fxpath.compile(model, (3, 224, 224))
        out["depth"].append({"model": arch, "layers": int(arch[6:]), **_norm_and_scores(
            prog, repeats, device)})
    model = build("resnet18").to(device)
    for side in (64, 128, 224, 320, 448):
        prog = fxpath.compile(model, (3, side, side))
        out["pixels"].append({"side": side, "pixels": side * side,
                              **_norm_and_scores(prog, repeats, device)})
    return out


def to_markdown(rows: dict[str, dict[str, float]], info: dict[str, str]) -> str:
    """The results tables: time ratios (ms in parentheses) and extra peak memory."""
    cols = [("cold path_norm", "cold_path_norm"), ("warm path_norm", "warm_path_norm"),
            ("warm path_magnitude", "warm_path_magnitude"),
            ("warm path_magnitude(out=)", "warm_path_magnitude_out"),
            ("warm path_metric", "warm_path_metric"), ("prune (one call)", "prune"),
            ("forward without TF32", "forward_ieee"),
            ("warm path_norm, no CUDA graphs", "warm_path_norm_eager"),
            ("warm path_magnitude, no CUDA graphs", "warm_path_magnitude_eager"),
            ("warm path_norm, interior=False", "warm_path_norm_dense"),
            ("warm path_magnitude, interior=False", "warm_path_magnitude_dense"),
            ("warm path_norm, interior=True", "warm_path_norm_interior"),
            ("warm path_magnitude, interior=True", "warm_path_magnitude_interior"),
            ("published-style norm", "published_path_norm"),
            ("published-style scores", "published_path_magnitude")]
    cols = [c for c in cols if any(c[1] + "_x" in r for r in rows.values())]
    lines = [f"Machine: {', '.join(f'{k}={v}' for k, v in info.items())}", "",
             "Time: median of paired ratios to the model's forward (float32, batch 1, "
             "224x224); median ms in parentheses.", "",
             "| model | forward (ms) | " + " | ".join(c for c, _ in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for name, r in rows.items():
        cells = [f"{r[k + '_x']:.2f}x ({r[k + '_ms']:.0f})" if k + "_x" in r else "-"
                 for _, k in cols]
        lines.append(f"| {name} | {r['forward_ms']:.1f} | " + " | ".join(cells) + " |")
    if info["device"] == "cpu":
        lines += ["", "CPU-time ratios (process user + system time, all threads; not counting "
                  "time the virtual machine was descheduled):", "",
                  "| model | " + " | ".join(c for c, _ in cols) + " |",
                  "|---|" + "---|" * len(cols)]
        lines += [f"| {name} | " + " | ".join(f"{r[k + '_cpu_x']:.2f}x" if k + "_cpu_x" in r
                                               else "-" for _, k in cols) + " |"
                  for name, r in rows.items()]
    if all(f"{op}_peak_mib" in r for r in rows.values() for op in OPS):
        lines += ["", "Peak tensor memory of one call (MiB) on top of what exists before it "
                  "(model, twin and, for warm calls, the compiled program and its magnitude "
                  "buffers):", "",
                  "| model | " + " | ".join(OPS) + " |", "|---|" + "---|" * len(OPS)]
        lines += [f"| {name} | " + " | ".join(f"{r[f'{op}_peak_mib']:.0f}" for op in OPS) + " |"
                  for name, r in rows.items()]
    return "\n".join(lines) + "\n"


def scaling_markdown(s: dict[str, list[dict[str, float]]]) -> str:
    """Tables of the scaling run."""
    lines = ["| model | forward (ms) | path_norm (ms) | ratio | path_magnitude (ms) | ratio |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['forward_ms']:.1f} | {r['path_norm_ms']:.1f} | "
              f"{r['path_norm_ms'] / r['forward_ms']:.2f}x | {r['path_magnitude_ms']:.1f} | "
              f"{r['path_magnitude_ms'] / r['forward_ms']:.2f}x |" for r in s["depth"]]
    lines += ["", "| ResNet-18 input | pixels | forward (ms) | path_norm (ms) | path_norm ms "
              "per 10k pixels | path_magnitude (ms) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['side']}x{r['side']} | {r['pixels']} | {r['forward_ms']:.1f} | "
              f"{r['path_norm_ms']:.1f} | {1e4 * r['path_norm_ms'] / r['pixels']:.2f} | "
              f"{r['path_magnitude_ms']:.1f} |" for r in s["pixels"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+",
                    default=["resnet18", "resnet50", "vgg16", "timm:densenet121"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--tag", default="", help="suffix of the result files (bench_cpu_TAG.md)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine(args.device)
    RESULTS.mkdir(exist_ok=True)
    tag = ("cpu" if args.device == "cpu" else "gpu") + (f"_{args.tag}" if args.tag else "")
    if args.scaling:
        s = bench_scaling(args.repeats, args.device)
        (RESULTS / f"scaling_{tag}.json").write_text(json.dumps({"machine": info, **s}, indent=1))
        text = f"Machine: {info}\n\n" + scaling_markdown(s)
        (RESULTS / f"scaling_{tag}.md").write_text(text)
        print(text)
        return
    rows = {}
    for name in args.models:
        rows[name] = bench_model(name, args.repeats, args.device, not args.no_baseline,
                                 not args.no_memory)
        print(name, {k: round(v, 2) for k, v in rows[name].items()}, flush=True)
    (RESULTS / f"bench_{tag}.json").write_text(json.dumps({"machine": info, "rows": rows},
                                                          indent=1))
    text = to_markdown(rows, info)
    (RESULTS / f"bench_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
