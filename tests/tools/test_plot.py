"""Pictures (`fxpath.tools.plot`): each kind writes a PNG from data computed independently here; bad
inputs are `FxPathError`s that say what to give instead."""

from __future__ import annotations

from pathlib import Path

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


def test_sparsity_picture(tmp_path: Path) -> None:
    path = plot.plot_sparsity({"a.weight": 0.5, "b.weight": 0.9}, 0.7, tmp_path / "s.png", "toy")
    assert path.read_bytes()[:8] == PNG


def test_zoo_picture_from_a_sweep_csv(tmp_path: Path) -> None:
    rows = [ZooResult(f"net{i}", "timm", fam, "", 10 ** (5 + i % 4), "3x224x224",
                      "supported", log10_path_norm=float(i))
            for i, fam in enumerate(["resnet", "resnet", "vgg", "dla", "regnet"] * 3)]
    rows.append(ZooResult("vit", "timm", "vit", "", 10**8, "3x224x224", "refused",
                          "GELU: not positively homogeneous"))
    write_csv(rows, tmp_path / "z.csv", {"commit": "test"})
    path = plot.plot_zoo(tmp_path / "z.csv", tmp_path / "zoo.png", families=2)
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
