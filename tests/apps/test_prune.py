"""Pruning through torch.nn.utils.prune with an exact certified path-metric."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.utils.prune as torch_prune
import torchvision
from bruteforce import cases, oracle
from conftest import randomize_batchnorm

import fxpath
from fxpath import FxPathError


@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.resnet18(num_classes=10)).eval()


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsity_masks_and_exact_metric(resnet: torch.nn.Module, scope: str) -> None:
    model = copy.deepcopy(resnet)
    shape = (3, 32, 32)
    before = fxpath.path_norm(model, shape, dtype=torch.float64)
    report = fxpath.prune(model, 0.5, shape, scope=scope)
    assert report.overall_sparsity == pytest.approx(0.5, abs=1e-4)
    if scope == "layer":
        assert all(s == pytest.approx(0.5, abs=0.01) for s in report.sparsity.values())
    assert hasattr(model.conv1, "weight_orig") and hasattr(model.conv1, "weight_mask")
    assert float((model.conv1.weight == 0).float().mean()) == report.sparsity["conv1.weight"]
    assert report.metric.exact
    after = fxpath.path_norm(model, shape, dtype=torch.float64)
    assert report.metric.value == pytest.approx(before.value - after.value, rel=1e-4)
    x = torch.randn(6, *shape) * 4
    with torch.no_grad():
        moved = (resnet(x) - model(x)).abs().sum(1).double()
    bound = x.flatten(1).abs().amax(1).double().clamp(min=1) * report.metric.value
    assert bool((moved <= bound).all())
    for name in report.sparsity:
        module = model.get_submodule(name.rpartition(".")[0])
        torch_prune.remove(module, "weight")
    assert not any(k.endswith("_orig") for k in model.state_dict())
    assert fxpath.path_norm(model, shape, dtype=torch.float64).value == pytest.approx(
        after.value, rel=1e-12)


def test_pruned_metric_equals_enumeration() -> None:
    case = cases.conv_bn(fold=True)
    model = copy.deepcopy(case.module)
    report = fxpath.prune(model, 0.4, case.input_shape, dtype=torch.float64)
    assert report.metric.exact
    expected = oracle.path_metric(case.build(case.module), case.build(model))
    assert report.metric.value == pytest.approx(expected, rel=1e-9)


def test_iterative_magnitude_and_prunable_options(resnet: torch.nn.Module) -> None:
    shape = (3, 32, 32)
    iterative = copy.deepcopy(resnet)
    report = fxpath.prune(iterative, 0.8, shape, steps=3)
    assert report.overall_sparsity == pytest.approx(0.8, abs=1e-3) and report.steps == 3
    only_fc = copy.deepcopy(resnet)
    report = fxpath.prune(only_fc, 0.3, shape, prunable=["fc.weight"], criterion="magnitude")
    assert list(report.sparsity) == ["fc.weight"]
    assert not hasattr(only_fc.conv1, "weight_mask")
    kept = only_fc.fc.weight[only_fc.fc.weight != 0].abs().min()
    assert kept >= resnet.fc.weight.abs().flatten().kthvalue(int(0.3 * 5120)).values
    convs = copy.deepcopy(resnet)
    report = fxpath.prune(convs, 0.2, shape,
                          prunable=lambda n, m: isinstance(m, torch.nn.Conv2d))
    assert "fc.weight" not in report.sparsity and "conv1.weight" in report.sparsity
    with pytest.raises(FxPathError, match="amount"):
        fxpath.prune(copy.deepcopy(resnet), 1.5, shape)
    with pytest.raises(FxPathError, match="criterion"):
        fxpath.prune(copy.deepcopy(resnet), 0.5, shape, criterion="random")


@pytest.mark.parametrize("n,keep,levels", [(1000, 300, 7), (1000, 0, 7), (1000, 1000, 7),
                                           (997, 500, 1000000), (64, 1, 1), (5000, 2500, 3)])
def test_top_selection_keeps_exactly_the_largest(n: int, keep: int, levels: int) -> None:
    """The linear-time selection equals a stable sort: exactly ``keep`` entries, every kept one
    at least every dropped one, ties at the threshold to the lowest indices."""
    from fxpath.apps.prune import _top

    gen = torch.Generator().manual_seed(n + keep)
    flat = torch.randint(levels, (n,), generator=gen).to(torch.float32)  # many ties
    mask = _top(flat, keep)
    order = torch.argsort(-flat, stable=True)  # descending, ties by index
    expected = torch.zeros(n, dtype=torch.bool)
    expected[order[:keep]] = True
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("kind", ["uniform", "ties", "wide", "special", "negative"])
def test_bucketed_selection_equals_kthvalue(dtype: torch.dtype, kind: str) -> None:
    """The histogram-then-select threshold is exactly ``torch.kthvalue``'s, including ties,
    signed zeros, subnormals, infinities and values over hundreds of binades; negative input
    and other dtypes take ``kthvalue`` itself."""
    from fxpath.apps.prune import _kth_smallest

    gen = torch.Generator().manual_seed(7)
    tiny = torch.finfo(dtype).smallest_normal / 4  # a subnormal
    x = {"uniform": lambda: torch.rand(20_001, generator=gen),
         "ties": lambda: torch.randint(5, (9_999,), generator=gen).float(),
         "wide": lambda: torch.exp(torch.randn(7_777, generator=gen, dtype=torch.float64) * 30),
         "special": lambda: torch.tensor([0.0, -0.0, tiny, float("inf"), 3.0, -0.0, 0.0, 2.0]),
         "negative": lambda: torch.randn(5_000, generator=gen)}[kind]().to(dtype)
    for k in sorted({1, 2, len(x) // 3, len(x) // 2, len(x) - 1, len(x)}):
        got, want = _kth_smallest(x, k), torch.kthvalue(x, k).values
        assert torch.equal(got, want), (k, got, want)


def _state(model: torch.nn.Module) -> dict:
    """Everything pruning could leave behind: tensors bit for bit, hooks, registered names."""
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "params": [(n, id(p)) for n, p in model.named_parameters()],
        "buffers": [n for n, _ in model.named_buffers()],
        "hooks": [(n, list(m._forward_pre_hooks), list(m._forward_hooks))
                  for n, m in model.named_modules()],
        "attrs": [(n, sorted(m.__dict__)) for n, m in model.named_modules()],
        "training": [m.training for m in model.modules()],
    }


def _assert_unchanged(model: torch.nn.Module, state: dict) -> None:
    now = _state(model)
    assert now.keys() == state.keys()
    for key in ("params", "buffers", "hooks", "attrs", "training"):
        assert now[key] == state[key], key
    assert now["tensors"].keys() == state["tensors"].keys()
    for k, v in state["tensors"].items():
        assert torch.equal(now["tensors"][k], v), k


@pytest.mark.parametrize("failure", [KeyboardInterrupt, RuntimeError, FxPathError])
@pytest.mark.parametrize("where", ["metric", "second_step"])
@pytest.mark.parametrize("pre_pruned", [False, True])
def test_prune_is_atomic(monkeypatch: pytest.MonkeyPatch, resnet: torch.nn.Module,
                         failure: type, where: str, pre_pruned: bool) -> None:
    """A failure anywhere (Ctrl-C too) leaves the model exactly as it was: no masks, no hooks,
    the same parameter objects, bitwise equal tensors; a user's earlier pruning survives."""
    model = copy.deepcopy(resnet)
    handle = None
    if pre_pruned:
        torch_prune.l1_unstructured(model.fc, "weight", amount=0.2)
        handle = model.fc.register_forward_pre_hook(lambda m, x: None)
    state = _state(model)
    calls = {"n": 0}
    original = fxpath.PathProgram.path_magnitude

    def scores(self, **kw):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if where == "second_step" and calls["n"] == 2:
            raise failure("injected")
        return original(self, **kw)

    def metric(self, *a, **kw):  # noqa: ANN001, ANN202
        raise failure("injected")

    monkeypatch.setattr(fxpath.PathProgram, "path_magnitude", scores)
    if where == "metric":
        monkeypatch.setattr(fxpath.PathProgram, "path_metric", metric)
    with pytest.raises(failure):
        fxpath.prune(model, 0.5, (3, 32, 32), steps=2)
    _assert_unchanged(model, state)
    if handle is not None:  # the user's hook handle still removes the user's hook
        handle.remove()
        assert not any(h for h in model.fc._forward_pre_hooks.values()
                       if not isinstance(h, torch_prune.BasePruningMethod))


def test_prune_of_a_train_mode_model_keeps_its_mode(resnet: torch.nn.Module) -> None:
    model = copy.deepcopy(resnet).train()
    report = fxpath.prune(model, 0.3, (3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert report.metric.exact


def test_prune_float64_is_honoured() -> None:
    case = cases.ALL_FACTORIES["conv_bn_fold"]()
    model = copy.deepcopy(case.module).float()
    report = fxpath.prune(model, 0.4, case.input_shape, dtype=torch.float64)
    assert report.metric.exact
    with pytest.raises(FxPathError, match="dtype"):
        fxpath.prune(copy.deepcopy(case.module), 0.4, case.input_shape, dtype=torch.int64)
