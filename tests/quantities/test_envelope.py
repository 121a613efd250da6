"""`envelope` against the whole-tensor formulas, across block boundaries."""

from __future__ import annotations

import pytest
import torch

from fxpath.quantities import envelope as env_module
from fxpath.quantities.envelope import envelope


@pytest.mark.parametrize("case", ["mixed", "same", "a_over", "b_over", "zeros"])
def test_envelope_matches_whole_tensor_formulas(case: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env_module, "BLOCK", 7)  # many blocks and a ragged last one
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 11, generator=gen)
    b = torch.randn(5, 11, generator=gen)
    if case == "same":
        b = a.sign() * b.abs()
    elif case == "a_over":
        b = a * torch.rand(5, 11, generator=gen)
    elif case == "b_over":
        a = b * torch.rand(5, 11, generator=gen)
    elif case == "zeros":
        a[::2] = 0.0
        b = b.abs() * a.sign()
    e = envelope(a, b)
    x, y = a.abs(), b.abs()
    assert torch.equal(e.lo, torch.minimum(x, y)) and torch.equal(e.gap, (x - y).abs())
    assert bool(e.same_sign) == bool((a * b >= 0).all())
    assert bool(e.a_over) == bool((y <= x).all())
    assert bool(e.b_over) == bool((x <= y).all())
    expected = {"mixed": False, "same": True, "a_over": True, "b_over": True, "zeros": True}
    assert bool(e.same_sign) == expected[case]
    assert e.lo.shape == a.shape


def test_empty_tensors() -> None:
    e = envelope(torch.empty(0, 3), torch.empty(0, 3))
    assert e.lo.shape == (0, 3) and bool(e.same_sign) and bool(e.a_over)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opposite_signs_of_tiny_weights_are_seen(dtype: torch.dtype) -> None:
    """``a * b`` underflows to -0.0 for tiny weights; the sign test must not use it."""
    tiny = torch.finfo(dtype).tiny ** 0.75  # its square underflows
    a = torch.tensor([1.0, tiny], dtype=dtype)
    b = torch.tensor([1.0, -tiny], dtype=dtype)
    assert (a * b)[1].item() == 0.0  # the premise: the product underflows
    assert not bool(envelope(a, b).same_sign)


def test_reference_comparison_is_bitwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(env_module, "BLOCK", 5)
    a = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    b = a * 0.5
    assert envelope(a, b, ref=a.abs()).matches_ref
    changed = a.abs().clone()
    changed[3, 5] = torch.nextafter(changed[3, 5], torch.tensor(10.0))
    assert not envelope(a, b, ref=changed).matches_ref
    assert not envelope(a, b).matches_ref


@pytest.mark.parametrize("block", [7, 40, 1 << 18])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("which", ["a", "b", "both"])
def test_factored_operands_give_the_multiplied_out_envelope(
        block: int, dim: int, which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folded BatchNorm weight left as ``W`` and ``s`` (scale along the output channels:
    dimension 0 of a conv, 1 of a transposed conv), multiplied out one block of rows at a
    time: the same ``lo``, ``gap`` and flags, bit for bit, as the product written out."""
    from fxpath.ir.coordinates import Factored

    monkeypatch.setattr(env_module, "BLOCK", block)  # rows wider than a block, and many rows
    gen = torch.Generator().manual_seed(block + dim)
    shape = (6, 5, 3, 3)
    scale_shape = [1] * 4
    scale_shape[dim] = shape[dim]
    wa, wb = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    wb = torch.where(torch.rand(shape, generator=gen) < 0.9, wa.sign() * wb.abs(), wb)
    sa = torch.randn(scale_shape, generator=gen)
    sb = sa * (1 + 0.01 * torch.rand(scale_shape, generator=gen))
    a, b = wa * sa, wb * sb
    fa = Factored(wa, sa) if which in ("a", "both") else a
    fb = Factored(wb, sb) if which in ("b", "both") else b
    ref = a.abs()
    want, got = envelope(a, b, ref), envelope(fa, fb, ref)
    assert torch.equal(got.lo, want.lo) and torch.equal(got.gap, want.gap)
    for flag in ("same_sign", "a_over", "b_over", "matches_ref"):
        assert bool(getattr(got, flag)) == bool(getattr(want, flag)), flag
    assert got.matches_ref
