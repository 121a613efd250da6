"""The torch.export front end beside torch.fx, side by side in one run.

Ratios to the model's own forward (paired medians, float32, batch 1, 224x224, CPU):

- ``cold_fx``: ``fxpath.path_norm(model, shape)`` (trace, lower, passes, codegen, one call);
- ``cold_export``: the same through ``front_end="export"`` (``torch.export`` included);
- ``cold_exported``: ``fxpath.path_norm(ep)`` on a program the user already exported;
- ``warm_{norm,scores}_{fx,export}``: repeated calls on a compiled program of each front end
  (the same IR, so they should match).

    python benchmarks/frontends.py                   # resnet18, resnet50, vgg16
    python benchmarks/frontends.py --models resnet18 --repeats 5

Writes benchmarks/results/frontends_<device>.md and .json (machine and commit described).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from bench_path import ratio_main

import fxpath
from fxpath.frontend.export import trace_export

COLUMNS = ("cold_fx", "cold_export", "cold_exported", "warm_norm_fx", "warm_norm_export",
           "warm_scores_fx", "warm_scores_export")


def calls(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """The timed calls (programs compiled before the clock starts)."""
    ep = trace_export(model, [shape])
    fx_prog = fxpath.compile(model, shape)
    ex_prog = fxpath.compile(model, shape, front_end="export")
    return {
        "cold_fx": lambda: fxpath.path_norm(model, shape),
        "cold_export": lambda: fxpath.compile(model, shape, front_end="export").path_norm(),
        "cold_exported": lambda: fxpath.path_norm(ep, None),
        "warm_norm_fx": fx_prog.path_norm,
        "warm_norm_export": ex_prog.path_norm,
        "warm_scores_fx": fx_prog.path_magnitude,
        "warm_scores_export": ex_prog.path_magnitude,
    }


def markdown(rows: dict[str, dict[str, float]], info: dict[str, str]) -> str:
    """The results table."""
    head = "| model | forward ms | " + " | ".join(COLUMNS) + " |"
    lines = ["# torch.export beside torch.fx", "", f"Machine: {info}", "",
             "Ratios to the model's forward (paired medians); see the script's docstring.", "",
             head, "|---|---|" + "---|" * len(COLUMNS)]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['forward_ms']:.1f} | "
                     + " | ".join(f"{r[c]:.2f}x" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    ratio_main(__doc__, "frontends", calls, markdown, ["resnet18", "resnet50", "vgg16"], 7)


if __name__ == "__main__":
    main()
