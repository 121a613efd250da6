"""Quick mode of benchmarks/structured_repro.py at a tiny size (one seed, two amounts).

- the certified bound holds on every test image of every small model, and every metric is exact;
- the rescaling attack leaves the outputs unchanged, and path mass removes the very same
  channels after it (``report.removed`` identical) while L1 and BN scale choose others;
- the result files are written.

About 15 s of CPU: ``-m slow`` (in .ci/run).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("torch_pruning")

import pruning_repro as pr  # noqa: E402 - benchmarks/ is on pytest's pythonpath
import structured_repro as repro  # noqa: E402

TINY = replace(repro.QUICK, seeds=(0,), amounts=(0.3, 0.5), finetune_epochs=1.0,
               latency_repeats=5, check_images=64,
               train=replace(repro.QUICK.train, widths=(8, 16, 32), epochs=6))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("structured_repro")
    return repro.run(replace(TINY, out_dir=str(out)), log=lambda *_: None), out


@pytest.mark.slow
def test_bound_never_violated(tiny):
    result, out = tiny
    written = json.loads((out / "structured_repro_quick.json").read_text())
    assert written["claims"]["bound_violations"] == 0
    assert written["claims"]["all_metrics_exact"]
    assert len(result["rows"]) == 2 * 3 * 2
    for r in result["rows"]:
        assert r["n_images"] == result["n_test"] and r["violations"] == 0
        assert 0.0 < r["ratio_max"] <= 1.0
        assert r["params_ratio"] < 1.0 and r["macs_ratio"] < 1.0


@pytest.mark.slow
def test_path_mass_blind_to_the_attack(tiny):
    result, out = tiny
    claims = json.loads((out / "structured_repro_quick.json").read_text())["claims"]
    assert claims["path_mass_masks_identical"] and claims["baseline_masks_changed"]
    assert result["seeds"][0]["attack_rel_change"] <= repro.ATTACK_RTOL
    lo, hi = result["seeds"][0]["bn_scale_ratio_range"]
    assert lo == 1.0 and hi == 64.0
    for r in result["rows"]:
        if r["attack"]:
            assert r["undo_rel_change"] <= repro.ATTACK_RTOL
            if r["criterion"] == "path_magnitude":
                assert r["channels_differing"] == 0 and r["finetune_reused"]


@pytest.mark.slow
def test_outputs_written(tiny):
    _, out = tiny
    for suffix in (".md", ".json", ".png"):
        assert (out / f"structured_repro_quick{suffix}").stat().st_size > 0
    assert not (out / "structured_repro_quick.partial.json").exists()
    md = (out / "structured_repro_quick.md").read_text()
    assert "0 violations" in md and "commit" in md


def test_attack_preserves_the_function():
    """The attack and its undoing, on an untrained model with random BatchNorm statistics."""
    torch.manual_seed(0)
    model = pr.SmallResNet((4, 8, 8)).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(m.weight, 0.5, 1.5)
            torch.nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    names = [u.name for u in repro.units(model)]
    assert names == ["layers.0.inner", "layers.1.inner", "stream0", "layers.2.inner",
                     "stream1", "stream2"]
    lam = repro.draw_factors(model, (1.0, 64.0, 4096.0), seed=0)
    attacked = repro.rescale_units(copy.deepcopy(model), lam, 0.5)
    x = torch.rand(16, 1, 12, 12)
    assert repro.relative_change(model, attacked, x) <= 1e-12
    assert not torch.equal(attacked.bn1.weight, model.bn1.weight)
    back = repro.rescale_units(copy.deepcopy(attacked), {k: 1 / v for k, v in lam.items()},
                               0.5)
    assert repro.same_parameters(model, back)  # powers of two: undone bit for bit
