"""What one call of the path-norm penalty and its backward cost, next to a warm path-norm.

Issue 24 asks that one call of `fxpath.PathNormPenalty` cost at most the warm path-norm plus
one backward. For each model (float32, eval, random weights) the script times, as paired
medians (each call between two warm ``prog.path_norm()`` calls, divided by their mean):

- ``path_norm``: a warm ``prog.path_norm(q=1)`` (no autograd): the reference, ratio 1;
- ``penalty``: ``penalty()``, the differentiable l^1 log path-norm (lift and path network
  recorded by autograd);
- ``penalty_backward``: ``penalty().backward()`` (gradients set to None first);
- ``network`` and ``network_backward``: the same path network on leaf magnitudes that require
  gradients (no lift), without and with ``total.backward()``: their difference is one
  backward of the path network (``backward``).

Ratios are given in CPU time (the process's user + system time), which on a shared machine
does not count the time spent waiting for a core, and in wall time.

Derived: ``claim = penalty_backward / (path_norm + backward)``, the issue's bound (<= 1 holds
it), and ``lift_backward = penalty_backward - penalty - backward``, what the backward spends
outside the path network (from the coordinates' gradients to the model's parameters).

    python benchmarks/penalty_cost.py                          # resnet18 at 224 and 32, mlp
    PYTHONPATH=../old-checkout python benchmarks/penalty_cost.py --label before --commit abc1234

Each run's rows go under ``--label`` in benchmarks/results/penalty_cost_<device>.json (other
labels kept: a before/after pair is two runs, each paired within itself); the .md shows them
all, each with its machine and commit.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn as nn
from bench_path import RESULTS, machine, paired_ratio, timeit

import fxpath
from fxpath.engine.precision import ieee_float32

MODELS = {"resnet18_224": ("resnet18", (3, 224, 224)), "resnet18_32": ("resnet18", (3, 32, 32)),
          "mlp": ("mlp", (1, 28, 28))}
CALLS = ("penalty", "penalty_backward", "network", "network_backward")


def build(name: str) -> nn.Module:
    """An MNIST MLP (784-300-100-10, no BatchNorm) or torchvision's ResNet-18; eval mode."""
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10)).eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None).eval()


def calls(key: str, device: str) -> dict[str, Callable[[], object]]:
    """The timed calls of one model; ``path_norm`` is the reference."""
    name, shape = MODELS[key]
    model = build(name).to(device)
    prog = fxpath.compile(model, shape, device=device)
    penalty = fxpath.PathNormPenalty(model, shape, device=device)
    network = penalty.program.runner.network(1.0, "norm")
    leaves = [m.detach().requires_grad_(True) for m in penalty.program.magnitudes_detached()]

    def penalty_backward() -> None:
        model.zero_grad(set_to_none=True)
        penalty().backward()

    def run_network() -> None:
        with torch.enable_grad(), ieee_float32():
            network(*leaves)

    def network_backward() -> None:
        for leaf in leaves:
            leaf.grad = None
        with torch.enable_grad(), ieee_float32():
            total, _ = network(*leaves)
        total.backward()

    return {"path_norm": prog.path_norm, "penalty": penalty,
            "penalty_backward": penalty_backward, "network": run_network,
            "network_backward": network_backward}


def measure(key: str, repeats: int, device: str) -> dict[str, float]:
    """``{call}_ms``, ``{call}`` and ``{call}_cpu`` (paired wall- and CPU-time ratios to the
    warm path-norm), then the derived figures, from either."""
    fns = calls(key, device)
    base = fns.pop("path_norm")
    row: dict[str, float] = {"path_norm_ms": timeit(base, repeats, device, warmup=2)}
    for call in CALLS:
        row[f"{call}_ms"], row[call], row[f"{call}_cpu"] = paired_ratio(
            fns[call], base, repeats, device, warmup=2)
    for suffix in ("", "_cpu"):
        def r(call: str, suffix: str = suffix) -> float:
            return row[call + suffix]
        backward = r("network_backward") - r("network")
        row["backward" + suffix] = backward
        row["claim" + suffix] = r("penalty_backward") / (1.0 + backward)
        row["lift_backward" + suffix] = r("penalty_backward") - r("penalty") - backward
    return row


def markdown(runs: dict[str, dict]) -> str:
    """The results tables, one per label."""
    lines = ["# One call of the path-norm penalty: what it costs", "",
             "Issue 24: one call (value and backward) should cost at most a warm path-norm plus "
             "one backward. Paired medians, float32, eval, random weights, one thread: each call "
             "is timed between two warm `prog.path_norm()` calls and divided by their mean. "
             "Ratios in CPU time (this process's user + system time: on a shared machine it "
             "does not count the time the process waits for a core); `claim (wall)` is the same "
             "from wall time. `backward` = one backward of the path network (on leaf "
             "magnitudes); `claim` = (penalty() + backward) / (path_norm + backward), at most 1 "
             "when the bound holds; `lift bwd` = what the backward spends outside the path "
             "network (benchmarks/penalty_cost.py).", ""]
    for label, run in runs.items():
        lines += [f"## {label}", "", f"Machine: {run['machine']}", "",
                  "| model | path_norm ms | penalty() | penalty()+backward | network fwd | "
                  "network fwd+bwd | backward | lift bwd | claim | claim (wall) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for key, r in run["rows"].items():
            def cell(call: str, r: dict[str, float] = r) -> str:
                return f"{r[call + '_ms']:.1f} ms ({r[call + '_cpu']:.2f}x)"
            lines.append(f"| {key} | {r['path_norm_ms']:.1f} | {cell('penalty')} | "
                         f"{cell('penalty_backward')} | {cell('network')} | "
                         f"{cell('network_backward')} | {r['backward_cpu']:.2f}x | "
                         f"{r['lift_backward_cpu']:.2f}x | **{r['claim_cpu']:.2f}** | "
                         f"{r['claim']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", default="current", help="the rows' heading (e.g. before, after)")
    p.add_argument("--commit", help="what was measured, when not this checkout's fxpath (an "
                   "exported tree on PYTHONPATH)")
    p.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = p.parse_args()
    stem = RESULTS / f"penalty_cost_{args.device.split(':')[0]}"
    path = stem.with_suffix(".json")
    runs = json.loads(path.read_text()) if path.exists() else {}
    if not args.render:
        torch.set_num_threads(args.threads)
        info = machine(args.device) | {"repeats": str(args.repeats)}
        if args.commit:
            info["commit"] = args.commit
        rows = {key: measure(key, args.repeats, args.device) for key in args.models}
        runs[args.label] = {"machine": info, "rows": rows}
        path.write_text(json.dumps(runs, indent=1))
    text = markdown(runs)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
