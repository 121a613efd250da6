"""Cross-layer equalization (fxpath.equalize): the same function and path quantities, balanced
ranges, independence from a prior rescaling, and better per-tensor quantization after one."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import torch.nn as nn
import torchvision
from conftest import randomize_batchnorm
from test_readonly import _net, assert_unchanged, snapshot

import fxpath
from fxpath.apps.rescale import channel_count, channel_maps, rescalable_neurons, rescale_channels

SHAPE = (3, 32, 32)


def _zoo() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    return [
        ("torchvision:resnet18", torchvision.models.resnet18(num_classes=10)),
        ("timm:resnet18", timm.create_model("resnet18", pretrained=False, num_classes=10)),
        ("timm:mobilenetv2_100", timm.create_model("mobilenetv2_100", pretrained=False,
                                                   num_classes=10)),
    ]


def _check_same(model: nn.Module, twin: nn.Module, shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, *shape, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), twin(x)
    assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())
    p, r = (fxpath.compile(m, shape, dtype=torch.float64) for m in (model, twin))
    assert r.path_norm().value == pytest.approx(p.path_norm().value, rel=1e-9)
    sp, sr = p.path_magnitude(), r.path_magnitude()
    for name, s in sp.items():
        torch.testing.assert_close(sr[name], s, rtol=1e-7, atol=1e-12)


@pytest.mark.slow  # whole models: CI runs these (-m slow tests/apps/test_equalize.py)
@pytest.mark.parametrize("label, model", _zoo(), ids=lambda v: v if isinstance(v, str) else "")
def test_function_path_norm_and_scores_unchanged(label: str, model: nn.Module) -> None:
    model = randomize_batchnorm(model).double().eval()
    twin = fxpath.equalize(model, SHAPE)
    changed = sum(int(not torch.equal(a, b)) for a, b in
                  zip(model.state_dict().values(), twin.state_dict().values()))
    assert changed >= 4
    _check_same(model, twin, SHAPE)


@pytest.mark.slow  # whole models: CI runs these (-m slow tests/apps/test_equalize.py)
def test_densenet121_unchanged() -> None:
    torch.manual_seed(0)
    model = timm.create_model("densenet121", pretrained=False, num_classes=10)
    model = randomize_batchnorm(model).double().eval()
    twin = fxpath.equalize(model, SHAPE)
    _check_same(model, twin, SHAPE)


def _chain() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
                        nn.Conv2d(5, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 3))
    return randomize_batchnorm(net).double().eval()


def _coordinate(net: nn.Module, i: int) -> torch.Tensor:
    """|W * s| of layer ``i`` (s of the BatchNorm after it, if any), computed by hand."""
    w = net[i].weight.detach().abs()
    if i == 0:
        bn = net[1]
        s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().abs()
        w = w * s.reshape(-1, 1, 1, 1)
    return w


def test_ranges_are_balanced_on_a_chain() -> None:
    model, shape = _chain(), (2, 4, 4)
    twin = fxpath.equalize(model, shape, fold_bn=True, sweeps=500, tol=1e-13)
    _check_same(model, twin, shape)
    raw = fxpath.equalize(model, shape, sweeps=500, tol=1e-13)  # without the BatchNorm's s
    torch.testing.assert_close(raw[0].weight.abs().amax((1, 2, 3)),
                               raw[3].weight.abs().amax((0, 2, 3)), rtol=1e-9, atol=0)
    # neuron c of conv0 (folded with BN): its row in conv0 and its column in conv3
    r_in = _coordinate(twin, 0).amax((1, 2, 3))
    r_out = _coordinate(twin, 3).amax((0, 2, 3))
    torch.testing.assert_close(r_in, r_out, rtol=1e-9, atol=0)
    # neuron c of conv3: its row, and columns 4c..4c+3 of fc7 (flattened 2x2 map)
    r_in = _coordinate(twin, 3).amax((1, 2, 3))
    r_out = _coordinate(twin, 7).reshape(6, 4, 4).amax((0, 2))
    torch.testing.assert_close(r_in, r_out, rtol=1e-9, atol=0)
    r_in, r_out = _coordinate(twin, 7).amax(1), _coordinate(twin, 9).amax(0)
    torch.testing.assert_close(r_in, r_out, rtol=1e-9, atol=0)


def test_result_does_not_depend_on_a_prior_rescaling() -> None:
    model, shape = _chain(), (2, 4, 4)
    plain = fxpath.equalize(model, shape, sweeps=500, tol=1e-13)
    twisted = fxpath.equalize(fxpath.rescale(model, shape, factors=(1 / 64, 1, 4096), seed=2),
                              shape, sweeps=500, tol=1e-13)
    for name, t in plain.state_dict().items():
        if t.is_floating_point():
            torch.testing.assert_close(twisted.state_dict()[name], t, rtol=1e-6, atol=1e-12)


def test_power_of_two_factors_are_bit_exact() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(torchvision.models.resnet18(num_classes=10)).eval()
    model = fxpath.rescale(model, SHAPE, factors=(1 / 64, 1, 512), seed=1)  # exact: powers of 2
    twin = fxpath.equalize(model, SHAPE, power_of_two=True)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        assert torch.equal(model(x), twin(x))
    ratios = [(b / a)[a != 0] for a, b in zip(model.state_dict().values(),
                                             twin.state_dict().values())
              if a.is_floating_point() and not torch.equal(a, b)]
    assert ratios
    for r in ratios:
        assert torch.equal(torch.log2(r), torch.log2(r).round())


def test_channel_maps_match_the_rescaling() -> None:
    model, shape = _chain(), (2, 4, 4)
    graph = fxpath.compile(model, shape).graph
    neurons = rescalable_neurons(graph)
    maps = channel_maps(model, graph, neurons)
    gen = torch.Generator().manual_seed(0)
    for producer, consumers in neurons.items():
        twin = copy.deepcopy(model)
        count = channel_count(graph[producer])
        lam = torch.rand(count, generator=gen, dtype=torch.float64) + 1.5
        rescale_channels(twin, graph, producer, consumers, lam)
        after = twin.state_dict()
        for name, idx in maps[producer].items():
            before = model.state_dict()[name]
            factor = torch.where(idx >= 0, lam[idx.clamp_min(0).long()], torch.ones(()))
            ratio = after[name] / before
            ok = (ratio - factor).abs() <= 1e-12 * factor
            ok |= (ratio - 1 / factor).abs() <= 1e-12 / factor
            assert bool(ok[before != 0].all()), name
        untouched = set(model.state_dict()) - set(maps[producer])
        for name in untouched:
            assert torch.equal(after[name], model.state_dict()[name]), name


def test_model_untouched_and_arguments_checked() -> None:
    model = _net()  # pruned, train mode, gradients, ReLU6, LeakyReLU, PReLU
    before = snapshot(model)
    twin = fxpath.equalize(model, (3, 8, 8))
    assert_unchanged(model, before)
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        a, b = model.eval()(x), twin.eval()(x)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for kwargs, message in (({"sweeps": 0}, "sweeps must be"), ({"fold_bn": "yes"}, "fold_bn"),
                            ({"power_of_two": 1}, "power_of_two"), ({"tol": -1.0}, "tol")):
        with pytest.raises(fxpath.ArgumentError, match=message):
            fxpath.equalize(model, (3, 8, 8), **kwargs)
    with pytest.raises(fxpath.ArgumentError, match="input_shape"):
        fxpath.equalize(model)


@pytest.mark.slow  # whole models: CI runs these (-m slow tests/apps/test_equalize.py)
def test_equalization_repairs_per_tensor_int8_after_rescaling() -> None:
    pytest.importorskip("sklearn")
    import pruning_repro as repro  # benchmarks/: the digits ResNet of the pruning experiment

    data = repro.load_data(repro.QUICK)
    torch.manual_seed(0)
    dense = repro.SmallResNet(repro.QUICK.widths)
    repro.train(dense, data, 10, repro.QUICK.lr, repro.QUICK, seed=0)
    shape = tuple(data["x_train"].shape[1:])
    rescaled = fxpath.rescale(dense, shape, factors=(1, 128, 4096), seed=0)

    def acc(m: nn.Module) -> float:
        return repro.accuracy(m, data)

    base = acc(dense)
    broken = acc(fxpath.quantize(rescaled, shape, "int8", layer_metrics=False)[0])
    repaired_model = fxpath.equalize(rescaled, shape)
    repaired = acc(fxpath.quantize(repaired_model, shape, "int8", layer_metrics=False)[0])
    assert base > 90
    assert broken < base - 5  # the symmetry breaks per-tensor int8
    assert repaired > broken + 5 and repaired >= base - 1.5
