"""Quick mode of the pruning reproduction (benchmarks/pruning_repro.py): the paper's qualitative
claims on scikit-learn's digits, with one seed.

- path-magnitude pruning is blind to a random neuron-wise rescaling (same masks, same accuracy);
- magnitude pruning after that rescaling collapses to chance at 80% sparsity, far below both
  criteria on the un-rescaled model;
- the Lipschitz bound ||R_dense(x) - R_pruned(x)||_1 <= max(1, ||x||_inf) d holds on every test
  sample, with d the exact certified path-metric.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("sklearn")

import pruning_repro as repro  # noqa: E402 - benchmarks/ is on pytest's pythonpath
import repro_data  # noqa: E402


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("pruning_repro")
    cfg = replace(repro.QUICK, seeds=(0,), out_dir=str(out))
    return repro.run(cfg, log=lambda *_: None), out


def test_path_magnitude_is_rescaling_invariant(quick):
    result, _ = quick
    claims = result["claims"]
    assert claims["path_magnitude_rescaling_invariant"]
    assert claims["path_magnitude_mask_diff_max"] == 0
    twins = {(r["seed"], r["sparsity_target"]): r for r in result["rows"]
             if r["criterion"] == "path-magnitude"}
    for r in result["rows"]:
        if r["criterion"] == "path-magnitude after rescaling":
            base = twins[(r["seed"], r["sparsity_target"])]
            assert r["metric"] == pytest.approx(base["metric"], rel=1e-6)
            assert r["acc_pruned"] == base["acc_pruned"]
            assert r["acc_finetuned"] == base["acc_finetuned"]


def test_rescaled_magnitude_collapses_at_80(quick):
    result, _ = quick
    stats = repro.summarize(result["rows"], "acc_finetuned")
    pruned = repro.summarize(result["rows"], "acc_pruned")
    collapsed = stats[("magnitude after rescaling", 0.8)][0]
    others = min(stats[("path-magnitude", 0.8)][0], stats[("magnitude", 0.8)][0])
    assert collapsed < 20.0  # 10 classes: chance is 10%
    assert pruned[("magnitude after rescaling", 0.8)][0] < 20.0
    assert others - collapsed > 50.0
    # the rescaling itself is harmless: same function, same accuracy
    for seed in result["seeds"]:
        assert seed["rescaled_acc"] == pytest.approx(seed["dense_acc"], abs=0.2)
        assert seed["rescale_max_abs_diff_float64"] < 1e-6


def test_lipschitz_bound_holds_on_every_sample(quick):
    result, _ = quick
    assert result["claims"]["bound_violations"] == 0
    assert result["claims"]["all_metrics_exact"]
    for r in result["rows"]:
        assert r["n_samples"] == result["n_test"]
        assert 0.0 < r["tightness_max"] <= 1.0
        # prune's own report carries the same certified metric
        assert r["report_metric"] == pytest.approx(r["metric"], rel=1e-5)


def test_sparsity_is_exact_and_kept_by_fine_tuning(quick):
    result, _ = quick
    for r in result["rows"]:
        assert r["sparsity"] == pytest.approx(r["sparsity_target"], abs=1e-3)
        assert r["report_sparsity"] == pytest.approx(r["sparsity"], abs=1e-9)
        assert r["sparsity_after_finetune"] == r["sparsity"]


def test_outputs_written(quick):
    result, out = quick
    for suffix in (".md", ".json", ".png"):
        assert (out / f"pruning_repro_quick{suffix}").stat().st_size > 0
    md = (out / "pruning_repro_quick.md").read_text()
    assert "| magnitude after rescaling |" in md and "Machine:" in md


def test_safe_unpickler_admits_arrays_only():
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    loaded = repro_data.safe_unpickle(pickle.dumps((arr, arr[0]), protocol=4))
    np.testing.assert_array_equal(loaded[0], arr)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load global .*print"):
        repro_data.safe_unpickle(pickle.dumps(Evil(), protocol=2))
