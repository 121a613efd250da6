"""Quick mode of benchmarks/tightness.py at a tiny size: the certificate's qualitative claims.

- the Lipschitz bound holds on every test image (max measured / certified path-metric <= 1);
- on the MLP, the path-metric is below the classic parameter-space bound of docs/tightness.md,
  which itself holds on every image (a check of its derivation);
- a neuron-wise rescaling of both models inflates the classic bound at least a hundredfold and
  leaves the path-metric equal to 1e-9 relative.

The run takes about 5 s (``-m slow``, in .ci/run); the Spearman and by-hand bound checks are fast.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

import pruning_repro as pr  # noqa: E402 - benchmarks/ is on pytest's pythonpath
import tightness  # noqa: E402

TINY = replace(tightness.QUICK, train=replace(pr.QUICK, epochs=4), sparsities=(0.3, 0.6, 0.9),
               bits=(2, 4, 8), n_test=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("tightness")
    return tightness.run(replace(TINY, out_dir=str(out)), log=lambda *_: None), out


@pytest.mark.slow
def test_bound_never_violated(tiny):
    result, _ = tiny
    assert result["claims"]["violations"] == 0
    assert len(result["rows"]) == 2 * (3 + 3)
    for r in result["rows"]:
        assert r["n_samples"] == 200
        assert 0.0 < r["ratio"] <= 1.0


@pytest.mark.slow
def test_path_metric_below_classic_bound(tiny):
    result, _ = tiny
    claims = result["claims"]
    assert claims["classic_always_holds"]
    assert claims["path_metric_below_classic"]
    for r in result["rows"]:
        if r["model"] == "MLP":
            assert r["certified"] < r["telescoping"] <= r["classic"]


@pytest.mark.slow
def test_rescaling_inflates_classic_bound_only(tiny):
    result, _ = tiny
    claims = result["claims"]
    assert claims["rescaling_inflation_min"] >= 100.0
    assert claims["rescaled_path_metric_rel_change_max"] <= 1e-9
    assert claims["rescaled_function_rel_change_max"] <= 1e-6


@pytest.mark.slow
def test_outputs_written(tiny):
    _, out = tiny
    for suffix in (".md", ".json", ".png"):
        assert (out / f"tightness_quick{suffix}").stat().st_size > 0
    md = (out / "tightness_quick.md").read_text()
    assert "Spearman" in md and "commit" in md


def test_spearman_matches_definition():
    a = np.array([3.0, 1.0, 2.0, 2.0, 5.0])
    b = np.array([30.0, 10.0, 25.0, 20.0, 40.0])
    assert tightness.ranks(a).tolist() == [4.0, 1.0, 2.5, 2.5, 5.0]
    ra, rb = tightness.ranks(a), tightness.ranks(b)
    assert tightness.spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert tightness.spearman(a, -a) == pytest.approx(-1.0)


def test_classic_bound_by_hand():
    """A 1-hidden-layer MLP: the bound's terms computed by hand."""
    torch.manual_seed(0)
    a = tightness.mlp((3,), (4,), classes=2).double()
    b = tightness.mlp((3,), (4,), classes=2).double()
    (w1, b1), (w2, b2) = tightness.linear_layers(a)
    (v1, c1), (v2, c2) = tightness.linear_layers(b)
    eps = max(float((w1 - v1).abs().max()), float((b1 - c1).abs().max()),
              float((w2 - v2).abs().max()), float((b2 - c2).abs().max()))
    m1 = float(w1.abs().sum(1).max() + b1.abs().max())
    after = float(v2.abs().sum())
    classic = after * eps * (3 * 1 + 1) + eps * (2 * 4 * m1 + 2)
    tele = after * (float((w1 - v1).abs().sum(1).max()) + float((b1 - c1).abs().max())) \
        + float((w2 - v2).abs().sum()) * m1 + float((b2 - c2).abs().sum())
    got = tightness.classic_bound(a, b)
    assert got["classic"] == pytest.approx(classic, rel=1e-12)
    assert got["telescoping"] == pytest.approx(tele, rel=1e-12)
    x = torch.rand(500, 3, dtype=torch.float64) * 4 - 2
    with torch.no_grad():
        meas = tightness.measured_distance(a(x), b(x), x)
    assert float(meas.max()) <= got["telescoping"] <= got["classic"]
