"""`PathProgram`: a model traced, normalized and compiled once; path quantities on demand."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

from .codegen import generate, tapped_nodes
from .envelope import Envelope, envelope
from .errors import FxPathError
from .graphs import GraphedCall
from .ir import Graph
from .lift import Slot, lift, slots
from .lower import has_rule, lower
from .memory import empty_scores
from .passes import normalize
from .precision import ieee_float32
from .results import PathMetric, PathNorm, log2_of
from .tracer import trace_graph

__all__ = ["ParamSource", "PathProgram", "as_shapes"]

Params = nn.Module | Mapping[str, Tensor]

#: on a GPU, ``interior=None`` compresses only convs of at least this many multiply-adds
GPU_INTERIOR_MIN_MACS = 500_000_000


def as_shapes(input_shape: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Normalize ``(3, 224, 224)`` or ``[(3, 224, 224), (10,)]`` to a list of shapes."""
    if len(input_shape) and all(isinstance(s, (tuple, list, torch.Size)) for s in input_shape):
        return [tuple(int(d) for d in s) for s in input_shape]
    return [tuple(int(d) for d in input_shape)]


class ParamSource:
    """Reads the live tensors behind state_dict names from a model or a state dict.

    A parameter pruned with ``torch.nn.utils.prune`` is read as ``<name>_orig * <name>_mask``,
    so the value is current even when the module's forward has not run since the last update.
    """

    def __init__(self, params: Params, names: Sequence[str]) -> None:
        self._params = params
        self.names = tuple(names)
        self._owners: dict[str, tuple[Any, str]] = {}
        for name in names:
            path, _, attr = name.rpartition(".")
            if isinstance(params, nn.Module):
                try:
                    owner: Any = params.get_submodule(path)
                except AttributeError as exc:
                    raise FxPathError(f"the model has no submodule {path!r} (needed for "
                                      f"{name}); the parameter sets must share one "
                                      "architecture") from exc
                self._owners[name] = (owner, attr)
            self.tensors(name)  # fail early on a missing parameter

    def tensors(self, name: str) -> tuple[Tensor, ...]:
        """The tensors behind ``name``: ``(value,)`` or ``(orig, mask)`` for a pruned one."""
        if isinstance(self._params, nn.Module):
            owner, attr = self._owners[name]
            orig, mask = getattr(owner, f"{attr}_orig", None), getattr(owner, f"{attr}_mask", None)
            if orig is not None and mask is not None:
                return orig, mask
            value = getattr(owner, attr, None)
        else:
            params = self._params
            if f"{name}_orig" in params and f"{name}_mask" in params:
                return params[f"{name}_orig"], params[f"{name}_mask"]
            value = params.get(name)
        if not isinstance(value, Tensor):
            raise FxPathError(f"parameter {name!r} not found or not a tensor; the two parameter "
                              "sets must come from the same architecture")
        return (value,)

    def version(self) -> tuple[tuple[int, int], ...]:
        """Identity and version counter of every tensor read: changes on any in-place update."""
        return tuple((id(t), t._version) for name in self.names
                     for t in self.tensors(name))

    def fetch(self, name: str, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The current value of ``name`` in ``dtype`` on ``device``."""
        ts = self.tensors(name)
        value = ts[0] if len(ts) == 1 else ts[0] * ts[1]
        return value.to(device=device, dtype=dtype)


@dataclass
class _Cache:
    key: Any
    values: dict[str, Tensor]


class PathProgram:
    """A model compiled for path analysis: trace and passes run once, path networks on demand.

    The program holds no copy of the parameters: every call reads the model's live tensors
    (so it stays correct after optimizer steps), caching the coordinate magnitudes between
    calls until some parameter's version counter changes.

    Example:
        >>> prog = fxpath.compile(torchvision.models.resnet18().eval(), (3, 224, 224))
        >>> prog.path_norm(q=1).log10
    """

    def __init__(self, model: nn.Module, input_shape: Sequence[int] | Sequence[Sequence[int]],
                 *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
                 fold_bn: bool = True, compile: bool = False, cuda_graphs: bool | None = None,
                 interior: bool | None = None, debug: bool = False) -> None:
        if model.training:
            raise FxPathError("fxpath analyses the frozen (eval-mode) network: call model.eval() "
                              "first (BatchNorm must use its running statistics)")
        self.model = model
        self.input_shapes = as_shapes(input_shape)
        self.dtype = dtype
        first = next(iter(model.parameters()), None)
        self.device = torch.device(device) if device is not None else (
            first.device if first is not None else torch.device("cpu"))
        self.use_compile = compile
        if cuda_graphs and self.device.type != "cuda":
            raise FxPathError(f"cuda_graphs=True needs a CUDA device, the program runs on "
                              f"{self.device}: pass device='cuda' or leave cuda_graphs unset")
        self.use_graphs = (self.device.type == "cuda" and not compile if cuda_graphs is None
                           else cuda_graphs)
        self._graphed: dict[tuple[Any, ...], GraphedCall] = {}
        # compressed-image convs pay off where convs are compute-bound (CPU); on a GPU at
        # batch 1 their extra kernels cost more than the arithmetic they save, except on big
        # convs (VGG's: 0.9-1.9G multiply-adds; ResNet's and DenseNet's are <= 0.12G)
        self.use_interior = interior is not False
        self.interior_min_macs = (GPU_INTERIOR_MIN_MACS if interior is None
                                  and self.device.type != "cpu" else 0)
        self._fx_graph = trace_graph(model, self.input_shapes, has_rule=has_rule)
        self.graph: Graph = normalize(lower(self._fx_graph), fold_bn=fold_bn, debug=debug)
        self.slots: tuple[Slot, ...] = slots(self.graph)
        weight_slot = {s.node: i for i, s in reversed(list(enumerate(self.slots)))}
        self._taps = [(n, weight_slot[n.name]) for n in tapped_nodes(self.graph)]
        self._source = ParamSource(model, self.graph.param_names())
        self._networks: dict[tuple[str, float, bool], Any] = {}
        self._cache: dict[float, _Cache] = {}

    @functools.cached_property
    def traced(self) -> fx.GraphModule:
        """The model as torch.fx traced it (before lowering), built on first access."""
        return fx.GraphModule(self.model, self._fx_graph, type(self.model).__name__)

    # -- building blocks ----------------------------------------------------------------------
    def path_network(self, q: float = 1.0, *, mode: str = "norm",
                     probes: bool = False, taps: bool = False) -> fx.GraphModule:
        """The generated path network (a GraphModule; print ``.code`` to read it)."""
        key = (mode, float(q), probes, taps)
        if key not in self._networks:
            gm = generate(self.graph, self.slots, mode=mode, q=float(q), probes=probes,
                          taps=taps, interior=self.use_interior,
                          interior_min_macs=self.interior_min_macs)
            gm = gm.to(device=self.device, dtype=self.dtype)
            self._networks[key] = (torch.compile(gm, dynamic=False) if self.use_compile else gm)
        return self._networks[key]

    def _call(self, key: tuple[Any, ...], fn: Callable[..., Any], inputs: Sequence[Tensor]) -> Any:
        """``fn(*inputs)`` in IEEE float32 (no TF32), replayed from a CUDA graph on repeated
        calls when ``use_graphs`` (the outputs are then the graph's static tensors: read or
        copy them before the next call with the same ``key``)."""
        with ieee_float32():
            if not self.use_graphs:
                return fn(*inputs)
            if key not in self._graphed:
                self._graphed[key] = GraphedCall(fn)
            return self._graphed[key](*inputs)

    def coordinates(self, params: Params | None = None) -> dict[str, Tensor]:
        """The signed path-lifting coordinates (effective DAG parameters), by slot name."""
        source = self._source if params is None else ParamSource(params,
                                                                 self.graph.param_names())
        return lift(self.graph, lambda n: source.fetch(n, self.dtype, self.device), self.slots)

    def magnitudes(self, q: float = 1.0) -> list[Tensor]:
        """``|coordinate|^q`` of the live model, cached until a parameter changes."""
        key = (self._source.version(), self.dtype, self.device)
        hit = self._cache.get(q)
        if hit is not None and hit.key == key and not torch.is_grad_enabled():
            return list(hit.values.values())
        source = self._source
        values = lift(self.graph, lambda n: source.fetch(n, self.dtype, self.device), self.slots,
                      q=q)
        if not torch.is_grad_enabled():
            self._cache[q] = _Cache(key, values)
        return list(values.values())

    # -- path-norms ---------------------------------------------------------------------------
    def path_norm(self, q: float = 1.0, *, differentiable: bool = False) -> PathNorm:
        """The l^q path-norm ``||Phi(theta)||_q`` of the model (one pass of the path network).

        Args:
            q: exponent, ``q >= 1`` in the theory (any ``q > 0`` is computed).
            differentiable: also return ``log ||Phi||_q`` as a tensor with gradients to the
                model's parameters (for regularization); otherwise runs under ``no_grad``.
        """
        if q <= 0:
            raise FxPathError(f"q must be positive, got {q}")
        with torch.set_grad_enabled(differentiable):
            if differentiable:  # its backward runs later, under the caller's precision settings
                with ieee_float32():
                    total, exp = self.path_network(q)(*self.magnitudes(q))
            else:
                total, exp = self._call(("norm", float(q)), self.path_network(q),
                                        self.magnitudes(q))
        log2 = log2_of(float(total.detach()), float(exp)) / q
        log_tensor = None
        if differentiable:
            log_tensor = (torch.log(total) + exp * torch.log(torch.tensor(2.0,
                          dtype=total.dtype, device=total.device))) / q
        return PathNorm(float(q), log2, log_tensor)

    # -- path-metric --------------------------------------------------------------------------
    @torch.no_grad()
    def path_metric(self, other: Params, *, base: Params | None = None) -> PathMetric:
        """The l^1 path-metric between the model (or ``base``) and ``other`` (same architecture).

        Exact when one parameter set dominates the other with the same signs; otherwise a
        certified upper bound (PATHS.md section 4).
        """
        a = self.coordinates(base)
        b = self.coordinates(other)
        norm = self.path_norm(1.0) if base is None else self._norm_of(a)
        envs = [envelope(a[k], b[k]) for k in a]
        if _all([e.same_sign for e in envs]):
            log2 = self._metric_of(envs)
            exact = _all([e.a_over for e in envs]) or _all([e.b_over for e in envs])
            return PathMetric(log2, exact, norm)
        mid = {k: torch.where(a[k] * b[k] >= 0, a[k], torch.zeros_like(a[k])) for k in a}
        # mid is dominated by a (same signs, smaller magnitudes): both legs are exact metrics
        first = self._metric_of([envelope(a[k], mid[k]) for k in a])
        second = self._metric_of([envelope(mid[k], b[k]) for k in a])
        return PathMetric(_log2_add(first, second), False, norm)

    def _norm_of(self, coords: Mapping[str, Tensor]) -> PathNorm:
        total, exp = self._call(("norm", 1.0), self.path_network(1.0),
                                [v.abs() for v in coords.values()])
        return PathNorm(1.0, log2_of(float(total), float(exp)))

    def _metric_of(self, envs: Sequence[Envelope]) -> float:
        """log2 of the path-metric network's total on same-sign envelopes."""
        args = [t for e in envs for t in (e.lo, e.hi)]
        _, delta, exp = self._call(("diff",), self.path_network(1.0, mode="diff"), args)
        return log2_of(float(delta), float(exp))

    # -- path-magnitude scores ----------------------------------------------------------------
    def path_magnitude(self, *, neurons: bool = False,
                       out: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Path-magnitude scores ``s_i / ||Phi||_1`` for every parameter that is a coordinate.

        Keyed by state_dict name (``<name>`` for a pruned ``<name>_orig``), shaped like the
        parameter, in [0, 1]: the fraction of the l^1 path mass through each entry. A bias
        folded with a BatchNorm is reported under the BatchNorm's ``bias`` name (it is one
        coordinate, ``s * (c - mean) + b``). With ``neurons=True``, returns the path mass
        fraction of every output channel of every conv/linear/BatchNorm instead, keyed by
        module path.

        ``out``: the dict an earlier call returned (or tensors of the same sizes, dtype and
        device): the scores are written into it instead of into fresh memory. For repeated
        calls on big models (VGG-16's scores are 528 MB): no allocation, no page faults.
        """
        if neurons:
            if out is not None:
                raise FxPathError("out= is for parameter scores, not neurons=True")
            return self._neuron_mass()
        mags = self.magnitudes_detached()
        if not self.use_graphs:
            return self._call(("scores",), functools.partial(self._scores, out=out), mags)
        static = self._call(("scores",), self._scores, mags)  # the graph's own tensors: copy
        if out is None:
            return {name: s.clone() for name, s in static.items()}
        for name, s in static.items():
            self._destination(out, name, s).copy_(s)
        return {name: out[name] for name in static}

    def _scores(self, *mags: Tensor, out: Mapping[str, Tensor] | None = None
                ) -> dict[str, Tensor]:
        """Scores from the coordinate magnitudes: one forward and one backward of the path
        network (dense layers through taps, see `codegen.tapped_nodes`)."""
        tapped = {i: n for n, i in self._taps}  # dense layers: no autograd weight gradient
        leaves = [m if i in tapped else m.detach().requires_grad_(True)
                  for i, m in enumerate(mags)]
        taps = [torch.zeros((1, *n.shape), dtype=self.dtype, device=self.device,
                            requires_grad=True) for n in tapped.values()]
        plain = [i for i in range(len(mags)) if i not in tapped]
        with torch.enable_grad():
            total, _exp, inputs = self.path_network(1.0, taps=True)(*leaves, *taps)
            grads = _log_gradient(total, [leaves[i] for i in plain] + taps)
        grad_of = dict(zip(plain + list(tapped), grads))
        input_of = dict(zip(tapped, inputs))
        scores: dict[str, Tensor] = {}
        for i, (slot, a) in enumerate(zip(self.slots, mags)):
            if slot.param is None:
                continue
            dest = None if out is None else self._destination(out, slot.param, a)
            g = grad_of[i]
            if g is None:  # no path through this coordinate reaches an output
                frac = torch.zeros_like(a) if dest is None else dest.zero_()
            elif i in tapped:  # a * outer(grad_out, input): the weight gradient, fused
                x = input_of[i].detach().reshape(1, -1)
                # fresh memory asks for huge pages before its first write (`memory`)
                into = empty_scores(a.shape, a.dtype, a.device) if dest is None else dest
                frac = torch.mul(a, g.reshape(-1, 1), out=into).mul_(x)
            else:
                frac = g.mul_(a) if dest is None else torch.mul(g, a, out=dest)
            scores[slot.param] = (frac.reshape(_param_shape(self._source, slot.param))
                                  if dest is None else out[slot.param])
        return scores

    def _destination(self, out: Mapping[str, Tensor], name: str, like: Tensor) -> Tensor:
        t = out.get(name)
        if (t is None or t.numel() != like.numel() or t.dtype != like.dtype
                or t.device != like.device or not t.is_contiguous()):
            got = "missing" if t is None else f"{tuple(t.shape)} {t.dtype} on {t.device}"
            raise FxPathError(f"out[{name!r}] must be a contiguous {like.dtype} tensor on "
                              f"{like.device} with {like.numel()} entries (got {got}); pass "
                              "the dict an earlier path_magnitude() call returned")
        return t.view(like.shape)

    def parameter(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """The live value of a parameter or buffer the IR reads (pruned ones with masks applied).

        ``dtype``: default the program's compute dtype; `stored_dtype` gives the model's own.
        """
        return self._source.fetch(name, dtype or self.dtype, self.device)

    def stored_dtype(self, name: str) -> torch.dtype:
        """The dtype the model keeps ``name`` in (``<name>_orig``'s once pruned)."""
        return self._source.tensors(name)[0].dtype

    def magnitudes_detached(self) -> list[Tensor]:
        """``|coordinate|`` (q = 1) of the live model, without autograd history."""
        with torch.no_grad():
            return self.magnitudes(1.0)

    def _neuron_mass(self) -> dict[str, Tensor]:
        leaves = [m.detach().requires_grad_(True) for m in self.magnitudes_detached()]
        with torch.enable_grad(), ieee_float32():
            total, _exp, probes = self.path_network(1.0, probes=True)(*leaves)
            grads = _log_gradient(total, probes)
        owners = [n for n in self.graph if n.op in ("linear", "affine")]
        out: dict[str, Tensor] = {}
        for node, h, g in zip(owners, probes, grads):
            if node.op == "affine" and node.attrs["kind"] == "prelu":
                continue
            mass = (h.detach() * g) if g is not None else torch.zeros_like(h)
            dims = [d for d in range(mass.dim()) if d != node.channel_dim()]
            per_channel = mass.sum(dims) if dims else mass
            out[_owner_name(node)] = per_channel
        return out


def _log_gradient(total: Tensor, targets: Sequence[Tensor]) -> tuple[Tensor | None, ...]:
    """``total * d(log total)/d target`` up to the same factor for all: the backward is seeded
    with ``1/total``, so ``value * grad`` is a path mass fraction directly."""
    return torch.autograd.grad(total, list(targets), torch.reciprocal(total.detach()),
                               allow_unused=True)


def _all(flags: Sequence[Tensor]) -> bool:
    """All of many 0-dim boolean tensors, with one host sync instead of one per tensor."""
    return bool(torch.stack(flags).all()) if flags else True


def _log2_add(x: float, y: float) -> float:
    """log2(2**x + 2**y) without overflow."""
    top = max(x, y)
    if top == -float("inf"):
        return top
    return top + torch.log2(torch.tensor(2.0 ** (x - top) + 2.0 ** (y - top),
                                         dtype=torch.float64)).item()


def _param_shape(source: ParamSource, name: str) -> torch.Size:
    return source.tensors(name)[0].shape


def _owner_name(node: Any) -> str:
    if node.op == "linear":
        return node.params["weight"].rpartition(".")[0]
    return node.attrs["bn"].running_mean.rpartition(".")[0]
