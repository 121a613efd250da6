"""`PathProgram`: a model traced, normalized and compiled once; path quantities on demand.

The program is a façade: `fxpath.engine.compiled.CompiledNetwork` holds the compiled
pipeline (trace, normalized IR, coordinates, the `Runner`) and the checks that tie it to the
live model; the quantities (`fxpath.quantities.norm`, `.metric`, `.scores`) take such a
network. `PathProgram` adds them as methods. Nothing in fxpath below it imports it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.fx as fx
from torch import Tensor

from fxpath.engine.compiled import CompiledNetwork
from fxpath.errors import ArgumentError
from fxpath.ir.params import Params
from fxpath.passes.select_outputs import output_names
from fxpath.quantities import metric, norm, scores
from fxpath.quantities.results import PathMetric, PathNorm
from fxpath.validate import check_q

__all__ = ["PathProgram"]


class PathProgram(CompiledNetwork):
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

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the outputs the program covers, in the model's order: dict keys,
        tuple indices (``"0"``, ``"1"``) or ``"output"`` for a single tensor (all of them
        unless compiled with ``output=``)."""
        return output_names(self.graph)

    @functools.cached_property
    def traced(self) -> fx.GraphModule:
        """The model as torch.fx traced it (before lowering), built on first access."""
        if self._fx_graph is None:
            raise ArgumentError("this program was lowered from torch.export, not torch.fx: "
                                "read prog.graph (the IR) instead")
        return fx.GraphModule(self.model, self._fx_graph, type(self.model).__name__)

    # -- what runs -----------------------------------------------------------------------------
    @property
    def use_graphs(self) -> bool:
        """Whether repeated calls replay CUDA graphs (`Runner.use_graphs`)."""
        return self.runner.use_graphs

    def path_network(self, q: float = 1.0, *, mode: str = "norm",
                     probes: bool = False, taps: bool = False) -> fx.GraphModule:
        """The generated path network (a GraphModule; print ``.code`` to read it).

        ``mode``: ``"norm"`` (one stream of ``|w|^q``) or ``"diff"`` (the path-metric network).
        For ``q != 1`` (without probes or taps) the norm network takes each coordinate as a
        mantissa tensor followed, after all of them, by one 0-dim exponent per coordinate
        (`fxpath.codegen.lift.split_power`), so that no ``|w|^q`` leaves the float range.
        """
        if mode not in ("norm", "diff"):
            raise ArgumentError(f"mode must be 'norm' or 'diff', got {mode!r}")
        q = check_q(q)
        if mode == "diff" and (q != 1.0 or probes or taps):
            raise ArgumentError("the path-metric network (mode='diff') is defined for q = 1, "
                                "without probes or taps")
        return self.runner.network(q, mode, bool(probes), bool(taps))

    def coordinates(self, params: Params | None = None) -> dict[str, Tensor]:
        """The signed path-lifting coordinates (effective DAG parameters), by slot name.

        ``params``: another model or state dict of the same network (checked); default the
        compiled model's live parameters.
        """
        return self.runner.lift(self.source_for(params))

    def magnitudes(self, q: float = 1.0) -> list[Tensor]:
        """``|coordinate|^q`` of the live model (fresh tensors; differentiable when autograd
        is on)."""
        q = check_q(q)
        return list(self.runner.lift(self.live_source(), q).values())

    def magnitudes_detached(self) -> list[Tensor]:
        """``|coordinate|`` (q = 1) of the live model, without autograd history."""
        with torch.no_grad():
            return self.magnitudes(1.0)

    def network_inputs(self, q: float = 1.0) -> list[Tensor]:
        """The arguments of ``path_network(q)`` for the live model (fresh tensors, no
        autograd): ``|coordinate|`` for ``q = 1``, else mantissas then exponents."""
        q = check_q(q)
        with torch.no_grad():
            return self.magnitudes(q) if q == 1.0 else norm.norm_inputs(self, q)

    def parameter(self, name: str, dtype: torch.dtype | None = None) -> Tensor:
        """The live value of a parameter or buffer the IR reads (pruned ones with masks applied).

        ``dtype``: default the program's compute dtype; `stored_dtype` gives the model's own.
        """
        if not isinstance(name, str) or name not in self._source.shapes:
            raise ArgumentError(f"{name!r} is not the state_dict name of a parameter the path "
                                "network reads")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise ArgumentError(f"dtype must be a torch.dtype, got {dtype!r}")
        return self.live_source().fetch(name, dtype or self.dtype, self.device)

    def stored_dtype(self, name: str) -> torch.dtype:
        """The dtype the model keeps ``name`` in (``<name>_orig``'s once pruned)."""
        return self._source.tensors(name)[0].dtype

    # -- the path quantities ------------------------------------------------------------------
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
        return norm.path_norm(self, q, differentiable=differentiable)

    def path_metric(self, other: Params, *, base: Params | None = None) -> PathMetric:
        """The l^1 path-metric between the model (or ``base``) and ``other``.

        ``other`` and ``base`` are models or state dicts of the compiled network: a model of
        another architecture (other layers, names or shapes) raises
        `ArchitectureMismatchError` naming the first difference. Exact when one parameter set
        dominates the other with the same signs; otherwise a certified upper bound (see
        ``docs/mathematics.md``). The program keeps the call's working tensors for the next
        call (two coordinate-sized tensors; ``docs/guarantees.md``).
        """
        return metric.path_metric(self, other, base)

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
        return scores.path_magnitude(self, neurons=neurons, out=out)
