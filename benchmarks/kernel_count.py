"""Kernels launched per call: the model's forward vs fxpath's warm path-norm and scores.

    python benchmarks/kernel_count.py --device cuda

At batch 1 on a GPU, time follows the number of kernel launches more than FLOPs; this prints
the count of device kernels (CUDA) or of top-level aten ops (CPU) per call. With CUDA graphs the
same kernels run (and are counted); what the graph removes is launching them one by one.
"""

from __future__ import annotations

import argparse

import torch
from bench_path import build
from torch.profiler import ProfilerActivity, profile

import fxpath


def count(fn: object, device: str) -> int:
    """Device kernels (or, on the CPU, top-level aten ops) one call of ``fn`` runs."""
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()  # type: ignore[operator]
        if device == "cuda":
            torch.cuda.synchronize()
    events = prof.events()
    if device == "cuda":
        return sum(1 for e in events if e.device_type.name == "CUDA")
    return sum(1 for e in events if e.name.startswith("aten::") and e.cpu_parent is None)


def main() -> None:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["resnet18", "vgg16"])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    for name in args.models:
        model = build(name).to(args.device)
        x = torch.randn(1, 3, 224, 224, device=args.device)
        row = {"forward": count(lambda m=model, x=x: m(x), args.device)}
        for graphs in ([False, True] if args.device == "cuda" else [None]):
            prog = fxpath.compile(model, (3, 224, 224), cuda_graphs=graphs)
            for _ in range(2):  # past the eager first call and the capture
                prog.path_norm()
                prog.path_magnitude()
            tag = "" if graphs is None else (" (graphs)" if graphs else " (eager)")
            row["path_norm" + tag] = count(prog.path_norm, args.device)
            row["path_magnitude" + tag] = count(prog.path_magnitude, args.device)
        print(name, row, flush=True)


if __name__ == "__main__":
    with torch.no_grad():
        main()
