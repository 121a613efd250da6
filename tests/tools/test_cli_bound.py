"""``fxpath bound``: the generalization-bound report on the command line, text and JSON."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from test_cli import run  # the one CLI runner of the tests

import fxpath
from fxpath.tools import cli

SHAPE = (3, 8, 8)


def pooled() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2)).eval()


@pytest.fixture
def pooled_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every MODEL builds the pooled net (weights from the CLI's seed)."""
    monkeypatch.setattr(cli, "build_model", lambda spec: (pooled(), SHAPE))


def _expected(n: int, bound: float, dtype: torch.dtype = torch.float32
              ) -> fxpath.GeneralizationBound:
    torch.manual_seed(0)
    return fxpath.generalization_bound(pooled(), SHAPE, n, input_bound=bound, dtype=dtype)


def test_text_report(capsys: pytest.CaptureFixture[str], pooled_model: None) -> None:
    code, out, err = run(capsys, "bound", "net", "--n-train", "1000", "--input-bound", "2.5")
    assert code == 0 and "torch.float32" in err
    expected = _expected(1000, 2.5)
    lines = out.splitlines()
    assert lines[0] == f"net at {SHAPE}:"
    for part in ("n (training samples)          1000", "B (bound on ||x||_inf)        2.5",
                 "D (conv/linear layers, path)  3", "K (largest max-pool window)   9",
                 "P (k-max-pooling types)       1", "M (max-pools on a path)       1",
                 "d_in, d_out                   192, 2",
                 f"4*C*B/sqrt(n)                 {expected.factor:.4f}"):
        assert part in out, part


def test_json_report(capsys: pytest.CaptureFixture[str], pooled_model: None) -> None:
    code, out, _ = run(capsys, "bound", "net", "--n-train", "50", "--json", "--float64")
    result = json.loads(out)
    expected = _expected(50, 1.0, torch.float64)
    assert code == 0 and result["model"] == "net" and result["input_shape"] == list(SHAPE)
    assert result["dtype"] == "torch.float64" and result["input_bound"] == 1.0
    assert result["ingredients"] == {"depth": 3, "max_pool_kernel": 9, "max_pool_types": 1,
                                     "max_pools_on_path": 1, "d_in": 192, "d_out": 2}
    assert result["factor"] == pytest.approx(expected.factor)
    assert result["sharpened_factor"] == pytest.approx(expected.sharpened_factor)
    assert result["log10_bound"] == pytest.approx(expected.log10_bound, rel=1e-9)
    assert result["path_norm"]["log2"] == pytest.approx(expected.path_norm.log2, rel=1e-9)


@pytest.mark.parametrize("argv, fragment", [
    (["bound", "net"], "the following arguments are required: --n-train"),
    (["bound", "net", "--n-train", "0"], "n-train must be an integer >= 1, got '0'"),
    (["bound", "net", "--n-train", "2.5"], "n-train must be an integer, got '2.5'"),
    (["bound", "net", "--n-train", "9", "--input-bound", "0"],
     "input-bound must be a finite number > 0, got '0'"),
    (["bound", "net", "--n-train", "9", "--input-bound", "inf"],
     "input-bound must be a finite number > 0, got 'inf'"),
    (["bound", "net", "--n-train", "9", "--input-bound", "big"],
     "input-bound must be a number, got 'big'"),
])
def test_bad_values_are_usage_errors(capsys: pytest.CaptureFixture[str], pooled_model: None,
                                     argv: list[str], fragment: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == cli.EXIT_USAGE and fragment in err and "Traceback" not in err


def test_refused_model_is_a_usage_error(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    gelu = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)).eval()
    monkeypatch.setattr(cli, "build_model", lambda spec: (gelu, (4,)))
    code, _, err = run(capsys, "bound", "net", "--n-train", "10")
    assert code == cli.EXIT_USAGE and err.startswith("fxpath: ") and "GELU" in err
