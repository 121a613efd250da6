"""`fxpath.prune_channels` and `fxpath.certify_channels` on small networks.

Each result is checked independently of the code that produced it: the small model's outputs
against the dense model with the removed channels zeroed by hand, the certificate against two
path-norms of those models, the Lipschitz bound against the outputs' actual distance.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import fxpath
from fxpath.errors import ArgumentError, FxPathError, UnsupportedModelError

tp = pytest.importorskip("torch_pruning")


class Block(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class ResNetish(nn.Module):
    """Stem, two blocks on one stream, a downsample stage, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.block1, self.block2 = Block(8, 6), Block(8, 6)
        self.down = nn.Conv2d(8, 12, 1, stride=2, bias=False)
        self.down_bn = nn.BatchNorm2d(12)
        self.block3 = Block(12, 10)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.block2(self.block1(x))
        x = self.block3(self.down_bn(self.down(x)))
        return self.fc(x.mean((2, 3)))


class DenseUNetish(nn.Module):
    """Concatenations (a U-Net skip and a DenseNet-style growth), a depthwise conv, a
    transposed conv; ``groups``: the downsampling conv's groups."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.grow = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.BatchNorm2d(12),
                                nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(12, 8, 3, stride=2, padding=1, groups=groups),
                                     nn.ReLU())
        self.up = nn.ConvTranspose2d(8, 6, 2, stride=2)
        self.head = nn.Conv2d(6 + 8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        d = torch.cat([e, self.grow(e)], 1)
        d = self.grouped(self.dw(d))
        return self.head(torch.cat([torch.relu(self.up(d)), e], 1))


def randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.3)
    return model.eval()


MODELS = {"resnet": (ResNetish, (3, 8, 8)), "dense_unet": (DenseUNetish, (3, 8, 8))}


def _zeroed_by_hand(model: nn.Module, report) -> nn.Module:
    """The dense model with each removed output channel zeroed: conv/linear rows and biases,
    and the BatchNorm that follows (written here independently of fxpath)."""
    twin = copy.deepcopy(model)
    modules = dict(twin.named_modules())
    names = list(modules)
    with torch.no_grad():
        for name, removed in report.removed.items():
            m, rows = modules[name], list(removed)
            if isinstance(m, nn.ConvTranspose2d):
                m.weight[:, rows] = 0
            else:
                m.weight[rows] = 0
            if m.bias is not None:
                m.bias[rows] = 0
            nxt = modules[names[names.index(name) + 1]] if names.index(name) + 1 < len(
                names) else None
            if isinstance(nxt, nn.BatchNorm2d) and nxt.num_features == m.weight.shape[
                    1 if isinstance(m, nn.ConvTranspose2d) else 0]:
                nxt.weight[rows] = 0
                nxt.bias[rows] = 0
    return twin


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("criterion", [
    "path_magnitude", pytest.param("l1", marks=pytest.mark.slow),
    pytest.param("bn_scale", marks=pytest.mark.slow)])
def test_small_model_is_the_zeroed_dense_model(name: str, criterion: str) -> None:
    factory, shape = MODELS[name]
    model = randomized(factory())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, report = fxpath.prune_channels(model, 0.4, shape, criterion=criterion)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
    assert report.params[1] < report.params[0] and report.macs[1] < report.macs[0]
    assert sum(p.numel() for p in small.parameters()) == report.params[1]
    assert report.metric.exact and report.twin_gap <= 1e-9
    for layer, (dense_c, small_c) in report.channels.items():
        assert dense_c - small_c == len(report.removed[layer])
    x = torch.randn(16, *shape) * 3
    dense64, small64 = model.double(), copy.deepcopy(small).double()
    twin = _zeroed_by_hand(dense64, report)
    with torch.no_grad():
        ys, yt, yd = small64(x.double()), twin(x.double()), dense64(x.double())
    torch.testing.assert_close(ys, yt, rtol=1e-9, atol=1e-9)
    assert ys.shape == yd.shape  # outputs never pruned
    # the certificate: two path-norms of the dense model and of the hand-zeroed twin
    n_dense = fxpath.path_norm(dense64, shape).value
    n_twin = fxpath.path_norm(twin, shape).value
    assert report.metric.value == pytest.approx(n_dense - n_twin, rel=1e-9)
    bound = report.lipschitz_bound(x)
    assert bool(((yd - ys).abs().flatten(1).sum(1) <= bound * (1 + 1e-9)).all())


def test_small_model_saves_loads_and_exports(tmp_path) -> None:
    model = randomized(ResNetish())
    small, _ = fxpath.prune_channels(model, 0.5, (3, 8, 8))
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    again = copy.deepcopy(small)
    with torch.no_grad():
        for p in again.parameters():
            p.zero_()
    again.load_state_dict(torch.load(path))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(again(x), small(x))
    exported = torch.export.export(small, (x,))
    torch.testing.assert_close(exported.module()(x), small(x))


def test_structure_and_options() -> None:
    model = randomized(ResNetish())
    small, report = fxpath.prune_channels(model, 0.5, (3, 8, 8), scope="layer", round_to=2,
                                          ignored_layers=["block3.conv1"], steps=2)
    assert small.stem.in_channels == 3  # input channels never pruned
    assert small.fc.out_features == 5
    assert small.block3.conv1.out_channels == 10  # ignored
    assert all(c % 2 == 0 for _, c in report.channels.values())
    # the residual stream is cut as one: every writer and reader agrees
    assert small.stem.out_channels == small.block1.conv2.out_channels == \
        small.block2.conv2.out_channels == small.block1.conv1.in_channels
    assert report.steps == 2 and report.scope == "layer"
    stream = [g for g in report.groups if "block1.conv2" in g.layers]
    assert stream and all(g.mass is not None and g.mass >= 0 for g in report.groups)


def test_global_ranking_spares_a_layer_it_would_empty() -> None:
    model = randomized(ResNetish())
    with torch.no_grad():  # block1's branch carries almost no path mass
        for p in (model.block1.conv1.weight, model.block1.bn1.weight, model.block1.bn1.bias):
            p.mul_(1e-6)
    small, report = fxpath.prune_channels(model, 0.5, (3, 8, 8))
    assert "block1.conv1" in report.spared and small.block1.conv1.out_channels == 1
    with pytest.raises(ArgumentError, match="every channel of layer"):
        fxpath.prune_channels(model, 0.95, (3, 8, 8), scope="layer")


def test_rescaling_leaves_the_path_mass_choice_unchanged() -> None:
    model = randomized(ResNetish())
    attacked = fxpath.rescale(model, (3, 8, 8), factors=(0.05, 1.0, 20.0), seed=1, streams=True,
                              bn_share=0.5)
    _, plain = fxpath.prune_channels(model, 0.5, (3, 8, 8), dtype=torch.float64)
    _, fooled = fxpath.prune_channels(attacked, 0.5, (3, 8, 8), dtype=torch.float64)
    assert plain.removed == fooled.removed
    assert fooled.metric.value == pytest.approx(plain.metric.value, rel=1e-6)
    _, l1 = fxpath.prune_channels(model, 0.5, (3, 8, 8), criterion="l1")
    _, l1_fooled = fxpath.prune_channels(attacked, 0.5, (3, 8, 8), criterion="l1")
    assert l1.removed != l1_fooled.removed
    _, bn = fxpath.prune_channels(model, 0.5, (3, 8, 8), criterion="bn_scale")
    _, bn_fooled = fxpath.prune_channels(attacked, 0.5, (3, 8, 8), criterion="bn_scale")
    assert bn.removed != bn_fooled.removed


def test_certify_channels_from_a_torch_pruning_history() -> None:
    model = randomized(ResNetish())
    dense = copy.deepcopy(model)
    from fxpath.torch_pruning import PathMagnitudeImportance

    imp = PathMagnitudeImportance(model, (3, 8, 8))
    pruner = tp.pruner.BasePruner(model, torch.randn(1, 3, 8, 8), importance=imp,
                                  global_pruning=True, pruning_ratio=0.5,
                                  ignored_layers=[model.fc])
    pruner.step()
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in dense.parameters())
    cert = fxpath.certify_channels(dense, model, pruner.pruning_history(), (3, 8, 8))
    assert cert.metric.exact and cert.twin_gap <= 1e-9
    n_twin = fxpath.path_norm(_zeroed_by_hand(dense.double(), cert), (3, 8, 8)).value
    assert cert.metric.value == pytest.approx(fxpath.path_norm(dense, (3, 8, 8)).value - n_twin,
                                              rel=1e-9)
    with torch.no_grad():  # a pruned model that is not what the history says
        model.block2.conv1.weight[0, 0, 0, 0] += 1.0
    with pytest.raises(FxPathError, match="block2.conv1"):
        fxpath.certify_channels(dense, model, pruner.pruning_history(), (3, 8, 8))


@pytest.mark.parametrize("kwargs, match", [
    ({"amount": 1.0}, "amount"), ({"amount": -0.1}, "amount"), ({"amount": "half"}, "amount"),
    ({"criterion": "taylor"}, "criterion"), ({"scope": "local"}, "scope"),
    ({"round_to": 0}, "round_to"), ({"steps": 0}, "steps"),
    ({"ignored_layers": ["block9"]}, "block9"),
])
def test_bad_arguments_leave_the_model_alone(kwargs, match) -> None:
    model = randomized(ResNetish())
    before = copy.deepcopy(model.state_dict())
    args = {"amount": 0.5, **kwargs}
    amount = args.pop("amount")
    with pytest.raises(ArgumentError, match=match):
        fxpath.prune_channels(model, amount, (3, 8, 8), **args)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_a_cut_torch_pruning_cannot_make_is_named() -> None:
    """A grouped conv read from a concatenation: Torch-Pruning 1.6 fails on its input
    channels. The answer is a certified model or an FxPathError naming the layer; the model
    is left as it was either way."""
    model = randomized(DenseUNetish(groups=2))
    before = copy.deepcopy(model.state_dict())
    try:
        small, report = fxpath.prune_channels(model, 0.4, (3, 8, 8))
    except FxPathError as exc:
        assert "grouped.0" in str(exc) and "Torch-Pruning" in str(exc)
    else:
        assert report.metric.exact and report.twin_gap <= 1e-9
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_refusals() -> None:
    gelu = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.Linear(144, 2)).eval()
    with pytest.raises(UnsupportedModelError, match="gelu|GELU"):
        fxpath.prune_channels(gelu, 0.5, (3, 8, 8))


def test_missing_torch_pruning_names_the_install_command(monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *args, **kwargs):
        if name == "torch_pruning":
            raise ImportError("No module named 'torch_pruning'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(FxPathError, match=r'pip install "fxpath\[prune\]"'):
        fxpath.prune_channels(randomized(ResNetish()), 0.5, (3, 8, 8))


def test_tied_scores_cut_what_was_asked() -> None:
    """Fresh BatchNorms all have scale 1: Torch-Pruning's threshold alone would cut every tied
    channel. Ties are broken by channel order, so the amount holds."""
    torch.manual_seed(0)
    model = ResNetish().eval()  # default init: every BatchNorm scale is 1
    small, report = fxpath.prune_channels(model, 0.3, (3, 8, 8), criterion="bn_scale")
    assert not report.spared
    dense_c = sum(d for d, _ in report.channels.values())
    cut = sum(d - c for d, c in report.channels.values())
    assert 0 < cut < dense_c and small.stem.out_channels > 1
