"""`grad_frame`: a conv's backward on the frame of its output gradient, against autograd's
dense backward (float64), the frame search, and whole networks against ``interior=False``."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import fxpath
from fxpath.kernels import grad_frame
from fxpath.kernels.grad_frame import find_frame, framed_backward

F64 = torch.float64


def framed_gradient(channels: int, h: int, w: int, frame: tuple[tuple[int, int], ...],
                    gen: torch.Generator) -> torch.Tensor:
    """A random non-negative ``(1, C, h, w)`` map whose rows between the frame's top and
    bottom are equal, and whose columns between its left and right are equal."""
    (top, bottom), (left, right) = frame

    def classes(n: int, lo: int, hi: int) -> torch.Tensor:
        return torch.tensor([min(i, lo) if i < n - hi else lo + 1 + i - (n - hi)
                             for i in range(n)])

    table = torch.rand(channels, top + bottom + 1, left + right + 1, generator=gen, dtype=F64)
    return table[:, classes(h, top, bottom)[:, None], classes(w, left, right)[None, :]][None]


def _cases() -> list[tuple[int, int, int, int, int, tuple[tuple[int, int], ...]]]:
    rng = random.Random(0)
    out: list[tuple[int, int, int, int, int, tuple[tuple[int, int], ...]]] = []
    while len(out) < 32:
        k = rng.choice([1, 2, 3, 3, 5, 7])
        d = rng.choice([1, 1, 2, 3]) if k > 1 else 1
        p = rng.randint(0, d * (k - 1))
        reach = d * (k - 1)
        h, w = (rng.randint(3 * reach + 16, 3 * reach + 40) for _ in range(2))
        frame = tuple((rng.randint(0, 5), rng.randint(0, 5)) for _ in range(2))
        out.append((k, d, p, h, w, frame))
    return out


@pytest.mark.parametrize("k, d, p, h, w, frame", _cases())
def test_framed_backward_is_the_dense_backward(k: int, d: int, p: int, h: int, w: int,
                                               frame: tuple[tuple[int, int], ...]) -> None:
    gen = torch.Generator().manual_seed(h * 100 + w)
    x = torch.rand(1, 3, h, w, generator=gen, dtype=F64, requires_grad=True)
    weight = torch.rand(4, 3, k, k, generator=gen, dtype=F64, requires_grad=True)
    y = F.conv2d(x, weight, None, 1, p, d)
    g = framed_gradient(4, *y.shape[2:], frame, gen)
    want_x, want_w = torch.autograd.grad(y, (x, weight), g)
    found = find_frame(g, (d * (k - 1) + 1,) * 2)
    assert found is not None and found[0] == frame
    got = framed_backward(g, x.detach(), weight.detach(), (p, p), True, True, (d, d))
    assert got is not None
    torch.testing.assert_close(got[0], want_x, rtol=1e-12, atol=0)
    torch.testing.assert_close(got[1], want_w, rtol=1e-12, atol=0)
    only_w = framed_backward(g, x.detach(), weight.detach(), (p, p), False, True, (d, d))
    assert only_w is not None and only_w[0] is None
    torch.testing.assert_close(only_w[1], want_w, rtol=1e-12, atol=0)


def test_no_frame_means_the_dense_backward() -> None:
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(1, 4, 32, 32, generator=gen, dtype=F64)
    assert find_frame(g, (3, 3)) is None
    framed = framed_gradient(4, 32, 32, ((14, 14), (14, 14)), gen)
    assert find_frame(framed, (3, 3)) is None  # a 4x4 interior does not pay
    framed = framed_gradient(4, 32, 32, ((2, 2), (2, 2)), gen)
    framed[0, 1, 16, 16] = float("nan")
    assert find_frame(framed, (3, 3)) is None
    one_off = framed_gradient(4, 32, 32, ((2, 2), (2, 2)), gen)
    one_off[0, 3, 20, 9] = torch.nextafter(one_off[0, 3, 20, 9], torch.tensor(2.0, dtype=F64))
    found = find_frame(one_off, (3, 3))  # one entry one ulp off: it is not in the interior
    assert found is None or not (found[0][0][0] <= 20 < 32 - found[0][0][1]
                                 and found[0][1][0] <= 9 < 32 - found[0][1][1])


def _decoder() -> nn.Module:
    """Down to 4x4 (where no constant interior is left), up by 8, then convs at 32x32 (one
    dilated): their inputs have no frame, their output gradients do."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Upsample(scale_factor=8, mode="nearest"),
        nn.Conv2d(6, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.Conv2d(5, 4, 5, padding=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.ReLU(),
        nn.Conv2d(4, 2, 1)).eval()


@pytest.mark.parametrize("dtype, rtol", [(F64, 1e-10), (torch.float32, 2e-5)])
def test_scores_of_a_decoder_equal_the_dense_ones(monkeypatch, dtype: torch.dtype,
                                                  rtol: float) -> None:
    model = _decoder().to(dtype)
    with torch.no_grad():
        model[10].running_mean.uniform_(-1, 1)
        model[10].running_var.uniform_(0.5, 2)
    used = []
    real = grad_frame.framed_backward

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        used.append(out is not None)
        return out

    monkeypatch.setattr(grad_frame, "framed_backward", spy)
    shape = (3, 32, 32)
    prog = fxpath.compile(model, shape, dtype=dtype)
    assert "grad_frame_conv" in prog.path_network().code
    scores = prog.path_magnitude()
    assert sum(used) >= 4  # the convs after the upsampling ran on frames, dilated too
    dense = fxpath.compile(model, shape, dtype=dtype, interior=False)
    assert "grad_frame" not in dense.path_network().code
    want = dense.path_magnitude()
    for name, v in scores.items():
        torch.testing.assert_close(v, want[name], rtol=rtol, atol=1e-30)
