"""``resample``: interpolation (``F.interpolate``, ``nn.Upsample``) as a fixed linear map.

Every fixed-weight mode of ``F.interpolate`` (nearest, nearest-exact, linear, bilinear,
trilinear, bicubic; bilinear, bicubic and lanczos with ``antialias``) computes each output
entry as a fixed combination of the input entries of its channel, and the combination is
*separable*: it is the product of one coefficient matrix per spatial axis, ``A_j`` of shape
``(out_j, in_j)``. ``area`` is an adaptive average pool and lowers to one
(`fxpath.frontend.lower.core`).

A node carries what PyTorch's kernel receives (``mode``, ``align_corners``, ``antialias``, the
per-axis ``scales`` or ``None``; the output size is the node's shape), never coefficients of its
own: `axis_matrices` reads them off PyTorch's own kernel applied to one-hot inputs in float64,
one axis at a time, so that every index rule (``align_corners``, scale factors given or
recomputed, border clamping) is PyTorch's. Two taps that land on the same input (bicubic's
clamping at a border) are one edge whose weight is their sum, as the matrix has it.

In the path network an edge of weight ``c`` carries ``|c|^q``: the network applies ``|A_j|^q``
along each axis. Where all coefficients are non-negative and ``q = 1`` (and for 0/1 nearest
coefficients at any ``q``) that is the model's own op, which the network then calls.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from fxpath.ir.coordinates import Slot
from fxpath.ir.graph import Graph, Node
from fxpath.kernels.emit import Emitter, Value
from fxpath.kernels.geometry import Frame, centre_run
from fxpath.ops.core import (
    INT,
    Attr,
    Check,
    Op,
    Rescaling,
    RunContext,
    does_not_apply,
    is_a,
    one_of,
    register,
)

__all__ = ["MODES", "RESAMPLE", "apply_axes", "axis_matrices", "check_separable", "kernel",
           "resample_call"]

aten = torch.ops.aten

#: the interpolation modes of a ``resample`` node (``area`` is an adaptive average pool)
MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "bicubic", "lanczos")
#: modes whose kernel takes no ``align_corners``
NEAREST = ("nearest", "nearest-exact")

#: (mode, antialias) -> spatial rank -> the ATen kernel (its overload packet)
_KERNELS: dict[tuple[str, bool], dict[int, str]] = {
    ("nearest", False): {1: "upsample_nearest1d", 2: "upsample_nearest2d",
                         3: "upsample_nearest3d"},
    ("nearest-exact", False): {1: "_upsample_nearest_exact1d", 2: "_upsample_nearest_exact2d",
                               3: "_upsample_nearest_exact3d"},
    ("linear", False): {1: "upsample_linear1d"},
    ("bilinear", False): {2: "upsample_bilinear2d"},
    ("trilinear", False): {3: "upsample_trilinear3d"},
    ("bicubic", False): {2: "upsample_bicubic2d"},
    ("bilinear", True): {2: "_upsample_bilinear2d_aa"},
    ("bicubic", True): {2: "_upsample_bicubic2d_aa"},
    ("lanczos", True): {2: "_upsample_lanczos2d_aa"},
}

#: ATen kernel name -> (mode, antialias), for the torch.export front end
ATEN_KERNELS: dict[str, tuple[str, bool]] = {
    name: key for key, by_rank in _KERNELS.items() for name in by_rank.values()}

Scales = tuple[float | None, ...]


def kernel(mode: str, nd: int, antialias: bool) -> str | None:
    """The name of PyTorch's kernel for ``mode`` at spatial rank ``nd``, or None."""
    return _KERNELS.get((mode, bool(antialias)), {}).get(nd)


def resample_call(x: Tensor, mode: str, size: Sequence[int], align_corners: bool,
                  scales: Scales, antialias: bool) -> Tensor:
    """PyTorch's interpolation kernel, called as ``F.interpolate`` calls it: output ``size``,
    per-axis ``scales`` (``None``: the kernel derives them from the sizes)."""
    name = kernel(mode, len(size), antialias)
    if name is None:
        raise ValueError(f"no interpolation kernel for mode {mode!r} (antialias={antialias}) "
                         f"in {len(size)} spatial dimensions")
    op = getattr(aten, name).default
    if mode in NEAREST:
        return op(x, list(size), *scales)
    return op(x, list(size), bool(align_corners), *scales)


@functools.lru_cache(maxsize=256)
def axis_matrices(mode: str, in_size: tuple[int, ...], out_size: tuple[int, ...],
                  align_corners: bool, scales: Scales, antialias: bool) -> tuple[Tensor, ...]:
    """One float64 coefficient matrix ``(out_j, in_j)`` per spatial axis, read off PyTorch's
    kernel applied to the one-hot inputs of that axis (the kernel computes each axis's indices
    and weights on its own; `check_separable` proves the product is the op).

    The tensors are cached: never write to them.
    """
    nd = len(in_size)
    mats = []
    for j in range(nd):
        n_in, n_out = in_size[j], out_size[j]
        shape = [n_in, 1] + [1] * nd
        shape[2 + j] = n_in
        # the other axes have size 2 kept at 2 (the identity in every mode; the antialiased
        # kernels mishandle a size-1 axis), and only their first entry is read
        eye = torch.eye(n_in, dtype=torch.float64).reshape(shape).expand(
            [n_in, 1] + [n_in if k == j else 2 for k in range(nd)]).contiguous()
        size = [n_out if k == j else 2 for k in range(nd)]
        axis_scales = tuple(scales[j] if k == j else None for k in range(nd))
        out = resample_call(eye, mode, size, align_corners, axis_scales, antialias)
        first = [slice(None), 0] + [slice(None) if k == j else 0 for k in range(nd)]
        mats.append(out[tuple(first)].reshape(n_in, n_out).t().contiguous())
    return tuple(mats)


def apply_axes(x: Tensor, mats: Sequence[Tensor]) -> Tensor:
    """``x`` (batched, channels first) with ``mats[j]`` applied along spatial axis ``j``."""
    nd = len(mats)
    order = sorted(range(nd), key=lambda j: mats[j].shape[0] / mats[j].shape[1])
    for j in order:  # shrinking axes first: less work for the others
        a = mats[j].to(x.dtype)
        if j == nd - 1:
            x = torch.matmul(x, a.t())
        elif j == nd - 2:
            x = torch.matmul(a, x)
        else:
            x = torch.matmul(x.movedim(2 + j, -1), a.t()).movedim(-1, 2 + j)
    return x


def check_separable(mode: str, in_size: tuple[int, ...], out_size: tuple[int, ...],
                    align_corners: bool, scales: Scales, antialias: bool) -> None:
    """Raise ValueError unless the per-axis matrices reproduce PyTorch's kernel on a random
    input (float64, relative 1e-12): the separable description is then the op's own."""
    mats = axis_matrices(mode, in_size, out_size, align_corners, scales, antialias)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((1, 1, *in_size), generator=gen, dtype=torch.float64)
    want = resample_call(x, mode, out_size, align_corners, scales, antialias)
    got = apply_axes(x, mats)
    err = float((got - want).abs().max()) if want.numel() else 0.0
    if got.shape != want.shape or err > 1e-12 * max(1.0, float(want.abs().max())):
        raise ValueError(f"its coefficients are not one matrix per spatial axis (separable "
                         f"check off by {err:.3g}), so fxpath has no exact description of it")


# -- rules ------------------------------------------------------------------------------------
def _matrices(n: Node, in_shape: Sequence[int]) -> tuple[Tensor, ...]:
    a = n.attrs
    return axis_matrices(a["mode"], tuple(in_shape[1:]), tuple(n.shape[1:]),
                         a["align_corners"], a["scales"], a["antialias"])


def _own_op(mats: Sequence[Tensor], q: float) -> bool:
    """Whether ``|A|^q`` is ``A`` itself: non-negative coefficients and q = 1, or 0/1 ones."""
    if any(bool((m < 0).any()) for m in mats):
        return False
    return q == 1.0 or all(bool(((m == 0) | (m == 1)).all()) for m in mats)


def _growth(mats: Sequence[Tensor]) -> float:
    """A bound on how much the map can grow the largest entry: the product of the largest
    row sums of ``|A_j|``."""
    bound = 1.0
    for m in mats:
        bound *= float(m.abs().sum(1).max()) if m.numel() else 0.0
    return bound


def _renormalized(e: Emitter, n: Node, out: Value, mats: Sequence[Tensor]) -> Value:
    """``out``, renormalized only if the map may have grown its largest entry more than
    twofold: nearest and (bi/tri)linear interpolation never do (0/1 rows, convex rows), so
    they skip a pass over their (upsampled, large) output."""
    if _growth(mats) <= 2.0:
        return out
    return e.rescaled(n, out.streams, out.exp)


def _resample_path(e: Emitter, n: Node, ins: list[Value], slots: list[Slot]) -> Value:
    """``|A_j|^q`` along each spatial axis ``j``: the model's own kernel where that is the
    same map (non-negative coefficients at q = 1, nearest at any q), else the matrices; the
    scale is tracked as for any layer (renormalized when the map can grow it)."""
    a = n.attrs
    mats = _matrices(n, e.shapes[n.inputs[0]])
    if _own_op(mats, e.q):
        out = e.map(ins[0], lambda x: e.call(
            resample_call, x, a["mode"], tuple(n.shape[1:]), a["align_corners"], a["scales"],
            a["antialias"], name=f"{n.name}_resample"))
        return _renormalized(e, n, out, mats)
    shift = 0.0
    buffers, applied = [], []
    for j, m in enumerate(mats):
        mantissa, s = e.tensor_power_split(m)
        shift += s
        applied.append(mantissa)
        buffers.append(e.buffer(f"{n.name}_axis{j}", mantissa))
    out = e.map(ins[0], lambda x: e.call(apply_axes, x, buffers, name=f"{n.name}_resample"))
    shifted = Value(out.streams, e.shift(out.exp, shift, f"{n.name}_coeff_exp"))
    return _renormalized(e, n, shifted, applied)


def _resample_run(n: Node, xs: list[Tensor], ctx: RunContext) -> Tensor:
    """PyTorch's interpolation kernel, as the model calls it."""
    a = n.attrs
    return resample_call(xs[0], a["mode"], tuple(n.shape[1:]), a["align_corners"], a["scales"],
                         a["antialias"])


def _axis_frame(m: Tensor, lo: int, hi: int) -> tuple[int, int]:
    """The frame of one axis's output: rows whose border coefficients are equal and whose
    interior coefficients are the same multiset map a constant interior to equal values."""
    rows, k = m.shape
    lo = min(lo, k)
    mid = max(lo, k - hi)
    sig = torch.cat([m[:, :lo].abs(), m[:, mid:].abs(),
                     m[:, lo:mid].abs().sort(dim=1).values], dim=1)
    return centre_run((sig[1:] == sig[:-1]).all(dim=1).tolist(), rows)


def _resample_frame(n: Node, ins: list[Frame | None], shapes: list[tuple[int, ...]]
                    ) -> Frame | None:
    """Per axis, the widest run of output rows around the middle that read the input's
    border with equal coefficients and its constant interior with the same multiset of
    coefficients (exact, from the matrices)."""
    f = ins[0]
    if f is None:
        return None
    mats = _matrices(n, shapes[0])
    return tuple(_axis_frame(m, lo, hi) for m, (lo, hi) in zip(mats, f))


def _resample_transit(graph: Graph, node: Node, src: str, ids: Tensor) -> Tensor | None:
    """Channels pass through: each output channel combines its own input channel only."""
    if graph[src].channel_dim() != 1:
        return None
    per_channel = ids.amax(tuple(range(2, ids.dim())), keepdim=True)
    return per_channel.expand((1, *node.shape))


_SCALES = Check("tuple[float|None]", lambda v: isinstance(v, tuple) and all(
    s is None or (isinstance(s, float) and s > 0) for s in v))

RESAMPLE = register(Op(
    name="resample",
    doc="interpolation (`F.interpolate`, `nn.Upsample`): a fixed linear map per channel, one "
        "coefficient matrix per spatial axis, read off PyTorch's kernel for `mode` "
        "(`align_corners`, `antialias`, the per-axis `scales` it receives; the output size is "
        "the node's shape)",
    attrs={"mode": Attr(one_of(*MODES)), "ndim": Attr(INT),
           "align_corners": Attr(is_a(bool)), "antialias": Attr(is_a(bool)),
           "scales": Attr(_SCALES)},
    path_rule=_resample_path, interpret_rule=_resample_run, frame_rule=_resample_frame,
    rescale_rule=Rescaling("passes per channel (channels-first)", transit=_resample_transit),
    slots_rule=does_not_apply("fixed coefficients: no parameters"),
))
