"""Residual-stream rescaling: the channels of a residual stream rescaled jointly (every writer
by lam_c, every reader by 1/lam_c) keep the function, the path-norms and every score."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from conftest import randomize_batchnorm

import fxpath
from fxpath.apps.rescale import (
    channel_maps,
    rescalable_neurons,
    rescale_channels,
    unit_channels,
)
from fxpath.apps.rescale_streams import Stream

SHAPE = (3, 32, 32)
TINY = (3, 8, 8)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c)


class Tiny(nn.Module):
    """Two streams: 8 channels (stem, a two-conv block, a one-conv block that reads and writes
    the stream), then 12 written by a concat of two convs (channels 0-5 and 6-11) and a
    downsample; the head reads them through ReLU, average pooling and a flatten."""

    def __init__(self, const: float = 0.0, expose: bool = False) -> None:
        super().__init__()
        self.const, self.expose = const, expose
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, padding=1), _bn(8)
        self.c1, self.b1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), _bn(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), _bn(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1), _bn(8)
        self.ca, self.ba = nn.Conv2d(8, 6, 3, stride=2, padding=1), _bn(6)
        self.cb, self.bb = nn.Conv2d(8, 6, 3, stride=2, padding=1), _bn(6)
        self.down, self.bd = nn.Conv2d(8, 12, 1, stride=2), _bn(12)
        self.fc = nn.Linear(12 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        s = F.max_pool2d(F.relu(self.bn0(self.stem(x))), 2, ceil_mode=True)
        s = F.relu(s + self.b2(self.c2(F.relu(self.b1(self.c1(s))))) + self.const)
        s = F.relu(s + self.b3(self.c3(s)))
        w = torch.cat([self.ba(self.ca(s)), self.bb(self.cb(s))], 1)
        t = F.relu(w + self.bd(self.down(s)))
        y = self.fc(torch.flatten(F.avg_pool2d(t, 1), 1))
        return (y, s) if self.expose else y


def _tiny(**kw: object) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorm(Tiny(**kw)).double().eval()  # type: ignore[arg-type]


def _sources(graph: object) -> dict[str, str]:
    """Node name -> the module its weight belongs to."""
    return {n.name: n.params["weight"].split(".")[0] for n in graph  # type: ignore[attr-defined]
            if "weight" in n.params}


def _random_twin(model: nn.Module, shape: tuple[int, ...], seed: int = 0
                 ) -> tuple[nn.Module, dict[str, Stream]]:
    """A copy with every free neuron and every stream channel rescaled by its own random
    factor in [0.1, 10]."""
    twin = fxpath.apps.rescale.copy_model(model)
    graph = fxpath.compile(twin, shape).graph
    units = rescalable_neurons(graph, streams=True)
    gen = torch.Generator().manual_seed(seed)
    for name, unit in units.items():
        lam = torch.rand(unit_channels(graph, name, unit), generator=gen,
                         dtype=torch.float64) * 9.9 + 0.1
        rescale_channels(twin, graph, name, unit, lam)
    streams = {k: u for k, u in units.items() if isinstance(u, Stream)}
    return twin, streams


def _check_same(model: nn.Module, twin: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), twin(x)
    assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())
    p, r = (fxpath.compile(m, shape, dtype=torch.float64) for m in (model, twin))
    for q in (1.0, 2.0):
        assert r.path_norm(q).value == pytest.approx(p.path_norm(q).value, rel=1e-6)
    sp, sr = p.path_magnitude(), r.path_magnitude()
    assert sp.keys() == sr.keys()
    for name, s in sp.items():
        torch.testing.assert_close(sr[name], s, rtol=1e-6, atol=0, msg=name)


def _check_writers_changed(model: nn.Module, twin: nn.Module, streams: dict[str, Stream],
                           shape: tuple[int, ...]) -> None:
    """Every writer of every stream moved (a stream rescaling that did nothing would fail)."""
    assert streams
    graph = fxpath.compile(model, shape).graph
    before, after = model.state_dict(), twin.state_dict()
    for key, stream in streams.items():
        names = [graph[w].params["weight"] for w in stream.writers]
        assert [n for n in names if not torch.equal(before[n], after[n])] == names, key


def test_tiny_net_streams_found_with_their_writers_readers_and_offsets() -> None:
    model = _tiny()
    graph = fxpath.compile(model, TINY).graph
    streams = {k: u for k, u in rescalable_neurons(graph, streams=True).items()
               if isinstance(u, Stream)}
    assert [s.channels for s in streams.values()] == [8, 12]
    first, second = streams.values()
    src = _sources(graph)
    assert sorted(src[w] for w in first.writers) == ["c2", "c3", "stem"]
    assert sorted(src[r] for r in first) == ["c1", "c3", "ca", "cb", "down"]
    assert sorted(src[w] for w in second.writers) == ["ca", "cb", "down"]
    assert sorted(src[r] for r in second) == ["fc"]
    cb = next(w for w in second.writers if src[w] == "cb")
    assert second.writers[cb].tolist() == list(range(7, 13))  # the concat's channel offset
    # without streams: the same free neurons, and no stream writer among them
    free = rescalable_neurons(graph)
    assert list(free) == [k for k in rescalable_neurons(graph, streams=True) if k in free]
    assert not set(free) & {w for s in streams.values() for w in s.writers}
    maps = channel_maps(model, graph, streams=True)
    key = next(k for k in streams if streams[k] is second)
    assert maps[key]["cb.weight"][:, 0, 0, 0].tolist() == list(range(6, 12))  # stream channel
    assert maps[key]["bb.bias"].tolist() == list(range(6, 12))
    assert set(maps[key]) >= {"ca.weight", "down.weight", "bd.running_mean", "fc.weight"}


def test_tiny_net_same_function_path_norms_and_scores() -> None:
    model = _tiny()
    twin, streams = _random_twin(model, TINY)
    _check_writers_changed(model, twin, streams, TINY)
    _check_same(model, twin, TINY)
    public = fxpath.rescale(model, TINY, factors=(0.1, 0.37, 2.0, 10.0), seed=4, streams=True,
                            bn_share=0.5)
    _check_same(model, public, TINY)


@pytest.mark.parametrize("kw", [{"const": 1.0}, {"expose": True}], ids=["const", "output"])
def test_streams_that_cannot_be_rescaled_are_left_alone(kw: dict[str, object]) -> None:
    model = _tiny(**kw)
    graph = fxpath.compile(model, TINY).graph
    units = rescalable_neurons(graph, streams=True)
    streams = [u for u in units.values() if isinstance(u, Stream)]
    src = _sources(graph)
    # the first stream meets an add with a constant, or an output: only the second is left
    assert [sorted(src[w] for w in s.writers) for s in streams] == [["ca", "cb", "down"]]
    assert "stem" not in {src.get(k) for k in units}
    twin = fxpath.rescale(model, TINY, factors=(0.25, 4.0), seed=0, streams=True)
    assert torch.equal(twin.b2.bias, model.b2.bias) and torch.equal(twin.bn0.bias, model.bn0.bias)
    x = torch.randn(3, *TINY, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), twin(x)
    for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-12)


def test_stream_rescaling_moves_filter_norms_and_bn_scales_not_neuron_mass() -> None:
    """What a structured-pruning attack exploits: the writers' L1 filter norms and BatchNorm
    scales change (and their rankings), the channels' path mass does not."""
    model = _tiny()
    graph = fxpath.compile(model, TINY).graph
    streams = [u for u in rescalable_neurons(graph, streams=True).values()
               if isinstance(u, Stream)]
    writers = [graph[w] for s in streams for w in s.writers]
    bns = [n.attrs["bn"].weight for n in writers]
    plain = fxpath.rescale(model, TINY, factors=(0.1, 10.0), seed=0, bn_share=0.5)
    twin = fxpath.rescale(model, TINY, factors=(0.1, 10.0), seed=0, streams=True, bn_share=0.5)
    before, free_only, after = (m.state_dict() for m in (model, plain, twin))
    assert all(torch.equal(free_only[b], before[b]) for b in bns)  # streams were left alone
    moved = 0
    for node, bn in zip(writers, bns):
        w = node.params["weight"]
        l1_before, l1_after = (s[w].abs().sum((1, 2, 3)) for s in (before, after))
        assert not torch.allclose(l1_after, l1_before)
        assert not torch.allclose(after[bn].abs(), before[bn].abs())
        moved += int(not torch.equal(l1_after.argsort(), l1_before.argsort()))
        moved += int(not torch.equal(after[bn].abs().argsort(), before[bn].abs().argsort()))
    assert moved >= len(writers)  # rankings change, so do the channels a criterion keeps
    mass = [fxpath.compile(m, TINY, dtype=torch.float64).path_magnitude(neurons=True)
            for m in (model, twin)]
    assert mass[0].keys() == mass[1].keys()
    for name, m in mass[0].items():
        torch.testing.assert_close(mass[1][name], m, rtol=1e-6, atol=0, msg=name)


def test_arguments_checked() -> None:
    model = _tiny()
    for kwargs, message in (({"streams": 1}, "streams must be"),
                            ({"bn_share": 1.5}, "bn_share must be"),
                            ({"bn_share": True}, "bn_share must be")):
        with pytest.raises(fxpath.ArgumentError, match=message):
            fxpath.rescale(model, TINY, **kwargs)
    graph = fxpath.compile(model, TINY).graph
    name, unit = next((k, u) for k, u in rescalable_neurons(graph, streams=True).items()
                      if isinstance(u, Stream))
    with pytest.raises(fxpath.ArgumentError, match="lam must hold 8"):
        rescale_channels(model, graph, name, unit, torch.ones(3))


def _zoo() -> list[tuple[str, object]]:
    return [
        ("torchvision:resnet18",
         lambda: torchvision.models.resnet18(weights=None, num_classes=10)),
        pytest.param("torchvision:resnet50",
                     lambda: torchvision.models.resnet50(weights=None, num_classes=10),
                     marks=pytest.mark.slow),
        pytest.param("timm:resnet18",
                     lambda: timm.create_model("resnet18", pretrained=False, num_classes=10),
                     marks=pytest.mark.slow),
        pytest.param("timm:resnet50d",
                     lambda: timm.create_model("resnet50d", pretrained=False, num_classes=10),
                     marks=pytest.mark.slow),
        pytest.param("torchvision:mobilenet_v2",  # 16x16: its float64 scores are slow
                     lambda: torchvision.models.mobilenet_v2(weights=None, num_classes=10),
                     marks=pytest.mark.slow),
    ]


@pytest.mark.parametrize("label, make", _zoo(), ids=lambda v: v if isinstance(v, str) else "")
def test_zoo_same_function_path_norms_and_scores(label: str, make: object) -> None:
    torch.manual_seed(0)
    model = randomize_batchnorm(make()).double().eval()  # type: ignore[operator]
    shape = (3, 16, 16) if "mobilenet" in label else SHAPE
    twin, streams = _random_twin(model, shape)
    assert len(streams) == (5 if "mobilenet" in label else 4)
    _check_writers_changed(model, twin, streams, shape)
    _check_same(model, twin, shape)
