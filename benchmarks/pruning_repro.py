"""Reproduce the pruning experiment of docs/mathematics.md#published-figures on real data, on CPU.

Claim under test (Gonon et al., ICML 2025): pruning by path-magnitude matches magnitude pruning,
magnitude pruning collapses after a random neuron-wise rescaling that leaves the function
unchanged, and path-magnitude is immune to that rescaling.

Protocol, per seed (torch and numpy seeded; 1 thread in quick mode, 2 in the full run):

1. Train a small ReLU ResNet (conv-BN-ReLU stem, max-pool, basic blocks with residual adds,
   global average pool, linear) on scikit-learn's digits (``--quick``) or MNIST (``--full``).
2. ``fxpath.rescale`` gives a copy of the trained model in which every neuron it can rescale on
   its own is multiplied by a random factor in {1, 128, 4096} (same function, same path-lifting).
   Here those are the block-internal channels (conv1-BN-ReLU of each block); channels feeding a
   residual add or the output are left as they are.
3. For each sparsity (global, unstructured, conv + linear weights) and each criterion
   (path-magnitude, magnitude, magnitude after rescaling, path-magnitude after rescaling),
   ``fxpath.prune`` prunes a deep copy in place. A mask chosen on the rescaled copy is carried over
   coordinate for coordinate to a copy of the un-rescaled model: zeroing a coordinate commutes
   with a positive rescaling, so both compute the same function (checked on test images), and
   every criterion is then fine-tuned from the same parameterization, with the same data order.
   What differs between rows is the mask alone.
4. Measured right after pruning: test accuracy, fxpath's certified path-metric
   ``d = ||Phi(dense) - Phi(pruned)||_1`` (exact: the pruned weights are dominated by the dense
   ones), and, on every test sample, ``||R_dense(x) - R_pruned(x)||_1`` in float64 against
   ``fxpath.lipschitz_bound``. The rescaled variants are certified on the rescaled pair, the pair
   fxpath actually pruned.
5. A short fine-tune with the masks kept (sparsity fixed), then test accuracy again.

Outputs ``benchmarks/results/pruning_repro_{quick,full}.{md,json,png}``.

Run: ``python benchmarks/pruning_repro.py --quick`` (CI, < 2 min) or ``--full`` (MNIST, 3 seeds).
On cores shared with other work, two OpenMP threads spin-wait and can run several times slower:
``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) or ``--threads 1`` avoids most of that.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import repro_cli
import repro_data  # benchmarks/repro_data.py (this script's folder is on sys.path)
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as torch_prune

import fxpath

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"



# (row label, fxpath criterion, prune the rescaled copy?)
CRITERIA = (
    ("path-magnitude", "path_magnitude", False),
    ("magnitude", "magnitude", False),
    ("magnitude after rescaling", "magnitude", True),
    ("path-magnitude after rescaling", "path_magnitude", True),
)
# Relative float64 slack when comparing the measured output distance with the bound: float64
# rounding of the two forward passes is ~1e-16 relative to the outputs; 1e-9 is far above it and
# far below any real violation. Samples that only pass thanks to it are counted and reported.
BOUND_RTOL = 1e-9
# Test images on which a mask carried from the rescaled copy to the original model is checked
# to give the same outputs (the mask transfer is exact in real arithmetic).
TRANSFER_CHECK = 1000


@dataclass(frozen=True)
class Config:
    name: str = "quick"
    dataset: str = "digits"  # "digits" | "mnist"
    widths: tuple[int, ...] = (8, 16)
    seeds: tuple[int, ...] = (0, 1)
    sparsities: tuple[float, ...] = (0.4, 0.6, 0.8)
    factors: tuple[float, ...] = (1, 128, 4096)
    epochs: float = 30
    batch_size: int = 64
    lr: float = 0.1
    weight_decay: float = 5e-4
    finetune_epochs: float = 3.0
    finetune_lr: float = 0.01
    threads: int = 2
    out_dir: str = str(RESULTS_DIR)
    write: bool = True


# Quick mode runs on one thread: the model is so small that a second thread buys nothing, and
# two OpenMP threads on cores shared with other work spin-wait and run several times slower.
QUICK = Config(epochs=20, finetune_epochs=2.0, threads=1)
FULL = Config(name="full", dataset="mnist", widths=(16, 32, 64), seeds=(0, 1, 2), epochs=2,
              batch_size=128, lr=0.05, finetune_epochs=0.2, finetune_lr=0.01)


# ----------------------------------------------------------------------------- model
class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus identity or 1x1 conv-BN shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu2 = nn.ReLU()
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class SmallResNet(nn.Module):
    """Stem conv3x3-BN-ReLU, max-pool 2x2, one basic block per width (stride 2 after the first),
    global average pool, linear classifier."""

    def __init__(self, widths: tuple[int, ...], num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(2)
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, 1 if i == 0 else 2))
            c = w
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------------------- data, training
def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def load_data(cfg: Config) -> dict[str, torch.Tensor]:
    raw = repro_data.load_digits_split() if cfg.dataset == "digits" else repro_data.load_mnist()
    out = {}
    for split in ("train", "test"):
        x, y = raw[f"x_{split}"], raw[f"y_{split}"]
        out[f"x_{split}"] = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
        out[f"y_{split}"] = torch.from_numpy(np.ascontiguousarray(y))
    return out


def train(model: nn.Module, data: dict, epochs: float, lr: float, cfg: Config, seed: int) -> float:
    """SGD with momentum, cosine schedule, ``epochs`` passes (fractions allowed) in train mode.
    Returns the mean loss of the last 50 steps. The model is left in eval mode."""
    x, y = data["x_train"], data["y_train"]
    n = x.shape[0]
    steps = max(1, round(epochs * n / cfg.batch_size))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr,
                          momentum=0.9, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    order, losses = torch.empty(0, dtype=torch.long), []
    model.train()
    for _ in range(steps):
        if order.numel() < cfg.batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[: cfg.batch_size], order[cfg.batch_size:]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return float(np.mean(losses[-50:]))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i: i + batch]) for i in range(0, x.shape[0], batch)])


def logits_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (logits.argmax(1) == y).double().mean().item()


def accuracy(model: nn.Module, data: dict) -> float:
    return logits_accuracy(predict(model, data["x_test"]), data["y_test"])


# ----------------------------------------------------------------------------- pruning helpers
def masks_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{module_name: weight_mask}`` for every module torch.nn.utils.prune has masked."""
    return {name: m.weight_mask.detach().clone() for name, m in model.named_modules()
            if hasattr(m, "weight_mask")}


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    modules = dict(model.named_modules())
    missing = sorted(set(masks) - set(modules))
    if missing:
        raise KeyError(f"fxpath.rescale changed module names; no {missing} in the original model")
    for name, mask in masks.items():
        torch_prune.custom_from_mask(modules[name], "weight", mask)
    return model


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return 1.0 - sum(float(m.sum()) for m in masks.values()) / total


def mask_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    """Number of weight coordinates whose keep/prune decision differs between two mask sets."""
    if set(a) != set(b):
        return -1
    return int(sum((a[k] != b[k]).sum() for k in a))


def layer_kept(masks: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(m.mean()) for k, m in masks.items()}


def deepcopy_pruned(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` for a model pruned by torch.nn.utils.prune: the masked ``weight``
    attribute is a non-leaf tensor when it was last computed with grad enabled, and deepcopy
    refuses those; recompute it without grad first (same values)."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "weight_mask") and hasattr(m, "weight_orig"):
                m.weight = m.weight_orig * m.weight_mask
    return copy.deepcopy(model)


def weight_ratio_range(a: nn.Module, b: nn.Module) -> tuple[float, float]:
    """min and max of |w_b / w_a| over the conv and linear weights both state_dicts name alike:
    how far the rescaling moved the parameters that magnitude pruning looks at."""
    sa, sb = a.state_dict(), b.state_dict()
    names = [f"{n}.weight" for n, m in a.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ratios = [(sb[k] / sa[k]).abs()[sa[k] != 0].flatten() for k in names if k in sb]
    flat = torch.cat(ratios) if ratios else torch.ones(1)
    return float(flat.min()), float(flat.max())


def float64_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's outputs in float64: the float32 parameters are exactly representable, so this
    is the realization of the same parameters up to float64 rounding."""
    return predict(deepcopy_pruned(model).double(), x.double())


# ----------------------------------------------------------------------------- one seed
@dataclass
class SeedRun:
    """What every variant of one seed shares: the trained model, its rescaled copy, the data,
    and the float64 test outputs of both (computed once)."""

    cfg: Config
    seed: int
    data: dict
    dense: nn.Module
    rescaled: nn.Module
    input_shape: tuple[int, ...]
    out64: dict[bool, torch.Tensor] = field(default_factory=dict)

    def reference(self, use_rescaled: bool) -> nn.Module:
        return self.rescaled if use_rescaled else self.dense


def certify(ref: nn.Module, ref_out64: torch.Tensor, pruned: nn.Module, out_b: torch.Tensor,
            x: torch.Tensor, input_shape) -> dict:
    """fxpath's certified path-metric for (ref, pruned) and the bound checked on every sample
    against the float64 outputs ``ref_out64`` and ``out_b`` of the two models."""
    t0 = time.perf_counter()
    metric = fxpath.path_metric(ref, pruned, input_shape)
    bound = fxpath.lipschitz_bound(ref, pruned, x).detach().double()
    t_fx = time.perf_counter() - t0
    measured = (ref_out64 - out_b).abs().sum(1)
    slack = BOUND_RTOL * (ref_out64.abs().sum(1) + out_b.abs().sum(1))
    hard = measured > bound + slack
    soft = (measured > bound) & ~hard
    ratio = measured / bound
    return {
        "metric": float(metric.value), "metric_log10": float(metric.log10),
        "metric_exact": bool(metric.exact), "metric_relative": float(metric.relative),
        "bound_median": float(bound.median()), "measured_median": float(measured.median()),
        "violations": int(hard.sum()), "within_tolerance": int(soft.sum()),
        "n_samples": int(x.shape[0]),
        "tightness_median": float(ratio.median()), "tightness_max": float(ratio.max()),
        "fxpath_seconds": t_fx,
    }


def prune_variant(run: SeedRun, criterion: str, use_rescaled: bool,
                  amount: float) -> tuple[nn.Module, nn.Module, object]:
    """Prune a deep copy with fxpath. Returns (the model fxpath pruned, the same mask on a copy
    of the un-rescaled dense model, fxpath's report)."""
    pruned = copy.deepcopy(run.reference(use_rescaled)).eval()
    report = fxpath.prune(pruned, amount, run.input_shape, criterion=criterion, scope="global")
    pruned.eval()
    if not use_rescaled:
        return pruned, pruned, report
    return pruned, apply_masks(copy.deepcopy(run.dense), masks_of(pruned)).eval(), report


def run_variant(run: SeedRun, crit: tuple[str, str, bool], amount: float) -> dict:
    label, criterion, use_rescaled = crit
    data, x_test = run.data, run.data["x_test"]
    t0 = time.perf_counter()
    pruned, model, report = prune_variant(run, criterion, use_rescaled, amount)
    t_prune = time.perf_counter() - t0
    masks = masks_of(model)
    row = {
        "criterion": label, "sparsity_target": amount, "seed": run.seed,
        "sparsity": mask_sparsity(masks), "report_sparsity": float(report.overall_sparsity),
        "report_metric": float(report.metric.value), "report_metric_exact": report.metric.exact,
        "layer_kept": layer_kept(masks), "prune_seconds": t_prune,
    }
    t0 = time.perf_counter()
    out64 = float64_outputs(pruned, x_test)
    # Accuracy right after pruning, from the float64 outputs of the model fxpath pruned (the
    # rescaled copy for the rescaled rows: the same function as ``model``, checked below).
    row["acc_pruned"] = logits_accuracy(out64, data["y_test"])
    if use_rescaled:
        x_chk = x_test[:TRANSFER_CHECK]
        a, b = predict(pruned, x_chk), predict(model, x_chk)
        row["transfer_max_rel_diff"] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    row.update(certify(run.reference(use_rescaled), run.out64[use_rescaled], pruned, out64,
                       x_test, run.input_shape))
    row["eval_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    train(model, data, run.cfg.finetune_epochs, run.cfg.finetune_lr, run.cfg,
          seed=10_000 + run.seed)
    row["finetune_seconds"] = time.perf_counter() - t0
    row["acc_finetuned"] = accuracy(model, data)
    row["sparsity_after_finetune"] = mask_sparsity(masks_of(model))
    row["_masks"] = masks
    return row


def train_dense(cfg: Config, data: dict, seed: int, log) -> tuple[nn.Module, dict]:
    seed_everything(seed)
    dense = SmallResNet(cfg.widths)
    t0 = time.perf_counter()
    loss = train(dense, data, cfg.epochs, cfg.lr, cfg, seed)
    info = {"seed": seed, "train_seconds": time.perf_counter() - t0, "train_loss": loss,
            "dense_acc": accuracy(dense, data),
            "n_params": sum(p.numel() for p in dense.parameters())}
    log(f"seed {seed}: dense acc {info['dense_acc']:.2f}% (loss {loss:.3f}, "
        f"{info['train_seconds']:.1f}s)")
    return dense, info


def run_seed(cfg: Config, data: dict, seed: int, log) -> dict:
    input_shape = tuple(data["x_train"].shape[1:])
    dense, info = train_dense(cfg, data, seed, log)
    t0 = time.perf_counter()
    rescaled = fxpath.rescale(dense, input_shape, factors=cfg.factors, seed=seed).eval()
    info["rescale_seconds"] = time.perf_counter() - t0
    run = SeedRun(cfg, seed, data, dense, rescaled, input_shape)
    x = data["x_test"]
    run.out64 = {False: float64_outputs(dense, x), True: float64_outputs(rescaled, x)}
    info["rescaled_acc"] = logits_accuracy(run.out64[True], data["y_test"])
    info["rescale_max_abs_diff_float64"] = float((run.out64[True] - run.out64[False]).abs().max())
    info["rescale_weight_ratio_range"] = weight_ratio_range(dense, rescaled)
    rows = []
    t_seed = time.perf_counter()
    for amount in cfg.sparsities:
        for crit in CRITERIA:
            row = run_variant(run, crit, amount)
            log(f"  {amount:.0%} {crit[0]:32s} pruned {row['acc_pruned']:6.2f}  "
                f"fine-tuned {row['acc_finetuned']:6.2f}  d={row['metric']:.3g}  "
                f"viol={row['violations']}  tight={row['tightness_median']:.2e}")
            rows.append(row)
    info["variants_seconds"] = time.perf_counter() - t_seed
    _compare_masks(rows)
    return {"seed_info": info, "rows": rows}


def _compare_masks(rows: list[dict]) -> None:
    """Mask differences between each rescaled criterion and its un-rescaled twin."""
    by_key = {(r["criterion"], r["sparsity_target"]): r for r in rows}
    for r in rows:
        base = r["criterion"].removesuffix(" after rescaling")
        if base != r["criterion"]:
            r["mask_diff_vs_unrescaled"] = mask_difference(
                r["_masks"], by_key[(base, r["sparsity_target"])]["_masks"])
    for r in rows:
        r.pop("_masks")


# ----------------------------------------------------------------------------- driver
def summarize(rows: list[dict], key: str) -> dict[tuple[str, float], tuple[float, float]]:
    """(criterion, sparsity) -> (mean, sample std over seeds) of ``rows[key]``."""
    groups: dict[tuple[str, float], list[float]] = {}
    for r in rows:
        groups.setdefault((r["criterion"], r["sparsity_target"]), []).append(r[key])
    return {k: (float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
            for k, v in groups.items()}


def cpu_pressure() -> str:
    """Linux PSI line for the CPU (share of time some task waited for a core): run times taken
    while other work shared the cores are not comparable, and this says whether that happened."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "unavailable"


def machine_line() -> str:
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads of {os.cpu_count()} CPUs, "
            f"python {platform.python_version()}, torch {torch.__version__}")


def run(config: Config, log=print) -> dict:
    """Run the experiment described by ``config``; returns everything measured (JSON-ready).
    Uses ``config.threads`` torch threads and restores the caller's setting afterwards."""
    with repro_cli.threads(config.threads):
        return _run(config, log)


def _run(config: Config, log) -> dict:
    t0 = time.perf_counter()
    data = load_data(config)
    seeds, rows = [], []
    for seed in config.seeds:
        res = run_seed(config, data, seed, log)
        seeds.append(res["seed_info"])
        rows.extend(res["rows"])
    result = {
        "config": {k: v for k, v in asdict(config).items() if k != "out_dir"},
        "machine": machine_line(),
        "fxpath_version": getattr(fxpath, "__version__", "unknown"),
        "n_train": int(data["x_train"].shape[0]), "n_test": int(data["x_test"].shape[0]),
        "seeds": seeds, "rows": rows, "seconds": time.perf_counter() - t0,
        "cpu_pressure_at_end": cpu_pressure(),
    }
    result["claims"] = check_claims(result)
    if config.write:
        write_results(result, Path(config.out_dir), config.name)
    return result


def check_claims(result: dict) -> dict:
    """The qualitative claims, evaluated on the seed means (accuracy differences in points)."""
    rows = result["rows"]
    ft, pr = summarize(rows, "acc_finetuned"), summarize(rows, "acc_pruned")
    sp = result["config"]["sparsities"]
    hi = max(sp)
    pm_twins = [(a, b) for a in rows for b in rows
                if a["criterion"] == "path-magnitude"
                and b["criterion"] == "path-magnitude after rescaling"
                and a["seed"] == b["seed"] and a["sparsity_target"] == b["sparsity_target"]]

    def gap(stats, a, b):
        return {s: stats[(a, s)][0] - stats[(b, s)][0] for s in sp}

    return {
        "path_magnitude_rescaling_invariant": all(
            a["acc_pruned"] == b["acc_pruned"] and a["acc_finetuned"] == b["acc_finetuned"]
            for a, b in pm_twins),
        "path_magnitude_mask_diff_max": max(b["mask_diff_vs_unrescaled"] for _, b in pm_twins),
        "gap_pm_vs_mag_finetuned": gap(ft, "path-magnitude", "magnitude"),
        "gap_mag_vs_rescaled_mag_finetuned": gap(ft, "magnitude", "magnitude after rescaling"),
        "gap_mag_vs_rescaled_mag_pruned": gap(pr, "magnitude", "magnitude after rescaling"),
        "rescaled_magnitude_at_max_sparsity": {
            "pruned": pr[("magnitude after rescaling", hi)][0],
            "finetuned": ft[("magnitude after rescaling", hi)][0],
            "worse_other_finetuned": min(ft[(c, hi)][0] for c in ("path-magnitude", "magnitude")),
        },
        "bound_violations": sum(r["violations"] for r in rows),
        "bound_within_tolerance": sum(r["within_tolerance"] for r in rows),
        "all_metrics_exact": all(r["metric_exact"] for r in rows),
    }


# ----------------------------------------------------------------------------- report
PAPER = {  # docs/mathematics.md#published-figures: ResNet-18, ImageNet, top-1 after fine-tuning
    "path-magnitude": (68.9, 68.4, 64.9),
    "magnitude": (69.2, 68.6, 67.3),
    "magnitude after rescaling": (62.4, 59.1, 0.1),
}


def _pm(mean_std: tuple[float, float], fmt: str = ".2f") -> str:
    return f"{mean_std[0]:{fmt}} ± {mean_std[1]:{fmt}}"


def _acc_table(rows: list[dict], key: str, sparsities) -> list[str]:
    stats = summarize(rows, key)
    lines = ["| pruned | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |",
             "|---" * (len(sparsities) + 1) + "|"]
    for label, _, _ in CRITERIA:
        lines.append(f"| {label} | " + " | ".join(_pm(stats[(label, s)]) for s in sparsities)
                     + " |")
    return lines


def _cert_table(rows: list[dict], sparsities) -> list[str]:
    lines = ["| pruned | sparsity | d (mean) | relative d | exact | median measured | "
             "median bound | median ratio | max ratio | violations |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    stat = {k: summarize(rows, k) for k in ("metric", "metric_relative", "measured_median",
                                            "bound_median", "tightness_median", "tightness_max")}
    for s in sparsities:
        for label, _, _ in CRITERIA:
            sel = [r for r in rows if r["criterion"] == label and r["sparsity_target"] == s]
            k = (label, s)
            viol = sum(r["violations"] for r in sel)
            n = sum(r["n_samples"] for r in sel)
            tol = sum(r["within_tolerance"] for r in sel)
            lines.append(
                f"| {label} | {s:.0%} | {stat['metric'][k][0]:.4g} | "
                f"{stat['metric_relative'][k][0]:.3f} | "
                f"{'yes' if all(r['metric_exact'] for r in sel) else 'NO'} | "
                f"{stat['measured_median'][k][0]:.3g} | {stat['bound_median'][k][0]:.3g} | "
                f"{stat['tightness_median'][k][0]:.2e} | {max(r['tightness_max'] for r in sel):.2e}"
                f" | {viol} / {n}" + (f" ({tol} within tolerance)" if tol else "") + " |")
    return lines


def _layer_table(rows: list[dict], sparsity: float) -> list[str]:
    sel = [r for r in rows if r["sparsity_target"] == sparsity]
    layers = list(sel[0]["layer_kept"])
    lines = ["| layer | " + " | ".join(c[0] for c in CRITERIA) + " |",
             "|---" * (len(CRITERIA) + 1) + "|"]
    for name in layers:
        vals = [np.mean([r["layer_kept"][name] for r in sel if r["criterion"] == c[0]])
                for c in CRITERIA]
        lines.append(f"| {name} | " + " | ".join(f"{v:.1%}" for v in vals) + " |")
    return lines


def _claims_lines(claims: dict) -> list[str]:
    def points(d: dict) -> str:
        return ", ".join(f"{float(s):.0%}: {g:+.2f}" for s, g in d.items())

    mag = claims["rescaled_magnitude_at_max_sparsity"]
    return [
        f"- path-magnitude with vs without rescaling: accuracies identical on every seed and "
        f"sparsity: **{claims['path_magnitude_rescaling_invariant']}** (largest mask difference: "
        f"{claims['path_magnitude_mask_diff_max']} weights)",
        f"- path-magnitude minus magnitude, after fine-tuning (points): "
        f"{points(claims['gap_pm_vs_mag_finetuned'])}",
        f"- magnitude minus magnitude after rescaling (points): right after pruning "
        f"{points(claims['gap_mag_vs_rescaled_mag_pruned'])}; after fine-tuning "
        f"{points(claims['gap_mag_vs_rescaled_mag_finetuned'])}",
        f"- magnitude after rescaling at the highest sparsity: {mag['pruned']:.2f} right after "
        f"pruning, {mag['finetuned']:.2f} after fine-tuning, vs {mag['worse_other_finetuned']:.2f} "
        f"for the worse of path-magnitude and magnitude (chance: 10)",
        f"- Lipschitz bound violations on the test set: **{claims['bound_violations']}** "
        f"({claims['bound_within_tolerance']} samples inside the float64 tolerance "
        f"{BOUND_RTOL:g} x output size); every path-metric exact: {claims['all_metrics_exact']}",
    ]


def to_markdown(result: dict) -> str:
    cfg, rows, seeds = result["config"], result["rows"], result["seeds"]
    sp = cfg["sparsities"]
    dense = [s["dense_acc"] for s in seeds]
    ns = len(seeds)
    std = float(np.std(dense, ddof=1)) if ns > 1 else 0.0
    lo = min(s["rescale_weight_ratio_range"][0] for s in seeds)
    hi = max(s["rescale_weight_ratio_range"][1] for s in seeds)
    variant_s = [s.get("variants_seconds", float("nan")) for s in seeds]
    paper = ["| pruned | 40% | 60% | 80% |", "|---|---|---|---|"] + [
        f"| {k} | " + " | ".join(f"{v}" for v in vals) + " |" for k, vals in PAPER.items()]
    lines = [
        f"# Pruning reproduction ({cfg['name']}): path-magnitude vs magnitude under rescaling",
        "",
        f"Machine: {result['machine']}. fxpath {result['fxpath_version']}. "
        f"Total run time {result['seconds']:.0f} s (CPU pressure at the end, Linux PSI: "
        f"`{result['cpu_pressure_at_end']}`; non-zero averages mean other work shared the cores).",
        "",
        f"Data: {cfg['dataset']} ({result['n_train']} train / {result['n_test']} test images). "
        f"Model: ReLU ResNet, widths {list(cfg['widths'])}, {seeds[0]['n_params']} parameters "
        f"(conv-BN-ReLU stem, max-pool, {len(cfg['widths'])} basic blocks, global average pool, "
        f"linear). Dense training {cfg['epochs']} epochs; fine-tune {cfg['finetune_epochs']} "
        f"epochs at lr {cfg['finetune_lr']} with the masks kept. Global unstructured sparsity "
        f"over conv + linear weights. Rescaling: `fxpath.rescale`, factors "
        f"{list(cfg['factors'])} drawn per neuron it rescales (the block-internal channels; "
        f"channels feeding a residual add or the output are left alone), which moves conv/linear "
        f"weights by factors in [{lo:g}, {hi:g}]. Seeds {[s['seed'] for s in seeds]}; entries "
        f"are mean ± std over seeds.",
        "",
        f"Dense test accuracy: {np.mean(dense):.2f} ± {std:.2f}. Time per seed (mean): dense "
        f"training {np.mean([s['train_seconds'] for s in seeds]):.0f} s, the 12 pruned variants "
        f"(prune, certify, fine-tune, evaluate) {np.mean(variant_s):.0f} s.",
        "",
        f"## Top-1 test accuracy after pruning and fine-tuning ({ns} seeds)",
        "", *_acc_table(rows, "acc_finetuned", sp), "",
        "## Top-1 test accuracy right after pruning (no fine-tuning)",
        "", *_acc_table(rows, "acc_pruned", sp), "",
        "Paper (ResNet-18, ImageNet, after fine-tuning; dense about 68.7, chance 0.1):", "",
        *paper, "",
        "## Claims", "", *_claims_lines(result["claims"]), "",
        "## Certified path-metric and Lipschitz bound, right after pruning",
        "",
        "d = `||Phi(dense) - Phi(pruned)||_1` from `fxpath.path_metric` (mean over seeds); "
        "relative d = d / `||Phi(dense)||_1`; exact: fxpath reports the exact metric (not an "
        "upper bound). Measured: `||R_dense(x) - R_pruned(x)||_1` per test sample, in float64; "
        "bound: `fxpath.lipschitz_bound` = `max(1, ||x||_inf) d`; ratio = measured / bound "
        "(1 would be tight); violations: samples over the bound, over all seeds. Rescaled rows "
        "are certified on the rescaled pair (the models fxpath pruned).",
        "", *_cert_table(rows, sp), "",
        f"## Fraction of weights kept per layer at {max(sp):.0%} (mean over seeds)",
        "", *_layer_table(rows, max(sp)), "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sp = result["config"]["sparsities"]
    dense = np.mean([s["dense_acc"] for s in result["seeds"]])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    styles = ("o-", "s--", "v-", "x:")
    for ax, key, title in zip(axes, ("acc_pruned", "acc_finetuned"),
                              ("right after pruning", "after fine-tuning"), strict=True):
        stats = summarize(result["rows"], key)
        for (label, _, _), style in zip(CRITERIA, styles, strict=True):
            m = [stats[(label, s)][0] for s in sp]
            e = [stats[(label, s)][1] for s in sp]
            ax.errorbar([100 * s for s in sp], m, yerr=e, fmt=style, capsize=3, label=label)
        ax.axhline(dense, color="k", lw=0.8, label="dense")
        ax.axhline(10, color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(title)
        ax.set_xlabel("sparsity (%)")
        ax.set_xticks([100 * s for s in sp])
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"{result['config']['dataset']}: ReLU ResNet, {len(result['seeds'])} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict, out_dir: Path, name: str) -> None:
    repro_cli.write_results(result, out_dir, "pruning_repro", name, to_markdown, plot)



def main(argv=None) -> int:
    return repro_cli.main(argv, __doc__, quick=QUICK, full=FULL, run=run,
                          to_markdown=to_markdown, plot=plot,
                          quick_help="digits 8x8, tiny model (default)",
                          full_help="MNIST, 3 seeds", seeds=True)


if __name__ == "__main__":
    raise SystemExit(main())
