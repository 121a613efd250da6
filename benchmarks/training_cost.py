"""What the path-norm regularizer and a Path-SGD step cost, next to a training step.

For each model (float32, BatchNorm frozen, a batch of ``--batch`` samples) the script times,
as paired medians against the model's own forward + backward on that batch:

- ``path_norm``: a warm ``prog.path_norm(q=1)`` (no autograd), the reference of the claim;
- ``penalty``: ``fxpath.PathNormPenalty(model, shape)()`` (the differentiable l^1 log path-norm);
- ``penalty_bwd``: the penalty and its backward;
- ``path_sgd_step``: ``fxpath.PathSGD.step()`` (gamma: one forward and one backward of the
  q = 2 path network, then the update), next to ``sgd_step``, ``torch.optim.SGD.step()``.

The claim checked: one penalty call costs at most a warm path-norm plus one backward
(``penalty / path_norm`` near 1; ``penalty_bwd`` a forward and a backward of the path network).

    python benchmarks/training_cost.py                       # mlp (MNIST) and resnet18 (32x32)
    python benchmarks/training_cost.py --models mlp --repeats 5

Writes benchmarks/results/training_cost_<device>.md and .json (machine and commit described).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from bench_path import RESULTS, machine, paired_ratio, timeit

import fxpath

MODELS = {"mlp": (1, 28, 28), "resnet18": (3, 32, 32)}


def build(name: str) -> nn.Module:
    """An MNIST MLP (784-300-100-10) or torchvision's ResNet-18 with 10 classes; eval mode."""
    torch.manual_seed(0)
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                             nn.ReLU(), nn.Linear(100, 10)).eval()
    import torchvision

    return torchvision.models.get_model(name, weights=None, num_classes=10).eval()


def calls(name: str, batch: int, device: str) -> dict[str, Callable[[], object]]:
    """The timed calls of one model; ``forward_backward`` is the baseline."""
    shape = MODELS[name]
    model = build(name).to(device)
    x = torch.randn(batch, *shape, device=device)
    y = torch.randint(10, (batch,), device=device)
    prog = fxpath.compile(model, shape)
    penalty = fxpath.PathNormPenalty(model, shape)
    path_sgd = fxpath.PathSGD(model, shape, lr=0.0)  # lr 0: timed steps leave the weights
    sgd = torch.optim.SGD(model.parameters(), lr=0.0)

    def forward_backward() -> None:
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()

    def penalty_bwd() -> None:
        penalty().backward()

    forward_backward()  # gradients for the optimizer steps
    return {"forward_backward": forward_backward, "path_norm": prog.path_norm,
            "penalty": penalty, "penalty_bwd": penalty_bwd, "path_sgd_step": path_sgd.step,
            "sgd_step": sgd.step}


def measure(name: str, batch: int, repeats: int, device: str) -> dict[str, float]:
    """``{call}_ms`` and ``{call}`` (paired ratio to the forward + backward) for every call."""
    fns = calls(name, batch, device)
    base = fns.pop("forward_backward")
    row: dict[str, float] = {}
    for call, fn in fns.items():
        ms, ratio, _ = paired_ratio(fn, base, repeats, device, warmup=2)
        row[f"{call}_ms"], row[call] = ms, ratio
    row["forward_backward_ms"] = timeit(base, repeats, device, warmup=2)
    row["penalty_over_path_norm"] = row["penalty_ms"] / row["path_norm_ms"]
    row["backward_ms"] = row["penalty_bwd_ms"] - row["penalty_ms"]
    return row


def markdown(rows: dict[str, dict[str, float]], info: dict[str, str], batch: int) -> str:
    """The results table."""
    lines = ["# Training with path-norms: what the regularizer and Path-SGD cost", "",
             f"Machine: {info}", "",
             f"float32, BatchNorm frozen (eval), batch {batch}. Times in ms (paired medians); "
             "in parentheses the ratio to the model's forward + backward on the batch.", "",
             "| model | fwd+bwd | warm path_norm | penalty() | penalty()/path_norm | "
             "penalty()+backward | Path-SGD step | SGD step |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        def cell(call: str, r: dict[str, float] = r) -> str:
            return f"{r[call + '_ms']:.2f} ({r[call]:.2f}x)"
        lines.append(f"| {name} | {r['forward_backward_ms']:.2f} | {cell('path_norm')} | "
                     f"{cell('penalty')} | {r['penalty_over_path_norm']:.2f} | "
                     f"{cell('penalty_bwd')} | {cell('path_sgd_step')} | {cell('sgd_step')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=11)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tag", default="", help="suffix of the result file names")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine(args.device) | {"batch": str(args.batch), "repeats": str(args.repeats)}
    rows = {name: measure(name, args.batch, args.repeats, args.device) for name in args.models}
    stem = RESULTS / f"training_cost_{args.device.split(':')[0]}{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    text = markdown(rows, info, args.batch)
    stem.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
