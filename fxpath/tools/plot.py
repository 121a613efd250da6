"""Pictures of path quantities (``fxpath plot``): PNGs drawn with matplotlib's Agg backend.

- `plot_mass`: the path mass through each parameter tensor, in the model's order;
- `plot_scores`: the distribution of the path-magnitude scores of each weight tensor (log10);
- `plot_sparsity`: the fraction of zeros per pruned tensor after `fxpath.prune`;
- `plot_zoo`: the l^1 path-norm's log10 against the parameter count, by family, from the CSV
  of ``fxpath zoo``.

matplotlib is an optional dependency, imported on first use: ``pip install "fxpath[plot]"``
installs it; without it every function here raises `FxPathError` saying so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fxpath.errors import FxPathError

__all__ = ["INSTALL_HINT", "KINDS", "layer_masses", "plot_mass", "plot_scores", "plot_sparsity",
           "plot_zoo", "require_matplotlib"]

KINDS = ("mass", "scores", "sparsity", "zoo")
#: at most this many score entries per tensor are drawn (an even subsample)
SAMPLE = 20000


INSTALL_HINT = ("pictures need matplotlib, an optional dependency of fxpath: "
                'pip install "fxpath[plot]" (or pip install matplotlib)')


def require_matplotlib() -> Any:
    """The ``matplotlib`` module, set to the Agg backend (files only, no window).

    Raises:
        FxPathError: matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib
    except ImportError as exc:
        raise FxPathError(f"{INSTALL_HINT} ({exc})") from exc
    matplotlib.use("Agg", force=True)
    return matplotlib


def _pyplot() -> Any:
    require_matplotlib()
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FxPathError(f"the picture is a PNG: give a file name ending in .png, got {path}")
    try:
        fig.savefig(path, dpi=100)
    except OSError as exc:
        raise FxPathError(f"cannot write {path}: {exc}") from exc
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    return path


def _title(ax: Any, text: str) -> None:
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(text, 95)), fontsize=9)


def _tick_labels(ax: Any, names: Sequence[str], axis: str = "x") -> None:
    """Name every tensor when there are few, every k-th otherwise."""
    step = max(1, math.ceil(len(names) / 40))
    ticks = list(range(0, len(names), step))
    labels = [names[i] for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
    else:
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=6)


def layer_masses(scores: Mapping[str, Tensor]) -> list[tuple[str, float]]:
    """``(tensor name, path mass)`` in the model's order: the sum of the tensor's scores, the
    fraction of all paths that go through (for a weight) or start at (a bias) the tensor."""
    return [(k, float(v.detach().sum())) for k, v in scores.items()]


def plot_mass(scores: Mapping[str, Tensor], path: str | Path, title: str) -> Path:
    """Bar chart of the path mass per tensor (weights blue, biases orange), in model order."""
    plt = _pyplot()
    rows = layer_masses(scores)
    if not rows:
        raise FxPathError("no scores to plot")
    names = [k for k, _ in rows]
    colors = ["tab:orange" if k.endswith("bias") else "tab:blue" for k in names]
    fig, ax = plt.subplots(figsize=(max(8.0, min(16.0, 0.18 * len(rows) + 3)), 4.5),
                           layout="constrained")
    ax.bar(range(len(rows)), [m for _, m in rows], color=colors, width=0.8)
    ax.set_ylabel("path mass (fraction of all paths)")
    ax.set_ylim(0, max(1.0, max(m for _, m in rows)) * 1.05)
    _title(ax, f"{title}: path mass per tensor (blue: weights, orange: biases)")
    _tick_labels(ax, names)
    return _save(fig, path)


def _sample(v: Tensor) -> Tensor:
    flat = v.detach().flatten().to(torch.float64)
    flat = flat[flat > 0]
    if flat.numel() > SAMPLE:
        flat = flat[torch.linspace(0, flat.numel() - 1, SAMPLE).long()]
    return flat.log10()


def plot_scores(scores: Mapping[str, Tensor], path: str | Path, title: str) -> Path:
    """Box plots of log10 of the non-zero scores of each weight tensor, in model order."""
    plt = _pyplot()
    weights = {k: v for k, v in scores.items() if not k.endswith("bias") and v.numel() > 1}
    data = [(k, _sample(v)) for k, v in weights.items()]
    data = [(k, s.numpy()) for k, s in data if s.numel()]
    if not data:
        raise FxPathError("no non-zero weight scores to plot")
    fig, ax = plt.subplots(figsize=(max(8.0, min(16.0, 0.18 * len(data) + 3)), 4.5),
                           layout="constrained")
    ax.boxplot([s for _, s in data], positions=range(len(data)), widths=0.6, showfliers=False,
               whis=(1, 99))
    ax.set_ylabel("log10 path-magnitude score")
    _title(ax, f"{title}: score distribution per weight tensor (box: quartiles, whiskers: "
               "1st-99th percentile)")
    _tick_labels(ax, [k for k, _ in data])
    return _save(fig, path)


def plot_sparsity(sparsity: Mapping[str, float], overall: float, path: str | Path,
                  title: str) -> Path:
    """Bar chart of the fraction of zeros per pruned tensor, with the overall sparsity."""
    plt = _pyplot()
    if not sparsity:
        raise FxPathError("nothing was pruned: no sparsity to plot")
    names = list(sparsity)
    fig, ax = plt.subplots(figsize=(max(8.0, min(16.0, 0.18 * len(names) + 3)), 4.5),
                           layout="constrained")
    ax.bar(range(len(names)), [sparsity[k] for k in names], color="tab:green", width=0.8)
    ax.axhline(overall, color="black", linestyle="--", linewidth=1,
               label=f"overall {overall:.1%}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction of zero weights")
    ax.legend(loc="lower right", fontsize=8)
    _title(ax, f"{title}: sparsity per tensor after pruning")
    _tick_labels(ax, names)
    return _save(fig, path)


def plot_zoo(csv_path: str | Path, path: str | Path, families: int = 12) -> Path:
    """Scatter of log10 l^1 path-norm against log10 parameter count of the supported models
    of a ``fxpath zoo`` CSV (full mode), the ``families`` largest families in colour."""
    from fxpath.tools.zoo.report import read_csv

    plt = _pyplot()
    try:
        rows = [r for r in read_csv(csv_path)
                if r.log10_path_norm is not None and r.params and math.isfinite(
                    r.log10_path_norm)]
    except OSError as exc:
        raise FxPathError(f"cannot read the zoo CSV {csv_path}: {exc}") from exc
    if not rows:
        raise FxPathError(f"{csv_path} has no supported model with a path-norm: run "
                          "'fxpath zoo' in full mode (the default) first")
    count = Counter(f"{r.source}:{r.family}" for r in rows)
    shown = [f for f, _ in count.most_common(families)]
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    cmap = plt.get_cmap("tab20")
    for i, fam in enumerate([*shown, "other"]):
        pts = [r for r in rows if (f"{r.source}:{r.family}" == fam
                                   or (fam == "other" and f"{r.source}:{r.family}" not in shown))]
        if not pts:
            continue
        ax.scatter([math.log10(r.params) for r in pts], [r.log10_path_norm for r in pts],
                   s=18, color="lightgrey" if fam == "other" else cmap(i % 20), label=fam,
                   edgecolors="none")
    ax.set_xlabel("log10 parameter count")
    ax.set_ylabel("log10 l^1 path-norm (random init)")
    from fxpath.tools.zoo.report import read_info

    size = read_info(csv_path).get("size")
    where = f" at {size}" if size else " at their own input sizes"
    ax.set_title(f"fxpath zoo: {len(rows)} supported models{where}", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    return _save(fig, path)
