"""The cases a new user met on a fresh clone: each answered wrongly or with a raw exception
before, each right or an `FxPathError` now."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn as nn
import torchvision
from bruteforce import cases, oracle

import fxpath
from fxpath.errors import ArchitectureMismatchError, ArgumentError, NonFiniteError
from fxpath.quantities import metric as metric_module

SMALL = (3, 32, 32)


def _mlp(depth: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)]
    for _ in range(depth - 2):
        layers += [nn.ReLU(), nn.Linear(5, 5)]
    return nn.Sequential(*layers).eval()


def _sharing_prefix(small: nn.Module, big: nn.Module) -> nn.Module:
    """``big`` with every parameter that ``small`` also has (same name and shape) copied in."""
    big = copy.deepcopy(big)
    own = small.state_dict()
    with torch.no_grad():
        for name, t in big.state_dict().items():
            if name in own and own[name].shape == t.shape:
                t.copy_(own[name])
    return big


@pytest.mark.parametrize("order", ["small_first", "big_first"])
def test_deeper_resnet_sharing_the_first_layers_is_refused(order: str) -> None:
    torch.manual_seed(0)
    r18 = torchvision.models.resnet18(num_classes=10).eval()
    r34 = _sharing_prefix(r18, torchvision.models.resnet34(num_classes=10).eval())
    a, b = (r18, r34) if order == "small_first" else (r34, r18)
    with pytest.raises(ArchitectureMismatchError, match="not of one network: layer"):
        fxpath.path_metric(a, b, SMALL)
    x = torch.randn(4, *SMALL)
    with pytest.raises(ArchitectureMismatchError):
        fxpath.lipschitz_bound(a, b, x)
    # the bound would have been 0 while the outputs differ: that is what must never happen
    with torch.no_grad():
        assert float((r18(x) - r34(x)).abs().sum()) > 0


@pytest.mark.parametrize("order", ["small_first", "big_first"])
def test_mlps_of_different_depth_are_refused(order: str) -> None:
    two = _mlp(2)
    three = _sharing_prefix(two, _mlp(3, seed=1))
    a, b = (two, three) if order == "small_first" else (three, two)
    with pytest.raises(ArchitectureMismatchError, match="more layer|layer 4"):
        fxpath.path_metric(a, b, (6,))
    with pytest.raises(ArchitectureMismatchError):
        fxpath.compile(a, (6,)).path_metric(b.state_dict())


def test_data_edit_is_seen_by_a_compiled_program() -> None:
    model = _mlp(3)
    prog = fxpath.compile(model, (6,), dtype=torch.float64)
    before = prog.path_norm().value
    scores_before = prog.path_magnitude()["0.weight"].clone()
    model[0].weight.data.mul_(0)  # no version-counter bump
    fresh = fxpath.compile(model, (6,), dtype=torch.float64)
    assert prog.path_norm().value == fresh.path_norm().value != before
    assert torch.equal(prog.path_magnitude()["0.weight"], fresh.path_magnitude()["0.weight"])
    assert not torch.equal(prog.path_magnitude()["0.weight"], scores_before)


@pytest.mark.parametrize("edit", ["one_weight", "bias_only", "none"])
def test_metric_reuses_the_norm_only_of_the_same_magnitudes(
        edit: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The path-metric reuses the last path-norm when the live model's magnitudes are
    unchanged bit for bit; any edit, however small, is seen."""
    model = _mlp(3)
    prog = fxpath.compile(model, (6,), dtype=torch.float64)
    twin = copy.deepcopy(model)
    with torch.no_grad():  # same signs, not dominated: the metric needs the model's norm
        for p in twin.parameters():
            p.mul_(torch.linspace(0.5, 1.5, p.numel(), dtype=p.dtype).view(p.shape))
    prog.path_norm()
    with torch.no_grad():
        if edit == "one_weight":
            w = model[2].weight.view(-1)
            w[3] = torch.nextafter(w[3], w[3] * 2)
        elif edit == "bias_only":
            model[0].bias[1] *= 1.25  # same sign: the metric stays a same-sign bound
    calls = []
    norm = metric_module.path_norm  # the metric's own path-norm pass
    monkeypatch.setattr(metric_module, "path_norm",
                        lambda *a, **k: calls.append(a) or norm(*a, **k))
    metric = prog.path_metric(twin)
    assert not metric.exact and len(calls) == (edit != "none")
    fresh = fxpath.compile(model, (6,), dtype=torch.float64)
    assert metric.norm.log2 == fresh.path_norm().log2
    assert metric.value == fresh.path_metric(twin).value


def test_float64_model_is_computed_in_float64() -> None:
    case = cases.ALL_FACTORIES["conv_bn_fold"]()
    expected = oracle.path_norm(case.build(case.module), 1.0)
    prog = fxpath.compile(case.module, case.input_shape, fold_bn=case.module.fold_bn)
    assert prog.dtype == torch.float64
    assert prog.path_norm().value == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_models_are_computed_in_float32(dtype: torch.dtype) -> None:
    model = _mlp(3).to(dtype)
    prog = fxpath.compile(model, (6,))
    assert prog.dtype == torch.float32
    exact = fxpath.compile(model.double(), (6,)).path_norm().value  # the same stored values
    assert prog.path_norm().value == pytest.approx(exact, rel=1e-6)


def _nan_cases() -> dict[str, tuple[nn.Module, str]]:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3),
                         nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    cases = {}
    for name, value, where in [("weight_nan", math.nan, "3.weight"),
                               ("weight_inf", math.inf, "7.weight"),
                               ("running_var_nan", math.nan, "1.running_var"),
                               ("running_mean_inf", -math.inf, "4.running_mean"),
                               ("running_var_negative", -2.0, "4.running_var")]:
        m = copy.deepcopy(conv).eval()
        with torch.no_grad():
            m.get_parameter(where) if where.endswith("weight") else None
            t = m.state_dict(keep_vars=True)[where]
            t.view(-1)[1] = value
        cases[name] = (m, where)
    return cases


NAN_CASES = _nan_cases()


@pytest.mark.parametrize("case", sorted(NAN_CASES))
@pytest.mark.parametrize("call", ["norm", "norm2", "scores", "neurons", "metric_other",
                                  "differentiable", "prune"])
def test_non_finite_parameters_are_named(case: str, call: str) -> None:
    model, where = NAN_CASES[case]
    model = copy.deepcopy(model)
    clean = _clean(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fns = {
        "norm": lambda: fxpath.path_norm(model, (3, 8, 8)),
        "norm2": lambda: fxpath.compile(model, (3, 8, 8)).path_norm(2),
        "scores": lambda: fxpath.path_magnitude(model, (3, 8, 8)),
        "neurons": lambda: fxpath.compile(model, (3, 8, 8)).path_magnitude(neurons=True),
        "metric_other": lambda: fxpath.path_metric(clean, model, (3, 8, 8)),
        "differentiable": lambda: fxpath.compile(model, (3, 8, 8)).path_norm(
            differentiable=True),
        "prune": lambda: fxpath.prune(model, 0.5, (3, 8, 8)),
    }
    with pytest.raises(NonFiniteError, match=where.replace(".", r"\.")) as info:
        fns[call]()
    assert any(where in n for n in info.value.names)
    _assert_same_state(model, state)
    assert not any(k.endswith("_mask") for k in model.state_dict())


def _clean(model: nn.Module) -> nn.Module:
    clean = copy.deepcopy(model)
    with torch.no_grad():
        for t in clean.state_dict(keep_vars=True).values():
            if t.is_floating_point():
                t.copy_(torch.where(torch.isfinite(t), t, torch.ones_like(t)).abs())
    return clean


def _assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k].nan_to_num(), v.nan_to_num()), k


def test_norm_beyond_float64_from_finite_weights_is_not_an_error() -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(40):
        layers += [nn.Linear(16, 16, bias=False), nn.ReLU()]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.rand(16, 16) * 1e9 + 1e8)
    norm = fxpath.path_norm(model, (16,), dtype=torch.float32)
    assert math.isinf(norm.value) and math.isfinite(norm.log10) and norm.log10 > 308
    scores = fxpath.path_magnitude(model, (16,))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())


def test_envelope_of_different_sizes_is_an_architecture_error() -> None:
    a = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)).eval()
    b = nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 5)).eval()
    with pytest.raises(ArchitectureMismatchError, match="0"):
        fxpath.path_metric(a, b, (6,))
    with pytest.raises(ArchitectureMismatchError, match=r"shape \(9, 6\).*reads \(8, 6\)"):
        fxpath.compile(a, (6,)).path_metric(b.state_dict())


@pytest.mark.parametrize("kwargs, match", [
    ({"q": "a"}, "q must be a number"),
    ({"q": math.inf}, "q=inf"),
    ({"q": -1.0}, "q must be a finite number > 0"),
    ({"q": math.nan}, "q must be a finite number > 0"),
    ({"q": True}, "q must be a number"),
    ({"input_shape": 224}, "got the int 224"),
    ({"input_shape": torch.zeros(3)}, r"x.shape\[1:\]"),
    ({"input_shape": (3, 0, 0)}, "positive"),
    ({"input_shape": (3, -1, 8)}, "positive"),
    ({"input_shape": (3, 8.0, 8)}, "integers"),
    ({"input_shape": ()}, "empty"),
    ({"input_shape": "3x8x8"}, "per-sample shape"),
    ({"input_shape": (1, 3, 8, 8)}, "drop the batch dimension, i.e. input_shape=\\(3, 8, 8\\)"),
    ({"input_shape": (8, 8)}, "add the channel dimension, i.e. input_shape=\\(3, 8, 8\\)"),
    ({"input_shape": (1, 8, 8)}, "expects 3 input channels"),
    ({"dtype": torch.float16}, "dtype must be torch.float32 or torch.float64"),
])
def test_malformed_arguments_say_what_to_change(kwargs: dict, match: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 2)).eval()
    args = {"input_shape": (3, 8, 8), **kwargs}
    with pytest.raises(ArgumentError, match=match):
        fxpath.path_norm(model, **args)


def test_lipschitz_bound_checks_x() -> None:
    model = _mlp(2)
    twin = copy.deepcopy(model)
    with pytest.raises(ArgumentError, match="batch tensor"):
        fxpath.lipschitz_bound(model, twin, [[1.0] * 6])
    with pytest.raises(ArgumentError, match="unsqueeze"):
        fxpath.lipschitz_bound(model, twin, torch.ones(6))
    with pytest.raises(ArgumentError, match="floating"):
        fxpath.lipschitz_bound(model, twin, torch.ones(2, 6, dtype=torch.long))
    x = torch.ones(3, 6)
    x[1, 2] = math.nan
    with pytest.raises(NonFiniteError, match=r"samples \[1\]"):
        fxpath.lipschitz_bound(model, twin, x)


@pytest.mark.parametrize("amount", [-0.1, 1.5, math.nan, "half", True])
def test_prune_amount_is_checked(amount: object) -> None:
    model = _mlp(2)
    with pytest.raises(ArgumentError, match="amount"):
        fxpath.prune(model, amount, (6,))  # type: ignore[arg-type]


def test_train_mode_without_batchnorm_is_analysed_and_left_in_train_mode() -> None:
    model = _mlp(3).train()
    norm = fxpath.path_norm(model, (6,))
    assert model.training and all(m.training for m in model.modules())
    assert norm.value == fxpath.path_norm(copy.deepcopy(model).eval(), (6,)).value


def test_train_mode_batchnorm_uses_running_statistics() -> None:
    case = cases.ALL_FACTORIES["conv_bn_fold"]()
    expected = fxpath.path_norm(case.module.eval(), case.input_shape).value
    case.module.train()
    first = next(m for m in case.module.modules() if isinstance(m, nn.BatchNorm2d))
    first.training = False  # mixed flags are restored one by one
    assert fxpath.path_norm(case.module, case.input_shape).value == expected
    assert case.module.training and not first.training
    assert sum(m.training for m in case.module.modules()) == len(list(case.module.modules())) - 1
