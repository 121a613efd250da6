"""Torch-Pruning, the optional library that does the channel surgery.

fxpath ranks channels and certifies the result; Torch-Pruning (``pip install "fxpath[prune]"``)
finds the coupled channels (its ``DependencyGraph``) and cuts them. It is imported only here, on
first use, so the rest of fxpath works without it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from fxpath.errors import FxPathError

__all__ = ["INSTALL", "torch_pruning"]

#: the command that installs the optional extra
INSTALL = 'pip install "fxpath[prune]"'


def torch_pruning() -> ModuleType:
    """The ``torch_pruning`` module, or an `FxPathError` with the install command."""
    try:
        return importlib.import_module("torch_pruning")
    except ImportError as exc:
        raise FxPathError(f"structured pruning needs Torch-Pruning, which is not installed "
                          f"({exc}); install it with: {INSTALL}") from exc
