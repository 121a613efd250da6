"""Tiny model constructors for the brute-force oracle (never imports fxpath).

A :class:`Spec` describes a small network as a list of named nodes (torch modules or the string
ops ``'add'``, ``'cat'``, ``'mean'`` and channel pieces ``'chunk:K:I'`` / ``'split:S:I'``).
``Spec.build()`` gives a :class:`SpecNet`, an ``nn.Module`` whose forward is a static loop over
the nodes (``torch.fx.symbolic_trace``-able); its submodules are registered under the node
names, so parameters have ordinary state_dict names such as ``conv1.weight``. The small modules
here (:class:`Affine`, :class:`StdConv2d`, :class:`Interpolate`, :class:`ConvTransposeTo`,
:class:`FunctionalConvTranspose`) are forms found in real models that torch.nn has no class for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bruteforce.oracle import to_numpy

# --------------------------------------------------------------------------------------------
# Spec and torch module
# --------------------------------------------------------------------------------------------

STRING_OPS = ("add", "cat", "mean")
#: re-indexing string ops with arguments: ``"chunk:K:I"`` is ``torch.chunk(x, K, 1)[I]`` and
#: ``"split:S:I"`` is ``torch.split(x, S, 1)[I]`` (channel pieces of one multi-result op)
PIECE_OPS = ("chunk", "split")


def piece_op(op: str) -> tuple[str, int, int] | None:
    """``(kind, K or S, I)`` of a piece op string, else None."""
    parts = op.split(":")
    if len(parts) == 3 and parts[0] in PIECE_OPS:
        return parts[0], int(parts[1]), int(parts[2])
    return None


def piece(x: torch.Tensor, op: str) -> torch.Tensor:
    """The channel piece of ``x`` that piece op ``op`` names."""
    kind, n, i = piece_op(op)  # type: ignore[misc]
    return (torch.chunk(x, n, dim=1) if kind == "chunk" else torch.split(x, n, dim=1))[i]


_RESERVED = {"input_shape", "fold_bn", "spec_nodes", "spec_outputs"}


class Affine(nn.Module):
    """``x * weight + sign * bias`` with parameters broadcast against the batched input (a
    learnable scalar or per-channel affine, a layer scale, a learnable bias); either may be
    omitted (shape None)."""

    def __init__(self, weight_shape: Sequence[int] | None, bias_shape: Sequence[int] | None,
                 sign: float = 1.0) -> None:
        super().__init__()
        self.sign = sign
        self.weight = nn.Parameter(torch.randn(*weight_shape)) if weight_shape else None
        self.bias = nn.Parameter(torch.randn(*bias_shape)) if bias_shape else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None:
            x = x * self.weight
        if self.bias is not None:
            x = x + self.bias if self.sign > 0 else x - self.bias
        return x


class StdConv2d(nn.Conv2d):
    """A conv with weight standardization (timm's ScaledStdConv2d, simplified): the weight
    it applies is computed from its parameters at run time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1))

    def standardized(self) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return self.gain * (w - mean) / torch.sqrt(var + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.standardized(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class SpecNet(nn.Module):
    """nn.Module running a spec: a static loop over named nodes (fx-traceable)."""

    def __init__(
        self,
        input_shape: Sequence[int],
        nodes: Sequence[tuple[str, nn.Module | str, Sequence[str]]],
        outputs: Sequence[str],
        fold_bn: bool = True,
    ) -> None:
        """Register the module nodes under their names and remember the graph."""
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fold_bn = bool(fold_bn)
        self.spec_nodes: list[tuple[str, str, tuple[str, ...]]] = []
        for name, op, inputs in nodes:
            if isinstance(op, nn.Module):
                self.add_module(name, op)
                kind = "module"
            elif op in STRING_OPS or piece_op(op) is not None:
                kind = op
            else:
                raise ValueError(f"node {name!r}: unknown op {op!r}")
            self.spec_nodes.append((name, kind, tuple(inputs)))
        self.spec_outputs: tuple[str, ...] = tuple(outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Run the nodes in order; one tensor for one output, else a tuple."""
        env = {"x": x}
        for name, kind, inputs in self.spec_nodes:
            args = [env[i] for i in inputs]
            if kind == "module":
                env[name] = getattr(self, name)(*args)
            elif kind == "add":
                out = args[0]
                for a in args[1:]:
                    out = torch.add(out, a)
                env[name] = out
            elif kind == "cat":
                env[name] = torch.cat(args, dim=1)
            elif kind not in STRING_OPS:  # a channel piece of chunk / split
                env[name] = piece(args[0], kind)
            else:  # 'mean': global mean over H, W
                env[name] = torch.mean(args[0], dim=(2, 3))
        outs = tuple(env[o] for o in self.spec_outputs)
        return outs[0] if len(outs) == 1 else outs


class Spec:
    """Small graph description: named nodes fed by earlier nodes (the input is called 'x')."""

    def __init__(self, input_shape: Sequence[int], fold_bn: bool = True) -> None:
        """Start an empty spec for per-sample input shape ``input_shape``."""
        self.input_shape = tuple(int(s) for s in input_shape)
        self.fold_bn = fold_bn
        self.nodes: list[tuple[str, nn.Module | str, tuple[str, ...]]] = []
        self.outputs: list[str] = []

    def node(self, name: str, op: nn.Module | str, *inputs: str) -> Spec:
        """Add a node (inputs default to the previous node, or 'x'); returns self."""
        known = {"x"} | {n for n, _, _ in self.nodes}
        if (not name.isidentifier() or name in known or name in _RESERVED
                or hasattr(SpecNet, name)):
            raise ValueError(f"bad or duplicate node name {name!r}")
        if not inputs:
            inputs = (self.nodes[-1][0] if self.nodes else "x",)
        for i in inputs:
            if i not in known:
                raise ValueError(f"node {name!r}: unknown input {i!r}")
        self.nodes.append((name, op, tuple(inputs)))
        return self

    def output(self, *names: str) -> Spec:
        """Mark the output nodes (in order); returns self."""
        self.outputs = list(names)
        return self

    def build(self) -> SpecNet:
        """Return the SpecNet (in eval mode) running this spec."""
        outputs = self.outputs or [self.nodes[-1][0]]
        if len(set(outputs)) != len(outputs):
            raise ValueError("duplicate outputs")
        return SpecNet(self.input_shape, self.nodes, outputs, self.fold_bn).eval()


def module_output(module: nn.Module, x: Any) -> np.ndarray:
    """Run a SpecNet on one sample and return all outputs flattened and concatenated (float64)."""
    param = next(iter(module.parameters()), None)
    dtype = param.dtype if param is not None else torch.float64
    t = torch.as_tensor(to_numpy(x), dtype=dtype)
    if tuple(t.shape) == tuple(module.input_shape):
        t = t.unsqueeze(0)
    with torch.no_grad():
        out = module(t)
    outs = out if isinstance(out, tuple) else (out,)
    return np.concatenate([to_numpy(o[0]).reshape(-1) for o in outs])


# --------------------------------------------------------------------------------------------
# Functional forms of dense-prediction layers, as modules
# --------------------------------------------------------------------------------------------


class Interpolate(nn.Module):
    """``F.interpolate(x, **kwargs)`` as a module (the functional form inside a model)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.kwargs = dict(kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, **self.kwargs)


class ConvTransposeTo(nn.Module):
    """A transposed conv called with ``output_size`` (``self.conv(x, output_size=size)``)."""

    def __init__(self, conv: nn.Module, size: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv
        self.size = list(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, output_size=self.size)


class FunctionalConvTranspose(nn.Module):
    """``F.conv_transpose{1,2,3}d`` on parameters of its own (the functional form)."""

    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: int = 1,
                 padding: int = 0, output_padding: int = 0, groups: int = 1,
                 dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cin, cout // groups, *kernel) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout)) if bias else None
        self.stride, self.padding, self.output_padding = stride, padding, output_padding
        self.groups, self.dilation = groups, dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = {3: torch.nn.functional.conv_transpose1d, 4: torch.nn.functional.conv_transpose2d,
              5: torch.nn.functional.conv_transpose3d}[x.dim()]
        return fn(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                  self.groups, self.dilation)
