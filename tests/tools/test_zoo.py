"""Zoo sweep (marker ``zoo``): every timm model either compiles and matches its own function,
or is refused with `UnsupportedModelError`; never another exception. Compiled models also get
the same path-norm (and, below 3e7 parameters, the same scores) with and without the
compressed-image convs of ``interior``. Models from the ReLU-DAG families that no issue names
pass the zoo sweep's three self-checks (`fxpath.tools.zoo.checks.check_model`). Whether each
model's status is the expected one is tests/tools/test_zoo_expected.py's job.

``FXPATH_ZOO_SAMPLE=N`` sweeps a fixed random sample of N models (CI; ``FXPATH_ZOO_SEED`` picks
another sample), 0 sweeps them all.
"""

from __future__ import annotations

import os
import random

import pytest
import timm
import torch
from conftest import assert_same_function

import fxpath

ALL = sorted(timm.list_models())
SAMPLE = int(os.environ.get("FXPATH_ZOO_SAMPLE", "0"))
MAX_PARAMS = 3e8
FAMILIES_ALWAYS = ["resnet18", "resnet26d", "densenet121", "vgg11_bn", "mobilenetv2_050",
                   "regnetx_002", "dla34", "efficientnet_b0", "convnext_atto"]
NAMES = ALL if SAMPLE <= 0 else sorted(
    set(FAMILIES_ALWAYS[: max(2, SAMPLE // 2)])
    | set(random.Random(int(os.environ.get("FXPATH_ZOO_SEED", "0"))).sample(ALL, SAMPLE)))


@pytest.mark.zoo
@pytest.mark.parametrize("name", NAMES)
def test_compiles_or_refuses_cleanly(name: str) -> None:
    try:
        with torch.device("meta"):  # size check first: the zoo has 7B-parameter models
            size = sum(p.numel() for p in timm.create_model(name, num_classes=5).parameters())
    except Exception as exc:
        pytest.skip(f"timm cannot build {name}: {exc}")
    if size > MAX_PARAMS:
        pytest.skip(f"{name} has {size:.3g} parameters (> {MAX_PARAMS:.0g}): too big for CI")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=5)
    except Exception as exc:  # some zoo entries need extra packages or kwargs
        pytest.skip(f"timm cannot build {name}: {exc}")
    model = model.double().eval()
    shape = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
    try:
        prog = fxpath.compile(model, shape, dtype=torch.float64)
    except fxpath.UnsupportedModelError as exc:
        assert exc.ops and all(op.reason for op in exc.ops)
        return
    except fxpath.TraceError as exc:
        pytest.xfail(f"not traceable by torch.fx: {exc}")
    assert_same_function(prog.graph, model, shape, batch=2)
    assert prog.path_norm().log10 > -float("inf")
    dense = fxpath.compile(model, shape, dtype=torch.float64, interior=False)
    assert prog.path_norm().log2 == pytest.approx(dense.path_norm().log2, rel=1e-12)
    if size <= 3e7:
        want = dense.path_magnitude()
        for key, got in prog.path_magnitude().items():
            torch.testing.assert_close(got, want[key], rtol=1e-9, atol=1e-300)


#: ReLU-DAG models that no issue names, from the families the zoo issue lists (and timm's), with
#: a small input size: the three self-checks of the zoo sweep must pass
SELF_CHECKED = [("torchvision", "squeezenet1_1", 64), ("timm", "regnetx_004", 64),
                ("timm", "dla46x_c", 64), ("torchvision", "regnet_x_800mf", 64),
                ("torchvision", "alexnet", 96), ("torchvision", "inception_v3", 96),
                ("timm", "darknet17", 64), ("timm", "resnet26t", 64),
                ("torchvision", "mnasnet0_75", 64), ("torchvision", "googlenet", 64),
                ("timm", "cspresnext50", 64), ("timm", "densenetblur121d", 64),
                ("timm", "vgg13_bn", 32)]


@pytest.mark.zoo
@pytest.mark.parametrize(("source", "name", "side"),
                         SELF_CHECKED if SAMPLE <= 0 else SELF_CHECKED[:max(3, SAMPLE)])
def test_self_checks_pass(source: str, name: str, side: int) -> None:
    from fxpath.tools.zoo.catalogue import ZooModel, architecture
    from fxpath.tools.zoo.checks import check_model

    m = ZooModel(name, source, "", architecture(name))
    r = check_model(m, (3, side, side), repeats=1)
    assert r.status == "supported", r.reason
    assert r.checks == "pass", (r.checks, r.function_err, r.rescale_err, r.lipschitz_ratio)
