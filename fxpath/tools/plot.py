"""Pictures of path quantities (``fxpath plot``): PNGs drawn with matplotlib's Agg backend.

- `plot_mass`: the path mass through each parameter tensor, in the model's order (log scale),
  with the share of the mass that goes around each weight (skip connections, later biases);
- `plot_scores`: the distribution of the path-magnitude scores of each weight tensor (log10);
- `plot_sparsity`: the fraction of zeros per pruned tensor after `fxpath.prune`;
- `plot_zoo`: the l^1 path-norm's log10 against the parameter count, by family, from the CSV
  of ``fxpath zoo``.

Each ``plot_KIND`` saves the `matplotlib.figure.Figure` that ``KIND_figure`` draws (the
figures are not registered with pyplot: nothing to close). Every text of a picture is at least
`MIN_FONT` points at the saved size.

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

__all__ = ["INSTALL_HINT", "KINDS", "MIN_FONT", "layer_masses", "mass_figure", "plot_mass",
           "plot_scores", "plot_sparsity", "plot_zoo", "require_matplotlib", "scores_figure",
           "sparsity_figure", "zoo_figure"]

KINDS = ("mass", "scores", "sparsity", "zoo")
#: at most this many score entries per tensor are drawn (an even subsample)
SAMPLE = 20000
#: the smallest font size (points) of any text in a picture, at the saved size
MIN_FONT = 8
#: saved resolution (dots per inch)
DPI = 100
#: below this, ``1 - mass`` of a weight is float32 rounding of sums, not paths around it
AROUND_FLOOR = 1e-6

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


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A new Figure (not pyplot's: nothing global to close) and its one Axes."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained", h_pad=0.08, w_pad=0.08)
    return fig, fig.subplots()


def _width(n: int) -> float:
    return max(8.0, min(16.0, 0.18 * n + 3))


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FxPathError(f"the picture is a PNG: give a file name ending in .png, got {path}")
    try:
        fig.savefig(path, dpi=DPI)
    except OSError as exc:
        raise FxPathError(f"cannot write {path}: {exc}") from exc
    return path


def _title(ax: Any, text: str) -> None:
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(text, 95)), fontsize=MIN_FONT + 1)


def _tick_labels(ax: Any, names: Sequence[str], axis: str = "x") -> None:
    """Name every tensor when there are few, every k-th otherwise."""
    step = max(1, math.ceil(len(names) / 40))
    ticks = list(range(0, len(names), step))
    labels = [names[i] for i in ticks]
    if axis == "x":
        ax.set_xticks(ticks)
        ax.set_xticklabels(labels, rotation=90, fontsize=MIN_FONT)
    else:
        ax.set_yticks(ticks)
        ax.set_yticklabels(labels, fontsize=MIN_FONT)


def layer_masses(scores: Mapping[str, Tensor]) -> list[tuple[str, float]]:
    """``(tensor name, path mass)`` in the model's order: the sum of the tensor's scores, the
    fraction of all paths that go through (for a weight) or start at (a bias) the tensor."""
    return [(k, float(v.detach().sum())) for k, v in scores.items()]


def _is_bias(name: str) -> bool:
    return name.endswith("bias")


def _left_out(zero: Sequence[str]) -> str:
    """The note on the tensors of zero mass (not drawn on the log scale)."""
    if not zero:
        return ""
    biases = sum(map(_is_bias, zero))
    kinds = [f"{n} {one if n == 1 else many}" for n, one, many in
             ((len(zero) - biases, "weight", "weights"), (biases, "bias", "biases")) if n]
    return f"; not drawn: {' and '.join(kinds)} of zero mass"


def _floor(shown: Sequence[tuple[str, float]], around: Sequence[float]) -> float:
    """The bottom of the mass axis: a decade under the smallest weight mass or share around a
    weight (biases, often smaller by many decades, do not stretch the axis)."""
    main = [m for k, m in shown if not _is_bias(k)] + list(around)
    low = min(main or [m for _, m in shown])
    return 10.0 ** (math.floor(math.log10(low)) - 1)


def _mass_series(ax: Any, shown: Sequence[tuple[str, float]], floor: float) -> None:
    """Weights and biases as bars, each series only when it has a tensor; a mass under the
    axis is a triangle at the bottom with its value written above."""
    for bias, label, color in ((False, "weights: mass through the tensor", "tab:blue"),
                               (True, "biases: mass of the paths that start there",
                                "tab:orange")):
        at = [i for i, (k, _) in enumerate(shown) if _is_bias(k) == bias]
        tall = [i for i in at if shown[i][1] >= floor]
        low = [i for i in at if shown[i][1] < floor]
        if tall:
            ax.bar(tall, [shown[i][1] for i in tall], color=color, width=0.8, label=label)
        if low:
            ax.plot(low, [floor] * len(low), "v", color=color, markersize=7, clip_on=False,
                    label="_" if tall else label)
        for i in low:
            ax.annotate(f"{shown[i][1]:.1e}", (i, floor), xytext=(0, 6),
                        textcoords="offset points", rotation=90, ha="center", va="bottom",
                        fontsize=MIN_FONT, color=color)


def mass_figure(scores: Mapping[str, Tensor], title: str) -> Any:
    """The path-mass chart of `plot_mass` as a `matplotlib.figure.Figure`.

    Bars, on a log scale: the mass of each tensor of non-zero mass (weights blue, biases
    orange), in model order; black dots: ``1 - mass`` of each weight, the share of the path
    mass that does not go through it (skip connections, paths that start at later biases),
    where it exceeds float32 rounding. The axis reaches a decade under the smallest weight
    mass or share; a smaller mass (a bias's, typically) is a triangle at the bottom with its
    value written. Tensors of zero mass (zero biases, pruned tensors) are counted in the
    title. The legend lists exactly the series drawn.
    """
    require_matplotlib()
    rows = layer_masses(scores)
    if not rows:
        raise FxPathError("no scores to plot")
    shown = [(k, m) for k, m in rows if m > 0]
    zero = [k for k, m in rows if not m > 0]
    fig, ax = _figure(_width(len(shown)), 6)
    _title(ax, f"{title}: path mass per tensor{_left_out(zero)}")
    if not shown:
        ax.text(0.5, 0.5, "every tensor has zero path mass", ha="center", va="center",
                transform=ax.transAxes, fontsize=MIN_FONT + 2)
        ax.set_xticks([])
        ax.set_yticks([])
        return fig
    ax.set_yscale("log")
    around = [(i, 1.0 - m) for i, (k, m) in enumerate(shown)
              if not _is_bias(k) and 1.0 - m > AROUND_FLOOR]
    floor = _floor(shown, [a for _, a in around])
    _mass_series(ax, shown, floor)
    if around:
        later = ", later biases" if any(_is_bias(k) for k, _ in shown) else ""
        ax.plot([i for i, _ in around], [a for _, a in around], "o", color="black",
                markersize=5, label=f"1 - mass of a weight: the share around it (skip "
                                    f"connections{later})")
    ax.set_ylim(floor, 2 * max(1.0, max(m for _, m in shown)))
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel("fraction of the path mass", fontsize=MIN_FONT + 2)
    ax.tick_params(axis="y", labelsize=MIN_FONT + 1)
    ax.grid(axis="y", which="major", linewidth=0.4, alpha=0.5)
    handles, labels = ax.get_legend_handles_labels()  # weights, biases, then the dots
    order = sorted(range(len(labels)), key=lambda j: "wb1".index(labels[j][0]))
    fig.legend([handles[j] for j in order], [labels[j] for j in order],
               loc="outside upper center", ncols=2, fontsize=MIN_FONT, frameon=False)
    _tick_labels(ax, [k for k, _ in shown])
    return fig


def plot_mass(scores: Mapping[str, Tensor], path: str | Path, title: str) -> Path:
    """Bar chart of the path mass per tensor on a log scale, in model order, with the share
    around each weight (`mass_figure`); written to ``path`` (a .png)."""
    return _save(mass_figure(scores, title), path)


def _sample(v: Tensor) -> Tensor:
    flat = v.detach().flatten().to(torch.float64)
    flat = flat[flat > 0]
    if flat.numel() > SAMPLE:
        flat = flat[torch.linspace(0, flat.numel() - 1, SAMPLE).long()]
    return flat.log10()


def scores_figure(scores: Mapping[str, Tensor], title: str) -> Any:
    """The score box plots of `plot_scores` as a `matplotlib.figure.Figure`."""
    require_matplotlib()
    weights = {k: v for k, v in scores.items() if not _is_bias(k) and v.numel() > 1}
    data = [(k, _sample(v)) for k, v in weights.items()]
    data = [(k, s.numpy()) for k, s in data if s.numel()]
    if not data:
        raise FxPathError("no non-zero weight scores to plot")
    fig, ax = _figure(_width(len(data)), 5.5)
    ax.boxplot([s for _, s in data], positions=range(len(data)), widths=0.6, showfliers=False,
               whis=(1, 99))
    ax.set_ylabel("log10 path-magnitude score", fontsize=MIN_FONT + 2)
    ax.tick_params(axis="y", labelsize=MIN_FONT + 1)
    _title(ax, f"{title}: score distribution per weight tensor (box: quartiles, whiskers: "
               "1st-99th percentile)")
    _tick_labels(ax, [k for k, _ in data])
    return fig


def plot_scores(scores: Mapping[str, Tensor], path: str | Path, title: str) -> Path:
    """Box plots of log10 of the non-zero scores of each weight tensor, in model order."""
    return _save(scores_figure(scores, title), path)


def sparsity_figure(sparsity: Mapping[str, float], overall: float, title: str) -> Any:
    """The sparsity bar chart of `plot_sparsity` as a `matplotlib.figure.Figure`."""
    require_matplotlib()
    if not sparsity:
        raise FxPathError("nothing was pruned: no sparsity to plot")
    names = list(sparsity)
    fig, ax = _figure(_width(len(names)), 5.5)
    ax.bar(range(len(names)), [sparsity[k] for k in names], color="tab:green", width=0.8)
    ax.axhline(overall, color="black", linestyle="--", linewidth=1,
               label=f"overall {overall:.1%}")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("fraction of zero weights", fontsize=MIN_FONT + 2)
    ax.tick_params(axis="y", labelsize=MIN_FONT + 1)
    ax.legend(loc="best", fontsize=MIN_FONT + 1)
    _title(ax, f"{title}: sparsity per tensor after pruning")
    _tick_labels(ax, names)
    return fig


def plot_sparsity(sparsity: Mapping[str, float], overall: float, path: str | Path,
                  title: str) -> Path:
    """Bar chart of the fraction of zeros per pruned tensor, with the overall sparsity."""
    return _save(sparsity_figure(sparsity, overall, title), path)


def zoo_figure(csv_path: str | Path, families: int = 12) -> Any:
    """The zoo scatter of `plot_zoo` as a `matplotlib.figure.Figure`."""
    from fxpath.tools.zoo.report import read_csv, read_info

    matplotlib = require_matplotlib()
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
    fig, ax = _figure(8, 5.5)
    cmap = matplotlib.colormaps["tab20"]
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
    size = read_info(csv_path).get("size")
    where = f" at {size}" if size else " at their own input sizes"
    ax.set_title(f"fxpath zoo: {len(rows)} supported models{where}", fontsize=MIN_FONT + 2)
    ax.legend(fontsize=MIN_FONT, ncol=2, loc="upper left")
    return fig


def plot_zoo(csv_path: str | Path, path: str | Path, families: int = 12) -> Path:
    """Scatter of log10 l^1 path-norm against log10 parameter count of the supported models
    of a ``fxpath zoo`` CSV (full mode), the ``families`` largest families in colour."""
    return _save(zoo_figure(csv_path, families), path)
