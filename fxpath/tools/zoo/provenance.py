"""Where results come from: the git commit of fxpath's checkout, the CPU's name, and the
`provenance` line of the zoo's reports (versions, machine, settings). The benchmarks record
`git_commit` and `cpu_name` beside their figures too."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

__all__ = ["cpu_name", "git_commit", "provenance"]

#: the checkout holding the package: fxpath/tools/zoo/provenance.py -> the repository root
_CHECKOUT = Path(__file__).resolve().parents[3]


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the package's checkout (else of the working
    directory's, for a copy of the package run from a checkout), ``+`` when fxpath's sources
    (``fxpath/``, ``passes/``, untracked files included) differ from it, ``unknown`` outside
    a checkout. The benchmarks record it beside their figures."""
    for root in (_CHECKOUT, Path.cwd()):
        if (root / ".git").exists():
            break
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=root, check=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "fxpath", "passes"],
                               capture_output=True, text=True, cwd=root, check=True,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("+" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo`` (``None`` where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def provenance(**settings: Any) -> dict[str, str]:
    """Where the results come from: commit, versions, machine, and the sweep's settings."""
    from importlib.metadata import version

    import timm
    import torchvision

    __version__ = version("fxpath")

    commit = os.environ.get("FXPATH_ZOO_COMMIT") or git_commit()  # a copy of the sources
    info = {"fxpath": __version__, "commit": commit, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": str(os.cpu_count())}
    if (cpu := cpu_name()) is not None:
        info["cpu"] = cpu
    info.update({k: str(v) for k, v in settings.items()})
    return info
