"""Structured (channel) pruning of a trained ReLU ResNet: path mass against L1 and BN scale,
before and after a rescaling attack (issue 23, item 6).

Protocol, per seed (torch seeded, one torch thread by default):

1. Train ``pruning_repro.SmallResNet`` (conv-BN-ReLU stem, max-pool, one basic block per width,
   stride 2 after the first, global average pool, linear) on scikit-learn's digits
   (``--quick``) or MNIST (``--full``), with ``pruning_repro.train``.
2. The rescaling attack: every channel of the network is multiplied by a random factor from
   ``factors`` (powers of two, so every product is exact in floating point) in a way that leaves
   the function unchanged. A unit is either a block's inner channels (conv1-BN1, read by conv2)
   or a residual stream (all the conv-BN pairs that write it: the stem or the downsample and
   every block's conv2-BN2; all the layers that read it: the next blocks' conv1 and downsample,
   or the linear head). Writer channel ``c`` of a unit with factor ``lam_c``: conv filter and BN
   running mean times ``lam_c ** (1 - s)``, BN weight times ``lam_c ** s``, BN bias times
   ``lam_c`` (``s = bn_share``, 0.5: both the filter L1 norms and the BN scales move); readers'
   input channel ``c`` divided by ``lam_c``. Checked in float64 on test images (relative change
   of the outputs at most 1e-6) before it is used.
3. For each amount and criterion (``path_magnitude``, ``l1``, ``bn_scale``), with and without
   the attack, ``fxpath.prune_channels(model, amount, shape, criterion=...)`` (global scope)
   gives a physically smaller model and its report. Measured right after pruning: test
   accuracy, ``report.metric`` (exact path-metric to the dense model, and its relative value),
   and on every test image ``||R_dense(x) - R_small(x)||_1`` against
   ``report.lipschitz_bound(x)`` (screened in float32 with a generous slack, every image the
   screen cannot clear recomputed in float64); parameters and MACs (``report.params``,
   ``report.macs``) and CPU latency as ratios to the dense model (paired medians, interleaved).
4. A small model pruned after the attack has its kept channels' factors undone (the same rule,
   ``1 / lam`` on the kept channels; function checked unchanged), so that every small model is
   fine-tuned from the parameterization of the trained model and only the channel choice
   differs between rows. Then a brief fine-tune (``pruning_repro.train``), test accuracy again.
   When the attack leaves the choice unchanged (path mass), the undone small model is compared
   bit for bit with the one pruned without the attack; if equal, its fine-tune is the same
   computation and is not repeated.

Writes ``benchmarks/results/structured_repro_{quick,full}.{md,json,png}``.

Run: ``python benchmarks/structured_repro.py --quick`` (digits, about a minute on one core) or
``--full`` (MNIST, 3 seeds).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pruning_repro as pr  # benchmarks/ (this script's folder is on sys.path)
import repro_cli
import torch
from bench_path import machine
from torch import Tensor, nn

import fxpath

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CRITERIA = ("path_magnitude", "l1", "bn_scale")
LABELS = {"path_magnitude": "path mass", "l1": "L1 filter norm", "bn_scale": "BN scale"}
# The attack and its undoing must leave the outputs equal to this, relative to the largest
# output, in float64.
ATTACK_RTOL = 1e-6
# Float32 screen of the bound: an image whose float32 distance is below the bound by more than
# this times the outputs' l^1 size cannot violate it (float32 rounding is ~1e-7 of that size);
# every other image is recomputed in float64 and counted against BOUND_RTOL.
SCREEN_RTOL = 1e-4
BOUND_RTOL = pr.BOUND_RTOL


@dataclass(frozen=True)
class Config:
    name: str = "quick"
    train: pr.Config = field(default_factory=lambda: replace(pr.QUICK, widths=(16, 32, 64)))
    seeds: tuple[int, ...] = (0, 1, 2)
    amounts: tuple[float, ...] = (0.3, 0.5, 0.7)
    factors: tuple[float, ...] = (1.0, 64.0, 4096.0)
    bn_share: float = 0.5
    finetune_epochs: float = 2.0
    finetune_lr: float = 0.01
    latency_batch: int = 32
    latency_repeats: int = 51
    check_images: int = 256  # test images on which the attack and its undoing are checked
    threads: int = 1
    jobs: int = 1  # seeds run in this many processes at once, each with ``threads`` threads
    out_dir: str = str(RESULTS_DIR)
    write: bool = True


QUICK = Config()
# MNIST on cores shared with other work: two seeds at a time in two one-thread processes (the CPU
# of ``--threads 2`` without OpenMP's spin-waits); one training epoch keeps it within about half
# an hour.
FULL = Config(name="full", train=replace(pr.FULL, widths=(32, 64, 128), epochs=1),
              finetune_epochs=0.2, latency_repeats=21, jobs=2)


# ----------------------------------------------------------------------------- the attack
@dataclass(frozen=True)
class Unit:
    """Channels rescaled together: ``writers`` (conv, BN) pairs scale output channel ``c`` by
    ``lam_c``; ``readers`` (conv or linear) divide input channel ``c`` by it."""

    name: str
    writers: tuple[tuple[str, str], ...]
    readers: tuple[str, ...]


def units(model: pr.SmallResNet) -> list[Unit]:
    """The block-internal units and the residual streams of a ``SmallResNet`` (any widths)."""
    out: list[Unit] = []
    writers: list[tuple[str, str]] = [("conv1", "bn1")]  # the stem starts the first stream
    readers: list[str] = []
    for i, block in enumerate(model.layers):
        p = f"layers.{i}"
        out.append(Unit(f"{p}.inner", ((f"{p}.conv1", f"{p}.bn1"),), (f"{p}.conv2",)))
        if block.downsample is None:
            readers.append(f"{p}.conv1")
        else:  # the stream ends here; the downsample starts the next one
            out.append(Unit(f"stream{sum(u.name.startswith('stream') for u in out)}",
                            tuple(writers), (*readers, f"{p}.conv1", f"{p}.downsample.0")))
            writers, readers = [(f"{p}.downsample.0", f"{p}.downsample.1")], []
        writers.append((f"{p}.conv2", f"{p}.bn2"))
    out.append(Unit(f"stream{sum(u.name.startswith('stream') for u in out)}", tuple(writers),
                    (*readers, "fc")))
    return out


@torch.no_grad()
def rescale_units(model: nn.Module, lam: dict[str, Tensor], bn_share: float) -> nn.Module:
    """Apply the attack with factors ``lam`` (unit name -> one factor per channel) in place."""
    mods = dict(model.named_modules())
    for unit in units(model):
        f = lam[unit.name].to(torch.float64)
        for conv, bn in unit.writers:
            c, b = mods[conv], mods[bn]
            a = (f ** (1 - bn_share)).to(c.weight.dtype)
            c.weight.mul_(a.view(-1, 1, 1, 1))
            b.running_mean.mul_(a)
            b.weight.mul_((f ** bn_share).to(b.weight.dtype))
            b.bias.mul_(f.to(b.bias.dtype))
        for name in unit.readers:
            w = mods[name].weight
            w.div_(f.to(w.dtype).view(1, -1, *([1] * (w.dim() - 2))))
    return model


def draw_factors(model: nn.Module, factors: tuple[float, ...], seed: int) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(1_000 + seed)
    mods = dict(model.named_modules())
    table = torch.tensor(factors, dtype=torch.float64)
    return {u.name: table[torch.randint(len(factors), (mods[u.writers[0][1]].num_features,),
                                        generator=gen)] for u in units(model)}


def kept_channels(report, lam: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Dense indices of the channels of each unit that ``report`` kept (every writer of a
    unit must have lost the same ones)."""
    out = {}
    for unit in units(model):
        cut = {tuple(report.removed.get(conv, ())) for conv, _ in unit.writers}
        if len(cut) != 1:
            raise RuntimeError(f"{unit.name}: its writers lost different channels {cut}")
        gone = set(cut.pop())
        out[unit.name] = torch.tensor([c for c in range(len(lam[unit.name])) if c not in gone])
    return out


def undo_attack(small: nn.Module, report, lam: dict[str, Tensor], bn_share: float
                ) -> tuple[nn.Module, dict[str, Tensor]]:
    """A copy of a model pruned after the attack with its kept channels' factors undone, and
    the dense indices kept per unit."""
    kept = kept_channels(report, lam, small)
    inverse = {k: 1.0 / lam[k][idx] for k, idx in kept.items()}
    return rescale_units(copy.deepcopy(small), inverse, bn_share), kept


def relative_change(a: nn.Module, b: nn.Module, x: Tensor) -> float:
    """max |a(x) - b(x)| / max |a(x)|, in float64."""
    ya, yb = pr.float64_outputs(a, x), pr.float64_outputs(b, x)
    return float((ya - yb).abs().max() / ya.abs().max().clamp_min(1e-300))


def ratio_range(a: Tensor, b: Tensor) -> tuple[float, float]:
    r = (b / a).abs()[a != 0]
    return float(r.min()), float(r.max())


@torch.no_grad()
def attack_moves(dense: nn.Module, attacked: nn.Module) -> dict:
    """How far the attack moved what the baselines read: per-filter L1 norms and BN scales."""
    l1, bn = [], []
    mods = dict(attacked.named_modules())
    for name, m in dense.named_modules():
        if isinstance(m, nn.Conv2d):
            l1.append((m.weight.abs().sum((1, 2, 3)), mods[name].weight.abs().sum((1, 2, 3))))
        elif isinstance(m, nn.BatchNorm2d):
            bn.append((m.weight.detach(), mods[name].weight.detach()))
    cat = [(torch.cat([p[0] for p in v]), torch.cat([p[1] for p in v])) for v in (l1, bn)]
    return {"filter_l1_ratio_range": ratio_range(*cat[0]),
            "bn_scale_ratio_range": ratio_range(*cat[1])}


# ----------------------------------------------------------------------------- measurements
def bound_check(report, reference: nn.Module, ref_out: Tensor, small: nn.Module, out: Tensor,
                x: Tensor) -> dict:
    """``report.lipschitz_bound(x)`` against ``||R_ref(x) - R_small(x)||_1`` on every image:
    a float32 screen, then float64 for every image the screen cannot clear."""
    bound = report.lipschitz_bound(x)
    a, b = ref_out.double(), out.double()
    measured = (a - b).abs().sum(1)
    unclear = (measured > bound - SCREEN_RTOL * (a.abs().sum(1) + b.abs().sum(1))).nonzero()
    idx = unclear.flatten()
    hard = soft = 0
    if idx.numel():
        a64, b64 = pr.float64_outputs(reference, x[idx]), pr.float64_outputs(small, x[idx])
        m64 = (a64 - b64).abs().sum(1)
        over = m64 > bound[idx] + BOUND_RTOL * (a64.abs().sum(1) + b64.abs().sum(1))
        hard, soft = int(over.sum()), int(((m64 > bound[idx]) & ~over).sum())
        measured[idx] = m64
    ratio = measured / bound
    return {"violations": hard, "within_tolerance": soft, "rechecked_float64": int(idx.numel()),
            "n_images": int(x.shape[0]), "bound_median": float(bound.median()),
            "measured_median": float(measured.median()),
            "ratio_median": float(ratio.median()), "ratio_max": float(ratio.max())}


@torch.inference_mode()
def latency(dense: nn.Module, small: nn.Module, x: Tensor, repeats: int) -> dict:
    """Interleaved forwards of the two models on one batch, timed by the CPU time of this thread
    (torch runs one thread here: what a forward computes, whatever else shares the cores) and
    by the wall clock: the ratio of the medians and the median of the per-pair ratios."""
    dense.eval()
    small.eval()
    for _ in range(2):
        dense(x)
        small(x)
    cpu, wall = np.zeros((repeats, 2)), np.zeros((repeats, 2))
    for i in range(repeats):
        for j, model in enumerate((dense, small)):
            c0, w0 = time.thread_time(), time.perf_counter()
            model(x)
            cpu[i, j], wall[i, j] = time.thread_time() - c0, time.perf_counter() - w0
    med_c, med_w = np.median(cpu, 0), np.median(wall, 0)
    return {"latency_ratio": float(med_c[1] / med_c[0]),
            "latency_pair_ratio": float(np.median(cpu[:, 1] / cpu[:, 0])),
            "wall_ratio": float(med_w[1] / med_w[0]),
            "dense_ms": 1e3 * float(med_c[0]), "small_ms": 1e3 * float(med_c[1]),
            "dense_wall_ms": 1e3 * float(med_w[0])}


def same_parameters(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def removed_by_unit(kept: dict[str, Tensor], lam: dict[str, Tensor]) -> dict[str, set[int]]:
    return {k: set(range(len(lam[k]))) - set(v.tolist()) for k, v in kept.items()}


# ----------------------------------------------------------------------------- one seed
@dataclass
class SeedRun:
    cfg: Config
    seed: int
    data: dict
    dense: nn.Module
    attacked: nn.Module
    lam: dict[str, Tensor]
    dense_out: Tensor
    shape: tuple[int, ...]
    plain: dict = field(default_factory=dict)  # (criterion, amount) -> (row, small, kept)


def run_variant(run: SeedRun, criterion: str, amount: float, attack: bool) -> dict:
    cfg, data = run.cfg, run.data
    x, y = data["x_test"], data["y_test"]
    source = run.attacked if attack else run.dense
    t0 = time.perf_counter()
    small, report = fxpath.prune_channels(source, amount, run.shape, criterion=criterion,
                                          scope="global", dtype=torch.float64)
    row = {"criterion": criterion, "attack": attack, "amount": amount, "seed": run.seed,
           "prune_seconds": time.perf_counter() - t0,
           "metric": float(report.metric.value), "metric_relative": float(report.metric.relative),
           "metric_exact": bool(report.metric.exact), "twin_gap": float(report.twin_gap),
           "params_ratio": report.params[1] / report.params[0],
           "macs_ratio": report.macs[1] / report.macs[0],
           "params": list(report.params), "macs": list(report.macs),
           "spared": list(report.spared)}
    t0 = time.perf_counter()
    out = pr.predict(small, x)
    row["acc_pruned"] = pr.logits_accuracy(out, y)
    row.update(bound_check(report, source, run.dense_out, small, out, x))
    row["eval_seconds"] = time.perf_counter() - t0
    if attack:
        model, kept = undo_attack(small, report, run.lam, cfg.bn_share)
        row["undo_rel_change"] = relative_change(small, model, x[:cfg.check_images])
        if not row["undo_rel_change"] <= ATTACK_RTOL:
            raise RuntimeError(f"undoing the attack changed the small model's outputs by "
                               f"{row['undo_rel_change']:.3g} (relative)")
    else:
        model, kept = small, kept_channels(report, run.lam, small)
    xb = x[:cfg.latency_batch]
    row.update(latency(run.dense, model, xb, cfg.latency_repeats))
    key = (criterion, amount)
    if not attack:
        run.plain[key] = (row, copy.deepcopy(model), kept)
        row["removed"] = {k: sorted(v) for k, v in report.removed.items()}
    else:
        twin_row, twin_model, twin_kept = run.plain[key]
        a, b = removed_by_unit(kept, run.lam), removed_by_unit(twin_kept, run.lam)
        row["channels_differing"] = int(sum(len(a[k] ^ b[k]) for k in a))
        row["channels_total"] = int(sum(len(v) for v in run.lam.values()))
        row["masks_identical"] = {k: sorted(v) for k, v in report.removed.items()} == \
            twin_row["removed"]
        row["same_start_as_plain"] = same_parameters(model, twin_model)
    t0 = time.perf_counter()
    if attack and row["masks_identical"] and row["same_start_as_plain"]:
        row["acc_finetuned"] = run.plain[key][0]["acc_finetuned"]
        row["finetune_reused"] = True
    else:
        pr.train(model, data, cfg.finetune_epochs, cfg.finetune_lr, cfg.train,
                 seed=10_000 + run.seed)
        row["acc_finetuned"] = pr.accuracy(model, data)
        row["finetune_reused"] = False
    row["finetune_seconds"] = time.perf_counter() - t0
    return row


def run_seed(cfg: Config, data: dict, seed: int, log) -> tuple[dict, list[dict]]:
    shape = tuple(data["x_train"].shape[1:])
    dense, info = pr.train_dense(cfg.train, data, seed, log)
    x = data["x_test"]
    lam = draw_factors(dense, cfg.factors, seed)
    attacked = rescale_units(copy.deepcopy(dense), lam, cfg.bn_share).eval()
    info["attack_rel_change"] = relative_change(dense, attacked, x[:cfg.check_images])
    if not info["attack_rel_change"] <= ATTACK_RTOL:
        raise RuntimeError(f"the attack changed the outputs by {info['attack_rel_change']:.3g}")
    info.update(attack_moves(dense, attacked))
    run = SeedRun(cfg, seed, data, dense, attacked, lam, pr.predict(dense, x), shape)
    rows = []
    for amount in cfg.amounts:
        for criterion in CRITERIA:
            for attack in (False, True):
                row = run_variant(run, criterion, amount, attack)
                rows.append(row)
                log(f"  {amount:.0%} {criterion:14s} {'attack' if attack else 'plain ':6s} "
                    f"pruned {row['acc_pruned']:6.2f} fine-tuned {row['acc_finetuned']:6.2f} "
                    f"MACs {row['macs_ratio']:.2f} lat {row['latency_ratio']:.2f} "
                    f"rel d {row['metric_relative']:.3f} viol {row['violations']}")
    for r in rows:
        r.pop("removed", None)
    return info, rows


# ----------------------------------------------------------------------------- driver
def run(config: Config, log=print) -> dict:
    """Run the experiment; returns everything measured (JSON-ready). Uses ``config.threads``
    torch threads and restores the caller's setting afterwards."""
    with repro_cli.threads(config.threads):
        return _run(config, log)


def _seed_job(cfg: Config, seed: int) -> tuple[dict, list[dict]]:
    """One seed in a worker process (loads the data itself)."""
    torch.set_num_threads(cfg.threads)
    return run_seed(cfg, pr.load_data(cfg.train), seed, print)


def _seed_results(cfg: Config, data: dict, log):
    """(info, rows) of every seed, in order of completion."""
    if cfg.jobs <= 1:
        for seed in cfg.seeds:
            yield run_seed(cfg, data, seed, log)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(cfg.jobs, len(cfg.seeds)), mp_context=ctx) as pool:
        futures = [pool.submit(_seed_job, cfg, seed) for seed in cfg.seeds]
        for future in as_completed(futures):
            yield future.result()


def _run(cfg: Config, log) -> dict:
    t0 = time.perf_counter()
    where = machine("cpu")  # the commit of the code this run imports, taken before it runs
    data = pr.load_data(cfg.train)
    seeds, rows = [], []
    partial = Path(cfg.out_dir) / f"structured_repro_{cfg.name}.partial.json"
    for info, seed_rows in _seed_results(cfg, data, log):
        seeds.append(info)
        rows += seed_rows
        if cfg.write:  # what a run stopped before its end leaves (removed when it ends)
            partial.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"seeds": seeds, "rows": rows}))
    seeds.sort(key=lambda s: s["seed"])
    rows.sort(key=lambda r: r["seed"])
    settings = asdict(cfg)
    settings.pop("out_dir")
    settings["train"].pop("out_dir")
    result = {"config": settings, "machine": where,
              "fxpath_version": fxpath.__version__,
              "n_train": int(data["x_train"].shape[0]), "n_test": int(data["x_test"].shape[0]),
              "seeds": seeds, "rows": rows, "seconds": time.perf_counter() - t0,
              "cpu_pressure_at_end": pr.cpu_pressure()}
    result["claims"] = check_claims(result)
    if cfg.write:
        write_results(result, Path(cfg.out_dir), cfg.name)
        partial.unlink(missing_ok=True)
    return result


def stats(rows: list[dict], key: str) -> dict[tuple[str, bool, float], tuple[float, float]]:
    """(criterion, attack, amount) -> (mean, sample std over seeds) of ``rows[key]``."""
    groups: dict[tuple[str, bool, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["criterion"], r["attack"], r["amount"]), []).append(r[key])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for k, v in groups.items()}


def check_claims(result: dict) -> dict:
    """The issue's aims, evaluated on the seed means (accuracy differences in points)."""
    rows, amounts = result["rows"], result["config"]["amounts"]
    ft, pr_ = stats(rows, "acc_finetuned"), stats(rows, "acc_pruned")
    attacked = [r for r in rows if r["attack"]]
    pm = [r for r in attacked if r["criterion"] == "path_magnitude"]
    base = [r for r in attacked if r["criterion"] != "path_magnitude"]
    best = {a: max(("l1", "bn_scale"), key=lambda c, a=a: ft[(c, False, a)][0]) for a in amounts}
    gap = {a: ft[("path_magnitude", False, a)][0] - ft[(best[a], False, a)][0] for a in amounts}
    fall = {c: {a: ft[(c, True, a)][0] - ft[(c, False, a)][0] for a in amounts}
            for c in ("l1", "bn_scale")}
    fall_pruned = {c: {a: pr_[(c, True, a)][0] - pr_[(c, False, a)][0] for a in amounts}
                   for c in ("l1", "bn_scale")}
    return {
        "bound_violations": sum(r["violations"] for r in rows),
        "bound_within_tolerance": sum(r["within_tolerance"] for r in rows),
        "bound_checks": sum(r["n_images"] for r in rows),
        "rechecked_float64": sum(r["rechecked_float64"] for r in rows),
        "all_metrics_exact": all(r["metric_exact"] for r in rows),
        "path_mass_masks_identical": all(r["masks_identical"] for r in pm),
        "path_mass_accuracy_identical": all(
            r["acc_pruned"] == [q for q in rows if not q["attack"] and q["seed"] == r["seed"]
                                and q["criterion"] == r["criterion"]
                                and q["amount"] == r["amount"]][0]["acc_pruned"] for r in pm),
        "baseline_masks_changed": all(r["channels_differing"] > 0 for r in base),
        "baseline_channels_differing_min": min((r["channels_differing"] for r in base),
                                               default=0),
        "best_baseline": best,
        "gap_path_mass_vs_best_baseline_finetuned": gap,
        "within_1_point_at_30_50": all(gap[a] >= -1.0 for a in amounts if a in (0.3, 0.5)),
        "attack_change_finetuned": fall,
        "attack_change_pruned": fall_pruned,
        "baselines_fall_finetuned": all(v < 0 for d in fall.values() for v in d.values()),
    }


# ----------------------------------------------------------------------------- report
def _pm(ms: tuple[float, float]) -> str:
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def _acc_table(rows: list[dict], key: str, amounts) -> list[str]:
    st = stats(rows, key)
    lines = ["| criterion | attack | " + " | ".join(f"{a:.0%}" for a in amounts) + " |",
             "|---|---" + "|---" * len(amounts) + "|"]
    for c in CRITERIA:
        for attack in (False, True):
            lines.append(f"| {LABELS[c]} | {'yes' if attack else 'no'} | "
                         + " | ".join(_pm(st[(c, attack, a)]) for a in amounts) + " |")
    return lines


def _cost_table(rows: list[dict], amounts) -> list[str]:
    keys = ("params_ratio", "macs_ratio", "latency_ratio", "metric", "metric_relative",
            "ratio_max")
    st = {k: stats(rows, k) for k in keys}
    lines = ["| amount | criterion | attack | params | MACs | latency | d | relative d | "
             "max measured/bound | violations | channels differing from no attack |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in amounts:
        for c in CRITERIA:
            for attack in (False, True):
                k = (c, attack, a)
                sel = [r for r in rows if (r["criterion"], r["attack"], r["amount"]) == k]
                viol = sum(r["violations"] for r in sel)
                n = sum(r["n_images"] for r in sel)
                diff = (" / ".join(str(r["channels_differing"]) for r in sel) + " of "
                        f"{sel[0]['channels_total']}") if attack else "-"
                lines.append(
                    f"| {a:.0%} | {LABELS[c]} | {'yes' if attack else 'no'} | "
                    f"{st['params_ratio'][k][0]:.3f} | {st['macs_ratio'][k][0]:.3f} | "
                    f"{st['latency_ratio'][k][0]:.2f} | {st['metric'][k][0]:.4g} | "
                    f"{st['metric_relative'][k][0]:.4f} | {max(r['ratio_max'] for r in sel):.2e}"
                    f" | {viol} / {n} | {diff} |")
    return lines


def _spared_lines(rows: list[dict]) -> list[str]:
    """The layers each global ranking would have emptied (``report.spared``: they kept their
    best channel), per row and seed."""
    lines = []
    for a in sorted({r["amount"] for r in rows}):
        for c in CRITERIA:
            for attack in (False, True):
                sel = [r for r in rows if (r["criterion"], r["attack"], r["amount"]) == (
                    c, attack, a)]
                got = [f"seed {r['seed']}: {', '.join(f'`{n}`' for n in r['spared'])}"
                       for r in sel if r["spared"]]
                if got:
                    lines.append(f"- {a:.0%}, {LABELS[c]}{', attack' if attack else ''}: "
                                 + "; ".join(got))
    return lines or ["- none"]


def _claims_lines(c: dict, amounts) -> list[str]:
    def points(d: dict) -> str:
        return ", ".join(f"{float(a):.0%}: {g:+.2f}" for a, g in d.items())

    yes = {True: "**holds**", False: "**does not hold**"}
    lines = [
        f"- Bound `report.lipschitz_bound(x)` against the measured output distance, every test "
        f"image of every small model before fine-tuning: **{c['bound_violations']} violations** "
        f"in {c['bound_checks']} checks ({c['rechecked_float64']} recomputed in float64, "
        f"{c['bound_within_tolerance']} inside the float64 tolerance); every metric exact: "
        f"{c['all_metrics_exact']}.",
        f"- Path mass picks the same channels after the attack (`report.removed` equal on every "
        f"seed and amount): {yes[c['path_mass_masks_identical']]}; accuracies right after "
        f"pruning identical: {c['path_mass_accuracy_identical']}.",
        f"- The baselines pick other channels after the attack (every seed and amount): "
        f"{c['baseline_masks_changed']} (fewest channels differing: "
        f"{c['baseline_channels_differing_min']}).",
        f"- Aim: path mass within 1 point of the best baseline's fine-tuned accuracy at 30% and "
        f"50%: {yes[c['within_1_point_at_30_50']]} (path mass minus best baseline, points: "
        f"{points(c['gap_path_mass_vs_best_baseline_finetuned'])}; best baseline: "
        + ", ".join(f"{float(a):.0%} {LABELS[b]}" for a, b in c["best_baseline"].items()) + ").",
        f"- Aim: the baselines fall after the attack (fine-tuned accuracy lower on the seed "
        f"mean at every amount): {yes[c['baselines_fall_finetuned']]}.",
    ]
    for crit in ("l1", "bn_scale"):
        lines.append(f"  - {LABELS[crit]}, attack minus no attack (points): right after "
                     f"pruning {points(c['attack_change_pruned'][crit])}; after fine-tuning "
                     f"{points(c['attack_change_finetuned'][crit])}")
    return lines


def to_markdown(result: dict) -> str:
    cfg, rows, seeds, m = result["config"], result["rows"], result["seeds"], result["machine"]
    t, amounts = cfg["train"], cfg["amounts"]
    dense = [s["dense_acc"] for s in seeds]
    std = float(np.std(dense, ddof=1)) if len(dense) > 1 else 0.0
    l1 = [s["filter_l1_ratio_range"] for s in seeds]
    bn = [s["bn_scale_ratio_range"] for s in seeds]
    lat = stats(rows, "dense_ms")
    dense_ms = np.mean([v[0] for v in lat.values()])
    reused = sum(r["finetune_reused"] for r in rows)
    return "\n".join([
        f"# Structured pruning ({cfg['name']}): path mass against L1 and BN scale, with and "
        f"without a rescaling attack",
        "",
        f"Machine: {m['platform']}, {m.get('cpu', '')}, {m['threads']} torch thread(s) of "
        f"{m['cpu_count']} CPUs, torch {m['torch']}, commit {m['commit']}. fxpath "
        f"{result['fxpath_version']}. Run time {result['seconds']:.0f} s (CPU pressure at the "
        f"end, Linux PSI: `{result['cpu_pressure_at_end']}`; non-zero averages mean other work "
        f"shared the cores).",
        "",
        f"Data: {t['dataset']} ({result['n_train']} train / {result['n_test']} test images). "
        f"Model: `pruning_repro.SmallResNet`, widths {list(t['widths'])}, "
        f"{seeds[0]['n_params']} parameters (conv-BN-ReLU stem, max-pool, one basic block per "
        f"width, global average pool, linear), trained {t['epochs']} epoch(s) (SGD, momentum, "
        f"cosine, lr {t['lr']}, batch {t['batch_size']}). `fxpath.prune_channels(model, amount, "
        f"shape, criterion=..., scope='global')` removes {', '.join(f'{a:.0%}' for a in amounts)}"
        f" of the prunable channels (the head's outputs and the input are never pruned). "
        f"Fine-tune: {cfg['finetune_epochs']} epoch(s) at lr {cfg['finetune_lr']}. Seeds "
        f"{[s['seed'] for s in seeds]}; entries are mean ± std over seeds.",
        "",
        f"Attack: every block-internal channel and every residual-stream channel (all its "
        f"writers times `lam_c`, all its readers divided) takes a factor drawn from "
        f"{list(cfg['factors'])}, shared between the filter and the BN scale (`bn_share` "
        f"{cfg['bn_share']}); it moves filter L1 norms by factors in "
        f"[{min(r[0] for r in l1):g}, {max(r[1] for r in l1):g}] and BN scales by "
        f"[{min(r[0] for r in bn):g}, {max(r[1] for r in bn):g}], and the outputs by at most "
        f"{max(s['attack_rel_change'] for s in seeds):.1e} (relative, float64). Small models "
        f"pruned after the attack are fine-tuned with the factors of their kept channels undone "
        f"(outputs unchanged to "
        f"{max((r.get('undo_rel_change', 0.0) for r in rows), default=0.0):.1e}): rows differ "
        f"by the channels chosen only. {reused} fine-tunes started from a model bit for bit "
        f"equal to its no-attack twin and were not repeated.",
        "",
        f"Dense test accuracy: {np.mean(dense):.2f} ± {std:.2f}. Dense forward of a batch of "
        f"{cfg['latency_batch']}: {dense_ms:.2f} ms of CPU time (median).",
        "",
        "## Aims", "", *_claims_lines(result["claims"], amounts), "",
        f"## Test accuracy after fine-tuning ({len(seeds)} seeds)", "",
        *_acc_table(rows, "acc_finetuned", amounts), "",
        "## Test accuracy right after pruning", "",
        *_acc_table(rows, "acc_pruned", amounts), "",
        "## Cost, certificate and channel choice, right after pruning", "",
        "Params, MACs (per sample) and CPU latency (batch "
        f"{cfg['latency_batch']}, one thread, median CPU time of {cfg['latency_repeats']} "
        "interleaved runs; the wall-clock ratios are in the JSON) as ratios to the dense model, "
        "mean over seeds. d: `report.metric.value`, the exact l^1 "
        "path-metric to the dense model (mean); relative d: `report.metric.relative`, the "
        "fraction of the path-norm removed. Max measured/bound: the largest ratio of "
        "`||R_dense(x) - R_small(x)||_1` to `report.lipschitz_bound(x)` over the test images "
        "and seeds. Violations: images over the bound, all seeds. Channels differing: per seed, "
        "channels (a stream channel counts once) removed with the attack and kept without it or "
        "the reverse, out of all channels.",
        "", *_cost_table(rows, amounts), "",
        "Layers the global ranking would have emptied (`report.spared`; each kept its best "
        "channel instead):", "", *_spared_lines(rows), "",
    ])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    amounts = [100 * a for a in result["config"]["amounts"]]
    dense = np.mean([s["dense_acc"] for s in result["seeds"]])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = {"path_magnitude": "C0", "l1": "C1", "bn_scale": "C2"}
    for ax, key, title in zip(axes, ("acc_pruned", "acc_finetuned"),
                              ("right after pruning", "after fine-tuning"), strict=True):
        st = stats(result["rows"], key)
        for c in CRITERIA:
            for attack in (False, True):
                m = [st[(c, attack, a / 100)][0] for a in amounts]
                e = [st[(c, attack, a / 100)][1] for a in amounts]
                ax.errorbar(amounts, m, yerr=e, color=colors[c], ls="--" if attack else "-",
                            marker="o" if not attack else "x", capsize=3,
                            label=LABELS[c] + (", attack" if attack else ""))
        ax.axhline(dense, color="k", lw=0.8, label="dense")
        ax.axhline(10, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(title)
        ax.set_xlabel("channels removed (%)")
        ax.set_xticks(amounts)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{result['config']['train']['dataset']}: channel pruning of a ReLU ResNet, "
                 f"{len(result['seeds'])} seeds (dashed: after the rescaling attack)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out_dir: Path, name: str) -> None:
    repro_cli.write_results(result, out_dir, "structured_repro", name, to_markdown, plot)


def main(argv=None) -> int:
    return repro_cli.main(argv, __doc__, quick=QUICK, full=FULL, run=run,
                          to_markdown=to_markdown, plot=plot,
                          quick_help="digits 8x8 (default)", full_help="MNIST, 3 seeds",
                          seeds=True)


if __name__ == "__main__":
    raise SystemExit(main())
