"""Quick mode of benchmarks/training_repro.py at a tiny size (one seed, a few epochs).

- Path-SGD from an adversarially rescaled start trains the same function as from the balanced
  start (same batches); plain SGD from the rescaled start does not, and trains far worse;
- the penalty lowers the l^1 path-norm; the tenfold-at-0.5-points check is reported.

The run takes about 5 s: ``-m slow`` (in .ci/run).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

pytest.importorskip("sklearn")

import training_repro as repro  # noqa: E402 - benchmarks/ is on pytest's pythonpath

pytestmark = pytest.mark.slow

TINY = replace(repro.QUICK, seeds=(0,), epochs=4, evals=4,
               penalties=(("none", 0.0), ("log", 0.1), ("value", 3e-4)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("training_repro")
    return repro.run(replace(TINY, out_dir=str(out)), log=lambda *_: None), out


def test_path_sgd_is_blind_to_the_rescaling(tiny):
    result, _ = tiny
    claims = result["claims"]
    assert claims["logits_rel_gap_max"]["Path-SGD"] <= 1e-6
    assert claims["path_sgd_rescaled_minus_balanced"] == 0.0
    for r in result["optimizers"]:
        if r["optimizer"] == "Path-SGD":
            assert not r["diverged"] and r["acc"] > 80.0
            assert len(r["curve"]) == 4


def test_sgd_is_not(tiny):
    result, _ = tiny
    claims = result["claims"]
    assert claims["logits_rel_gap_max"]["SGD"] > 1e-2
    assert claims["accuracy"]["SGD, balanced"] > 80.0
    assert claims["sgd_rescaled_minus_balanced"] < -30.0


def test_penalty_lowers_the_path_norm(tiny):
    result, _ = tiny
    trade = result["claims"]["trade_off"]
    base = trade["none 0"]["path_norm"]
    assert trade["log 0.1"]["path_norm"] < base and trade["value 0.0003"]["path_norm"] < base
    check = result["claims"]["tenfold_at_half_point"]
    assert isinstance(check["holds"], bool) and check["baseline_path_norm"] == base


def test_outputs_written(tiny):
    _, out = tiny
    for suffix in (".md", ".json", ".png"):
        assert (out / f"training_repro_quick{suffix}").stat().st_size > 0
    md = (out / "training_repro_quick.md").read_text()
    assert "at least tenfold at most 0.5 points" in md and "commit" in md


def test_pilot_records_each_run_once(tmp_path):
    cfg = replace(repro.QUICK, seeds=(0,), penalty_epochs=2, evals=2, warmup=0.2, ramp=0.3,
                  cooldown=0.2, penalty_lr_schedule="cosine", optimizer_experiment=False,
                  penalties=(("none", 0.0), ("value-prox", 1e-3)))
    logged = []
    rec = repro.pilot((cfg,), tmp_path, log=logged.append)
    assert len(logged) == 2 and [r["form"] for r in rec["runs"]] == ["none", "value-prox"]
    assert all(len(r["curve"]) == 2 and len(r["curve"][0]) == 4 for r in rec["runs"])
    assert rec["runs"][1]["path_norm"] < rec["runs"][0]["path_norm"]
    again = repro.pilot((replace(cfg, cooldown=0.0),), tmp_path, log=logged.append)
    assert len(logged) == 3 and len(again["runs"]) == 3  # only the new penalized run
    md = (tmp_path / "training_repro_scheduled_pilot.md").read_text()
    assert md.count("| value-prox") == 0 and md.count("proximal |") == 2
