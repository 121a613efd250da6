"""The geometry of a convolution on a compressed image: which rows a framed input can lose.

When a conv's input has a frame (see `fxpath.codegen.frames`), deleting ``s * D`` identical interior
rows from the input (``s`` the stride) deletes exactly ``D`` identical interior rows from the
output, as long as the cut is surrounded by interior rows. `compression` finds, per spatial
dimension, the largest such cut (VGG-16's first layers: 224x224 -> 8x8 are left); the output's
interior rows are then all equal to one row. Every output entry is the same sum of the same
products a dense convolution computes.

The path networks never expand these outputs: they keep them compact, one interior row per
axis (`fxpath.layout`), and the next compressed conv reads the rows it needs straight from
there. `fxpath.kernels.grad_frame` uses the same geometry for output gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fxpath.kernels.geometry import Frame, window_frame

__all__ = ["Cut", "compression"]


@dataclass(frozen=True)
class Cut:
    """One spatial dimension: input rows ``[at, at + stride * count)`` and output rows
    ``[lo + 1, lo + 1 + count)`` are deleted; output rows ``[lo, size - hi)`` are interior."""

    at: int
    count: int
    stride: int
    lo: int
    hi: int
    size: int  # output size along the dimension

    @property
    def deleted_in(self) -> int:
        return self.stride * self.count


def _cut(frame_in: tuple[int, int], frame_out: tuple[int, int], size_in: int, size_out: int,
         k: int, s: int, p: int, d: int) -> Cut:
    (lo_in, _), (lo, hi) = frame_in, frame_out
    at = max(lo_in, s * (lo - 1) - p + d * (k - 1) + 1)  # after every read of the low frame
    count = min((s * (size_out - hi) - p - at) // s,  # before every read of the high frame
                size_out - hi - lo - 1,              # one interior row stays
                (size_in - at) // s)
    return Cut(at, max(count, 0), s, lo, hi, size_out)


def compression(size_in: Sequence[int], kernel: Sequence[int], stride: Sequence[int],
                padding: Sequence[int], dilation: Sequence[int], frame_in: Frame
                ) -> tuple[Cut, ...]:
    """The cut of every spatial dimension (``count == 0``: nothing deleted there)."""
    size_out = [(n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, k, s, p, d in zip(size_in, kernel, stride, padding, dilation)]
    frame_out = window_frame(frame_in, size_in, size_out, kernel, stride, padding, dilation)
    return tuple(_cut(fi, fo, n, m, k, s, p, d) for fi, fo, n, m, k, s, p, d in
                 zip(frame_in, frame_out, size_in, size_out, kernel, stride, padding, dilation))
