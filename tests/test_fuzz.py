"""Property-based fuzzing of the public API: malformed arguments of every kind give a correct
result or an `FxPathError`, never a raw exception, and never change the model.

Each test draws ``FXPATH_FUZZ_EXAMPLES`` argument combinations (default 40; CI's bounded run).
"""

from __future__ import annotations

import copy
import math
import os
from collections import Counter
from typing import Any

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_readonly import assert_unchanged, snapshot

import fxpath

EXAMPLES = int(os.environ.get("FXPATH_FUZZ_EXAMPLES", "40"))
SHAPE = (3, 6, 6)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _net(out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, out)).eval()


MODEL = _net()

# -- strategies: plausible values, their near misses and junk -------------------------------
def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` two times in three, else ``bad``: both outcomes get exercised."""
    return st.integers(0, 2).flatmap(lambda i: good if i else bad)


junk = st.one_of(st.none(), st.booleans(), st.text(max_size=4), st.just(object()),
                 st.just([]), st.just({}), st.builds(torch.zeros, st.integers(0, 3)))
numbers = st.one_of(st.integers(-3, 5), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, 2, 0.5, 1e-300, 1e300]))
dims = st.lists(st.one_of(st.integers(-2, 9), st.floats(0, 9), st.sampled_from([3, 6])),
                max_size=5)
shapes = mostly(st.sampled_from([SHAPE, list(SHAPE), torch.Size(SHAPE), [SHAPE]]),
                st.one_of(st.just((1, *SHAPE)), st.just(SHAPE[1:]), st.just((4, 6, 6)),
                          dims.map(tuple), dims, st.lists(st.just(SHAPE), min_size=2,
                                                          max_size=2),
                          numbers, junk, st.just(torch.tensor(SHAPE))))
dtypes = mostly(st.sampled_from([None, torch.float32, torch.float64]),
                st.sampled_from([torch.float16, torch.bfloat16, torch.int64, torch.bool,
                                 "float32", 64]))
devices = mostly(st.sampled_from([None, "cpu", torch.device("cpu")]),
                 st.sampled_from(["cuda", "cuda:7", "meta", "nowhere", 3]))
qs = mostly(st.sampled_from([1, 2, 1.0, 0.5, 3.5]), numbers | junk)


def _other_models() -> st.SearchStrategy:
    same = copy.deepcopy(MODEL)
    with torch.no_grad():
        same[5].weight.mul_(0.5)
    sd = same.state_dict()
    bad_sd = {**sd, "5.weight": torch.zeros(3, 35)}
    extra_sd = {**sd, "9.weight": torch.zeros(3, 3)}
    nan_sd = {**sd, "0.bias": torch.full((4,), math.nan)}
    return mostly(st.sampled_from([same, sd, copy.deepcopy(MODEL)]),
                  st.sampled_from([bad_sd, extra_sd, nan_sd, _net(out=4),
                                   nn.Sequential(nn.Linear(3, 3)), nn.Module(), {"x": 1}, None,
                                   3, "model", [1, 2]]))


others = _other_models()
batches = mostly(
    st.builds(lambda n, scale: torch.randn(n, *SHAPE) * scale, st.integers(1, 3),
              st.sampled_from([0.1, 1.0, 100.0])),
    st.one_of(st.builds(lambda n, s: torch.randn(n, *s), st.integers(0, 3),
                        st.sampled_from([SHAPE[1:], (3, 5, 5), ()])),
              st.builds(lambda n: torch.full((n, *SHAPE), math.nan), st.integers(1, 2)),
              st.just(torch.ones(2, *SHAPE, dtype=torch.long)), st.just([[1.0, 2.0]]), junk))


OUTCOMES: Counter[tuple[str, str]] = Counter()


def _ok(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """``fn(...)``'s result, or ``None`` when it raised an `FxPathError` (anything else
    propagates and fails the test)."""
    name = getattr(fn, "__name__", "?")
    try:
        out = fn(*args, **kwargs)
    except fxpath.FxPathError as exc:
        OUTCOMES[name, type(exc).__name__] += 1
        return None
    OUTCOMES[name, "ok"] += 1
    return out


def _checked(fn: Any, *args: Any, **kwargs: Any) -> Any:
    before = snapshot(MODEL)
    out = _ok(fn, *args, **kwargs)
    assert_unchanged(MODEL, before)
    return out


@FUZZ
@given(shape=shapes, q=qs, dtype=dtypes, fold=st.sampled_from([True, False, None]))
def test_path_norm(shape: Any, q: Any, dtype: Any, fold: Any) -> None:
    norm = _checked(fxpath.path_norm, MODEL, shape, q, dtype=dtype, fold_bn=fold)
    if norm is not None:
        assert math.isfinite(norm.log2) and norm.q == float(q) > 0


@FUZZ
@given(shape=shapes, dtype=dtypes, device=devices, interior=st.sampled_from([None, True, False]),
       graphs=st.sampled_from([None, True, False]))
def test_compile(shape: Any, dtype: Any, device: Any, interior: Any, graphs: Any) -> None:
    prog = _checked(fxpath.compile, MODEL, shape, dtype=dtype, device=device,
                    interior=interior, cuda_graphs=graphs)
    if prog is not None and prog.device.type == "cpu":
        assert _checked(prog.path_norm) is not None


@FUZZ
@given(other=others, shape=shapes, dtype=dtypes)
def test_path_metric(other: Any, shape: Any, dtype: Any) -> None:
    metric = _checked(fxpath.path_metric, MODEL, other, shape, dtype=dtype)
    if metric is not None:
        assert math.isfinite(metric.log2) or metric.log2 == -math.inf


@FUZZ
@given(other=others, x=batches)
def test_lipschitz_bound(other: Any, x: Any) -> None:
    bound = _checked(fxpath.lipschitz_bound, MODEL, other, x)
    if bound is not None:
        assert bound.shape == (x.shape[0],) and bool((bound >= 0).all())


@FUZZ
@given(shape=shapes, dtype=dtypes)
def test_path_magnitude(shape: Any, dtype: Any) -> None:
    scores = _checked(fxpath.path_magnitude, MODEL, shape, dtype=dtype)
    if scores is not None:
        assert all(bool(((s >= 0) & (s <= 1 + 1e-6)).all()) for s in scores.values())


@FUZZ
@given(shape=shapes, n_train=mostly(st.integers(1, 10**7), numbers | junk),
       bound=mostly(st.sampled_from([0.5, 1, 2.64, 255.0]), numbers | junk))
def test_generalization_bound(shape: Any, n_train: Any, bound: Any) -> None:
    report = _checked(fxpath.generalization_bound, MODEL, shape, n_train, input_bound=bound)
    if report is not None:
        assert report.ingredients.depth == 2 and math.isfinite(report.log10_bound)
        assert 0 < report.sharpened_factor <= report.factor


_PROG = fxpath.compile(MODEL, SHAPE)
_NORM = _PROG.path_norm().log2


@FUZZ
@given(q=qs, diff=mostly(st.booleans(), junk), neurons=mostly(st.booleans(), junk),
       out=st.one_of(st.none(), junk, st.just({"0.weight": torch.zeros(5)})), other=others,
       base=others, name=mostly(st.sampled_from(["0.weight", "5.bias", "1.running_var"]),
                                st.one_of(st.just("nope"), junk)),
       mode=mostly(st.sampled_from(["norm", "diff"]), junk))
def test_program_methods(q: Any, diff: Any, neurons: Any, out: Any, other: Any, base: Any,
                         name: Any, mode: Any) -> None:
    """Every method of one compiled program; after each malformed call it still answers."""
    _checked(_PROG.path_norm, q, differentiable=diff)
    _checked(_PROG.path_magnitude, neurons=neurons, out=out)
    _checked(_PROG.path_metric, other, base=base)
    _checked(_PROG.coordinates, other)
    _checked(_PROG.magnitudes, q)
    _checked(_PROG.parameter, name)
    _checked(_PROG.path_network, q, mode=mode)
    assert _PROG.path_norm().log2 == _NORM


@FUZZ
@given(amount=mostly(st.floats(0, 1), numbers | junk),
       criterion=mostly(st.sampled_from(["path_magnitude", "magnitude"]),
                        st.sampled_from(["l1", None, 3])),
       scope=mostly(st.sampled_from(["global", "layer"]), st.sampled_from(["all", None])),
       steps=mostly(st.integers(1, 2), st.one_of(st.integers(-1, 0), junk)),
       prunable=mostly(st.sampled_from([None, ["5.weight"], ("0.weight", "5.weight")]),
                       st.one_of(st.just(["nope"]), st.just("5.weight"), junk)),
       dtype=dtypes)
def test_prune(amount: Any, criterion: Any, scope: Any, steps: Any, prunable: Any,
               dtype: Any) -> None:
    model = copy.deepcopy(MODEL)
    before = snapshot(model)
    report = _ok(fxpath.prune, model, amount, SHAPE, criterion=criterion, scope=scope,
                 steps=steps, prunable=prunable, dtype=dtype)
    if report is None:
        assert_unchanged(model, before)
    else:
        assert report.metric.exact and 0 <= report.overall_sparsity <= 1


@settings(FUZZ, max_examples=max(8, EXAMPLES // 4))  # each call builds Torch-Pruning's graph
@given(amount=mostly(st.sampled_from([0.25, 0.5]), numbers | junk),
       shape=mostly(st.just(SHAPE), shapes),
       criterion=mostly(st.sampled_from(["path_magnitude", "l1", "bn_scale"]),
                        st.sampled_from(["magnitude", None, 3])),
       scope=mostly(st.sampled_from(["global", "layer"]), st.sampled_from(["all", None])),
       ignored=mostly(st.sampled_from([(), ["0"], [MODEL[0]]]),
                      st.one_of(st.just(["nope"]), st.just(3), st.just([nn.ReLU()]), junk)),
       round_to=mostly(st.sampled_from([None, 1, 2]), st.one_of(st.integers(-1, 0), junk)),
       dtype=dtypes)
def test_prune_channels(amount: Any, shape: Any, criterion: Any, scope: Any, ignored: Any,
                        round_to: Any, dtype: Any) -> None:
    pytest.importorskip("torch_pruning")
    out = _checked(fxpath.prune_channels, MODEL, amount, shape, criterion=criterion,
                   scope=scope, ignored_layers=ignored, round_to=round_to, dtype=dtype)
    if out is not None:
        small, report = out
        assert report.metric.exact and report.params[1] <= report.params[0]
        assert small(torch.randn(2, *SHAPE)).shape == (2, 3)


@FUZZ
@given(shape=shapes, factors=mostly(st.lists(st.sampled_from([0.5, 1.0, 8.0, 4096.0]),
                                            min_size=1, max_size=3),
                                   st.one_of(st.lists(numbers, max_size=3), junk)),
       seed=mostly(st.integers(-5, 5), junk))
def test_rescale(shape: Any, factors: Any, seed: Any) -> None:
    twin = _checked(fxpath.rescale, MODEL, shape, factors=factors, seed=seed)
    if twin is not None:
        assert fxpath.path_norm(twin, SHAPE).log2 == pytest.approx(_NORM, rel=1e-5)


@pytest.mark.parametrize("junk_model", [None, 3, "resnet18", nn.Module(), nn.ReLU(),
                                        torch.zeros(3)])
def test_models_that_are_not_networks(junk_model: Any) -> None:
    for fn in (lambda: fxpath.compile(junk_model, SHAPE),
               lambda: fxpath.path_norm(junk_model, SHAPE),
               lambda: fxpath.path_metric(junk_model, MODEL, SHAPE),
               lambda: fxpath.generalization_bound(junk_model, SHAPE, 10),
               lambda: fxpath.prune(junk_model, 0.5, SHAPE),
               lambda: fxpath.prune_channels(junk_model, 0.5, SHAPE),
               lambda: fxpath.rescale(junk_model, SHAPE)):
        with pytest.raises(fxpath.FxPathError):
            fn()


def test_zz_both_outcomes_were_reached() -> None:
    """The strategies reach real results as well as refusals (runs after the fuzz tests)."""
    if not OUTCOMES:
        pytest.skip("run with the fuzz tests")
    for fn in ("path_norm", "compile", "path_metric", "lipschitz_bound", "path_magnitude",
               "prune", "rescale", "generalization_bound", "prune_channels"):
        assert OUTCOMES[fn, "ok"] > 0, (fn, dict(OUTCOMES))
        assert sum(v for (f, k), v in OUTCOMES.items() if f == fn and k != "ok") > 0, fn
    if os.environ.get("FXPATH_FUZZ_REPORT"):
        print("\nfuzz outcomes:", sorted(OUTCOMES.items()))
