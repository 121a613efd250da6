"""Keep only the model outputs asked for (``fxpath.compile(..., output="aux")``).

The output node names every returned tensor (`fxpath.ops.io`). Keeping a subset makes the
network the one whose output layer is those tensors only: its paths are the model's paths that
end there, so path-norms, the path-metric, the Lipschitz certificate and the scores are those
of the selected outputs. Branches that feed only the other outputs become dead and are removed
by ``eliminate_dead_nodes``, which runs after this pass (and before BatchNorm folding, so that
the result is the IR of the model returning only the selected outputs).
"""

from __future__ import annotations

from collections.abc import Sequence

from fxpath.errors import ArgumentError
from fxpath.ir.graph import Graph


def output_names(graph: Graph) -> tuple[str, ...]:
    """The name of each output of ``graph`` (positions, for an output node without names)."""
    out = graph.output
    names = out.attrs.get("names")
    if names is not None:
        return tuple(names)
    return ("output",) if len(out.inputs) == 1 else tuple(str(i) for i in range(len(out.inputs)))


def select_outputs(graph: Graph, names: Sequence[str]) -> Graph:
    """``graph`` whose output node keeps the outputs called ``names`` (every one of that name).

    Raises:
        ArgumentError: a name that is not one of the model's outputs (the message lists them).
    """
    have = output_names(graph)
    missing = [n for n in names if n not in have]
    if missing or not names:
        shown = ", ".join(repr(n) for n in have)
        what = f"{missing[0]!r} is not" if missing else "no name is"
        raise ArgumentError(f"output={what} an output of the model; its outputs are {shown}")
    keep = [i for i, name in enumerate(have) if name in set(names)]
    out = graph.output
    selected = out.replace(inputs=tuple(out.inputs[i] for i in keep),
                           attrs={**out.attrs, "names": tuple(have[i] for i in keep)})
    return Graph(tuple(selected if n is out else n for n in graph))
