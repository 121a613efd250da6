"""Pictures (`fxpath.tools.plot`): each kind writes a PNG from data computed independently here; bad
inputs are `FxPathError`s that say what to give instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import fxpath
from fxpath.tools import plot
from fxpath.tools.zoo.report import write_csv
from fxpath.tools.zoo.result import ZooResult

PNG = b"\x89PNG\r\n\x1a\n"


def scores() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"conv.weight": torch.rand(4, 3, 3, 3, generator=gen) / 108,
            "conv.bias": torch.zeros(4), "fc.weight": torch.rand(2, 4, generator=gen) / 8,
            "fc.bias": torch.full((2,), 0.01)}


def test_layer_masses_are_the_sums_in_order() -> None:
    s = scores()
    got = plot.layer_masses(s)
    assert [k for k, _ in got] == list(s)
    for (_, mass), v in zip(got, s.values()):
        assert mass == pytest.approx(float(v.sum()))


@pytest.mark.parametrize("kind", ["mass", "scores"])
def test_model_pictures(tmp_path: Path, kind: str) -> None:
    draw = plot.plot_mass if kind == "mass" else plot.plot_scores
    path = draw(scores(), tmp_path / f"{kind}.png", "toy")
    data = path.read_bytes()
    assert data[:8] == PNG and 5_000 < len(data) < 300_000


def _zoo_csv(tmp_path: Path) -> Path:
    rows = [ZooResult(f"net{i}", "timm", fam, "", 10 ** (5 + i % 4), "3x224x224",
                      "supported", log10_path_norm=float(i))
            for i, fam in enumerate(["resnet", "resnet", "vgg", "dla", "regnet"] * 3)]
    rows.append(ZooResult("vit", "timm", "vit", "", 10**8, "3x224x224", "refused",
                          "GELU: not positively homogeneous"))
    write_csv(rows, tmp_path / "z.csv", {"commit": "test"})
    return tmp_path / "z.csv"


def _figures(tmp_path: Path) -> dict[str, Any]:
    return {"mass": plot.mass_figure(scores(), "toy"),
            "scores": plot.scores_figure(scores(), "toy"),
            "sparsity": plot.sparsity_figure({"layer1.0.downsample.0.weight": 0.5,
                                              "fc.weight": 0.9}, 0.7, "toy"),
            "zoo": plot.zoo_figure(_zoo_csv(tmp_path), families=2)}


def test_every_text_is_readable(tmp_path: Path) -> None:
    """Tick labels, axis labels, titles, legends, notes: at least 8 pt at the saved size (the
    figure is saved at its own size, so points on the figure are points in the PNG)."""
    from matplotlib.text import Text

    for kind, fig in _figures(tmp_path).items():
        fig.draw_without_rendering()  # creates the automatic tick labels
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert len(texts) > 5, kind
        small = {t.get_text(): t.get_fontsize() for t in texts if t.get_fontsize() < 8}
        assert not small, f"{kind}: {small}"
        assert plot.MIN_FONT >= 8


def _legend(fig: Any) -> list[str]:
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    return [t.get_text() for leg in legends if leg is not None for t in leg.get_texts()]


def _drawn(ax: Any) -> dict[str, list[float]]:
    """The labelled series with something on the axes: bar heights, or a line's y values."""
    series = {c.get_label(): [p.get_height() for p in c] for c in ax.containers if len(c)}
    series |= {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.get_lines()
               if not line.get_label().startswith("_") and len(line.get_ydata())}
    return series


def test_mass_picture_shows_what_the_legend_lists() -> None:
    """Log scale; bars for the weights, bars for the biases only when a bias has mass, dots for
    the share around each weight; tensors of zero mass counted in the title. The legend names
    exactly the series drawn."""
    s = scores()  # conv.bias has zero mass; fc.bias a little
    fig = plot.mass_figure(s, "toy")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    drawn = _drawn(ax)
    assert sorted(_legend(fig)) == sorted(drawn)
    mass = dict(plot.layer_masses(s))
    weights = next(v for k, v in drawn.items() if k.startswith("weights"))
    biases = next(v for k, v in drawn.items() if k.startswith("biases"))
    around = next(v for k, v in drawn.items() if k.startswith("1 - mass"))
    assert weights == pytest.approx([mass["conv.weight"], mass["fc.weight"]])
    assert biases == pytest.approx([mass["fc.bias"]])
    assert around == pytest.approx([1 - mass["conv.weight"], 1 - mass["fc.weight"]])
    assert "not drawn: 1 bias of zero mass" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv.weight", "fc.weight",
                                                            "fc.bias"]

    no_bias = {k: (torch.zeros_like(v) if k.endswith("bias") else v) for k, v in s.items()}
    fig = plot.mass_figure(no_bias, "toy")
    assert sorted(_legend(fig)) == sorted(_drawn(fig.axes[0]))
    assert not any("bias" in label for label in _legend(fig))  # none drawn, none named
    assert "not drawn: 2 biases of zero mass" in fig.axes[0].get_title()


def test_mass_picture_marks_masses_under_the_axis() -> None:
    """A bias carrying 1e-30 of the mass does not stretch the axis over 30 decades: it is a
    triangle at the bottom with its value written, and the legend still lists it."""
    s = {"a.weight": torch.full((4,), 0.25), "b.weight": torch.full((2,), 0.4),
         "b.bias": torch.full((2,), 5e-31)}
    fig = plot.mass_figure(s, "toy")
    ax = fig.axes[0]
    bottom, _ = ax.get_ylim()
    assert 1e-3 <= bottom <= 0.1  # a decade under the smallest share around a weight (0.2)
    drawn = _drawn(ax)
    assert sorted(_legend(fig)) == sorted(drawn)
    assert next(v for k, v in drawn.items() if k.startswith("biases")) == [bottom]
    assert "1.0e-30" in [t.get_text() for t in ax.texts]

    fig = plot.mass_figure({"a.weight": torch.zeros(3)}, "toy")  # nothing to draw: said so
    assert _legend(fig) == [] and "zero path mass" in fig.axes[0].texts[0].get_text()


def test_sparsity_picture(tmp_path: Path) -> None:
    path = plot.plot_sparsity({"a.weight": 0.5, "b.weight": 0.9}, 0.7, tmp_path / "s.png", "toy")
    assert path.read_bytes()[:8] == PNG


def test_zoo_picture_from_a_sweep_csv(tmp_path: Path) -> None:
    path = plot.plot_zoo(_zoo_csv(tmp_path), tmp_path / "zoo.png", families=2)
    assert path.read_bytes()[:8] == PNG


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(fxpath.FxPathError, match=r"ending in \.png"):
        plot.plot_mass(scores(), tmp_path / "mass.svg", "toy")
    with pytest.raises(fxpath.FxPathError, match="no scores"):
        plot.plot_mass({}, tmp_path / "m.png", "toy")
    with pytest.raises(fxpath.FxPathError, match="nothing was pruned"):
        plot.plot_sparsity({}, 0.0, tmp_path / "s.png", "toy")
    write_csv([ZooResult("x", "timm", status="gap", reason="r")], tmp_path / "z.csv",
              {"commit": "test"})
    with pytest.raises(fxpath.FxPathError, match="run 'fxpath zoo' in full mode"):
        plot.plot_zoo(tmp_path / "z.csv", tmp_path / "zoo.png")
    assert not (tmp_path / "zoo.png").exists()
