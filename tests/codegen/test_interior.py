"""The constant-interior analysis against the path network's actual activations."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from conftest import small_head

import fxpath
from fxpath.codegen.frames import Frame, interior_frames, tensor_frame, window_frame


def constant_within(t: torch.Tensor, frame: Frame) -> bool:
    """Along each spatial dim of ``(1, C, *spatial)``, every slice inside ``[lo, size - hi)``
    equals the first one."""
    for j, (lo, hi) in enumerate(frame, start=2):
        n = t.shape[j]
        if lo + hi >= n:
            continue
        first = t.narrow(j, lo, 1)
        inside = t.narrow(j, lo, n - lo - hi)
        if not torch.allclose(inside, first.expand_as(inside), rtol=1e-12, atol=0):
            return False
    return True


class _Record(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node):  # type: ignore[no-untyped-def]
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.values[n.name] = out.detach().clone()
        return out


def activations(prog: fxpath.PathProgram) -> dict[str, torch.Tensor]:
    """Every IR node's value in the dense path network (interior=False), by node name."""
    gm = prog.path_network(1.0)
    rec = _Record(gm)
    rec.run(*prog.network_inputs(1.0))
    return {n.name: rec.values[n.name] for n in prog.graph if n.name in rec.values}


@pytest.mark.parametrize("k,s,p,d", list(itertools.product((1, 2, 3, 5), (1, 2, 3), (0, 1, 2),
                                                          (1, 2))))
def test_window_frame_holds_for_conv_and_pool(k: int, s: int, p: int, d: int) -> None:
    gen = torch.Generator().manual_seed(k * 100 + s * 10 + p + d)
    ones = torch.ones(1, 2, 21, 17, dtype=torch.float64)
    x = F.conv2d(ones, torch.rand(2, 2, 3, 3, generator=gen, dtype=torch.float64), padding=1)
    f_in = ((1, 1), (1, 1))
    assert constant_within(x, f_in)
    w = torch.rand(3, 2, k, k + 1, generator=gen, dtype=torch.float64)
    y = F.conv2d(x, w, None, s, p, d)
    f = window_frame(f_in, x.shape[2:], y.shape[2:], (k, k + 1), (s, s), (p, p), (d, d))
    assert constant_within(y, f)
    if p <= k // 2 and d == 1:
        pooled = F.avg_pool2d(x, k, s, p, ceil_mode=True, count_include_pad=True)
        f = window_frame(f_in, x.shape[2:], pooled.shape[2:], (k, k), (s, s), (p, p), (1, 1))
        assert constant_within(pooled, f)


def test_window_frame_is_tight_for_one_conv() -> None:
    f = window_frame(((0, 0), (0, 0)), (224, 224), (224, 224), (3, 3), (1, 1), (1, 1), (1, 1))
    assert f == ((1, 1), (1, 1))
    f = window_frame(((0, 0), (0, 0)), (224, 224), (112, 112), (7, 7), (2, 2), (3, 3), (1, 1))
    assert f == ((2, 1), (2, 1))  # ResNet's stem: position 111 reads input 219..225
    y = F.conv2d(torch.ones(1, 1, 9, 9), torch.rand(1, 1, 3, 3) + 0.1, padding=1)
    assert constant_within(y, ((1, 1), (1, 1)))
    assert not constant_within(y, ((0, 1), (1, 1)))  # the checker itself can fail


def test_no_interior_is_reported_as_all_frame() -> None:
    f = window_frame(((3, 3),), (6,), (6,), (3,), (1,), (1,), (1,))
    assert f == ((6, 0),)


def test_tensor_frame() -> None:
    t = torch.ones(2, 7, 5)
    t[:, 0] = 2.0
    t[:, :, 4] = 3.0
    assert tensor_frame(t) == ((1, 0), (0, 1))
    assert tensor_frame(torch.arange(6.0).reshape(1, 6)) == ((2, 3),)


class Mixed(nn.Module):
    """Zero padding, strides, dilation, groups, uneven avg pools, concat and a 1-D branch."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 5, stride=2, padding=3, dilation=2, groups=2)
        self.pool = nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)
        self.c3 = nn.Conv2d(16, 8, (3, 1), padding=(1, 0))
        self.adapt = nn.AdaptiveAvgPool2d((4, 4))
        self.fc = nn.Linear(8 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.c1(x))
        b = torch.relu(self.c2(a))
        c = torch.cat([self.pool(a)[:, :, : b.shape[2], : b.shape[3]], b], 1)
        d = torch.relu(self.c3(c)) + b
        return self.fc(torch.flatten(self.adapt(d), 1))


@pytest.mark.parametrize("name,shape", [
    ("resnet18", (3, 64, 64)), ("vgg11_bn", (3, 64, 64)), ("mobilenet_v2", (3, 64, 64)),
    ("densenet121", (3, 64, 64)), ("mixed", (3, 32, 32)),
])
def test_frames_hold_on_every_activation(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = Mixed() if name == "mixed" else getattr(torchvision.models, name)(num_classes=10)
    if name.startswith("vgg"):
        model = small_head(model)
    prog = fxpath.compile(model.double().eval(), shape, dtype=torch.float64, interior=False)
    frames = interior_frames(prog.graph)
    values = activations(prog)
    checked = 0
    for node in prog.graph:
        f = frames[node.name]
        if f is None or node.name not in values or not f:
            continue
        assert constant_within(values[node.name], f), node.describe()
        checked += sum(lo + hi < n for (lo, hi), n in zip(f, node.shape[1:]))
    assert checked >= 5  # the analysis found real structure to check


def test_reshape_loses_the_frame() -> None:
    class Flat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(2, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(x.transpose(2, 3))

    prog = fxpath.compile(Flat().eval(), (2, 8, 6))
    frames = interior_frames(prog.graph)
    assert [frames[n.name] for n in prog.graph if n.op == "reshape"] == [None]
    assert [frames[n.name] for n in prog.graph if n.op == "linear"] == [None]
