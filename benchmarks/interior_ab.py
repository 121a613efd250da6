"""A/B of ``interior=False`` / ``True`` (and, on a GPU, the default ``None``, which compresses
only big convs there): compressed-image convs, see `fxpath.kernels.frame_conv`. Warm path-norm and
path-magnitude of each program, timed alternately in one run, with the model's forward
between rounds.

    python benchmarks/interior_ab.py                       # CPU, 2 threads
    python benchmarks/interior_ab.py --device cuda --repeats 30

Writes benchmarks/results/interior_ab_<device>.md.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from bench_path import RESULTS, build, machine, timeit

import fxpath


def ab(name: str, repeats: int, device: str) -> dict[str, float]:
    """Median ms of the forward and of each program's warm calls, interleaved."""
    model = build(name).to(device)
    x = torch.randn(1, 3, 224, 224, device=device)
    flags = (False, None, True) if device.startswith("cuda") else (False, True)
    progs = {flag: fxpath.compile(model, (3, 224, 224), interior=flag) for flag in flags}
    for p in progs.values():  # eager, capture, replay on a GPU
        for _ in range(3):
            p.path_norm()
            p.path_magnitude()

    @torch.no_grad()
    def forward() -> None:
        model(x)

    def once(fn: Callable[[], object]) -> float:
        return timeit(fn, 1, device, warmup=0)

    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        times.setdefault("forward", []).append(once(forward))
        for flag, p in progs.items():
            times.setdefault(f"norm_{flag}", []).append(once(p.path_norm))
            times.setdefault(f"scores_{flag}", []).append(once(p.path_magnitude))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+",
                    default=["resnet18", "resnet50", "vgg16", "timm:densenet121"])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flags = ["False", "None", "True"] if args.device.startswith("cuda") else ["False", "True"]
    head = " / ".join(f"interior={f}" for f in flags)
    lines = [f"Machine: {', '.join(f'{k}={v}' for k, v in machine(args.device).items())}", "",
             f"Median ms of {args.repeats} interleaved rounds (forward, then each program).", "",
             f"| model | forward | path_norm, {head} | path_magnitude, {head} |",
             "|---|---|---|---|"]
    for name in args.models:
        r = ab(name, args.repeats, args.device)
        print(name, {k: round(v, 2) for k, v in r.items()}, flush=True)
        norms = " / ".join(f"{r[f'norm_{f}']:.2f}" for f in flags)
        scores = " / ".join(f"{r[f'scores_{f}']:.2f}" for f in flags)
        lines.append(f"| {name} | {r['forward']:.2f} | {norms} | {scores} |")
    RESULTS.mkdir(exist_ok=True)
    tag = "cpu" if args.device == "cpu" else "gpu"
    (RESULTS / f"interior_ab_{tag}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
