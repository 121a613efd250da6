"""`PathProgram`: a model traced, normalized and compiled once; path quantities on demand."""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch import Tensor

from .architecture import ModuleTree, graph_difference, mismatch, state_dict_difference
from .codegen import generate, tapped_nodes
from .envelope import Envelope, envelope
from .errors import (
    ArchitectureMismatchError,
    ArgumentError,
    FxPathError,
    NonFiniteError,
)
from .frontend import (
    Model,
    build_ir,
    canonical_ir,
    exported_shapes,
    is_exported,
    param_store,
    state_keys,
    tensors_of,
)
from .graphs import GraphedCall
from .ir import BatchNormRef
from .lift import Slot, lift, slots, split_power
from .memory import empty_scores
from .params import Params, ParamSource
from .precision import ieee_float32
from .results import PathMetric, PathNorm, log2_of
from .validate import as_input_shapes, check_model, check_q, compute_dtype

__all__ = ["ParamSource", "PathProgram", "build_ir"]

#: on a GPU, ``interior=None`` compresses only convs of at least this many multiply-adds
GPU_INTERIOR_MIN_MACS = 500_000_000


class PathProgram:
    """A model compiled for path analysis: trace and passes run once, path networks on demand.

    The program holds no copy of the parameters: every call reads the model's live tensors, so
    a result is never computed from weights other than the live ones, however they changed
    (optimizer steps, ``.data`` edits, ``load_state_dict``, replaced parameters or modules,
    ``torch.nn.utils.prune``). A module replaced since compiling is accepted when the network
    it makes is the same; otherwise calls raise `ArchitectureMismatchError`.

    Example:
        >>> prog = fxpath.compile(torchvision.models.resnet18().eval(), (3, 224, 224))
        >>> prog.path_norm(q=1).log10
    """

    def __init__(self, model: Model,
                 input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
                 *, dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                 fold_bn: bool = True, compile: bool = False, cuda_graphs: bool | None = None,
                 interior: bool | None = None, debug: bool = False,
                 front_end: str = "fx") -> None:
        self.model = check_model(model)
        self.input_shapes = _input_shapes(model, input_shape)
        self.dtype = compute_dtype(tensors_of(model), dtype)
        self.device = _device(model, device)
        self.fold_bn = bool(fold_bn)
        self.front_end = front_end
        self.use_compile = bool(compile)
        if cuda_graphs and self.device.type != "cuda":
            raise ArgumentError(f"cuda_graphs=True needs a CUDA device, the program runs on "
                                f"{self.device}: pass device='cuda' or leave cuda_graphs unset")
        self.use_graphs = (self.device.type == "cuda" and not compile if cuda_graphs is None
                           else bool(cuda_graphs))
        self._graphed: dict[tuple[Any, ...], GraphedCall] = {}
        # compressed-image convs pay off where convs are compute-bound (CPU); on a GPU at
        # batch 1 their extra kernels cost more than the arithmetic they save, except on big
        # convs (VGG's: 0.9-1.9G multiply-adds; ResNet's and DenseNet's are <= 0.12G)
        self.use_interior = interior is not False
        self.interior_min_macs = (GPU_INTERIOR_MIN_MACS if interior is None
                                  and self.device.type != "cpu" else 0)
        self._fx_graph, self.graph = build_ir(model, self.input_shapes, fold_bn=self.fold_bn,
                                              debug=debug, front_end=front_end)
        self.slots: tuple[Slot, ...] = slots(self.graph)
        weight_slot = {s.node: i for i, s in reversed(list(enumerate(self.slots)))}
        self._taps = [(n, weight_slot[n.name]) for n in tapped_nodes(self.graph)]
        self._source = ParamSource(param_store(model), self.graph.param_names())
        self._tree = None if is_exported(model) else ModuleTree(model)
        self._bn_eps = {bn.running_var: bn.eps for n in self.graph
                        if isinstance(bn := n.attrs.get("bn"), BatchNormRef)}
        self._networks: dict[tuple[str, float, bool, bool], Any] = {}
        self._buffers: dict[float, dict[str, Tensor]] = {}
        self._verified: dict[int, tuple[weakref.ref, ModuleTree | None]] = {}

    # -- the live model -----------------------------------------------------------------------
    def _check_live(self) -> None:
        """Re-read the module tree: a replaced or added module is accepted only when the model
        still normalizes to the compiled IR."""
        moved = None if self._tree is None else self._tree.changed(self.model)
        if moved is None:
            return
        fx_graph, graph = build_ir(self.model, self.input_shapes, fold_bn=self.fold_bn,
                                   front_end=self.front_end)
        diff = graph_difference(self.graph, graph)
        if diff is not None:
            raise ArchitectureMismatchError(
                f"the model changed since fxpath.compile (at {moved}) and is no longer the "
                f"compiled network: {diff}. Compile it again")
        self._source = ParamSource(self.model, self.graph.param_names(), self._source.shapes)
        self._tree = ModuleTree(self.model)
        self._fx_graph = fx_graph
        self.__dict__.pop("traced", None)

    def _check_same_network(self, other: Model) -> None:
        """Prove that ``other`` is the compiled network (same IR, names and shapes)."""
        hit = self._verified.get(id(other))
        if hit is not None and hit[0]() is other and (hit[1] is None
                                                      or hit[1].changed(other) is None):
            return
        check_model(other, "the second model")
        _, graph = build_ir(other, self.input_shapes, fold_bn=self.fold_bn,
                            front_end=self.front_end)
        diff = graph_difference(self.graph, graph)
        if diff is not None and (self._fx_graph is None or is_exported(other)):
            # an exported program may be decomposed: compare on fully decomposed ATen graphs
            canon = functools.partial(canonical_ir, shapes=self.input_shapes,
                                      fold_bn=self.fold_bn)
            if graph_difference(canon(self.model), canon(other)) is None:
                diff = None
        if diff is not None:
            raise mismatch(diff)
        tree = None if is_exported(other) else ModuleTree(other)
        self._verified[id(other)] = (weakref.ref(other), tree)

    def _source_for(self, params: Params | None) -> ParamSource:
        """The live parameters of the model (``None``) or of another parameter set, proven to
        be of the compiled network."""
        self._check_live()
        if params is None or params is self.model:
            return self._source
        if isinstance(params, nn.Module) or is_exported(params):
            self._check_same_network(params)
            return ParamSource(param_store(params), self.graph.param_names(),
                               self._source.shapes)
        if isinstance(params, Mapping):
            diff = state_dict_difference(state_keys(self.model), params)
            if diff is not None:
                raise mismatch(diff)
        else:
            raise ArgumentError(f"expected a model or a state dict (name -> tensor), got "
                                f"{type(params).__name__}")
        return ParamSource(params, self.graph.param_names(), self._source.shapes)

    def _require_finite(self, log2s: Sequence[float], *sources: ParamSource) -> None:
        """Raise unless every ``log2`` is finite or ``-inf`` (a zero quantity): NaN or inf
        come from non-finite parameters (named) or from a float overflow inside a layer."""
        if all(not math.isnan(v) and v != math.inf for v in log2s):
            return
        labels = ("", "") if len(sources) == 1 else ("first parameter set: ", "second: ")
        bad = [f"{label}{name}" for label, src in zip(labels, sources)
               for name in src.nonfinite(self._bn_eps)]
        if bad:
            more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
            raise NonFiniteError(f"NaN or inf in {', '.join(bad[:8])}{more}: path quantities of "
                                 "non-finite parameters are undefined", bad)
        raise FxPathError(f"the path network overflowed {self.dtype} inside one layer (its "
                          "parameters are finite but too large for it): compile with "
                          "dtype=torch.float64")

    @functools.cached_property
    def traced(self) -> fx.GraphModule:
        """The model as torch.fx traced it (before lowering), built on first access."""
        if self._fx_graph is None:
            raise ArgumentError("this program was lowered from torch.export, not torch.fx: "
                                "read prog.graph (the IR) instead")
        return fx.GraphModule(self.model, self._fx_graph, type(self.model).__name__)

    # -- building blocks ----------------------------------------------------------------------
    def path_network(self, q: float = 1.0, *, mode: str = "norm",
                     probes: bool = False, taps: bool = False) -> fx.GraphModule:
        """The generated path network (a GraphModule; print ``.code`` to read it).

        ``mode``: ``"norm"`` (one stream of ``|w|^q``) or ``"diff"`` (the path-metric network).
        For ``q != 1`` (without probes or taps) the norm network takes each coordinate as a
        mantissa tensor followed, after all of them, by one 0-dim exponent per coordinate
        (`fxpath.lift.split_power`), so that no ``|w|^q`` leaves the float range.
        """
        if mode not in ("norm", "diff"):
            raise ArgumentError(f"mode must be 'norm' or 'diff', got {mode!r}")
        q = check_q(q)
        if mode == "diff" and (q != 1.0 or probes or taps):
            raise ArgumentError("the path-metric network (mode='diff') is defined for q = 1, "
                                "without probes or taps")
        scaled = mode == "norm" and q != 1.0 and not probes and not taps
        key = (mode, q, bool(probes), bool(taps))
        if key not in self._networks:
            gm = generate(self.graph, self.slots, mode=mode, q=q, probes=bool(probes),
                          taps=bool(taps), interior=self.use_interior,
                          interior_min_macs=self.interior_min_macs, scaled=scaled)
            gm = gm.to(device=self.device, dtype=self.dtype)
            self._networks[key] = (torch.compile(gm, dynamic=False) if self.use_compile else gm)
        return self._networks[key]

    def _call(self, key: tuple[Any, ...], fn: Callable[..., Any], inputs: Sequence[Tensor],
              borrowed: frozenset[int] = frozenset()) -> Any:
        """``fn(*inputs)`` in IEEE float32 (no TF32), replayed from a CUDA graph on repeated
        calls when ``use_graphs`` (the outputs are then the graph's static tensors: read or
        copy them before the next call with the same ``key``)."""
        with ieee_float32():
            if not self.use_graphs:
                return fn(*inputs)
            if key not in self._graphed:
                self._graphed[key] = GraphedCall(fn)
            return self._graphed[key](*inputs, borrowed=borrowed)

    def coordinates(self, params: Params | None = None) -> dict[str, Tensor]:
        """The signed path-lifting coordinates (effective DAG parameters), by slot name.

        ``params``: another model or state dict of the same network (checked); default the
        compiled model's live parameters.
        """
        source = self._source_for(params)
        return self._lift(source)

    def _lift(self, source: ParamSource, q: float | None = None,
              out: Mapping[str, Tensor] | None = None,
              order: tuple[Slot, ...] | None = None) -> dict[str, Tensor]:
        return lift(self.graph, lambda n: source.fetch(n, self.dtype, self.device),
                    order or self.slots, q=q, out=out)

    def magnitudes(self, q: float = 1.0) -> list[Tensor]:
        """``|coordinate|^q`` of the live model (fresh tensors; differentiable when autograd
        is on)."""
        q = check_q(q)
        self._check_live()
        return list(self._lift(self._source, q).values())

    def _check_runnable(self) -> None:
        if self.device.type == "meta":
            raise ArgumentError("a program on the meta device shows its path networks "
                                "(path_network) but computes nothing: compile for 'cpu' or a GPU")

    def network_inputs(self, q: float = 1.0) -> list[Tensor]:
        """The arguments of ``path_network(q)`` for the live model (fresh tensors, no
        autograd): ``|coordinate|`` for ``q = 1``, else mantissas then exponents."""
        q = check_q(q)
        with torch.no_grad():
            return self.magnitudes(q) if q == 1.0 else self._norm_inputs(q)

    def _borrowed(self, args: Sequence[Tensor], q: float = 1.0) -> frozenset[int]:
        """Positions of the program's own magnitude buffers in ``args``: a CUDA graph reads
        them in place (they are refreshed from the live weights before every call)."""
        own = {id(t) for t in self._buffers.get(q, {}).values()}
        return frozenset(i for i, t in enumerate(args) if id(t) in own)

    def _norm_inputs(self, q: float, differentiable: bool = False) -> list[Tensor]:
        """The norm network's arguments: magnitudes (q = 1), or mantissas then exponents."""
        if q == 1.0:
            return self.magnitudes(q) if differentiable else self._live_magnitudes(q)
        self._check_live()
        mantissas: list[Tensor] = []
        exponents: list[Tensor] = []
        for group in self._slot_groups:  # one layer at a time: one temporary alive
            m, k = split_power(self._lift(self._source, order=group), q)
            mantissas += m
            exponents += k
        return [*mantissas, *exponents]

    @functools.cached_property
    def _slot_groups(self) -> list[tuple[Slot, ...]]:
        """The slots, grouped by node, in slot order."""
        groups: dict[str, list[Slot]] = {}
        for s in self.slots:
            groups.setdefault(s.node, []).append(s)
        return [tuple(g) for g in groups.values()]

    def _live_magnitudes(self, q: float) -> list[Tensor]:
        """``|coordinate|^q`` of the live model, without autograd, recomputed on every call into
        buffers the program keeps (no fresh memory; the same tensors every call, so a CUDA
        graph reads them in place). Never hand them out: the next call overwrites them."""
        self._check_live()
        bufs = self._buffers.get(q)
        with torch.no_grad():
            values = self._lift(self._source, q, out=bufs)
        if bufs is None:
            self._buffers[q] = values
        return list(values.values())

    # -- path-norms ---------------------------------------------------------------------------
    def path_norm(self, q: float = 1.0, *, differentiable: bool = False) -> PathNorm:
        """The l^q path-norm ``||Phi(theta)||_q`` of the model (one pass of the path network).

        Args:
            q: exponent, a finite ``q > 0`` (``q >= 1`` in the theory).
            differentiable: also return ``log ||Phi||_q`` as a tensor with gradients to the
                model's parameters (for regularization, also in train mode); otherwise runs
                under ``no_grad``.

        Raises:
            NonFiniteError: a parameter read holds NaN or inf (named in the message).
        """
        q = check_q(q)
        if not isinstance(differentiable, bool):
            raise ArgumentError(f"differentiable must be True or False, got {differentiable!r}")
        self._check_runnable()
        if differentiable:  # its backward runs later, under the caller's precision settings
            with torch.enable_grad(), ieee_float32():
                total, exp = self.path_network(q)(*self._norm_inputs(q, differentiable=True))
        else:
            with torch.no_grad():
                args = self._norm_inputs(q)
                total, exp = self._call(("norm", q), self.path_network(q), args,
                                        self._borrowed(args, q))
        log2 = log2_of(float(total.detach()), float(exp)) / q
        self._require_finite([log2], self._source)
        log_tensor = None
        if differentiable:
            log_tensor = (torch.log(total) + exp * torch.log(torch.tensor(2.0,
                          dtype=total.dtype, device=total.device))) / q
        return PathNorm(q, log2, log_tensor)

    # -- path-metric --------------------------------------------------------------------------
    def path_metric(self, other: Params, *, base: Params | None = None) -> PathMetric:
        """The l^1 path-metric between the model (or ``base``) and ``other``.

        ``other`` and ``base`` are models or state dicts of the compiled network: a model of
        another architecture (other layers, names or shapes) raises
        `ArchitectureMismatchError` naming the first difference. Exact when one parameter set
        dominates the other with the same signs; otherwise a certified upper bound (see
        ``docs/mathematics.md``).
        """
        self._check_runnable()
        with torch.no_grad():
            return self._path_metric(other, base)

    def _path_metric(self, other: Params, base: Params | None) -> PathMetric:
        a_src, b_src = self._source_for(base), self._source_for(other)
        a, b = self._lift(a_src), self._lift(b_src)
        norm = self.path_norm(1.0) if base is None else self._norm_of(a, a_src)
        envs = [envelope(a[k], b[k]) for k in a]
        if _all([e.same_sign for e in envs]):
            log2 = self._metric_of(envs)
            exact = _all([e.a_over for e in envs]) or _all([e.b_over for e in envs])
        else:
            mid = {k: torch.where(a[k] * b[k] >= 0, a[k], torch.zeros_like(a[k])) for k in a}
            # mid is dominated by a (same signs, smaller magnitudes): both legs are exact
            first = self._metric_of([envelope(a[k], mid[k]) for k in a])
            second = self._metric_of([envelope(mid[k], b[k]) for k in a])
            log2, exact = _log2_add(first, second), False
        self._require_finite([log2], a_src, b_src)
        return PathMetric(log2, exact, norm)

    def _norm_of(self, coords: Mapping[str, Tensor], source: ParamSource) -> PathNorm:
        # its own graph key: the ("norm", 1.0) graph reads the program's buffers in place,
        # and fresh magnitudes fed to it would force a capture on every alternation
        total, exp = self._call(("norm_of", 1.0), self.path_network(1.0),
                                [v.abs() for v in coords.values()])
        log2 = log2_of(float(total), float(exp))
        self._require_finite([log2], source)
        return PathNorm(1.0, log2)

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
        if not isinstance(neurons, bool):
            raise ArgumentError(f"neurons must be True or False, got {neurons!r}")
        if out is not None and not isinstance(out, Mapping):
            raise ArgumentError(f"out must be the dict an earlier path_magnitude() call "
                                f"returned, got {type(out).__name__}")
        self._check_runnable()
        if neurons:
            if out is not None:
                raise ArgumentError("out= is for parameter scores, not neurons=True")
            return self._neuron_mass()
        mags = self._live_magnitudes(1.0)
        if not self.use_graphs:
            scores, total = self._call(("scores",), functools.partial(self._scores, out=out),
                                       mags)
            self._check_total(total)
            return scores
        static, total = self._call(("scores",), self._scores, mags,  # the graph's own tensors
                                   self._borrowed(mags))
        self._check_total(total)
        if out is None:
            return {name: s.clone() for name, s in static.items()}
        for name, s in static.items():
            self._destination(out, name, s).copy_(s)
        return {name: out[name] for name in static}

    def _check_total(self, total: Tensor) -> None:
        """One host sync: the path network's output total must be finite."""
        if not bool(torch.isfinite(total.detach())):
            self._require_finite([math.nan], self._source)

    def _scores(self, *mags: Tensor, out: Mapping[str, Tensor] | None = None
                ) -> tuple[dict[str, Tensor], Tensor]:
        """Scores from the coordinate magnitudes: one forward and one backward of the path
        network (dense layers through taps, see `codegen.tapped_nodes`), and the network's
        output total (to check for NaN or inf)."""
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
        return scores, total.detach()

    def _destination(self, out: Mapping[str, Tensor], name: str, like: Tensor) -> Tensor:
        t = out.get(name)
        if (t is None or t.numel() != like.numel() or t.dtype != like.dtype
                or t.device != like.device or not t.is_contiguous()):
            got = "missing" if t is None else f"{tuple(t.shape)} {t.dtype} on {t.device}"
            raise ArgumentError(f"out[{name!r}] must be a contiguous {like.dtype} tensor on "
                              f"{like.device} with {like.numel()} entries (got {got}); pass "
                              "the dict an earlier path_magnitude() call returned")
        return t.view(like.shape)

    def parameter(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """The live value of a parameter or buffer the IR reads (pruned ones with masks applied).

        ``dtype``: default the program's compute dtype; `stored_dtype` gives the model's own.
        """
        if not isinstance(name, str) or name not in self._source.shapes:
            raise ArgumentError(f"{name!r} is not the state_dict name of a parameter the path "
                                "network reads")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ArgumentError(f"dtype must be a torch.dtype, got {dtype!r}")
        self._check_live()
        return self._source.fetch(name, dtype or self.dtype, self.device)

    def stored_dtype(self, name: str) -> torch.dtype:
        """The dtype the model keeps ``name`` in (``<name>_orig``'s once pruned)."""
        return self._source.tensors(name)[0].dtype

    def magnitudes_detached(self) -> list[Tensor]:
        """``|coordinate|`` (q = 1) of the live model, without autograd history."""
        with torch.no_grad():
            return self.magnitudes(1.0)

    def _neuron_mass(self) -> dict[str, Tensor]:
        leaves = [m.detach().requires_grad_(True) for m in self._live_magnitudes(1.0)]
        with torch.enable_grad(), ieee_float32():
            total, _exp, probes = self.path_network(1.0, probes=True)(*leaves)
            self._check_total(total)
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
    return source.shapes[name]


def _input_shapes(model: Model, input_shape: Any) -> list[tuple[int, ...]]:
    """The per-sample input shapes: given, or an exported program's own."""
    if not is_exported(model):
        if input_shape is None:
            raise ArgumentError("input_shape is required for a module: the per-sample input "
                                "shape without the batch dimension, e.g. (3, 224, 224)")
        return as_input_shapes(input_shape)
    own = exported_shapes(model)
    if input_shape is not None and as_input_shapes(input_shape) != own:
        raise ArgumentError(f"input_shape {as_input_shapes(input_shape)} differs from the "
                            f"exported program's inputs {own}: export again, or pass None")
    return own


def _device(model: Model, device: Any) -> torch.device:
    """``device`` as a torch.device, default the device of the model's first parameter."""
    if device is None:
        return tensors_of(model)[0].device
    try:
        device = torch.device(device)
        torch.empty(0, device=device)  # the device exists and its backend is available
    except (RuntimeError, TypeError, AssertionError, ValueError) as exc:
        raise ArgumentError(f"device must be an available torch.device or a name such as "
                            f"'cpu' or 'cuda:0', got {device!r} ({_first_line(exc)})") from exc
    return device


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:120]


def _owner_name(node: Any) -> str:
    if node.op == "linear":
        return node.params["weight"].rpartition(".")[0]
    return node.attrs["bn"].running_mean.rpartition(".")[0]
