"""``fxpath prune --structured``: channel pruning from the command line.

The printed and JSON numbers are checked against `fxpath.prune_channels` called directly on the
same seeded model; ``--out`` and ``--export`` are loaded back; bad flag combinations are usage
errors before any model is built. A tiny residual net runs in the default tier; torchvision's
ResNet-18 at 3x32x32 is marked slow.
"""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch
import torch.nn as nn
from test_cli import run  # the one CLI runner of the tests

import fxpath
from fxpath.tools import channels, cli, commands

pytest.importorskip("torch_pruning")

SHAPE = (3, 8, 8)


class Block(nn.Module):
    """A residual block: its input and output channels are one coupled group."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), Block(8),
                         nn.Conv2d(8, 12, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(12, 2)).eval()


def seeded(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return net()


@pytest.fixture
def tiny_net(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every MODEL builds the tiny residual net (weights from the CLI's seed)."""
    built: list[str] = []

    def build(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
        built.append(spec)
        return net(), SHAPE

    monkeypatch.setattr(cli, "build_model", build)
    return built


def _count(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def direct() -> tuple[nn.Module, object]:
    """`fxpath.prune_channels` itself on the CLI's model (seed 0), as the CLI calls it."""
    return fxpath.prune_channels(seeded(), 0.5, SHAPE, dtype=torch.float32)


def test_text_matches_prune_channels(capsys: pytest.CaptureFixture[str], tiny_net: list[str],
                                     direct: tuple[nn.Module, object], tmp_path) -> None:
    """Every printed number is the library's; --out FILE.pt is the whole small module."""
    module = str(tmp_path / "small.pt")
    code, out, err = run(capsys, "prune", "tiny", "--structured", "--amount", "0.5", "--out",
                         module)
    assert code == 0 and "torch.float32" in err, err
    small, report = direct
    lines = out.splitlines()
    removed = sum(len(r) for r in report.removed.values())
    assert removed > 0
    assert lines[0] == (f"tiny at (3, 8, 8): removed {removed} of the 38 output channels of the "
                        f"conv/linear layers ({removed / 38:.1%}) by path_magnitude (global), "
                        f"{len(report.groups)} coupled group(s)")
    assert lines[1].split() == ["dense", "small", "small/dense"]
    params, macs, latency = (lines[i].split() for i in (2, 3, 4))
    assert params[0] == "parameters" and macs[0] == "MACs" and latency[0] == "latency"
    assert (_count(params[1]), _count(params[2])) == report.params
    assert report.params == (sum(p.numel() for p in seeded().parameters()),
                             sum(p.numel() for p in small.parameters()))
    assert (_count(macs[1]), _count(macs[2])) == report.macs
    assert float(params[3]) == pytest.approx(report.params[1] / report.params[0], abs=6e-4)
    assert latency[2] == latency[4] == "ms" and float(latency[1]) > 0 and float(latency[3]) > 0
    assert re.fullmatch(r"latency: one sample on 1 CPU thread, median of "
                        rf"{channels.FORWARDS} forwards of each model, alternating: "
                        r"\d+\.\d\dx faster", lines[5])
    top = channels.most_cut(report)
    assert lines[6] == f"layers cut most (top {len(top)} of the {len(report.channels)} cut):"
    rows = lines[7:7 + len(top)]
    assert [(r.split()[-1], _count(r.split()[0]), _count(r.split()[2])) for r in rows] == [
        (n, d - s, d) for n, d, s in top]
    rest = lines[7 + len(top):]
    assert rest[0] == ("certified l^1 path-metric to the dense model: "
                       f"{commands.metric_text(report.metric, torch.float64)}")
    assert report.metric.exact and rest[0].endswith(", exact)")
    assert rest[1] == commands.bound_line(report.metric, "small")
    assert rest[2:] == [*([rest[2]] if report.spared else []),
                        f"saved the small model (the whole module, torch.save) to {module}: "
                        "torch.load(FILE, weights_only=False) returns it"]
    x = torch.randn(3, *SHAPE)
    torch.testing.assert_close(torch.load(module, weights_only=False)(x), small(x), rtol=0,
                               atol=0)


def test_json_and_export(capsys: pytest.CaptureFixture[str], tiny_net: list[str],
                         tmp_path) -> None:
    """--json holds the report's fields and the CLI's figures; --out FILE.safetensors holds
    the small model's weights, which load into the module of --export's program."""
    from safetensors.torch import load_file

    weights, pt2 = str(tmp_path / "s.safetensors"), str(tmp_path / "s.pt2")
    threads = torch.get_num_threads()
    code, out, _ = run(capsys, "prune", "tiny", "--structured", "--json", "--criterion", "l1",
                       "--scope", "layer", "--amount", "0.25", "--round-to", "2", "--out",
                       weights, "--export", pt2)
    assert code == 0
    result = json.loads(out)
    small, report = fxpath.prune_channels(seeded(), 0.25, SHAPE, criterion="l1", scope="layer",
                                          round_to=2, dtype=torch.float32)
    assert result["model"] == "tiny" and result["input_shape"] == [3, 8, 8]
    assert result["structured"] is True and result["dtype"] == "torch.float32"
    assert (result["criterion"], result["scope"], result["amount"], result["round_to"]) == (
        "l1", "layer", 0.25, 2)
    assert result["params"] == list(report.params) and result["macs"] == list(report.macs)
    assert result["ratios"]["params"] == report.params[1] / report.params[0]
    assert result["removed"] == {k: list(v) for k, v in report.removed.items()}
    assert result["channels_removed"] == sum(len(v) for v in report.removed.values()) > 0
    assert result["channels_total"] == 38
    assert result["metric"] == {"value": report.metric.value, "log10": report.metric.log10,
                                "log2": report.metric.log2, "relative": report.metric.relative,
                                "exact": True}
    assert all(s % 2 == 0 for _, s in report.channels.values())
    timing = result["latency"]
    assert timing["batch"] == 1 and timing["forwards"] == channels.FORWARDS
    assert timing["threads"] == 1 and torch.get_num_threads() == threads  # restored
    assert timing["dense"] > 0 and timing["small"] > 0
    assert timing["speedup"] == pytest.approx(timing["dense"] / timing["small"])
    assert [r["layer"] for r in result["most_cut"]] == [n for n, _, _ in
                                                        channels.most_cut(report)]
    assert (result["checkpoint"], result["checkpoint_format"], result["exported"]) == (
        weights, "state_dict", pt2)
    x = torch.randn(3, *SHAPE)
    program = torch.export.load(pt2).module()
    torch.testing.assert_close(program(x), small(x), rtol=1e-6, atol=1e-6)
    program.load_state_dict(load_file(weights), strict=True)
    torch.testing.assert_close(program(x), small(x), rtol=1e-6, atol=1e-6)


def test_saved_lines() -> None:
    alone = channels.saved_lines({"checkpoint": "s.safetensors",
                                  "checkpoint_format": "state_dict"})
    assert alone == ["saved the small model's weights (state dict) to s.safetensors; they fit "
                     "the small model, not MODEL's architecture: its architecture is not saved: "
                     "add --export FILE.pt2, or use --out FILE.pt"]
    both = channels.saved_lines({"checkpoint": "s.safetensors", "checkpoint_format": "state_dict",
                                 "exported": "s.pt2", "exported_batch": "dynamic batch"})
    assert both[0].endswith("load them into torch.export.load('s.pt2').module()")
    assert both[1] == "saved the small model as an ExportedProgram (dynamic batch) to s.pt2"
    assert channels.saved_lines({}) == []


@pytest.mark.parametrize(("argv", "message"), [
    (["--structured", "--amount", "1"], "with --structured, amount must be in [0, 1)"),
    (["--structured", "--amount", "1.5"], "amount must be in [0, 1], got '1.5'"),
    (["--structured", "--criterion", "magnitude"], "magnitude scores single weights"),
    (["--criterion", "l1"], "l1 ranks channels: add --structured"),
    (["--criterion", "bn_scale"], "bn_scale ranks channels: add --structured"),
    (["--round-to", "8"], "argument --round-to: rounds channel counts: add --structured"),
    (["--structured", "--round-to", "0"], "round-to must be an integer >= 1, got '0'"),
    (["--structured", "--steps", "0"], "argument --steps: the value must be an integer >= 1"),
    (["--structured", "--out", "s.pt2"], "give FILE.pt or FILE.safetensors"),
])
def test_bad_flags_are_usage_errors(capsys: pytest.CaptureFixture[str], tiny_net: list[str],
                                    argv: list[str], message: str) -> None:
    code, out, err = run(capsys, "prune", "tiny", *argv)
    assert code == cli.EXIT_USAGE == 2 and out == "" and tiny_net == []
    assert "usage: fxpath prune" in err and message in err, err


def test_without_torch_pruning(capsys: pytest.CaptureFixture[str], tiny_net: list[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_pruning", None)  # import fails: ImportError
    code, out, err = run(capsys, "prune", "tiny", "--structured")
    assert code == 2 and out == "" and tiny_net == []  # refused before the model is built
    assert err.startswith("fxpath: structured pruning needs Torch-Pruning")
    assert 'pip install "fxpath[prune]"' in err and "Traceback" not in err


def test_flags_reach_prune_channels_and_defaults(capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 tiny_net: list[str]) -> None:
    """Flags pass through as given; the default amount is 0.5 of the channels (0.6 of the
    weights without --structured, unchanged); a library ArgumentError is exit 2."""
    calls: list[tuple[float, dict[str, object]]] = []

    def spy(model: nn.Module, amount: float, shape: tuple[int, ...],
            **kw: object) -> object:
        calls.append((amount, kw))
        raise fxpath.ArgumentError("stop here")

    monkeypatch.setattr(cli, "prune_channels", spy)
    code, _, err = run(capsys, "prune", "tiny", "--structured")
    assert code == 2 and "fxpath: stop here" in err
    code, _, _ = run(capsys, "prune", "tiny", "--structured", "--steps", "3", "--scope",
                     "layer", "--criterion", "bn_scale", "--round-to", "4", "--float64")
    assert calls == [
        (0.5, {"criterion": "path_magnitude", "scope": "global", "steps": 1, "round_to": None,
               "dtype": torch.float32}),
        (0.5, {"criterion": "bn_scale", "scope": "layer", "steps": 3, "round_to": 4,
               "dtype": torch.float64})]
    code, out, _ = run(capsys, "prune", "tiny", "--json")
    assert code == 0 and json.loads(out)["amount"] == 0.6


@pytest.mark.slow
def test_torchvision_resnet18(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    """torchvision's ResNet-18 at 3x32x32, half of its channels: smaller in parameters and
    MACs, the exact certificate, and the exported small model runs."""
    pt2 = str(tmp_path / "small.pt2")
    code, out, err = run(capsys, "prune", "torchvision:resnet18", "--structured", "--size", "3",
                         "32", "32", "--json", "--export", pt2)
    assert code == 0, err
    result = json.loads(out)
    assert result["params"][1] < 0.5 * result["params"][0]
    assert result["macs"][1] < result["macs"][0]
    assert result["metric"]["exact"] is True and result["twin_gap"] <= 1e-9
    assert result["channels_total"] == 5800 and result["channels_removed"] > 0
    assert result["latency"]["dense"] > 0 and result["latency"]["small"] > 0
    program = torch.export.load(pt2).module()
    assert program(torch.randn(2, 3, 32, 32)).shape == (2, 1000)
