"""How tight fxpath's certificate is, measured on trained networks (CPU).

For a trained ReLU ResNet and a trained ReLU MLP, each pruned (``fxpath.prune``, global
path-magnitude, 10-90%) and quantized (``fxpath.quantize``, int2..int8 per tensor, to nearest),
this script measures on every test image

    measured(x) = ||R_theta(x) - R_theta'(x)||_1 / max(1, ||x||_inf)

in float64 and reports, per setting, its maximum over the test set next to the certified
path-metric ``d = ||Phi(theta) - Phi(theta')||_1`` (``fxpath.path_metric``, float64): the ratio
``max measured / d`` (at most 1: the Lipschitz theorem) and, across the settings of one model,
the Spearman rank correlation of the two columns.

On the MLP it also evaluates the classic parameter-space bound of ``docs/tightness.md``: with
``eps = ||theta - theta'||_inf`` and the widths ``n_0..n_L``,

    ||R_theta(x) - R_theta'(x)||_1 / max(1, ||x||_inf)
        <= eps * sum_l (prod_{k > l} ||W'_k||) (m_l M_{l-1} + c_l)

(``||.||`` the l^inf -> l^inf operator norm for hidden layers and the entrywise l^1 norm for the
last, ``M_l`` the bound on the hidden activations of theta, ``m_l``, ``c_l`` width factors), and
its sharper form with the actual per-layer perturbations ``||W_l - W'_l||`` in place of
``eps * m_l``. Both are recomputed after ``fxpath.rescale`` applies one neuron-wise rescaling
``T`` (same seed, same factors) to theta and to theta': the pair computes the same two functions
and has the same path-lifting, so the path-metric does not move, while the classic bound does.

Data and models come from ``benchmarks/pruning_repro.py`` (``--quick``: scikit-learn's digits;
``--full``: MNIST, fetched once by ``benchmarks/repro_data.py``). Writes
``benchmarks/results/tightness_{quick,full}.{md,json,png}``.

Run: ``python benchmarks/tightness.py --quick`` (about a minute on one core) or ``--full``.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pruning_repro as pr  # benchmarks/ (this script's folder is on sys.path)
import repro_cli
import torch
from bench_path import machine
from torch import nn
from torch.nn.utils import prune as torch_prune

import fxpath

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"


@dataclass(frozen=True)
class Config:
    name: str = "quick"
    train: pr.Config = field(default_factory=lambda: pr.QUICK)
    mlp_widths: tuple[int, ...] = (64, 32)
    seed: int = 0
    sparsities: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    factors: tuple[float, ...] = (1, 128, 4096)
    n_test: int | None = None  # all test images
    threads: int = 1
    out_dir: str = str(RESULTS_DIR)
    write: bool = True


QUICK = Config()
FULL = Config(name="full", train=pr.FULL, mlp_widths=(300, 100), threads=2)


# ----------------------------------------------------------------------------- models
def mlp(in_shape: tuple[int, ...], widths: tuple[int, ...], classes: int = 10) -> nn.Sequential:
    """A ReLU MLP with biases: Flatten, then Linear-ReLU per hidden width, then Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    n = int(np.prod(in_shape))
    for w in widths:
        layers += [nn.Linear(n, w), nn.ReLU()]
        n = w
    layers.append(nn.Linear(n, classes))
    return nn.Sequential(*layers)


def train_mlp(cfg: Config, data: dict, log) -> tuple[nn.Module, dict]:
    """The MLP trained with the ResNet's recipe (``pruning_repro.train``)."""
    pr.seed_everything(cfg.seed)
    model = mlp(tuple(data["x_train"].shape[1:]), cfg.mlp_widths)
    t0 = time.perf_counter()
    loss = pr.train(model, data, cfg.train.epochs, cfg.train.lr, cfg.train, cfg.seed)
    info = {"train_seconds": time.perf_counter() - t0, "train_loss": loss,
            "dense_acc": pr.accuracy(model, data),
            "n_params": sum(p.numel() for p in model.parameters())}
    log(f"MLP {list(cfg.mlp_widths)}: acc {info['dense_acc']:.2f}%")
    return model.eval(), info


def plain(model: nn.Module) -> nn.Module:
    """A copy with the masks of torch.nn.utils.prune made permanent (plain ``weight``)."""
    out = pr.deepcopy_pruned(model)
    for m in out.modules():
        if hasattr(m, "weight_mask"):
            torch_prune.remove(m, "weight")
    return out.eval()


def perturbed(model: nn.Module, shape: tuple[int, ...], cfg: Config):
    """Yields ``(kind, level, perturbed copy)`` for every pruning and quantization setting."""
    for amount in cfg.sparsities:
        pruned = copy.deepcopy(model).eval()
        fxpath.prune(pruned, amount, shape, criterion="path_magnitude", scope="global")
        yield "prune", amount, plain(pruned)
    for b in cfg.bits:
        q, _ = fxpath.quantize(model, shape, f"int{b}", layer_metrics=False)
        yield "quantize", b, q.eval()


# ----------------------------------------------------------------------------- measuring
def measured_distance(out_a: torch.Tensor, out_b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image ``||out_a - out_b||_1 / max(1, ||x||_inf)`` (float64)."""
    scale = x.double().flatten(1).abs().amax(1).clamp_min(1.0)
    return (out_a - out_b).abs().sum(1) / scale


def linear_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The MLP's ``(W, b)`` in order, float64."""
    return [(m.weight.detach().double(), m.bias.detach().double())
            for m in model.modules() if isinstance(m, nn.Linear)]


def classic_bound(model_a: nn.Module, model_b: nn.Module) -> dict:
    """The parameter-space bounds of docs/tightness.md for two MLPs of one architecture.

    Returns ``eps = ||theta_a - theta_b||_inf``, ``classic`` (in terms of eps, the widths and the
    operator norms) and ``telescoping`` (the same sum with the actual per-layer perturbations),
    both bounds on ``||R_a(x) - R_b(x)||_1 / max(1, ||x||_inf)``."""
    la, lb = linear_layers(model_a), linear_layers(model_b)
    depth = len(la)
    eps = max(max(float((wa - wb).abs().max()), float((ba - bb).abs().max()))
              for (wa, ba), (wb, bb) in zip(la, lb, strict=True))

    def op(w: torch.Tensor, last: bool) -> float:  # ||W||_{inf->inf}, or >= ||W||_{inf->1}
        return float(w.abs().sum()) if last else float(w.abs().sum(1).max())

    def vec(b: torch.Tensor, last: bool) -> float:  # ||b||_1 at the output, ||b||_inf inside
        return float(b.abs().sum()) if last else float(b.abs().max())

    big_m = [1.0]  # M_l: ||h_l||_inf <= M_l max(1, ||x||_inf), for theta_a
    for w, b in la[:-1]:
        big_m.append(op(w, False) * big_m[-1] + vec(b, False))
    classic = telescoping = 0.0
    for i in range(depth):
        last = i == depth - 1
        after = float(np.prod([op(lb[k][0], k == depth - 1) for k in range(i + 1, depth)]))
        (wa, ba), (wb, bb) = la[i], lb[i]
        n_out, n_in = wa.shape
        m_i, c_i = (n_out * n_in, n_out) if last else (n_in, 1)
        classic += after * eps * (m_i * big_m[i] + c_i)
        telescoping += after * (op(wa - wb, last) * big_m[i] + vec(ba - bb, last))
    return {"eps": eps, "classic": classic, "telescoping": telescoping, "depth": depth,
            "widths": [la[0][0].shape[1]] + [w.shape[0] for w, _ in la]}


def setting_row(name: str, kind: str, level: float, ref: nn.Module, ref64: torch.Tensor,
                other: nn.Module, data: dict) -> tuple[dict, torch.Tensor]:
    """The measured maximum, the certified path-metric and the per-image check; also returns
    the float64 test outputs of ``other``."""
    x = data["x_test"]
    shape = tuple(x.shape[1:])
    out64 = pr.float64_outputs(other, x)
    meas = measured_distance(ref64, out64, x)
    d = fxpath.path_metric(ref, other, shape, dtype=torch.float64)
    slack = pr.BOUND_RTOL * (ref64.abs().sum(1) + out64.abs().sum(1))
    scale = x.double().flatten(1).abs().amax(1).clamp_min(1.0)
    violations = int((meas * scale > d.value * scale + slack).sum())
    return {"model": name, "kind": kind, "level": level, "measured_max": float(meas.max()),
            "measured_median": float(meas.median()), "certified": d.value,
            "certified_exact": bool(d.exact), "ratio": float(meas.max()) / d.value,
            "violations": violations, "n_samples": int(x.shape[0]),
            "acc": pr.logits_accuracy(out64, data["y_test"])}, out64


def mlp_extras(row: dict, ref: nn.Module, other: nn.Module, cfg: Config, x: torch.Tensor,
               shape: tuple[int, ...], ref64: torch.Tensor, out64: torch.Tensor) -> None:
    """Classic bounds on the pair and on its rescaled twin (T theta, T theta')."""
    cb = classic_bound(ref, other)
    meas = measured_distance(ref64, out64, x)
    row.update(classic=cb["classic"], telescoping=cb["telescoping"], eps=cb["eps"],
               classic_holds=bool((meas <= cb["classic"] * (1 + 1e-9)).all()),
               telescoping_holds=bool((meas <= cb["telescoping"] * (1 + 1e-9)).all()))
    t_ref = fxpath.rescale(ref, shape, factors=cfg.factors, seed=cfg.seed).eval()
    t_other = fxpath.rescale(other, shape, factors=cfg.factors, seed=cfg.seed).eval()
    ct = classic_bound(t_ref, t_other)
    d_t = fxpath.path_metric(t_ref, t_other, shape, dtype=torch.float64).value
    row.update(rescaled_classic=ct["classic"], rescaled_telescoping=ct["telescoping"],
               rescaled_eps=ct["eps"], rescaled_certified=d_t,
               rescaled_certified_rel_change=abs(d_t - row["certified"]) / row["certified"],
               rescaled_function_rel_change=float(
                   (pr.float64_outputs(t_other, x) - out64).abs().max()
                   / out64.abs().max()))


def run_model(name: str, model: nn.Module, data: dict, cfg: Config, log) -> list[dict]:
    x = data["x_test"]
    shape = tuple(x.shape[1:])
    ref64 = pr.float64_outputs(model, x)
    rows = []
    for kind, level, other in perturbed(model, shape, cfg):
        row, out64 = setting_row(name, kind, level, model, ref64, other, data)
        if name == "MLP":
            mlp_extras(row, model, other, cfg, x, shape, ref64, out64)
        log(f"  {name} {kind} {level}: measured {row['measured_max']:.3g}  "
            f"certified {row['certified']:.3g}  ratio {row['ratio']:.3g}"
            + (f"  classic {row['classic']:.3g}" if "classic" in row else ""))
        rows.append(row)
    return rows


def ranks(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (as scipy.stats.rankdata)."""
    v = np.asarray(v, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    for u in np.unique(v):
        tie = v == u
        r[tie] = r[tie].mean()
    return r


def spearman(a, b) -> float:
    """Spearman's rank correlation (Pearson correlation of the average ranks)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


# ----------------------------------------------------------------------------- driver
def run(config: Config, log=print) -> dict:
    """Run the experiment; returns everything measured (JSON-ready). Uses ``config.threads``
    torch threads and restores the caller's setting afterwards."""
    with repro_cli.threads(config.threads):
        return _run(config, log)


def _run(cfg: Config, log) -> dict:
    t0 = time.perf_counter()
    data = pr.load_data(cfg.train)
    if cfg.n_test is not None:
        data = {**data, "x_test": data["x_test"][: cfg.n_test],
                "y_test": data["y_test"][: cfg.n_test]}
    resnet, r_info = pr.train_dense(cfg.train, data, cfg.seed, log)
    net, m_info = train_mlp(cfg, data, log)
    rows = run_model("ResNet", resnet.eval(), data, cfg, log)
    rows += run_model("MLP", net, data, cfg, log)
    settings = asdict(cfg)
    settings.pop("out_dir")
    settings["train"].pop("out_dir")
    result = {"config": settings, "machine": machine("cpu"),
              "fxpath_version": fxpath.__version__,
              "n_train": int(data["x_train"].shape[0]), "n_test": int(data["x_test"].shape[0]),
              "models": {"ResNet": r_info, "MLP": m_info}, "rows": rows,
              "seconds": time.perf_counter() - t0, "cpu_pressure_at_end": pr.cpu_pressure()}
    result["claims"] = check_claims(rows)
    if cfg.write:
        write_results(result, Path(cfg.out_dir), cfg.name)
    return result


def check_claims(rows: list[dict]) -> dict:
    mlp_rows = [r for r in rows if r["model"] == "MLP"]
    corr = {}
    for model in ("ResNet", "MLP"):
        for kind in ("prune", "quantize", None):
            sel = [r for r in rows if r["model"] == model and kind in (None, r["kind"])]
            corr[f"{model} {kind or 'all'}"] = spearman([r["measured_max"] for r in sel],
                                                        [r["certified"] for r in sel])
    inflation = [r["rescaled_classic"] / r["classic"] for r in mlp_rows]
    return {
        "violations": sum(r["violations"] for r in rows),
        "samples_checked": sum(r["n_samples"] for r in rows),
        "ratio_max": max(r["ratio"] for r in rows),
        "ratio_min": min(r["ratio"] for r in rows),
        "spearman": corr,
        "classic_always_holds": all(r["classic_holds"] and r["telescoping_holds"]
                                    for r in mlp_rows),
        "path_metric_below_classic": all(r["certified"] < r["classic"] for r in mlp_rows),
        "path_metric_below_telescoping": all(r["certified"] < r["telescoping"]
                                             for r in mlp_rows),
        "classic_over_path_metric_min": min(r["classic"] / r["certified"] for r in mlp_rows),
        "rescaling_inflation_min": min(inflation),
        "rescaling_inflation_max": max(inflation),
        "rescaled_path_metric_rel_change_max": max(r["rescaled_certified_rel_change"]
                                                   for r in mlp_rows),
        "rescaled_function_rel_change_max": max(r["rescaled_function_rel_change"]
                                                for r in mlp_rows),
    }


# ----------------------------------------------------------------------------- report
def _level(r: dict) -> str:
    return f"{r['level']:.0%}" if r["kind"] == "prune" else f"int{r['level']}"


def _main_table(rows: list[dict]) -> list[str]:
    lines = ["| model | setting | accuracy | max measured | certified d | ratio | violations |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {_level(r)} | {r['acc']:.2f} | {r['measured_max']:.4g} "
                     f"| {r['certified']:.4g}{'' if r['certified_exact'] else ' (bound)'} | "
                     f"{r['ratio']:.3g} | {r['violations']} / {r['n_samples']} |")
    return lines


def _classic_table(rows: list[dict]) -> list[str]:
    lines = ["| setting | eps | certified d | telescoping | classic | classic / d | "
             "after rescaling: d | telescoping | classic | classic inflation |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["model"] != "MLP":
            continue
        lines.append(
            f"| {_level(r)} | {r['eps']:.3g} | {r['certified']:.4g} | {r['telescoping']:.3g} | "
            f"{r['classic']:.3g} | {r['classic'] / r['certified']:.3g} | "
            f"{r['rescaled_certified']:.4g} | {r['rescaled_telescoping']:.3g} | "
            f"{r['rescaled_classic']:.3g} | {r['rescaled_classic'] / r['classic']:.3g} |")
    return lines


def to_markdown(result: dict) -> str:
    cfg, c = result["config"], result["claims"]
    m = result["machine"]
    corr = ", ".join(f"{k}: {v:.3f}" for k, v in c["spearman"].items())
    return "\n".join([
        f"# Tightness of the path-metric certificate ({cfg['name']})", "",
        f"Machine: {m.get('cpu', m['platform'])}, {m['threads']} torch threads of "
        f"{m['cpu_count']} CPUs, torch {m['torch']}, commit {m['commit']}. fxpath "
        f"{result['fxpath_version']}. Total run time {result['seconds']:.0f} s (CPU pressure at "
        f"the end: `{result['cpu_pressure_at_end']}`).", "",
        f"Data: {cfg['train']['dataset']} ({result['n_train']} train / {result['n_test']} test "
        f"images). ResNet: `pruning_repro.SmallResNet` widths {list(cfg['train']['widths'])}, "
        f"{result['models']['ResNet']['n_params']} parameters, accuracy "
        f"{result['models']['ResNet']['dense_acc']:.2f}%. MLP: hidden widths "
        f"{list(cfg['mlp_widths'])}, {result['models']['MLP']['n_params']} parameters, accuracy "
        f"{result['models']['MLP']['dense_acc']:.2f}%. Seed {cfg['seed']}. Pruning: "
        "`fxpath.prune`, global path-magnitude; quantization: `fxpath.quantize` intB per tensor, "
        "to nearest (BatchNorm in float).", "",
        "## Measured against certified", "",
        "max measured = `max_x ||R_theta(x) - R_theta'(x)||_1 / max(1, ||x||_inf)` over the test "
        "set (float64); certified d = `fxpath.path_metric` (float64; '(bound)' where fxpath "
        "certifies an upper bound rather than the exact metric); ratio = max measured / d "
        "(<= 1 is the theorem); violations: images over the bound.", "",
        *_main_table(result["rows"]), "",
        f"Spearman rank correlation of max measured and d across settings: {corr}.", "",
        "## MLP: the path-metric against the classic parameter-space bound", "",
        "eps = `||theta - theta'||_inf`; classic = the bound of docs/tightness.md in terms of "
        "eps, depth, widths and operator norms; telescoping = its sharper form with the actual "
        "per-layer perturbations. After rescaling: both models rescaled by the same "
        f"`fxpath.rescale` (factors {list(cfg['factors'])}, seed {cfg['seed']}): the same two "
        "functions.", "",
        *_classic_table(result["rows"]), "",
        "## Claims", "",
        f"- bound violations: **{c['violations']}** of {c['samples_checked']} image checks; "
        f"ratio max measured / d between {c['ratio_min']:.3g} and {c['ratio_max']:.3g}",
        f"- the classic and telescoping bounds hold on every image: {c['classic_always_holds']}",
        f"- path-metric below the classic bound in every setting: "
        f"**{c['path_metric_below_classic']}** (classic / d at least "
        f"{c['classic_over_path_metric_min']:.3g}); below the telescoping bound: "
        f"{c['path_metric_below_telescoping']}",
        f"- rescaling multiplies the classic bound by {c['rescaling_inflation_min']:.3g} to "
        f"{c['rescaling_inflation_max']:.3g}; the path-metric changes by at most "
        f"{c['rescaled_path_metric_rel_change_max']:.2g} relative (the functions by "
        f"{c['rescaled_function_rel_change_max']:.2g})", "",
    ])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    ax = axes[0]
    for model, colour in (("ResNet", "C0"), ("MLP", "C1")):
        for kind, marker in (("prune", "o"), ("quantize", "s")):
            sel = [r for r in rows if r["model"] == model and r["kind"] == kind]
            ax.loglog([r["certified"] for r in sel], [r["measured_max"] for r in sel], marker,
                      color=colour, label=f"{model}, {kind}", alpha=0.8)
    lo = min(min(r["measured_max"] for r in rows), min(r["certified"] for r in rows))
    hi = max(r["certified"] for r in rows)
    ax.loglog([lo, hi], [lo, hi], "k-", lw=0.8, label="measured = certified")
    ax.set_xlabel("certified path-metric d")
    ax.set_ylabel("max measured ||R - R'||_1 / max(1, ||x||_inf)")
    ax.set_title("measured against certified")
    ax.legend(fontsize=8)
    ax = axes[1]
    sel = [r for r in rows if r["model"] == "MLP"]
    idx = np.arange(len(sel))
    for key, style, label in (("measured_max", "k.", "max measured"),
                              ("certified", "o-", "path-metric (also after rescaling)"),
                              ("telescoping", "v--", "telescoping"),
                              ("classic", "s--", "classic"),
                              ("rescaled_classic", "s:", "classic after rescaling")):
        ax.semilogy(idx, [r[key] for r in sel], style, label=label)
    ax.set_xticks(idx, [_level(r) for r in sel], rotation=60, fontsize=7)
    ax.set_title("MLP: path-metric vs parameter-space bounds")
    ax.legend(fontsize=8)
    fig.suptitle(f"{result['config']['train']['dataset']}: tightness of the certificate")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out_dir: Path, name: str) -> None:
    repro_cli.write_results(result, out_dir, "tightness", name, to_markdown, plot)



def main(argv=None) -> int:
    return repro_cli.main(argv, __doc__, quick=QUICK, full=FULL, run=run,
                          to_markdown=to_markdown, plot=plot, quick_help="digits 8x8 (default)",
                          full_help="MNIST")


if __name__ == "__main__":
    raise SystemExit(main())
