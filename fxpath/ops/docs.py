"""The op tables of ``docs/ops.md``, generated from the registry so that they cannot drift."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fxpath.ops.core import REGISTRY, Op, summary

__all__ = ["markdown_table"]

_HEADER = """# IR ops

<!-- generated from fxpath.ops by `python -m fxpath.ops`: do not edit by hand -->

Every op of the fxpath IR has one definition, in `fxpath/ops/`: its attributes (checked by the
IR verifier) and its rules, which the code generator, the reference interpreter, the
constant-interior analysis, neuron rescaling and the path-lifting coordinates look up by op.
Attributes marked `?` are optional; "(if ...)" ones are required under that condition. Rule
cells quote each rule's own summary; "does not apply" says why an op has no such rule.
"Compact values" says whether the op's path rule takes framed activations stored with one
interior row per axis (`fxpath.layout`, `docs/frames.md`) or gets them expanded to full size.
"""

_FINAL = """
## Ops the code generator accepts

The IR after normalization (`fxpath.passes.pipeline.normalize`) holds only these.

"""

_PRE_NORM = """
## Ops normalization removes

The lowering emits these too; the pass named in the last column rewrites them away (or, for
`unsupported`, refuses the model). Only the reference interpreter runs them.

"""

Column = tuple[str, Callable[[Op], str]]

_COMMON: tuple[Column, ...] = (
    ("op", lambda op: f"`{op.name}`"),
    ("meaning", lambda op: op.doc),
    ("attributes", lambda op: "; ".join(a.describe(k) for k, a in op.attrs.items()) or "none"),
)
_FINAL_COLUMNS: tuple[Column, ...] = (
    *_COMMON,
    ("path network", lambda op: summary(op.path_rule)),
    ("compact values", lambda op: "kept" if op.compact else "expanded first"),
    ("model semantics", lambda op: summary(op.interpret_rule)),
    ("frame", lambda op: summary(op.frame_rule)),
    ("rescaling", lambda op: summary(op.rescale_rule)),
    ("coordinates", lambda op: summary(op.slots_rule)),
)
_PRE_NORM_COLUMNS: tuple[Column, ...] = (
    *_COMMON,
    ("model semantics", lambda op: summary(op.interpret_rule)),
    ("lowered by", lambda op: f"`{op.lowered_by}`"),
)


def _table(ops: Sequence[Op], columns: Sequence[Column]) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    lines = [row([name for name, _ in columns]), "|" + "---|" * len(columns)]
    lines += [row([cell(op) for _, cell in columns]) for op in ops]
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The text of ``docs/ops.md``: a table of the final ops and one of the ops normalization
    removes, each by name."""
    ops = sorted(REGISTRY.values(), key=lambda op: op.name)
    return (_HEADER + _FINAL + _table([op for op in ops if op.final], _FINAL_COLUMNS)
            + _PRE_NORM + _table([op for op in ops if not op.final], _PRE_NORM_COLUMNS))
