"""The l^1 path-metric and the Lipschitz bound: exact on pruned pairs, never violated."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from bruteforce import cases, oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fxpath

FACTORIES = ["mlp_with_bias", "conv_bn_fold", "conv_bn_nofold", "residual_add_fold", "pools",
             "bn_after_concat", "activations_relu6", "activations_leaky", "activations_prelu",
             "learnable_affine_net", "padded_net", "derived_weights_net"]
EXAMPLES = int(os.environ.get("FXPATH_HYPOTHESIS_EXAMPLES", "150"))
_PROGRAMS: dict[str, tuple] = {}


def _case(name: str):
    if name not in _PROGRAMS:
        case = cases.ALL_FACTORIES[name]()
        prog = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                              fold_bn=case.module.fold_bn)
        _PROGRAMS[name] = (case, prog)
    return _PROGRAMS[name]


def _perturb(module: torch.nn.Module, kind: str, seed: int) -> torch.nn.Module:
    """A twin of ``module``: pruned, shrunk, same-sign rescaled, or with signs flipped.

    Pruning and shrinking touch conv/linear weights only: shrinking a BatchNorm bias can grow
    the folded bias ``s * (c - mean) + b``, so the pair would not be dominated.
    """
    gen = torch.Generator().manual_seed(seed)
    twin = copy.deepcopy(module)
    dominated = kind in ("prune", "shrink")
    with torch.no_grad():
        for name, p in twin.named_parameters():
            owner = twin.get_submodule(name.rpartition(".")[0])
            if dominated and not (name.endswith("weight") and isinstance(
                    owner, (torch.nn.Conv2d, torch.nn.Linear))):
                continue
            u = torch.rand(p.shape, generator=gen, dtype=p.dtype)
            if kind == "prune":
                p.mul_((u > 0.4).to(p.dtype))
            elif kind == "shrink":  # rounding toward zero: dominated, same signs
                p.mul_(u)
            elif kind == "same_sign":
                p.mul_(2 * u)
            else:
                flip = torch.where(u < 0.3, -1.0, 1.0).to(p.dtype)
                p.mul_(flip * (0.5 + u))
    return twin


def test_factory_names_exist() -> None:
    assert set(FACTORIES) <= set(cases.ALL_FACTORIES)


# zeroing or shrinking the parameters of a standardized or weight-normalized layer does not
# zero or shrink its effective weights: such pairs are not dominated (and are bounded, below)
#: padded_net's 334k paths take seconds to enumerate: its dominated pairs run in the slow tier
#: (its other pairs stay in the default one)
DOMINATED = [pytest.param(name, marks=pytest.mark.slow) if name == "padded_net" else name
             for name in FACTORIES if name != "derived_weights_net"]


@pytest.mark.parametrize("name", DOMINATED)
@pytest.mark.parametrize("kind", ["prune", "shrink"])
def test_dominated_pairs_are_exact(name: str, kind: str) -> None:
    case, prog = _case(name)
    base = oracle.path_lifting(case.build(case.module))  # enumerated once for the 3 twins
    for seed in range(3):
        twin = _perturb(case.module, kind, seed)
        metric = prog.path_metric(twin)
        assert metric.exact
        expected = oracle.path_metric(base, case.build(twin))
        assert metric.value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("kind", ["prune", "shrink"])
def test_pairs_of_derived_weights_get_the_exactness_of_their_effective_weights(
        kind: str) -> None:
    case, prog = _case("derived_weights_net")
    for seed in range(3):
        twin = _perturb(case.module, kind, seed)
        metric = prog.path_metric(twin)
        a, b = prog.coordinates(), prog.coordinates(twin)
        dominated = all(bool(((b[k].abs() <= a[k].abs()) & (a[k] * b[k] >= 0)).all())
                        for k in a)
        assert metric.exact == dominated
        expected = oracle.path_metric(case.build(case.module), case.build(twin))
        assert metric.value >= expected * (1 - 1e-12)
        if metric.exact:
            assert metric.value == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", FACTORIES)
@pytest.mark.parametrize("kind", ["same_sign", "mixed_sign"])
def test_other_pairs_get_a_certified_upper_bound(name: str, kind: str) -> None:
    case, prog = _case(name)
    base = oracle.path_lifting(case.build(case.module))  # enumerated once for the 3 twins
    for seed in range(3):
        twin = _perturb(case.module, kind, seed)
        metric = prog.path_metric(twin)
        assert not metric.exact
        expected = oracle.path_metric(base, case.build(twin))
        assert metric.value >= expected * (1 - 1e-12)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(FACTORIES),
       kind=st.sampled_from(["prune", "shrink", "same_sign", "mixed_sign"]),
       seed=st.integers(0, 10_000), log_scale=st.floats(-3.0, 4.0))
def test_lipschitz_bound_is_never_violated(name: str, kind: str, seed: int,
                                           log_scale: float) -> None:
    case, prog = _case(name)
    twin = _perturb(case.module, kind, seed)
    d = prog.path_metric(twin).value
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((8, *case.input_shape), generator=gen, dtype=torch.float64)
    x = x * 10.0 ** log_scale
    with torch.no_grad():
        ra, rb = case.module(x), twin(x)
    ra = torch.cat([t.flatten(1) for t in (ra if isinstance(ra, tuple) else (ra,))], 1)
    rb = torch.cat([t.flatten(1) for t in (rb if isinstance(rb, tuple) else (rb,))], 1)
    measured = (ra - rb).abs().sum(1)
    bound = x.flatten(1).abs().amax(1).clamp(min=1.0) * d
    assert bool((measured <= bound * (1 + 1e-9) + 1e-12).all())


def test_lipschitz_bound_api_and_relative_precision() -> None:
    """A pruned coordinate of a ResNet moves the metric by ~1e-6 of a 1e30 norm: the metric
    keeps its relative precision in float32 (it is never formed as a difference of norms)."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    shape = (3, 32, 32)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.layer2[0].conv1.weight[3, 7, 1, 1] = 0.0
    m32 = fxpath.path_metric(model, twin, shape)
    m64 = fxpath.path_metric(model, twin, shape, dtype=torch.float64)
    assert m32.exact and m64.exact
    assert m32.relative < 1e-4
    assert m32.value == pytest.approx(m64.value, rel=1e-5)
    score = fxpath.path_magnitude(model, shape, dtype=torch.float64)["layer2.0.conv1.weight"]
    assert m64.relative == pytest.approx(score[3, 7, 1, 1].item(), rel=1e-9)
    x = torch.randn(5, *shape) * 3
    bound = fxpath.lipschitz_bound(model, twin, x)
    assert bound.shape == (5,) and bound.dtype == torch.float64
    with torch.no_grad():
        measured = (model(x) - twin(x)).abs().sum(1).double()
    assert bool((measured <= bound).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tiny_weights_of_opposite_signs_are_not_called_the_same_sign(
        dtype: torch.dtype) -> None:
    """``1e-30 * -1e-30`` underflows to -0.0 in float32: a sign test on the product would
    certify 0, exactly, for two different networks."""
    case = cases.ALL_FACTORIES["mlp_with_bias"]()
    module = case.module.to(dtype)
    twin = copy.deepcopy(module)
    tiny = torch.finfo(dtype).tiny ** 0.75  # its square underflows
    name, p = next((n, p) for n, p in module.named_parameters() if p.dim() == 2)
    with torch.no_grad():
        p.view(-1)[0] = tiny
        dict(twin.named_parameters())[name].view(-1)[0] = -tiny
    metric = fxpath.compile(module, case.input_shape, dtype=dtype).path_metric(twin)
    expected = oracle.path_metric(case.build(module.double()), case.build(twin.double()))
    assert expected > 0 and not metric.exact
    assert metric.value >= expected * (1 - 1e-5)
