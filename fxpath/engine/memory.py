"""Fresh CPU memory for big score tensors, backed by transparent huge pages where Linux allows.

A one-off `path_magnitude` returns as many scores as the model has parameters (VGG-16: 528 MB).
Fresh memory from the CPU allocator is mapped by the kernel one 4 KiB page at a time on first
write; on a small VM that costs more than computing the scores (411 MB of VGG-16's first dense
layer: about 165 ms of page faults out of 265 ms). Asking the kernel for 2 MiB pages on the
tensor's range (``madvise(MADV_HUGEPAGE)``) before the first write removes most of it. This is
what PyTorch's ``THP_MEM_ALLOC_ENABLE=1`` does for every allocation of the process; here it is
done only for the scores fxpath returns and the path-metric's envelopes
(`fxpath.quantities.envelope`). The memory stays a plain PyTorch allocation (freed, profiled and
accounted as usual); where ``madvise`` is missing or refused nothing changes.
"""

from __future__ import annotations

import ctypes
import functools
import sys

import torch
from torch import Tensor

__all__ = ["empty_scores"]

_HUGE = 1 << 21          # a transparent huge page on x86-64 and arm64 Linux
_MADV_HUGEPAGE = 14      # <sys/mman.h>
_MIN_BYTES = 4 * _HUGE   # smaller tensors gain nothing worth a system call


@functools.cache
def _madvise() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def empty_scores(shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    """``torch.empty(shape)``; on a Linux CPU and above 8 MiB, with huge pages requested for
    its 2 MiB-aligned interior before anything touches it."""
    out = torch.empty(shape, dtype=dtype, device=device)
    nbytes = out.numel() * out.element_size()
    madvise = _madvise() if device.type == "cpu" and nbytes >= _MIN_BYTES else None
    if madvise is not None:
        start = -(-out.data_ptr() // _HUGE) * _HUGE
        end = (out.data_ptr() + nbytes) // _HUGE * _HUGE
        if end > start:
            madvise(start, end - start, _MADV_HUGEPAGE)  # type: ignore[operator]
    return out
