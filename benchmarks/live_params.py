"""What reading the live parameters on every call costs, side by side in one run.

A compiled program used to cache the coordinate magnitudes ``|w|`` between calls and trust
PyTorch's version counters to tell when a parameter changed; ``.data`` edits (and other ways
around autograd) do not bump them, so a cached answer could be stale. Now every call recomputes
``|w|`` from the live weights (into buffers the program keeps, so no fresh memory is touched)
and re-checks the module tree. This script times, for each model, ratios to the model's own
forward (paired, medians):

- ``cached``: the old cache hit: the path network on magnitudes computed once, no check;
- ``live``: the call as fxpath makes it now (``prog.path_norm()``, ``prog.path_magnitude()``).

    python benchmarks/live_params.py                 # resnet18/50, vgg16, densenet121 at 224
    python benchmarks/live_params.py --models resnet18 --repeats 5

Writes benchmarks/results/live_params_<device>.md and .json (machine and commit described).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from bench_path import ratio_main

import fxpath
from fxpath.quantities.scores import from_magnitudes


def calls(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, Callable[[], object]]:
    """The timed calls on one compiled program of ``model``."""
    prog = fxpath.compile(model, shape)
    mags = prog.magnitudes_detached()  # computed once: the old cache's view of the weights
    norm_net = prog.path_network(1.0)
    return {
        "norm_cached": lambda: prog.runner.call(("norm", 1.0), norm_net, mags),
        "norm_live": prog.path_norm,
        "scores_cached": lambda: prog.runner.call(("scores",), partial(from_magnitudes, prog),
                                                  mags),
        "scores_live": prog.path_magnitude,
    }


def markdown(rows: dict[str, dict[str, float]], info: dict[str, str]) -> str:
    """The results table."""
    lines = ["# Live parameters: the cost of never returning a stale answer", "",
             f"Machine: {info}", "",
             "Ratios to the model's forward (paired medians). `cached`: the old cache hit "
             "(magnitudes computed once, no check); `live`: the call as fxpath makes it now "
             "(`|w|` recomputed from the live weights into the program's buffers, module "
             "tree re-checked).", "",
             "| model | forward ms | norm cached | norm live | scores cached | scores live |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['forward_ms']:.1f} | {r['norm_cached']:.2f}x | "
                     f"{r['norm_live']:.2f}x | {r['scores_cached']:.2f}x | "
                     f"{r['scores_live']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    ratio_main(__doc__, "live_params", calls, markdown,
               ["resnet18", "resnet50", "vgg16", "densenet121"], 9)


if __name__ == "__main__":
    main()
