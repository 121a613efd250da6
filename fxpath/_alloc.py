"""Large fresh CPU outputs backed by transparent huge pages.

A score tensor as large as VGG-16's first dense layer (411 MB) is new memory on every call, and
the kernel maps it 4 KiB at a time: about 100k page faults, which on virtual machines cost as
much as the arithmetic that fills it. PyTorch backs large CPU tensors with 2 MiB pages only when
``THP_MEM_ALLOC_ENABLE=1`` is set before it starts (a process-wide choice); this does the same for
fxpath's own large outputs, through Python's ``mmap`` (private anonymous memory, 2 MiB aligned,
``MADV_HUGEPAGE``). Where that is unavailable it falls back to ``torch.empty``.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["empty"]

_HUGE = 2 << 20  # 2 MiB: the huge-page size on x86-64 and the usual arm64 configuration
_MIN_BYTES = 8 << 20  # below this, the C allocator's reuse makes page faults rare anyway


def _huge_pages_available() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


_AVAILABLE = hasattr(mmap, "MADV_HUGEPAGE") and _huge_pages_available()


def empty(shape: Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """An uninitialized contiguous tensor; large CPU ones live on transparent huge pages.

    The tensor owns its memory (it keeps the mapping alive and releases it when collected), and
    is an ordinary CPU tensor in every other respect.
    """
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    if device.type != "cpu" or nbytes < _MIN_BYTES or not _AVAILABLE:
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    try:
        buf = mmap.mmap(-1, nbytes + _HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (OSError, ValueError):
        return torch.empty(tuple(shape), dtype=dtype, device=device)
    raw = torch.frombuffer(buf, dtype=torch.uint8)
    start = (-raw.data_ptr()) % _HUGE
    return raw[start:start + nbytes].view(dtype).view(tuple(shape))
