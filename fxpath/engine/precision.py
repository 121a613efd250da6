"""Full float32 precision inside the path networks: no TensorFloat-32.

PyTorch lets cuDNN convolutions use TF32 by default on Ampere and later GPUs (10-bit mantissa,
about 1e-3 relative error), and users often allow it for matmuls too. A path network must not
inherit that: its results would move in the fourth digit with no warning. `ieee_float32` sets
the convolution and matmul precision to IEEE float32 for the duration of a call (and of a CUDA
graph capture) and restores the user's settings exactly afterwards, through the same API it read
them with, so that PyTorch's legacy and new precision switches never end up mixed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch

__all__ = ["ieee_float32"]


def _has_precision(*owners: object) -> list[object]:
    """Those of ``owners`` that this torch gives an ``fp32_precision`` string (torch >= 2.9)."""
    return [o for o in owners if o is not None and hasattr(o, "fp32_precision")]


def _quiet(fn: Callable[[], object]) -> object:
    """Call a legacy switch: newer torch calls it deprecated (it still rules), or refuses to
    read it when the user mixed the legacy and new APIs (then None: left alone)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn()
        except RuntimeError:
            return None


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Run the body with TF32 off for cuDNN convolutions and cuBLAS matmuls; restore after.

    PyTorch keeps legacy switches (``allow_tf32``, ``set_float32_matmul_precision``) beside the
    per-op ``fp32_precision`` strings and refuses to run a matmul or read a switch when the two
    disagree: both are set here, and both restored to exactly what they were.
    """
    b = torch.backends
    conv, rnn = getattr(b.cudnn, "conv", None), getattr(b.cudnn, "rnn", None)
    ieee = _has_precision(b.cuda.matmul, conv, rnn)      # set to "ieee" inside
    owners = _has_precision(b, b.cudnn) + ieee           # restored after (parents first)
    saved = [o.fp32_precision for o in owners]  # type: ignore[attr-defined]
    legacy_cudnn = _quiet(torch._C._get_cudnn_allow_tf32)
    legacy_matmul = _quiet(torch.get_float32_matmul_precision)
    try:
        _quiet(lambda: torch._C._set_cudnn_allow_tf32(False))
        _quiet(lambda: torch.set_float32_matmul_precision("highest"))
        for o in ieee:
            o.fp32_precision = "ieee"  # type: ignore[attr-defined]
        yield
    finally:
        if legacy_cudnn is not None:
            _quiet(lambda: torch._C._set_cudnn_allow_tf32(legacy_cudnn))
        if legacy_matmul is not None:
            _quiet(lambda: torch.set_float32_matmul_precision(legacy_matmul))
        for o, value in zip(owners, saved):
            o.fp32_precision = value  # type: ignore[attr-defined]
