"""`empty_scores`: plain tensors, with huge pages requested for big CPU ones on Linux."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fxpath.engine.memory import empty_scores

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _anon_huge_kib(start: int, end: int) -> int:
    """AnonHugePages of the mappings overlapping ``[start, end)`` (``/proc/self/smaps``; the
    advice splits the allocation's mapping in three)."""
    inside, total = False, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo < end and start < hi
        elif inside and head == "AnonHugePages:":
            total += int(line.split()[1])
    return total


@pytest.mark.parametrize("shape,dtype", [((3,), torch.float32), ((4096, 4097), torch.float64)])
def test_empty_scores_is_a_plain_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    t = empty_scores(shape, dtype, torch.device("cpu"))
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
    t.fill_(2.0)
    assert float(t.sum()) == 2.0 * t.numel()


def test_huge_pages_are_requested_for_the_aligned_interior(monkeypatch) -> None:
    from fxpath.engine import memory

    calls = []
    monkeypatch.setattr(memory, "_madvise", lambda: lambda *args: calls.append(args) or 0)
    t = empty_scores((16 << 20) // 4, torch.float32, torch.device("cpu"))
    (start, length, advice), = calls
    assert advice == 14 and start % (2 << 20) == 0 and length % (2 << 20) == 0
    assert t.data_ptr() <= start and start + length <= t.data_ptr() + (16 << 20)
    assert length >= (16 << 20) - (4 << 20)
    calls.clear()
    empty_scores((1000,), torch.float32, torch.device("cpu"))  # small: no system call
    assert not calls


PROBE = """
import sys, torch
sys.path.insert(0, "tests/engine")
from test_memory import _anon_huge_kib
from fxpath.engine.memory import empty_scores
t = empty_scores((64 << 20) // 4, torch.float32, torch.device("cpu"))
t.fill_(1.0)
print(_anon_huge_kib(t.data_ptr(), t.data_ptr() + (64 << 20)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not THP.exists()
                    or "[never]" in THP.read_text(), reason="no transparent huge pages here")
def test_big_scores_get_huge_pages() -> None:
    """In a fresh process (so the allocation is fresh memory, not pages a long test session
    already touched), the kernel backs the tensor with huge pages."""
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).parents[2])
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) >= 2048
