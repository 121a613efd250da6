"""Convolutions on compressed images (`fxpath.kernels.frame_conv.compression`, run by
`fxpath.layout.compact_conv`) against dense convolution, float64: values and weight gradients
equal; input gradients of a full input equal on every direction that keeps the frame."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from fxpath import layout
from fxpath.codegen.frames import Frame, window_frame
from fxpath.kernels.frame_conv import compression

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def frame_conv(x: torch.Tensor, w: torch.Tensor, stride: tuple[int, ...],
               padding: tuple[int, ...], dilation: tuple[int, ...], groups: int,
               frame_in: Frame) -> torch.Tensor:
    """A full input through the compressed conv, its compact output expanded to full size."""
    cuts = compression(tuple(x.shape[2:]), tuple(w.shape[2:]), stride, padding, dilation,
                       frame_in)
    in_rows, out_rows, out_layout = layout.conv_indices(None, cuts, tuple(x.shape[2:]))
    y = layout.compact_conv(x, w, stride, padding, dilation, groups, layout.as_runs(in_rows),
                            layout.as_runs(out_rows))
    return y if out_layout is None else layout.select(
        y, *layout.as_runs(layout.relayout(out_layout, None)))


def _framed_input(nd: int, size: tuple[int, ...], channels: int, gen: torch.Generator
                  ) -> tuple[torch.Tensor, Frame]:
    """A path-network-like activation: a non-negative conv of all-ones (one zero-padded layer,
    kernel 3 or 5), with its frame."""
    k = random.Random(sum(size)).choice([3, 5])
    ones = torch.ones(1, channels, *size, dtype=torch.float64)
    w = torch.rand(channels, channels, *([k] * nd), generator=gen, dtype=torch.float64)
    x = _CONV[nd](ones, w, None, 1, k // 2)
    return x, window_frame(((0, 0),) * nd, size, size, (k,) * nd, (1,) * nd, (k // 2,) * nd,
                           (1,) * nd)


def framed_random(shape: tuple[int, ...], frame: Frame, gen: torch.Generator) -> torch.Tensor:
    """A random tensor ``(1, C, *spatial)`` with the given frame (any values elsewhere)."""
    small = [lo + 1 + hi if lo + hi < n else n for (lo, hi), n in zip(frame, shape[2:])]
    t = torch.rand(*shape[:2], *small, generator=gen, dtype=torch.float64)
    for dim, ((lo, hi), n) in enumerate(zip(frame, shape[2:]), start=2):
        if lo + hi < n:
            idx = [i if i < lo else (lo if i < n - hi else i - (n - hi - lo - 1))
                   for i in range(n)]
            t = t.index_select(dim, torch.tensor(idx))
    return t


def _cases(n: int) -> list[tuple]:  # type: ignore[type-arg]
    rng = random.Random(0)
    out = []
    while len(out) < n:
        nd = rng.choice([1, 2, 2, 3])
        size = tuple(rng.randint(6, 24 if nd < 3 else 11) for _ in range(nd))
        k = tuple(rng.choice([1, 2, 3, 5]) for _ in range(nd))
        s = tuple(rng.choice([1, 2, 3]) for _ in range(nd))
        p = tuple(rng.randint(0, kk) for kk in k)
        d = tuple(rng.choice([1, 1, 2]) for _ in range(nd))
        groups = rng.choice([1, 2, 4])
        size_out = _size_out(size, k, s, p, d)
        # with the input's frame at most 2 wide, the output must keep an interior
        if min(size_out) >= 1 and all(m > 2 * (2 + kk * dd) // ss + 2 for m, kk, ss, dd in
                                      zip(size_out, k, s, d)):
            out.append((nd, size, k, s, p, d, groups))
    return out


def _size_out(size: tuple[int, ...], k: tuple[int, ...], s: tuple[int, ...],
              p: tuple[int, ...], d: tuple[int, ...]) -> tuple[int, ...]:
    return tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1
                 for n, kk, ss, pp, dd in zip(size, k, s, p, d))


@pytest.mark.parametrize("nd,size,k,s,p,d,groups", _cases(60))
def test_frame_conv_equals_dense_conv(nd: int, size: tuple[int, ...], k: tuple[int, ...],
                                      s: tuple[int, ...], p: tuple[int, ...],
                                      d: tuple[int, ...], groups: int) -> None:
    gen = torch.Generator().manual_seed(hash((nd, size, k, s, p, d, groups)) % 2**31)
    x, f_in = _framed_input(nd, size, 4, gen)
    size_out = _size_out(size, k, s, p, d)
    f_out = window_frame(f_in, size, size_out, k, s, p, d)
    assert all(lo + hi < m for (lo, hi), m in zip(f_out, size_out))
    w = torch.rand(6 if groups != 4 else 8, 4 // groups, *k, generator=gen, dtype=torch.float64)
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    want = _CONV[nd](xa, wa, None, s, p, d, groups)
    seed = torch.rand(want.shape, generator=gen, dtype=torch.float64)
    want.backward(seed)
    xb, wb = x.clone().requires_grad_(), w.clone().requires_grad_()
    got = frame_conv(xb, wb, s, p, d, groups, f_in)
    got.backward(seed)
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    torch.testing.assert_close(wb.grad, wa.grad, rtol=1e-12, atol=0)
    for _ in range(3):  # input gradients agree on directions inside the frame's subspace
        v = framed_random(x.shape, f_in, gen)
        assert (xb.grad * v).sum().item() == pytest.approx((xa.grad * v).sum().item(),
                                                           rel=1e-12)


def test_compression_shrinks_vgg_sized_maps() -> None:
    cuts = compression((224, 224), (3, 3), (1, 1), (1, 1), (1, 1), ((1, 1), (1, 1)))
    assert [c.size - c.count for c in cuts] == [6, 6]  # 2 + two interior rows + 2
    cuts = compression((14, 14), (3, 3), (1, 1), (1, 1), (1, 1), ((6, 6), (6, 6)))
    assert [c.count for c in cuts] == [0, 0]  # no interior left


def test_input_gradient_differs_only_off_the_frame_subspace() -> None:
    """The documented contract: not the dense input gradient, but equal against any framed
    direction (a random direction would tell them apart)."""
    gen = torch.Generator().manual_seed(3)
    x, f_in = _framed_input(2, (40, 40), 2, gen)
    w = torch.rand(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    seed = torch.rand(1, 3, 40, 40, generator=gen, dtype=torch.float64)
    F.conv2d(xa, w, padding=1).backward(seed)
    frame_conv(xb, w, (1, 1), (1, 1), (1, 1), 1, f_in).backward(seed)
    assert not torch.allclose(xa.grad, xb.grad)
    v = torch.rand(x.shape, generator=gen, dtype=torch.float64)
    assert (xa.grad * v).sum().item() != pytest.approx((xb.grad * v).sum().item(), rel=1e-6)
    v = framed_random(x.shape, f_in, gen)
    assert (xa.grad * v).sum().item() == pytest.approx((xb.grad * v).sum().item(), rel=1e-12)


def test_weight_gradient_only() -> None:
    gen = torch.Generator().manual_seed(1)
    x, f_in = _framed_input(2, (30, 30), 3, gen)
    w = torch.rand(5, 3, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(frame_conv(x, w, (1, 1), (1, 1), (1, 1), 1, f_in).sum(), [w])
    (want,) = torch.autograd.grad(F.conv2d(x, w, padding=1).sum(), [w])
    torch.testing.assert_close(g, want, rtol=1e-13, atol=0)


def test_float32_is_no_less_accurate_than_dense() -> None:
    """On a large map the dense weight gradient sums 50k float32 products per entry; the
    compressed one sums the output gradient over the interior first: it must stay within
    float32 rounding of float64."""
    gen = torch.Generator().manual_seed(2)
    x, f_in = _framed_input(2, (224, 224), 8, gen)
    w = torch.rand(8, 8, 3, 3, generator=gen, dtype=torch.float64)
    w64 = w.clone().requires_grad_()
    (want,) = torch.autograd.grad(F.conv2d(x, w64, padding=1).sum(), [w64])
    w32 = w.float().requires_grad_()
    out = frame_conv(x.float(), w32, (1, 1), (1, 1), (1, 1), 1, f_in)
    (got,) = torch.autograd.grad(out.sum(), [w32])
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=0)
    torch.testing.assert_close(out.double(), F.conv2d(x, w, padding=1), rtol=2e-6, atol=0)
