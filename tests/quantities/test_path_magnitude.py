"""Path-magnitude scores and neuron path mass against independent computations."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import timm
import torch
import torchvision
from baselines import published_style_path_magnitude
from bruteforce import cases, oracle
from conftest import randomize_batchnorm, small_head

import fxpath
import fxpath.quantities.metric as metric_module
from fxpath.codegen.generate import tapped_nodes


@pytest.mark.parametrize("name", sorted(cases.ALL_FACTORIES))
def test_scores_equal_path_mass_by_enumeration(name: str) -> None:
    case = cases.ALL_FACTORIES[name]()
    dag = case.build(case.module)
    expected = oracle.mass_by_parameter(dag)
    total = oracle.path_norm(dag, 1.0)
    prog = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                          fold_bn=case.module.fold_bn)
    scores = prog.path_magnitude()
    for pname, mass in expected.items():
        assert pname in scores, pname
        np.testing.assert_allclose(scores[pname].numpy(), mass / total, rtol=1e-9, atol=1e-15)
    assert set(scores) <= set(expected)


def test_neuron_mass_equals_enumeration() -> None:
    case = cases.conv_bn(fold=True)
    dag = case.build(case.module)
    prog = fxpath.compile(case.module, case.input_shape, dtype=torch.float64)
    mass = prog.path_magnitude(neurons=True)
    total = oracle.path_norm(dag)
    for node, neuron_ids in dag.node_neurons.items():
        if node in mass:  # conv / linear outputs: summed over each channel's positions
            ids = np.asarray(neuron_ids).reshape(len(mass[node]), -1)
            for c, row in enumerate(ids):
                want = oracle.path_mass_through_neurons(dag, row.tolist()) / total
                assert mass[node][c].item() == pytest.approx(want, rel=1e-9)


def _zeroing_changes_norm_by_score(model: torch.nn.Module, shape: tuple[int, ...],
                                   picks: list[tuple[str, tuple[int, ...]]]) -> None:
    """Zeroing one coordinate removes exactly its path mass: the (exact) metric to the original
    equals the score. The metric is computed without cancellation: a plain difference of the
    two norms (about 1e13 apart by 1e-2) would have no correct digit left."""
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    norm = prog.path_norm().value
    scores = prog.path_magnitude()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state = dict(model.named_parameters())
    for name, index in picks:
        param = state[name]
        with torch.no_grad():
            param[index] = 0.0
        metric = prog.path_metric(model, base=before)
        with torch.no_grad():
            param[index] = before[name][index]
        assert metric.exact
        assert metric.value == pytest.approx(scores[name][index].item() * norm, rel=1e-6)


def test_direct_definition_on_timm_resnet() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(timm.create_model("resnet18", pretrained=False,
                                                  num_classes=10)).double().eval()
    gen = torch.Generator().manual_seed(1)
    picks = []
    for name in ("conv1.weight", "layer1.0.conv2.weight", "layer3.1.conv1.weight", "fc.weight",
                 "fc.bias", "layer4.0.downsample.0.weight"):
        shape = dict(model.named_parameters())[name].shape
        for _ in range(3):
            picks.append((name, tuple(int(torch.randint(s, (1,), generator=gen)) for s in shape)))
    _zeroing_changes_norm_by_score(model, (3, 32, 32), picks)


def test_folded_bias_is_reported_under_batchnorm_bias() -> None:
    model = randomize_batchnorm(timm.create_model("resnet18", pretrained=False,
                                                  num_classes=10)).double().eval()
    prog = fxpath.compile(model, (3, 32, 32), dtype=torch.float64)
    scores = prog.path_magnitude()
    assert "layer1.0.bn1.bias" in scores and "layer1.0.bn1.weight" not in scores
    bn = model.layer1[0].bn1
    norm = prog.path_norm().value
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    c = 5
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps))[c]
    with torch.no_grad():  # the coordinate is s * (0 - mean) + b: zero it via b := s * mean
        bn.bias[c] = s * bn.running_mean[c]
    metric = prog.path_metric(model, base=before)
    assert metric.value == pytest.approx(scores["layer1.0.bn1.bias"][c].item() * norm, rel=1e-6)


def test_scores_are_fractions_and_match_published_style() -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    shape = (3, 64, 64)
    scores = fxpath.path_magnitude(model, shape, dtype=torch.float64)
    norm = fxpath.path_norm(model, shape, dtype=torch.float64).value
    reference = published_style_path_magnitude(model, shape)
    for name, s in scores.items():
        assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
        assert float(s.sum()) * norm == pytest.approx(float(reference[name].double().sum()),
                                                      rel=1e-5)


class _Tokens(torch.nn.Module):
    """Conv stem, a Linear on (tokens, channels) (not tapped) and a head on a vector (tapped)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 6, 3, stride=2)
        self.mix = torch.nn.Linear(6, 5)
        self.head = torch.nn.Linear(5 * 9, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.relu(self.stem(x)).flatten(2).transpose(1, 2)  # (N, 9, 6)
        return self.head(torch.relu(self.mix(t)).flatten(1))


@pytest.mark.parametrize("build", [lambda: small_head(torchvision.models.vgg11(), 7),
                                   _Tokens], ids=["vgg11", "tokens"])
def test_scores_equal_gradient_of_log_norm(build: object) -> None:
    """Score = w * d log||Phi||_1 / dw (docs/mathematics.md#path-magnitude-scores): computed
    here through the differentiable
    path-norm (autograd over the signed lift), not through the score network's fused taps."""
    torch.manual_seed(0)
    model = build().double().eval()
    shape = (3, 32, 32) if isinstance(model, torchvision.models.VGG) else (3, 7, 7)
    prog = fxpath.compile(model, shape, dtype=torch.float64)
    assert tapped_nodes(prog.graph), "the model should exercise the fused dense-layer scores"
    scores = prog.path_magnitude()
    params = dict(model.named_parameters())
    log_norm = prog.path_norm(differentiable=True).log_tensor
    grads = torch.autograd.grad(log_norm, [params[k] for k in scores])
    for (name, s), g in zip(scores.items(), grads):
        torch.testing.assert_close(s, (params[name] * g).detach(), rtol=1e-9, atol=1e-15)


def test_token_linear_path_norm_is_abs_model_on_ones() -> None:
    """Without max-pooling or BatchNorm, ||Phi||_1 is the |theta| model's output sum on ones
    (every value is non-negative, so each ReLU is the identity): biases of a Linear on
    (tokens, channels) broadcast over the channel (last) dimension."""
    torch.manual_seed(0)
    model = _Tokens().double().eval()
    absolute = copy.deepcopy(model)
    with torch.no_grad():
        for p in absolute.parameters():
            p.abs_()
        expected = absolute(torch.ones(1, 3, 7, 7, dtype=torch.float64)).sum().item()
    got = fxpath.path_norm(model, (3, 7, 7), dtype=torch.float64).value
    assert got == pytest.approx(expected, rel=1e-12)


def test_out_reuses_the_tensors_of_an_earlier_call() -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(small_head(torchvision.models.vgg11_bn())).eval()
    prog = fxpath.compile(model, (3, 32, 32))
    first = prog.path_magnitude()
    kept = {k: v.clone() for k, v in first.items()}
    with torch.no_grad():
        model.classifier[0].weight.mul_(3.0)  # scores change; same tensors must hold them
    fresh = prog.path_magnitude()
    again = prog.path_magnitude(out=first)
    assert set(again) == set(fresh)
    for k in fresh:
        assert again[k] is first[k]
        torch.testing.assert_close(again[k], fresh[k], rtol=0, atol=0)
    assert any(not torch.equal(kept[k], fresh[k]) for k in fresh)
    with pytest.raises(fxpath.FxPathError, match="out\\['features.0.weight'\\]"):
        prog.path_magnitude(out={**first, "features.0.weight": first["features.0.weight"].double()})


def _mixed_twin(model: torch.nn.Module) -> torch.nn.Module:
    """A copy with every parameter scaled entrywise from 0.5 to 1.5: neither set dominates."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(torch.linspace(0.5, 1.5, p.numel(), dtype=p.dtype).view(p.shape))
    return other


def _count_norm_calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """The list each path-norm pass the path-metric runs is appended to."""
    calls: list = []
    norm = metric_module.path_norm
    monkeypatch.setattr(metric_module, "path_norm",
                        lambda *a, **k: calls.append(a) or norm(*a, **k))
    return calls


@pytest.mark.parametrize("name", sorted(cases.ALL_FACTORIES))
def test_score_pass_remembers_the_path_norm_bit_for_bit(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The score pass's total is the norm network's own (the taps add zeros): a path-metric
    of the live model after `path_magnitude` reuses it, and it equals `path_norm` exactly."""
    case = cases.ALL_FACTORIES[name]()
    prog = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                          fold_bn=case.module.fold_bn)
    other = _mixed_twin(case.module)
    prog.path_magnitude()
    calls = _count_norm_calls(monkeypatch)
    metric = prog.path_metric(other)
    assert not calls
    fresh = fxpath.compile(case.module, case.input_shape, dtype=torch.float64,
                           fold_bn=case.module.fold_bn)
    assert metric.norm.log2 == fresh.path_norm().log2
    assert metric.log2 == fresh.path_metric(other).log2


def _wide_mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(600, 600), torch.nn.ReLU(),
                               torch.nn.Linear(600, 600), torch.nn.ReLU(),
                               torch.nn.Linear(600, 10)).double()


@pytest.mark.parametrize("net,which", [("residual_add_fold", 0), ("residual_add_fold", -1),
                                       ("wide_mlp", 0), ("wide_mlp", 1), ("wide_mlp", 2)])
def test_memo_is_not_reused_after_a_change_in_any_slot(
        net: str, which: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight changed in place after `path_magnitude`, in a slot compared inside the
    envelopes (the wide MLP's 600x600 weights) or after them (small slots): the metric's norm
    is computed again and equals a fresh program's."""
    if net == "wide_mlp":
        model, shape, fold = _wide_mlp(), (600,), True
    else:
        case = cases.ALL_FACTORIES[net]()
        model, shape, fold = case.module, case.input_shape, case.module.fold_bn
    prog = fxpath.compile(model, shape, dtype=torch.float64, fold_bn=fold)
    other = _mixed_twin(model)
    prog.path_magnitude()
    calls = _count_norm_calls(monkeypatch)
    assert prog.path_metric(other).norm.log2 == prog.path_norm().log2 and not calls
    prog.path_magnitude()
    weights = [p for p in model.parameters() if p.dim() > 1]
    with torch.no_grad():
        weights[which].view(-1)[-1] *= 3.0
    metric = prog.path_metric(other)
    fresh = fxpath.compile(model, shape, dtype=torch.float64, fold_bn=fold)
    assert calls and metric.norm.log2 == fresh.path_norm().log2
    assert metric.log2 == fresh.path_metric(other).log2
