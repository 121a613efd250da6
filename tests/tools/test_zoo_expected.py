"""The expected status of every timm and torchvision classifier (``tests/tools/zoo_expected.csv``),
and the zoo sweep's machinery (`fxpath.tools.zoo`).

Default tier (no registry model is built): the file lists exactly the registries'
classifiers; every refusal it records is a genuine non-ReLU-DAG op, every other failure is listed
as a known gap with its reason; selection, sharding, the CSV round trip, one worker process (a
task's error costs one item, the worker is reused), the progress bar, and the full-mode row of a
tiny model (timings and the three self-checks).

Marker ``zoo`` (``FXPATH_ZOO_SAMPLE=N`` models, 0 = all): each model's status, compiled on the
meta device, is the one the file records. A known gap is reported as an expected failure that
names its reason; a model whose status changed fails, with the command that regenerates the
file (``fxpath.tools.zoo.report.EXPECTED_COMMAND``). Also under ``zoo``, being slow on 2 cores:
the worker pool against a crash and a hang (two workers, a 2 s time limit), and the full-mode row
of a torchvision model.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import pytest
import torch

from fxpath.errors import ArgumentError, UnsupportedOp
from fxpath.frontend.refusals import NOT_HOMOGENEOUS
from fxpath.tools.zoo import checks
from fxpath.tools.zoo.catalogue import ZooModel, architecture, catalog, parse_shard, select, shard
from fxpath.tools.zoo.checks import check_model, check_status
from fxpath.tools.zoo.command import Progress
from fxpath.tools.zoo.pool import sweep
from fxpath.tools.zoo.provenance import provenance
from fxpath.tools.zoo.report import EXPECTED_COMMAND, read_csv, read_info, write_csv, write_markdown
from fxpath.tools.zoo.result import STATUSES, ZooResult, classify_refusal, is_genuine
from fxpath.tools.zoo.selfcheck import FUNCTION_TOL, RESCALE_TOL, function_error, lipschitz_ratio

EXPECTED = Path(__file__).with_name("zoo_expected.csv")
REGENERATE = f"regenerate the file with: {EXPECTED_COMMAND}"


def expected_rows() -> dict[tuple[str, str], ZooResult]:
    return {(r.source, r.model): r for r in read_csv(EXPECTED)}


def same_versions() -> bool:
    import timm
    import torchvision

    info = read_info(EXPECTED)
    return info.get("timm") == timm.__version__ and info.get("torchvision") == \
        torchvision.__version__


# -- the committed file ----------------------------------------------------------------------

def test_file_lists_every_classifier() -> None:
    if not same_versions():
        pytest.skip(f"{EXPECTED.name} was made with other timm/torchvision versions "
                    f"({read_info(EXPECTED)}); {REGENERATE}")
    listed = set(expected_rows())
    registry = {(m.source, m.name) for m in catalog()}
    missing, extra = sorted(registry - listed), sorted(listed - registry)
    assert not missing and not extra, (f"not in {EXPECTED.name}: {missing[:10]}; no longer in "
                                       f"the registries: {extra[:10]}; {REGENERATE}")


def test_file_reasons_are_classified() -> None:
    """A refusal must name an op no ReLU-DAG has; everything else that fails is a listed gap."""
    rows = list(expected_rows().values())
    assert rows
    for r in rows:
        assert r.status in STATUSES, r
        assert (r.status == "supported") == (r.reason == ""), r
        if r.status == "refused":
            reason = r.reason.split(": ", 1)[1]
            assert is_genuine(reason), f"{r.model}: refused for {r.reason!r}, which is no " \
                                       "genuine non-ReLU-DAG op: it must be a gap"
        if r.status == "gap":
            assert not is_genuine(r.reason.split(": ", 1)[-1]), r


def test_torchvision_relu_dags_are_listed() -> None:
    """The 43 torchvision classifiers that are ReLU-DAGs are never 'refused' in the file."""
    families = {"alexnet", "densenet", "googlenet", "inception", "mnasnet", "mobilenetv2",
                "resnet", "shufflenetv2", "squeezenet", "vgg"}
    rows = [r for r in expected_rows().values() if r.source == "torchvision"
            and (r.family in families or r.model.startswith("regnet_x"))]
    assert len(rows) == 43
    assert all(r.status in ("supported", "gap") for r in rows), [
        (r.model, r.reason) for r in rows if r.status not in ("supported", "gap")]


# -- the status of each model (marker zoo) ---------------------------------------------------

def _sample() -> list[tuple[str, str]]:
    keys = sorted(expected_rows())
    n = int(os.environ.get("FXPATH_ZOO_SAMPLE", "0"))
    if n <= 0 or n >= len(keys):
        return keys
    return sorted(random.Random(int(os.environ.get("FXPATH_ZOO_SEED", "0"))).sample(keys, n))


def verdict(want: ZooResult, got: ZooResult) -> tuple[str, str]:
    """``("ok" | "known gap" | "changed", message)`` for a model's status against the file's."""
    if (got.status, got.reason if got.status == "gap" else "") != \
            (want.status, want.reason if want.status == "gap" else ""):
        return "changed", (f"{got.source}:{got.model} was {want.status} "
                           f"({want.reason or 'no reason'}), now {got.status} "
                           f"({got.reason or 'no reason'}); if that is intended, {REGENERATE}")
    if got.status == "refused" and not is_genuine(got.reason.split(": ", 1)[-1]):
        return "changed", f"{got.model}: refused for {got.reason!r}, no genuine non-ReLU op"
    if got.status == "gap":
        return "known gap", f"known gap: {got.reason} (at {got.where or '<model>'})"
    return "ok", ""


@pytest.mark.zoo
@pytest.mark.parametrize(("source", "name"), _sample() if EXPECTED.exists() else [])
def test_status_is_the_expected_one(source: str, name: str) -> None:
    want = expected_rows()[source, name]
    got = check_status(ZooModel(name, source, want.family, architecture(name)))
    outcome, message = verdict(want, got)
    if outcome == "changed":
        pytest.fail(message)
    if outcome == "known gap":
        pytest.xfail(message)


def test_verdicts() -> None:
    def row(status: str, reason: str = "") -> ZooResult:
        return ZooResult("m", "timm", "f", status=status, reason=reason, where="blocks.0")

    sigmoid = f"Sigmoid: {NOT_HOMOGENEOUS}"
    upsample = "Upsample: no path-lifting rule for module type Upsample"
    assert verdict(row("supported"), row("supported")) == ("ok", "")
    assert verdict(row("refused", sigmoid), row("refused", "SiLU: " + NOT_HOMOGENEOUS))[0] \
        == "ok"  # another genuine op first: still refused
    assert verdict(row("gap", upsample), row("gap", upsample)) == (
        "known gap", f"known gap: {upsample} (at blocks.0)")
    for want, got in [(row("gap", upsample), row("supported")),  # a gap closed: regenerate
                      (row("supported"), row("gap", upsample)),  # a model stopped working
                      (row("gap", upsample), row("gap", "mul: not supported yet")),
                      (row("refused", sigmoid), row("supported")),
                      (row("refused", "Upsample: no rule"), row("refused", "Upsample: no rule"))]:
        outcome, message = verdict(want, got)
        assert outcome == "changed", (want, got)


# -- catalog, selection and shards -----------------------------------------------------------

@pytest.mark.parametrize(("name", "arch"), [
    ("resnet18", "resnet#"), ("resnet50", "resnet#"), ("resnet50d", "resnet#d"),
    ("regnetx_002", "regnetx"), ("convnext_tiny", "convnext"), ("vgg11_bn", "vgg#_bn"),
    ("efficientnet_b3", "efficientnet_b#"), ("mobilenetv2_100", "mobilenetv2"),
    ("resnext50_32x4d", "resnext#"), ("resnet18.a1_in1k", "resnet#"),
    ("shufflenet_v2_x0_5", "shufflenet_v2_x#"),
])
def test_architecture(name: str, arch: str) -> None:
    assert architecture(name) == arch


def _models(names: list[str], source: str = "timm") -> list[ZooModel]:
    return [ZooModel(n, source, n.rstrip("0123456789"), architecture(n)) for n in names]


def test_select_one_per_architecture_and_globs() -> None:
    models = _models(["resnet101", "resnet18", "resnet50", "resnet50d", "vgg16", "vgg11"])
    assert [m.name for m in select(models)] == ["resnet18", "resnet50d", "vgg11"]
    assert len(select(models, every=True)) == 6
    assert [m.name for m in select(models, every=True, patterns=["resnet5*"])] == [
        "resnet50", "resnet50d"]
    assert [m.name for m in select(models, every=True, families=["vgg*"])] == ["vgg16",
                                                                                "vgg11"]
    assert select(models, patterns=["timm:vgg16"], every=True)[0].name == "vgg16"


def test_shards_are_disjoint_deterministic_and_complete() -> None:
    models = _models([f"net{i}" for i in range(23)])
    shards = [shard(models, i, 4) for i in range(4)]
    names = [m.name for s in shards for m in s]
    assert sorted(names) == sorted(m.name for m in models) and len(set(names)) == 23
    assert shard(list(reversed(models)), 1, 4) == shards[1]  # input order does not matter
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "a/b", "-1/3"):
        with pytest.raises(ArgumentError):
            parse_shard(bad)


def test_catalog_has_both_registries() -> None:
    models = catalog()
    tv = [m for m in models if m.source == "torchvision"]
    assert {m.name for m in tv} >= {"resnet18", "vgg11_bn", "inception_v3", "regnet_x_400mf"}
    assert {m.family for m in tv if m.name.startswith("resnext")} == {"resnet"}
    assert any(m.name == "resnet18" and m.family == "resnet" for m in models
               if m.source == "timm")


# -- classification and files ----------------------------------------------------------------

def test_classify_refusal() -> None:
    gate = UnsupportedOp("Sigmoid", "se.gate", NOT_HOMOGENEOUS)
    gap = UnsupportedOp("Upsample", "fuse.0", "no path-lifting rule for module type Upsample")
    assert classify_refusal([gap, gate]) == ("refused", gate)  # any genuine op decides
    assert classify_refusal([gap]) == ("gap", gap)


def test_csv_round_trip_has_no_local_paths(tmp_path: Path) -> None:
    rows = [ZooResult("resnet18", "timm", "resnet", "resnet#", 11689512, "3x224x224",
                      "supported", log10_path_norm=8.27608, forward_ms=12.5, path_norm_x=0.3,
                      checks="pass"),
            ZooResult("hrnet_w18", "timm", "hrnet", "hrnet_w#", 1, "3x224x224", "gap",
                      "Upsample: no path-lifting rule, with a comma", "stage2")]
    info = provenance(mode="test")
    write_csv(rows, tmp_path / "z.csv", info)
    back = read_csv(tmp_path / "z.csv")
    assert [(r.model, r.status, r.reason, r.params, r.log10_path_norm) for r in back] == [
        ("hrnet_w18", "gap", "Upsample: no path-lifting rule, with a comma", 1, None),
        ("resnet18", "supported", "", 11689512, 8.27608)]
    assert read_info(tmp_path / "z.csv")["commit"] == info["commit"]
    write_markdown(back, tmp_path / "z.md", info)
    text = (tmp_path / "z.csv").read_text() + (tmp_path / "z.md").read_text()
    assert str(Path.home()) not in text and str(Path(checks.__file__).parents[1]) not in text
    assert "| timm | hrnet | 1 | 0 | 0 | 1 | 0 |" in text


# -- the worker pool -------------------------------------------------------------------------

def test_sweep_in_a_worker_and_in_process() -> None:
    """One spawned worker runs three items (a task error costs its item only, the worker is
    reused: tasks_per_worker=3); ``jobs=0`` runs in this process; results reach on_result."""
    import zoo_tasks

    seen: list[str] = []
    got = sweep(["a", "raise", "b"], zoo_tasks.task, {"tag": "t"},
                failure=zoo_tasks.failure, jobs=1, timeout=60.0, tasks_per_worker=3,
                on_result=seen.append)
    assert seen == got and len(got) == 3
    assert got[1] == "raise failed: worker error: ValueError: a bug in the task"
    pids = {got[0].split(":")[2], got[2].split(":")[2]}
    assert got[0].startswith("a:t:") and got[2].startswith("b:t:")
    assert len(pids) == 1 and str(os.getpid()) not in pids  # one worker, not this process
    assert sweep(["x"], zoo_tasks.task, {"tag": "u"}, failure=zoo_tasks.failure,
                 jobs=0)[0] == f"x:u:{os.getpid()}"  # jobs=0: in this process


def test_progress_bar_counts_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Progress(2, enabled=True)
    bar.update(ZooResult("resnet18", "timm", status="supported"))
    bar.update(ZooResult("vit_tiny", "timm", status="refused", reason="GELU: x"))
    bar.close()
    err = capsys.readouterr().err
    assert "2/2" in err and "supported=1 refused=1 last=vit_tiny" in err
    quiet = Progress(2, enabled=False)
    quiet.update(ZooResult("resnet18", "timm", status="supported"))
    quiet.close()
    assert capsys.readouterr().err == ""


@pytest.mark.zoo
def test_sweep_survives_crashes_hangs_and_bugs() -> None:
    import zoo_tasks

    items = ["crash", "hang", "a", "raise", "b"]
    t0 = time.monotonic()
    got = sweep(items, zoo_tasks.task, {"tag": "t"}, failure=zoo_tasks.failure, jobs=2,
                timeout=2.0, tasks_per_worker=5)
    assert time.monotonic() - t0 < 120
    assert len(got) == 5
    by_item = {g.split(":")[0].split(" ")[0]: g for g in got}
    assert by_item["crash"].startswith("crash failed: worker died (exit code 3")
    assert by_item["hang"] == "hang failed: timeout after 2 s"
    assert by_item["raise"] == "raise failed: worker error: ValueError: a bug in the task"
    assert by_item["a"].startswith("a:t:") and by_item["b"].startswith("b:t:")
    assert sweep(["x"], zoo_tasks.task, {"tag": "u"}, failure=zoo_tasks.failure,
                 jobs=0)[0] == f"x:u:{os.getpid()}"  # jobs=0: in this process


# -- the full-mode row of one model ----------------------------------------------------------

def tiny_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                               torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3, padding=1),
                               torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))


def test_check_model_row_of_a_tiny_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full-mode path end to end (status on the meta device, build, timings, the three
    self-checks) with the registry's builder replaced by a tiny net."""
    def build(m: ZooModel, device: object = None) -> torch.nn.Module:
        with torch.device(device) if device is not None else torch.device("cpu"):
            return tiny_net().eval()

    monkeypatch.setattr(checks, "build", build)
    m = ZooModel("tiny", "torchvision", "tiny", "tiny")
    r = check_model(m, (3, 10, 10), repeats=1)
    assert r.status == "supported" and r.checks == "pass", r
    assert r.params == sum(p.numel() for p in tiny_net().parameters())
    assert r.input_size == "3x10x10" and r.forward_ms is not None and r.forward_ms > 0
    assert r.log10_path_norm is not None and math.isfinite(r.log10_path_norm)
    assert r.path_norm_x is not None and r.path_norm_x > 0
    assert r.scores_x is not None and r.scores_x > 0
    assert r.function_err is not None and r.function_err < FUNCTION_TOL
    assert r.rescale_err is not None and r.rescale_err < RESCALE_TOL
    assert r.lipschitz_ratio is not None and 0 < r.lipschitz_ratio <= 1


@pytest.mark.zoo
def test_check_model_times_and_self_checks() -> None:
    m = ZooModel("squeezenet1_1", "torchvision", "squeezenet", "squeezenet#")
    r = check_model(m, (3, 48, 48), repeats=1)
    assert r.status == "supported" and r.checks == "pass", r
    assert r.params == 1235496 and r.input_size == "3x48x48"
    assert r.function_err is not None and r.function_err < FUNCTION_TOL
    assert r.rescale_err is not None and r.rescale_err < RESCALE_TOL
    assert r.lipschitz_ratio is not None and 0 < r.lipschitz_ratio <= 1
    assert r.path_norm_x is not None and r.path_norm_x > 0 and r.forward_ms > 0


def test_self_checks_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """function_error sees a graph that is not the model's; lipschitz_ratio exceeds 1 for a
    bound that is too small."""
    import fxpath
    import fxpath.api

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Identity(), torch.nn.Linear(8, 3))
    other.load_state_dict(net.state_dict())
    net, other = net.double().eval(), other.double().eval()
    x = torch.randn(16, 4, dtype=torch.float64)
    prog = fxpath.compile(net, (4,), dtype=torch.float64)
    assert function_error(prog, net, x) < 1e-12
    assert function_error(prog, other, x) > 1e-3  # the ReLU is missing in `other`
    assert 0 < lipschitz_ratio(net, x) <= 1
    real = fxpath.api.lipschitz_bound
    monkeypatch.setattr(fxpath.api, "lipschitz_bound",
                        lambda *args, **kw: real(*args, **kw) * 1e-6)
    assert lipschitz_ratio(net, x) > 1
