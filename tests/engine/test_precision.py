"""`ieee_float32`: TF32 off inside, the user's precision settings restored exactly after.

Each case runs in a fresh interpreter: PyTorch's precision switches are process-global.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

PROBE = """
import torch
from fxpath.engine.precision import ieee_float32
B = torch.backends

def safe(f):
    try:
        return f()
    except RuntimeError:
        return "refused"

def state():
    return (B.fp32_precision, B.cuda.matmul.fp32_precision, B.cudnn.fp32_precision,
            B.cudnn.conv.fp32_precision, B.cudnn.rnn.fp32_precision,
            safe(torch._C._get_cudnn_allow_tf32), safe(torch._C._get_cublas_allow_tf32),
            safe(torch.get_float32_matmul_precision))

SETUP
before = state()
with ieee_float32():
    inside = state()
assert inside[1] == inside[3] == inside[4] == "ieee", inside
assert inside[5:] == (False, False, "highest"), inside
assert state() == before, (before, state())
"""

SETUPS = {
    "defaults": "",
    "user matmul precision high": "torch.set_float32_matmul_precision('high')",
    "legacy cudnn tf32 off": "B.cudnn.allow_tf32 = False",
    "legacy matmul tf32 on": "B.cuda.matmul.allow_tf32 = True",
    "new api conv ieee": "B.cudnn.conv.fp32_precision = 'ieee'",
    "new api matmul tf32": "B.cuda.matmul.fp32_precision = 'tf32'",
}


@pytest.fixture(scope="module")
def probes() -> Iterator[dict[str, subprocess.Popen]]:
    """Every case's interpreter, started at once (each imports torch: they overlap)."""
    started = {name: subprocess.Popen([sys.executable, "-W", "error", "-c",
                                       PROBE.replace("SETUP", setup)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, setup in SETUPS.items()}
    yield started
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_tf32_off_inside_and_settings_restored(setup: str,
                                               probes: dict[str, subprocess.Popen]) -> None:
    _out, err = probes[setup].communicate(timeout=120)
    assert probes[setup].returncode == 0, err[-2000:]
