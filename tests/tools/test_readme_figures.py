"""The README's measured figures about the install and the tests stay current (issue 21, section
6): the CUDA libraries' share of the install, and the number of tests of the default tier."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_says_what_a_cpu_only_machine_gets() -> None:
    """torch from the registry is a CUDA build: its CUDA libraries (the nvidia-* wheels and
    torch's libtorch_cuda*) are installed on a CPU-only machine too; the README says how big."""
    stated = re.search(r"a CPU-only machine gets its CUDA\s+libraries too, about ([\d.]+) GB",
                       README)
    assert stated, "the install note does not say what the CUDA libraries weigh"
    if torch.version.cuda is None:
        pytest.skip("a CPU build of torch: no CUDA libraries to weigh")
    site = Path(torch.__file__).resolve().parents[1]
    nvidia = sum(f.stat().st_size for f in (site / "nvidia").rglob("*") if f.is_file())
    torch_cuda = sum(f.stat().st_size for f in (site / "torch" / "lib").glob("*cuda*"))
    assert (nvidia + torch_cuda) / 1e9 == pytest.approx(float(stated.group(1)), rel=0.2)


@pytest.mark.slow
def test_readme_test_count_is_current() -> None:
    """The default tier's test count in the README is within 25% of what pytest collects."""
    stated = re.search(r"the default tier \(about ([\d,]+)\s+tests", README)
    assert stated
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                           "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    collected = re.search(r"^(\d+)(?:/\d+)? tests? collected", done.stdout, re.M)
    assert done.returncode == 0 and collected, done.stdout[-2000:]
    assert int(collected.group(1)) == pytest.approx(int(stated.group(1).replace(",", "")),
                                                    rel=0.25)
