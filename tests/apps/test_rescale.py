"""Rescaling symmetry: same function, same path quantities, different weights."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from bruteforce import cases, oracle
from conftest import randomize_batchnorm

import fxpath

FACTORS = (1.0, 128.0, 4096.0)


def _models() -> list[tuple[str, torch.nn.Module]]:
    torch.manual_seed(0)
    return [("torchvision:resnet18", torchvision.models.resnet18(num_classes=10)),
            ("timm:resnet18", timm.create_model("resnet18", pretrained=False, num_classes=10)),
            ("timm:densenet121", timm.create_model("densenet121", pretrained=False,
                                                   num_classes=10))]


@pytest.mark.parametrize("label, model", _models(), ids=lambda v: v if isinstance(v, str) else "")
def test_function_and_path_quantities_unchanged(label: str, model: torch.nn.Module) -> None:
    model = randomize_batchnorm(model).double().eval()
    shape = (3, 32, 32)
    twin = fxpath.rescale(model, shape, factors=(1.0, 3.0, 128.0, 4096.0 / 3), seed=3)
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-9, atol=1e-9)
    changed = sum(int(not torch.equal(a, b)) for a, b in
                  zip(model.state_dict().values(), twin.state_dict().values()))
    assert changed > 10
    a = fxpath.compile(model, shape, dtype=torch.float64)
    b = fxpath.compile(twin, shape, dtype=torch.float64)
    for q in (1.0, 2.0):
        assert b.path_norm(q).value == pytest.approx(a.path_norm(q).value, rel=1e-9)
    sa, sb = a.path_magnitude(), b.path_magnitude()
    for name in sa:
        torch.testing.assert_close(sb[name], sa[name], rtol=1e-7, atol=1e-13)


def test_bruteforce_factories_keep_their_lifting() -> None:
    for name in ("mlp_with_bias", "conv_bn_fold", "bn_after_concat", "pools"):
        case = cases.ALL_FACTORIES[name]()
        twin = fxpath.rescale(case.module, case.input_shape, factors=FACTORS, seed=1)
        expected = oracle.path_lifting(case.build(case.module))
        got = oracle.path_lifting(case.build(twin))
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_pruning_sets_magnitude_vs_path_magnitude() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10)).eval()
    shape = (3, 32, 32)
    twin = fxpath.rescale(model, shape, factors=FACTORS, seed=0)
    masks = {}
    for label, m in (("dense", model), ("rescaled", twin)):
        for criterion in ("path_magnitude", "magnitude"):
            pruned = _copy(m)
            fxpath.prune(pruned, 0.6, shape, criterion=criterion)
            masks[label, criterion] = {n: b.clone() for n, b in pruned.named_buffers()
                                       if n.endswith("_mask")}
    same = masks["dense", "path_magnitude"], masks["rescaled", "path_magnitude"]
    assert all(torch.equal(same[0][n], same[1][n]) for n in same[0])
    mag = masks["dense", "magnitude"], masks["rescaled", "magnitude"]
    differ = sum(int((mag[0][n] != mag[1][n]).sum()) for n in mag[0])
    assert differ > 0.05 * sum(v.numel() for v in mag[0].values())
    m1 = fxpath.path_metric(model, _pruned(model, shape), shape)
    m2 = fxpath.path_metric(twin, _pruned(twin, shape), shape)
    assert m2.value == pytest.approx(m1.value, rel=1e-4)


def _copy(m: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(m)


def _pruned(m: torch.nn.Module, shape: tuple[int, ...]) -> torch.nn.Module:
    p = _copy(m)
    fxpath.prune(p, 0.6, shape)
    return p


def test_rescale_accepts_a_pruned_model_after_a_training_step() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 3)).eval()
    fxpath.prune(model, 0.5, (1, 8, 8))
    model.train()
    model(torch.rand(4, 1, 8, 8)).sum().backward()
    model.eval()
    twin = fxpath.rescale(model, (1, 8, 8), factors=FACTORS)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(twin(x), model(x), rtol=1e-4, atol=1e-5)
    assert fxpath.path_norm(twin, (1, 8, 8)).value == pytest.approx(
        fxpath.path_norm(model, (1, 8, 8)).value, rel=1e-5)
