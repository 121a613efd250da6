"""Live parameters: the tensors behind the state_dict names a compiled IR reads.

fxpath keeps no copy of a model's parameters: every call reads them again, so no result is
ever computed from weights other than the live ones, however they were changed (``.data``
edits, ``load_state_dict``, optimizer steps, replaced ``Parameter``s, ``torch.nn.utils.prune``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from fxpath.errors import ArchitectureMismatchError
from fxpath.ir.graph import Derived

__all__ = ["ParamSource", "Params"]

Params = nn.Module | Mapping[str, Tensor]


class ParamSource:
    """Reads the live tensors behind state_dict names from a model or a state dict.

    A parameter pruned with ``torch.nn.utils.prune`` is read as ``<name>_orig * <name>_mask``,
    so the value is current even when the module's forward has not run since the last update.

    Args:
        params: a model or a state dict.
        names: the state_dict names to read.
        shapes: the shape each name must have (the compiled network's); a tensor of another
            shape raises `ArchitectureMismatchError` instead of being read.
        derived: the coordinates computed from ``names`` (`fxpath.ir.graph.Derived`), by IR name.
    """

    def __init__(self, params: Params, names: Sequence[str],
                 shapes: Mapping[str, torch.Size] | None = None,
                 derived: Mapping[str, Derived] | None = None) -> None:
        self._params = params
        self.names = tuple(names)
        self.derived = dict(derived or {})
        self._owners: dict[str, tuple[Any, str]] = {}
        self.shapes: dict[str, torch.Size] = dict(shapes or {})
        # one walk of the module tree, not one per name (a ResNet-50 reads 267 names)
        modules = dict(params.named_modules()) if isinstance(params, nn.Module) else {}
        for name in names:
            path, _, attr = name.rpartition(".")
            if isinstance(params, nn.Module):
                owner: Any = modules.get(path)
                if owner is None:
                    try:  # a module registered twice is listed once: look it up by path
                        owner = params.get_submodule(path)
                    except AttributeError as exc:
                        raise ArchitectureMismatchError(
                            f"the model has no submodule {path!r} (needed for {name}); the "
                            "parameter sets must share one architecture") from exc
                self._owners[name] = (owner, attr)
            shape = self.tensors(name)[0].shape  # fail early on a missing parameter
            self.shapes.setdefault(name, shape)

    def tensors(self, name: str) -> tuple[Tensor, ...]:
        """The tensors behind ``name``: ``(value,)`` or ``(orig, mask)`` for a pruned one."""
        if isinstance(self._params, nn.Module):
            owner, attr = self._owners[name]
            orig, mask = getattr(owner, f"{attr}_orig", None), getattr(owner, f"{attr}_mask", None)
            if isinstance(orig, Tensor) and isinstance(mask, Tensor):
                return self._checked(name, (orig, mask))
            value = getattr(owner, attr, None)
        else:
            params = self._params
            if f"{name}_orig" in params and f"{name}_mask" in params:
                return self._checked(name, (params[f"{name}_orig"], params[f"{name}_mask"]))
            value = params.get(name)
        if not isinstance(value, Tensor):
            raise ArchitectureMismatchError(
                f"parameter {name!r} not found or not a tensor; the two parameter sets must "
                "come from the same architecture")
        return self._checked(name, (value,))

    def _checked(self, name: str, ts: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        want = self.shapes.get(name)
        for t in ts:
            if want is not None and t.shape != want:
                raise ArchitectureMismatchError(
                    f"parameter {name!r} has shape {tuple(t.shape)}, the compiled network reads "
                    f"{tuple(want)}: the model changed since fxpath.compile (compile it again), "
                    "or the parameter set belongs to another architecture")
        return ts

    def shape_of(self, name: str) -> torch.Size:
        """The shape of a name the IR reads (a state_dict name or a derived coordinate)."""
        d = self.derived.get(name)
        return torch.Size(d.shape) if d is not None else self.shapes[name]

    def fetch(self, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The current value of ``name`` in ``dtype`` on ``device`` (a derived coordinate
        computed from the current values of its inputs)."""
        d = self.derived.get(name)
        if d is not None:
            value = d.fn(*(self.fetch(i, dtype, device) for i in d.inputs))
            return value.to(device=device, dtype=dtype)
        ts = self.tensors(name)
        value = ts[0] if len(ts) == 1 else ts[0] * ts[1]
        return value.to(device=device, dtype=dtype)

    def nonfinite(self, bn_eps: Mapping[str, float]) -> list[str]:
        """Names of the tensors read that hold NaN or inf, and of BatchNorm running variances
        (``bn_eps``: name -> eps) with entries ``<= -eps`` (their ``rsqrt`` is not finite)."""
        bad = []
        for name in self.names:
            for t in self.tensors(name):
                if not t.is_floating_point():
                    continue
                t = t.detach()
                if not bool(torch.isfinite(t).all()):
                    bad.append(name)
                    break
                if name in bn_eps and bool((t + bn_eps[name] <= 0).any()):
                    bad.append(f"{name} (entries <= -eps: rsqrt(var + eps) is not finite)")
                    break
        return bad
