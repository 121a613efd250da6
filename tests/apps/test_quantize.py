"""Certified quantization (fxpath.quantize): exact rounding, the metric against path enumeration,
exactness toward zero, the bound on every input, BatchNorm folding, the bit allocator, torchao."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn as nn
from bruteforce import cases, oracle
from conftest import randomize_batchnorm
from test_readonly import _net, assert_unchanged, snapshot

import fxpath
from fxpath.apps.quantize.allocator import fit_budget
from fxpath.apps.quantize.api import certify
from fxpath.apps.quantize.layers import Plan
from fxpath.apps.quantize.pricing import price
from fxpath.apps.quantize.rounding import FLOAT_FORMATS, SCHEMES, quantize_tensor, round_float
from fxpath.apps.quantize.targets import find_targets
from fxpath.program import PathProgram
from fxpath.quantities.results import PathMetric, PathNorm

ROUNDINGS = ("nearest", "toward_zero")
NETS = ("mlp_with_bias", "conv_bn_fold", "residual_add_fold", "concat_net")


# -- exact rounding -----------------------------------------------------------------------------
def _format_values(fmt: torch.dtype) -> torch.Tensor:
    """Every finite non-negative value of a 8- or 16-bit float format, sorted (float64)."""
    bits = torch.finfo(fmt).bits
    view = torch.uint8 if bits == 8 else torch.int16
    codes = torch.arange(0, 2 ** (bits - 1), dtype=torch.int32).to(view)
    values = codes.view(fmt).to(torch.float64)
    return values[torch.isfinite(values)].unique()


def _brute_round(x: torch.Tensor, grid: torch.Tensor, rounding: str,
                 even: torch.Tensor) -> torch.Tensor:
    """Round |x| on the sorted grid by search: the largest value <= |x| (toward zero), or the
    closer of it and the next one, ties to the one whose code is even."""
    a = x.abs()
    i = torch.searchsorted(grid, a, right=True) - 1
    lo = grid[i]
    if rounding == "nearest":
        j = (i + 1).clamp(max=len(grid) - 1)
        hi = grid[j]
        up = (hi - a < a - lo) | ((hi - a == a - lo) & ~even[i] & (j > i))
        lo = torch.where(up, hi, lo)
    return torch.copysign(lo, x)


def _codes_even(fmt: torch.dtype, grid: torch.Tensor) -> torch.Tensor:
    view = torch.uint8 if torch.finfo(fmt).bits == 8 else torch.int16
    return (grid.to(fmt).view(view).to(torch.int32) % 2) == 0


@pytest.mark.parametrize("fmt", list(FLOAT_FORMATS.values()), ids=str)
@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_round_float_is_exact(fmt: torch.dtype, rounding: str) -> None:
    grid = _format_values(fmt)
    even = _codes_even(fmt, grid)
    gen = torch.Generator().manual_seed(0)
    top = float(grid[-1])
    mids = (grid[:-1] + grid[1:]) / 2  # exact ties, and float64 values just off them
    pick = torch.randint(len(mids), (4000,), generator=gen)
    down = torch.zeros(4000, dtype=torch.float64)
    up = torch.full((4000,), 1e308, dtype=torch.float64)
    x = torch.cat([grid, mids[pick], torch.nextafter(mids[pick], down),
                   torch.nextafter(mids[pick], up),
                   torch.rand(4000, generator=gen, dtype=torch.float64) * top,
                   torch.exp2(torch.rand(4000, generator=gen, dtype=torch.float64) * -40)])
    x = torch.cat([x, -x]).clamp(-top, top)
    single = torch.cat([grid, mids[pick], torch.rand(4000, generator=gen) * top]).float()
    for values in (x, torch.cat([single, -single]).double()):  # float64, and float32 values
        got = round_float(values, fmt, rounding)
        want = _brute_round(values, grid, rounding, even)
        assert torch.equal(got, want)
        if rounding == "toward_zero":
            assert bool((got.abs() <= values.abs()).all()) and bool((got * values >= 0).all())


def test_round_float_nearest_matches_torch_from_float32_and_refuses_overflow() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(10000, generator=gen) * 10
    for fmt in (torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2):
        y = x.clamp(-torch.finfo(fmt).max, torch.finfo(fmt).max)
        torch.testing.assert_close(round_float(y, fmt), y.to(fmt).to(torch.float64),
                                   rtol=0, atol=0)
    with pytest.raises(fxpath.ArgumentError, match="exceed the largest"):
        round_float(torch.tensor([500.0]), torch.float8_e4m3fn)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_grid(bits: int, per_channel: bool) -> None:
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(6, 5, 3, 3, generator=gen) * torch.logspace(-3, 1, 6).reshape(-1, 1, 1, 1)
    w[2] = 0.0  # an all-zero channel
    qmax = 2 ** (bits - 1) - 1
    for rounding in ROUNDINGS:
        q, scale = quantize_tensor(w, f"int{bits}", per_channel=per_channel, rounding=rounding)
        assert q.dtype == torch.float32 and scale.dtype == torch.float64
        assert scale.shape == ((6, 1, 1, 1) if per_channel else ())
        k = q.double() / scale
        assert torch.equal(k, k.round()) and float(k.abs().max()) <= qmax  # on the grid, exact
        err = (q.double() - w.double()).abs()
        if rounding == "nearest":
            assert bool((err <= scale / 2 * (1 + 1e-12)).all())
        else:
            assert bool((q.abs() <= w.abs()).all()) and bool((q * w >= 0).all())
            assert bool(((err < scale) | (k.abs() == qmax)).all())  # the nearest grid point
    amax = w.double().abs().amax() if not per_channel else w.double().abs().amax((1, 2, 3),
                                                                                 keepdim=True)
    assert bool((scale >= amax / qmax).all()) and bool((scale <= amax / qmax * 1.001 + (
        amax == 0)).all())



@pytest.mark.parametrize("per_channel", [False, True])
def test_integer_codes_round_ties_to_even_with_signed_zeros(per_channel: bool) -> None:
    """The codes are ``torch.round`` of ``v / scale`` bit for bit: ties to even, and a small
    negative weight becomes ``-0.0`` (its sign kept)."""
    gen = torch.Generator().manual_seed(3)
    v = torch.randn(6, 40, generator=gen) * torch.logspace(-3, 1, 6).view(6, 1)
    v[:, 0] = -1e-9  # rounds to zero, with its sign
    v[:, 1] = 0.0
    v[:, 2] = -0.0
    q, scale = quantize_tensor(v, "int8", per_channel=per_channel)
    k = v.double() / scale
    v[:, 3] = ((torch.floor(k[:, 3]) + 0.5) * scale.reshape(-1)).float()  # ties
    q, scale = quantize_tensor(v, "int8", per_channel=per_channel)
    want = (v.double() / scale).round().clamp(-127, 127).mul(scale).float()
    assert torch.equal(q.view(torch.int32), want.view(torch.int32))
    assert bool(torch.signbit(q[:, 0]).all()) and bool(torch.signbit(q[:, 2]).all())

def test_float_scheme_scales_only_what_overflows() -> None:
    w = torch.tensor([[1000.0, -3.0], [0.5, 0.25]])
    q, scale = quantize_tensor(w, "float8_e4m3fn", per_channel=True)
    assert scale.reshape(-1).tolist() == [4.0, 1.0]  # 1000 / 4 fits under 448
    assert q[1].tolist() == [0.5, 0.25]
    q16, s16 = quantize_tensor(w, "float16")
    assert float(s16) == 1.0 and torch.equal(q16, w)


# -- the certified metric against path enumeration ---------------------------------------------
def _envelopes(model: nn.Module, q: nn.Module) -> tuple[nn.Module, nn.Module]:
    """Copies of ``model`` with every quantized tensor replaced by sign * max(|w|, |q|) and by
    sign * min(|w|, |q|) (quantization never flips a sign)."""
    hi, lo = copy.deepcopy(model), copy.deepcopy(model)
    with torch.no_grad():
        for (name, w), v in zip(model.state_dict().items(), q.state_dict().values()):
            if w.is_floating_point() and not torch.equal(w, v.to(w.dtype)):
                v = v.to(w.dtype)
                assert bool((w * v >= 0).all())
                hi.state_dict()[name].copy_(torch.copysign(torch.maximum(w.abs(), v.abs()), w))
                lo.state_dict()[name].copy_(torch.copysign(torch.minimum(w.abs(), v.abs()), w))
    return hi, lo


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_metric_matches_path_enumeration(net: str, scheme: str) -> None:
    case = cases.ALL_FACTORIES[net]()  # float64 models
    dag = case.build(case.module)
    for rounding, per_channel in zip(ROUNDINGS, (False, True)):
        q, report = fxpath.quantize(case.module, case.input_shape, scheme, rounding=rounding,
                                    per_channel=per_channel, biases=net == "concat_net",
                                    layer_metrics=False)
        true = oracle.path_metric(dag, case.build(q))
        if rounding == "toward_zero":
            assert report.exact and report.metric.exact
            assert report.metric.value == pytest.approx(true, rel=1e-10, abs=1e-300)
            assert report.relative == pytest.approx(true / oracle.path_norm(dag), rel=1e-9)
        else:
            hi, lo = _envelopes(case.module, q)
            assert report.metric.value == pytest.approx(
                oracle.path_metric(case.build(hi), case.build(lo)), rel=1e-10)
            assert report.metric.value >= true * (1 - 1e-12)
            dominated = all(bool((v.abs() <= w.abs()).all()) for w, v in zip(
                case.module.state_dict().values(), q.state_dict().values()))
            assert report.exact == dominated


def test_fold_bn_fuses_with_torch_and_stays_exact() -> None:
    case = cases.conv_bn(fold=True)
    model, shape = case.module, case.input_shape
    q, report = fxpath.quantize(model, shape, "int4", rounding="toward_zero", fold_bn=True)
    assert isinstance(q.bn1, nn.Identity) and isinstance(q.bn2, nn.Identity)
    assert isinstance(q.bn3, nn.Identity) and q.conv2.bias is not None
    assert isinstance(model.bn1, nn.BatchNorm2d)  # the model itself keeps its BatchNorms
    fused = copy.deepcopy(model)  # torch's fusion in float64: the independent reference
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        setattr(fused, conv, torch.nn.utils.fusion.fuse_conv_bn_eval(getattr(fused, conv),
                                                                     getattr(fused, bn)))
        setattr(fused, bn, nn.Identity())
    fused.fc = torch.nn.utils.fusion.fuse_linear_bn_eval(fused.fc, fused.bn3)
    fused.bn3 = nn.Identity()
    ref_dag = case.build(fused)
    assert oracle.path_norm(ref_dag) == pytest.approx(oracle.path_norm(case.build(model)),
                                                      rel=1e-12)
    assert report.exact
    assert report.metric.value == pytest.approx(oracle.path_metric(ref_dag, case.build(q)),
                                                rel=1e-10)
    again = certify(model, q, shape)
    assert again.exact and again.value == pytest.approx(report.metric.value, rel=1e-12)
    x = torch.randn(32, *shape, dtype=torch.float64) * 3
    with torch.no_grad():
        measured = (model(x) - q(x)).abs().sum(1)
    assert bool((measured <= report.lipschitz_bound(x)).all())
    with pytest.raises(fxpath.ArchitectureMismatchError):  # another module tree: see the docs
        fxpath.lipschitz_bound(model, q, x)


def _small_net(dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                        nn.Conv2d(6, 8, 3, stride=2), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(8, 16), nn.ReLU6(), nn.Linear(16, 4))
    return randomize_batchnorm(net).to(dtype).eval()


@pytest.mark.parametrize("fold_bn", [False, True])
def test_bound_holds_on_every_input_for_every_scheme(fold_bn: bool) -> None:
    model, shape = _small_net(), (2, 6, 6)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, *shape, generator=gen) * torch.logspace(-2, 2, 128).reshape(-1, 1, 1, 1)
    with torch.no_grad():
        out = model.double()(x.double())
        model.float()
    for scheme, rounding, per_channel in itertools.product(SCHEMES, ROUNDINGS, (False, True)):
        q, report = fxpath.quantize(model, shape, scheme, rounding=rounding,
                                    per_channel=per_channel, fold_bn=fold_bn,
                                    biases=per_channel, layer_metrics=False)
        if rounding == "toward_zero" and (fold_bn or not per_channel):
            assert report.exact  # (a conv bias quantized before a kept BatchNorm may not be)
        with torch.no_grad():  # float32 weights, evaluated exactly enough in float64
            measured = (out - copy.deepcopy(q).double()(x.double())).abs().sum(1)
        bound = report.lipschitz_bound(x)
        assert bool((measured <= bound).all()), (scheme, rounding, per_channel)
        if not fold_bn:
            torch.testing.assert_close(fxpath.lipschitz_bound(model, q, x), bound,
                                       rtol=1e-12, atol=0)


def test_model_is_never_modified_even_on_error() -> None:
    model = _net()  # pruned, train mode, gradients
    before = snapshot(model)
    q, report = fxpath.quantize(model, (3, 8, 8), "int4", rounding="toward_zero")
    assert_unchanged(model, before)
    assert report.exact and q.training  # the copy keeps the model's mode
    assert torch.equal(q[4].weight_mask, model[4].weight_mask)
    assert bool((q[4].weight_orig * q[4].weight_mask == q[4].weight).all())
    with pytest.raises(fxpath.ArgumentError, match="prune.remove"):
        _fold_pruned(model)
    assert_unchanged(model, before)
    bad = nn.Sequential(nn.Linear(4, 4), nn.SiLU(), nn.Linear(4, 2))
    before_bad = snapshot(bad)
    with pytest.raises(fxpath.UnsupportedModelError):
        fxpath.quantize(bad, (4,), "int8")
    assert_unchanged(bad, before_bad)


def _fold_pruned(model: nn.Module) -> None:
    net = copy.deepcopy(model)
    torch.nn.utils.prune.l1_unstructured(net[0], "weight", amount=0.2)
    before = snapshot(net)
    try:
        fxpath.quantize(net, (3, 8, 8), "int4", fold_bn=True)
    finally:
        assert_unchanged(net, before)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "int9"}, "unknown scheme"),
    ({"scheme": "fp8"}, "unknown scheme"),
    ({"rounding": "up"}, "rounding must be"),
    ({"per_channel": 1}, "per_channel must be True or False"),
    ({"budget": 0.0}, "budget must be a finite number > 0"),
    ({"budget": math.nan}, "budget must be"),
    ({"budget": 0.1, "scheme": "float16"}, "a budget chooses integer bit widths"),
    ({"budget": 0.1, "bits": [1, 4]}, "bits must be"),
    ({"budget": 0.1, "bits": []}, "bits must be"),
])
def test_arguments_are_checked(kwargs: dict, message: str) -> None:
    model = _small_net()
    args = {"scheme": "int8", **kwargs}
    with pytest.raises(fxpath.ArgumentError, match=message):
        fxpath.quantize(model, (2, 6, 6), **args)


def test_layer_metrics_and_estimates_against_independent_computations() -> None:
    model, shape = _small_net(torch.float64), (2, 6, 6)
    q, report = fxpath.quantize(model, shape, "int3", rounding="toward_zero")
    scores = fxpath.path_magnitude(model, shape)
    assert set(report.layers) == {"0", "3", "7", "9"}
    total_share = 0.0
    for layer, r in report.layers.items():
        alone = copy.deepcopy(model)
        alone.get_submodule(layer).weight.data.copy_(q.get_submodule(layer).weight)
        d = fxpath.path_metric(model, alone, shape, dtype=torch.float64)
        assert r.metric.exact and r.metric.value == pytest.approx(d.value, rel=1e-12)
        assert r.share == pytest.approx(d.value / report.metric.value, rel=1e-12)
        total_share += r.share
        w, v = model.get_submodule(layer).weight.detach(), q.get_submodule(layer).weight.detach()
        est = float((scores[f"{layer}.weight"] * ((w - v).abs() / w.abs()).nan_to_num()).sum())
        assert r.estimate == pytest.approx(est, rel=1e-6)
        assert r.estimate >= r.metric.relative * (1 - 1e-12)  # toward zero: an upper bound
        assert r.bits == 3 and r.numel == w.numel()
    assert total_share >= 1 - 1e-12
    assert report.estimate >= report.relative
    assert report.average_bits == 3.0


def test_bit_allocator_meets_the_budget() -> None:
    model, shape = _small_net(), (2, 6, 6)
    loose = tight = None
    for budget in (0.5, 0.05):
        q, report = fxpath.quantize(model, shape, "int8", per_channel=True, budget=budget)
        assert report.relative <= budget and report.margin == budget - report.relative
        assert report.margin >= 0 and report.rounds >= 1 and report.scheme == "int"
        assert {r.bits for r in report.layers.values()} <= set(range(2, 9))
        again = fxpath.path_metric(model, q, shape, dtype=torch.float64)
        assert again.value == pytest.approx(report.metric.value, rel=1e-12)
        loose, tight = (report, tight) if budget == 0.5 else (loose, report)
    assert loose.average_bits < tight.average_bits
    _, tz = fxpath.quantize(model, shape, "int8", rounding="toward_zero", budget=0.2,
                            bits=[2, 4, 8])
    assert tz.rounds == 1 and tz.exact and tz.relative <= tz.estimate <= 0.2
    assert {r.bits for r in tz.layers.values()} <= {2, 4, 8}
    with pytest.raises(fxpath.ArgumentError, match="cannot be met"):
        fxpath.quantize(model, shape, "int8", budget=1e-9)


# -- one score pass, one certificate ------------------------------------------------------------
class _Calls:
    """Counts the score passes and path-metrics of the PathPrograms (monkeypatched)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counts = {"path_magnitude": 0, "path_metric": 0}
        for name in self.counts:
            method = getattr(PathProgram, name)

            def counted(*args, _m=method, _n=name, **kwargs):
                self.counts[_n] += 1
                return _m(*args, **kwargs)

            monkeypatch.setattr(PathProgram, name, counted)


@pytest.mark.parametrize("kwargs", [{}, {"per_channel": True, "fold_bn": True, "biases": True},
                                    {"rounding": "toward_zero", "budget": 0.5}])
def test_one_score_pass_and_one_certificate(kwargs: dict,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _Calls(monkeypatch)
    _, report = fxpath.quantize(_small_net(), (2, 6, 6), "int4", **kwargs)
    assert all(r.metric is not None for r in report.layers.values())  # layer_metrics=True
    assert calls.counts == {"path_magnitude": 1, "path_metric": 1}


def _alone(model: nn.Module, q: nn.Module, layer: str, biases: bool) -> nn.Module:
    """The model with only ``layer`` quantized (its weight, and bias with ``biases``)."""
    alone = copy.deepcopy(model)
    alone.get_submodule(layer).weight.data.copy_(q.get_submodule(layer).weight)
    if biases and q.get_submodule(layer).bias is not None:
        alone.get_submodule(layer).bias.data.copy_(q.get_submodule(layer).bias)
    return alone


@pytest.mark.parametrize(("scheme", "rounding", "per_channel", "biases"), [
    ("int4", "nearest", False, False), ("int8", "nearest", True, True),
    ("float8_e4m3fn", "nearest", False, True), ("int3", "toward_zero", True, True)])
def test_layer_metrics_from_the_scores_are_the_certified_ones(
        scheme: str, rounding: str, per_channel: bool, biases: bool) -> None:
    """Each layer's metric comes from the score pass (the path-norm is affine in one layer's
    coordinates); it is the path-metric of the model with that layer alone quantized, with
    the same exactness, also where a quantized bias before a kept BatchNorm changes sign."""
    model, shape = _small_net(torch.float64), (2, 6, 6)
    before = snapshot(model)  # float64 weights: blocks of them are read, never written
    q, report = fxpath.quantize(model, shape, scheme, rounding=rounding,
                                per_channel=per_channel, biases=biases)
    assert_unchanged(model, before)
    for layer, r in report.layers.items():
        d = fxpath.path_metric(model, _alone(model, q, layer, biases), shape)
        assert r.metric.value == pytest.approx(d.value, rel=1e-12), layer
        assert r.metric.exact == d.exact and r.metric.norm == report.metric.norm
        assert r.estimate == pytest.approx(r.metric.relative, rel=1e-12)


def test_layer_metric_of_a_zero_gain_channel_and_of_a_shared_layer() -> None:
    """Exactness is read on the coordinates where a BatchNorm gain of 0 zeroes a channel
    (its weights may grow, the coordinates cannot), and a layer called twice (a path crosses
    it twice: not affine) is certified by its own path-metric."""
    model = nn.Sequential(nn.Conv2d(1, 2, (1, 2), bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(2, 1)).double().eval()
    with torch.no_grad():  # per channel, int8, scale 1/128: 38.6 rounds up, 38.4 down
        model[0].weight.copy_(torch.tensor([[127 / 128, 38.6 / 128], [127 / 128, 0.3]])
                              .reshape(2, 1, 1, 2))
        model[1].weight.copy_(torch.tensor([0.0, 1.0]))  # gain 0: channel 0's coordinates
    q, report = fxpath.quantize(model, (1, 1, 2), "int8", per_channel=True)
    grew = q[0].weight.abs() > model[0].weight.abs()
    assert bool(grew[0].any()) and not bool(grew[1].any())
    d = fxpath.path_metric(model, _alone(model, q, "0", False), (1, 1, 2))
    assert d.exact and report.layers["0"].metric.exact
    assert report.layers["0"].metric.value == pytest.approx(d.value, rel=1e-12)

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner, self.out = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.inner(torch.relu(self.inner(x)))))

    torch.manual_seed(0)
    twice = Twice().double().eval()
    q, report = fxpath.quantize(twice, (4,), "int3")
    for layer in ("inner", "out"):
        d = fxpath.path_metric(twice, _alone(twice, q, layer, False), (4,))
        assert report.layers[layer].metric.value == pytest.approx(d.value, rel=1e-12)


# -- the bit allocator: mixed precision where the path mass is ------------------------------
class _Branchy(nn.Module):
    """A chain carrying the path mass, and a side branch of tiny weights beside it."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.main = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                  nn.Linear(64, 4))
        self.side = nn.Linear(16, 4)
        with torch.no_grad():
            self.side.weight.mul_(1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.side(x)


def _size(model: nn.Module, bits: dict[str, int], scales: dict[str, int]) -> int:
    """Bytes of the model with the weights of ``bits`` packed, 4 per scale, 4 per other
    floating-point entry."""
    total = 0
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        layer = name.rpartition(".")[0]
        if name.endswith(".weight") and layer in bits:
            total += -(-t.numel() * bits[layer] // 8) + 4 * scales[layer]
        else:
            total += 4 * t.numel()
    return total


@pytest.mark.parametrize("per_channel", [False, True])
def test_report_gives_the_size_against_float32(per_channel: bool) -> None:
    model = _small_net()
    q, report = fxpath.quantize(model, (2, 6, 6), "int4", per_channel=per_channel)
    floats = sum(t.numel() for t in model.state_dict().values() if t.is_floating_point())
    assert report.float32_bytes == 4 * floats
    scales = {k: r.scale.numel() for k, r in report.layers.items()}
    assert scales["0"] == (6 if per_channel else 1)
    expected = _size(model, dict.fromkeys(report.layers, 4), scales)
    assert report.size_bytes == expected  # 4 bits: half a byte per weight
    assert report.compression == pytest.approx(report.float32_bytes / expected)


def test_allocator_narrows_the_layer_with_little_path_mass() -> None:
    model, shape = _Branchy().eval(), (16,)
    scores = fxpath.path_magnitude(model, shape)
    assert float(scores["side.weight"].sum()) < 1e-2 < float(scores["main.0.weight"].sum())
    _, uniform = fxpath.quantize(model, shape, "int8")
    # room to spare over uniform int8: the side branch goes narrow, the chain stays at 8
    _, mixed = fxpath.quantize(model, shape, "int8", budget=1.2 * uniform.relative)
    assert mixed.relative <= 1.2 * uniform.relative and mixed.rounds == 1
    assert mixed.layers["side"].bits < 8 and mixed.size_bytes < uniform.size_bytes
    # wider grids allowed: at no more than uniform int8's certified metric, a smaller model
    _, wide = fxpath.quantize(model, shape, "int8", budget=uniform.relative,
                              bits=range(2, 17))
    assert wide.relative <= uniform.relative and wide.size_bytes < uniform.size_bytes
    assert wide.layers["side"].bits < 8 < max(r.bits for r in wide.layers.values())
    sizes = {k: r.numel for k, r in wide.layers.items()}
    bits = {k: r.bits for k, r in wide.layers.items()}
    assert wide.average_bits == pytest.approx(
        sum(sizes[k] * bits[k] for k in bits) / sum(sizes.values()))


def test_allocator_aims_below_a_missed_budget_by_the_factor_it_missed() -> None:
    """A certificate a hair above the budget (the estimate misses the higher-order terms)
    does not send the allocation back to the widest bits everywhere."""
    model, shape = _Branchy().eval(), (16,)
    widths, seen = (2, 4, 6, 8), []
    plan = Plan(False, "nearest")
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    scores = prog.path_magnitude()
    targets = find_targets(prog, False, scores)
    estimates = price(prog, targets, scores, plan, widths)

    def certify_stub(layers: dict) -> tuple[nn.Module, PathMetric]:
        bits = {k: int(v.scheme[3:]) for k, v in layers.items()}
        seen.append(bits)
        estimated = sum(estimates[k][b] for k, b in bits.items())
        relative = estimated * 1.001  # the certificate, a little above the estimate
        if len(seen) == 1:  # the first allocation: missed by a hair
            relative = max(relative, budget * 1.001)
        return model, PathMetric(math.log2(relative), False, PathNorm(1.0, 0.0))

    widest = sum(e[8] for e in estimates.values())
    budget = widest * 1.05
    _, _, metric, rounds = fit_budget(prog, targets, scores, plan, budget, widths,
                                      certify_stub)
    assert rounds == 2 and metric.relative <= budget and seen[0]["side"] < 8
    assert seen[1] != dict.fromkeys(estimates, 8) and seen[1]["side"] < 8


def test_float16_model_stores_in_its_own_dtype() -> None:
    model = _small_net(torch.float16)
    q, report = fxpath.quantize(model, (2, 6, 6), "bfloat16", rounding="toward_zero")
    assert all(p.dtype == torch.float16 for p in q.parameters())
    assert report.exact
    for w, v in zip(model.parameters(), q.parameters()):
        assert bool((v.abs() <= w.abs()).all())


# -- torchao -----------------------------------------------------------------------------------
def _torchao_configs() -> list:
    quant = pytest.importorskip("torchao.quantization")
    from torchao.quantization.granularity import PerAxis, PerGroup

    return [quant.Int8WeightOnlyConfig(),
            quant.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerAxis(0)),
            quant.IntxWeightOnlyConfig(weight_dtype=torch.int2, granularity=PerGroup(8)),
            quant.Float8WeightOnlyConfig()]


def test_torchao_weight_only_configs_are_certified() -> None:
    quant = pytest.importorskip("torchao.quantization")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    model = randomize_batchnorm(model).eval()
    shape = (3, 8, 8)
    x = torch.randn(256, *shape) * 2
    for config in _torchao_configs():
        q = copy.deepcopy(model)
        quant.quantize_(q, config)
        assert type(q[5].weight) is not nn.Parameter  # torchao's tensor subclass
        metric = fxpath.quantize.certify(model, q, shape)  # the same function as `certify`
        state = {k: (v.dequantize() if k in ("5.weight", "7.weight") else v)
                 for k, v in q.state_dict().items()}
        assert metric.value == pytest.approx(
            fxpath.path_metric(model, state, shape, dtype=torch.float64).value, rel=1e-12)
        with torch.no_grad():  # torchao's own kernels, in float32
            a, b = model(x), q(x)
        measured = (a.double() - b.double()).abs().sum(1)
        slack = 1e-5 * (a.abs().sum(1) + b.abs().sum(1)).double()
        bound = fxpath.lipschitz_bound(model, state, x)
        assert bool((measured <= bound + slack).all()), type(config).__name__
        assert metric.value > 0 and not metric.exact
