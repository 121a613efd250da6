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
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

import fxpath

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
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu_count": str(os.cpu_count()),
            "threads": str(torch.get_num_threads()), "device": device}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


class PeakRSS:
    """Peak resident memory (MiB) above the starting point, sampled every millisecond."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    @staticmethod
    def _rss() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return 0.0

    @property
    def mib(self) -> float:
        return self.peak - self.start


def timeit(fn: Callable[[], object], repeats: int, device: str, warmup: int = 1) -> float:
    """Median wall time in milliseconds."""
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
    return statistics.median(times)


def bench_model(name: str, repeats: int, device: str, baseline: bool) -> dict[str, float]:
    """All timings of one model, as milliseconds and ratios to its forward."""
    model = build(name).to(device)
    shape = (3, 224, 224)
    x = torch.randn(1, *shape, device=device)
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.9)
    row: dict[str, float] = {}

    @torch.no_grad()
    def forward() -> None:
        model(x)

    row["forward_ms"] = timeit(forward, repeats, device, warmup=2)
    prog = fxpath.compile(model, shape)
    row["cold_path_norm_ms"] = timeit(lambda: fxpath.path_norm(model, shape), repeats, device)
    row["warm_path_norm_ms"] = timeit(lambda: prog.path_norm(), repeats, device, warmup=2)
    with PeakRSS() as mem:
        prog.path_magnitude()
    row["path_magnitude_peak_mib"] = mem.mib
    row["warm_path_magnitude_ms"] = timeit(lambda: prog.path_magnitude(), repeats, device)
    row["warm_path_metric_ms"] = timeit(lambda: prog.path_metric(other), repeats, device)

    def prune_once() -> None:
        fxpath.prune(copy.deepcopy(model), 0.5, shape)

    row["prune_ms"] = timeit(prune_once, max(1, repeats // 3), device, warmup=0)
    if baseline and device == "cpu" and not name.startswith("timm:"):
        from baselines import published_style_path_magnitude, published_style_path_norm

        row["published_path_norm_ms"] = timeit(
            lambda: published_style_path_norm(model, shape), max(1, repeats // 2), device)
        row["published_path_magnitude_ms"] = timeit(
            lambda: published_style_path_magnitude(model, shape), max(1, repeats // 2), device)
    fwd = row["forward_ms"]
    for k in list(row):
        if k.endswith("_ms") and k != "forward_ms":
            row[k.replace("_ms", "_x")] = row[k] / fwd
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
    """The results table (ratios to the model's own forward; ms in parentheses)."""
    cols = [("cold path_norm", "cold_path_norm"), ("warm path_norm", "warm_path_norm"),
            ("warm path_magnitude", "warm_path_magnitude"), ("warm path_metric",
                                                             "warm_path_metric"),
            ("prune (one call)", "prune"), ("published-style norm", "published_path_norm"),
            ("published-style scores", "published_path_magnitude")]
    lines = [f"Machine: {', '.join(f'{k}={v}' for k, v in info.items())}", "",
             "| model | forward (ms) | " + " | ".join(c for c, _ in cols)
             + " | scores peak RSS (MiB) |",
             "|---|---|" + "---|" * len(cols) + "---|"]
    for name, r in rows.items():
        cells = [f"{r[k + '_x']:.2f}x ({r[k + '_ms']:.0f})" if k + "_x" in r else "-"
                 for _, k in cols]
        lines.append(f"| {name} | {r['forward_ms']:.1f} | " + " | ".join(cells)
                     + f" | {r['path_magnitude_peak_mib']:.0f} |")
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
    ap.add_argument("--scaling", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = machine(args.device)
    RESULTS.mkdir(exist_ok=True)
    tag = "cpu" if args.device == "cpu" else "gpu"
    if args.scaling:
        s = bench_scaling(args.repeats, args.device)
        (RESULTS / f"scaling_{tag}.json").write_text(json.dumps({"machine": info, **s}, indent=1))
        text = f"Machine: {info}\n\n" + scaling_markdown(s)
        (RESULTS / f"scaling_{tag}.md").write_text(text)
        print(text)
        return
    rows = {}
    for name in args.models:
        rows[name] = bench_model(name, args.repeats, args.device, not args.no_baseline)
        print(name, {k: round(v, 2) for k, v in rows[name].items()}, flush=True)
    (RESULTS / f"bench_{tag}.json").write_text(json.dumps({"machine": info, "rows": rows},
                                                          indent=1))
    text = to_markdown(rows, info)
    (RESULTS / f"bench_{tag}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
