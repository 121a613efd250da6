"""The ``fxpath`` command line: path-norms, scores and pruning of timm/torchvision models.

    fxpath norm resnet18                       # timm model, l^1 and l^2 path-norms
    fxpath norm torchvision:resnet50 --size 3 224 224
    fxpath scores resnet18 --top 10            # tensors carrying the most path mass
    fxpath prune torchvision:resnet18 --amount 0.6
    fxpath prune torchvision:resnet18 --structured --amount 0.5 --export small.pt2   # channels
    fxpath quantize torchvision:resnet18 --scheme int8 --per-channel
    fxpath metric resnet18 pruned.pt           # certified path-metric between two weight sets
    fxpath check efficientnet_b0               # every op: supported, or why not
    fxpath zoo --filter 'resnet*' --jobs 2     # sweep the timm/torchvision zoo
    fxpath plot mass resnet18 --out mass.png   # pictures (PNG)
    fxpath bound torchvision:resnet18 --n-train 1268355 --input-bound 2.64   # generalization

``norm`` and ``metric`` compute in float64 (``--float32`` opts out), the other commands in
float32 (``--float64`` opts in); a result is printed with the digits its dtype carries
(`fxpath.tools.commands.digits`: 10 in float64, 6 in float32), so that the printed digits are
the same on every CPU. While a command runs, what torch logs or prints to stderr is held back
(`fxpath.tools.commands.quiet_libraries`): fxpath's own message says what went wrong.

`main` parses the command line (`fxpath.tools.arguments`), builds MODEL
(`fxpath.tools.models`), runs the subcommand and turns its errors into exit codes. What the
commands do beyond the library calls lives in `fxpath.tools.commands` (files, JSON results),
`fxpath.tools.support` (``check``), `fxpath.tools.zoo` and `fxpath.tools.plot`.

Exit codes (`main` returns them; messages on stderr):

- 0 (`EXIT_OK`): success; also ``--help``, ``--version``, and a reader that closes the pipe
  early (``fxpath scores resnet18 | head -3``: the command stops quietly).
- 1 (`EXIT_INTERNAL`): internal error, any other exception: a bug in fxpath or in a library it
  calls (``fxpath: internal error, please report: ...`` and the traceback).
- 2 (`EXIT_USAGE`): usage error. A malformed command line or flag value (argparse prints the
  usage and the error), or any `fxpath.FxPathError` (one line ``fxpath: ...``): an unknown
  model (with the closest registered names), a model that cannot be built or that fxpath
  refuses (not a ReLU network, an input shape that does not fit), a checkpoint that does not
  fit, no input size, matplotlib missing for ``plot``, Torch-Pruning missing for ``prune
  --structured``; also running out of memory.
- 3 (`EXIT_UNSUPPORTED`): ``fxpath check`` only, the model is not supported (the report says
  why).
- 130 (`EXIT_INTERRUPTED`): interrupted (Ctrl-C): ``fxpath: interrupted``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from fxpath.api import compile as compile_program
from fxpath.api import generalization_bound
from fxpath.apps.prune import prune
from fxpath.apps.quantize.api import quantize
from fxpath.apps.structured.api import prune_channels
from fxpath.apps.structured.library import torch_pruning
from fxpath.errors import FxPathError
from fxpath.tools import channels, commands
from fxpath.tools.arguments import ONE_SHOT, build_parser, finish
from fxpath.tools.models import build_model
from fxpath.tools.support import support_report, support_text

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_UNSUPPORTED", "EXIT_USAGE",
           "main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3
EXIT_INTERRUPTED = 130


# -- the subcommands ------------------------------------------------------------------------

def _norm(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
          dtype: torch.dtype) -> None:
    prog = compile_program(model, shape, dtype=dtype)
    norms = [prog.path_norm(q) for q in args.q]
    if args.json:
        return _print_json(commands.norm_result(args.model, shape, norms, dtype))
    for q, pn in zip(args.q, norms):
        print(f"l^{q:g} path-norm of {args.model} at {shape}: {commands.norm_text(pn, dtype)}")


def _scores(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
            dtype: torch.dtype) -> None:
    scores = compile_program(model, shape, dtype=dtype).path_magnitude()
    if args.save:
        commands.save_tensors(scores, args.save)
    if args.json:
        result = commands.scores_result(args.model, shape, scores, args.top, dtype)
        return _print_json({**result, "saved": args.save})
    if args.save:
        print(f"saved {len(scores)} score tensors to {args.save}")
    mass = sorted(((float(s.sum()), n) for n, s in scores.items()), key=lambda t: (-t[0], t[1]))
    print(f"path mass fraction through each tensor of {args.model} at {shape} "
          f"(top {min(args.top, len(mass))} of {len(mass)}):")
    for m, n in mass[:args.top]:
        print(f"  {m:10.6f}  {n}")


def _prune(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> None:
    model = commands.as_module(model)
    if args.structured:
        return _prune_channels(args, model, shape, dtype)
    report = prune(model, args.amount, shape, criterion=args.criterion, scope=args.scope,
                   steps=args.steps, dtype=dtype)
    saved = _save_pruned(args, model, shape)
    if args.json:
        return _print_json({**commands.prune_result(args.model, shape, report), **saved})
    steps = f", {args.steps} steps" if args.steps > 1 else ""
    print(f"{args.model} at {shape}: pruned {report.overall_sparsity:.1%} of the conv/linear "
          f"weights by {args.criterion} ({args.scope}{steps})")
    metric = report.metric
    print(f"certified l^1 path-metric to the dense model: "
          f"{commands.metric_text(metric, dtype)}")
    print(commands.bound_line(metric, "pruned"))
    if report.collapsed:
        print("collapsed: no path from an input reaches an output (the pruned model is "
              f"constant); cut by: {', '.join(report.cut) or 'no single weight'}")
    if "checkpoint" in saved:
        print(f"saved the pruned weights to {saved['checkpoint']}")
    if "exported" in saved:
        print(f"saved the pruned model as an ExportedProgram ({saved['exported_batch']}) to "
              f"{saved['exported']}")


def _prune_channels(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
                    dtype: torch.dtype) -> None:
    """``prune --structured``: whole channels removed, a smaller model, timed and certified."""
    small, report = prune_channels(model, args.amount, shape, criterion=args.criterion,
                                   scope=args.scope, steps=args.steps, round_to=args.round_to,
                                   dtype=dtype)
    timing = channels.latency(model, small, shape)
    total = sum(channels.output_channels(model).values())
    saved = channels.save(small, shape, args.out, args.export)
    if args.json:
        return _print_json(channels.result(args.model, shape, report, timing, total, dtype,
                                           saved))
    print("\n".join(channels.text(args.model, shape, report, timing, total, saved)))


def _save_pruned(args: argparse.Namespace, model: nn.Module,
                 shape: tuple[int, ...]) -> dict[str, str]:
    """``--out`` and ``--export`` of prune, pruning made permanent first."""
    if not (args.out or args.export):
        return {}
    commands.make_permanent(model)
    saved = {}
    if args.out:
        commands.save_tensors(model.state_dict(), args.out)
        saved["checkpoint"] = args.out
    if args.export:
        saved["exported_batch"] = commands.export_program(model, shape, args.export)
        saved["exported"] = args.export
    return saved


def _quantize(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
              dtype: torch.dtype) -> None:
    scheme = args.scheme
    copy, report = quantize(model, shape, scheme, per_channel=args.per_channel,
                            rounding=args.rounding, biases=args.biases, fold_bn=args.fold_bn,
                            budget=args.budget, layer_metrics=args.top > 0, dtype=dtype)
    if args.out:
        commands.save_tensors(copy.state_dict(), args.out)
    if args.json:
        return _print_json(commands.quantize_result(args.model, shape, report, dtype, args.out))
    granularity = "per channel" if args.per_channel else "per tensor"
    what = f"{scheme}" if args.budget is None else f"budget {args.budget:g}, integer bits"
    print(f"{args.model} at {shape}: quantized {len(report.layers)} conv/linear layers "
          f"({what}, {granularity}, {args.rounding}), {report.average_bits:.3f} bits per weight")
    print(commands.size_line(report.size_bytes, report.float32_bytes))
    metric = report.metric
    print(f"certified l^1 path-metric to the model: {commands.metric_text(metric, dtype)}")
    if report.budget is not None:
        print(f"budget {report.budget:g}: met with margin {report.margin:.6g} after "
              f"{report.rounds} certified check(s)")
    if args.top > 0:
        top = sorted(report.layers.values(), key=lambda r: (-(r.share or 0.0), r.layer))
        print(f"layers with the largest share of the metric (top {min(args.top, len(top))} of "
              f"{len(top)}; each certified alone):")
        for r in top[:args.top]:
            print(f"  {r.share:10.6f}  {r.bits} bits  {r.layer}")
    if args.out:
        print(f"saved the quantized state_dict to {args.out}")


def _metric(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
            dtype: torch.dtype) -> None:
    other = (commands.load_exported(args.other)[0] if args.other.endswith(".pt2")
             else commands.load_state(args.other))
    prog = compile_program(model, shape, dtype=dtype)
    metric = prog.path_metric(other)
    if args.json:
        return _print_json(commands.metric_result(args.model, args.other, shape, metric,
                                                  prog.path_norm(), dtype))
    print(f"certified l^1 path-metric between {args.model} and {args.other} at {shape}: "
          f"{commands.metric_text(metric, dtype)}")
    print(commands.bound_line(metric, "other"))


def _check(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> int:
    report = support_report(model, shape)
    if args.json:
        _print_json({"model": args.model, "input_shape": list(shape), **report.as_dict()})
    else:
        print("\n".join(support_text(args.model, shape, report)))
    return EXIT_OK if report.supported else EXIT_UNSUPPORTED


def _plot(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
          dtype: torch.dtype) -> None:
    from fxpath.tools import plot

    out = args.out or commands.default_picture(args.kind, args.model)
    if args.kind == "sparsity":
        report = prune(commands.as_module(model, "plot sparsity"), args.amount, shape,
                       criterion=args.criterion, scope=args.scope, dtype=dtype)
        path = plot.plot_sparsity(report.sparsity, report.overall_sparsity, out, args.model)
        data: dict[str, object] = {"overall_sparsity": report.overall_sparsity,
                                   "sparsity": report.sparsity, "metric": report.metric}
    else:
        scores = compile_program(model, shape, dtype=dtype).path_magnitude()
        draw = plot.plot_mass if args.kind == "mass" else plot.plot_scores
        path = draw(scores, out, f"{args.model} at {shape}")
        data = {"tensors": [{"name": k, "mass": m, "entries": n}
                            for k, m, n in commands.tensor_masses(scores)]}
    if args.json:
        return _print_json(commands.plot_result(args.kind, args.model, path, shape,
                                                {"dtype": dtype, **data}))
    print(f"wrote {path}")


def _bound(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> None:
    report = generalization_bound(model, shape, args.n_train, input_bound=args.input_bound,
                                  dtype=dtype)
    if args.json:
        return _print_json(commands.bound_result(args.model, shape, report, dtype))
    print(f"{args.model} at {shape}:")
    print(report)


def _print_json(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2))


_Command = Callable[[argparse.Namespace, nn.Module, tuple[int, ...], torch.dtype], "int | None"]
_COMMANDS: dict[str, _Command] = {"norm": _norm, "scores": _scores, "prune": _prune,
                                  "quantize": _quantize, "metric": _metric, "check": _check,
                                  "plot": _plot, "bound": _bound}


def _load(args: argparse.Namespace) -> tuple[nn.Module, tuple[int, ...]]:
    """MODEL built (random weights of --seed), --checkpoint loaded, --size applied."""
    torch.manual_seed(args.seed)
    model, shape = build_model(args.model)
    if args.checkpoint:
        if not isinstance(model, nn.Module):
            raise FxPathError("--checkpoint does not apply to a .pt2 MODEL: an "
                              "ExportedProgram holds its own weights")
        commands.load_checkpoint(model, args.checkpoint)
    shape = tuple(args.size) if args.size else shape
    if shape is None:
        raise FxPathError(f"{args.model} records no input size: give the per-sample input "
                          "shape with --size, e.g. --size 3 224 224")
    return model, shape


def _run(args: argparse.Namespace) -> int:
    if args.command == "zoo":
        from fxpath.tools.zoo import command as zoo_command

        return zoo_command.run(args)
    if args.command == "plot":
        from fxpath.tools import plot

        plot.require_matplotlib()  # before minutes of work on the model, not after
        if args.kind == "zoo":
            path = plot.plot_zoo(args.model, args.out or "zoo.png")
            if args.json:
                _print_json(commands.plot_result("zoo", args.model, path))
            else:
                print(f"wrote {path}")
            return EXIT_OK
    if args.command == "prune" and args.structured:
        torch_pruning()  # missing: say so before minutes of work on the model, not after
    model, shape = _load(args)
    dtype = _dtype(args)
    t0 = time.perf_counter()
    with commands.quiet_libraries(keep_for_bugs=True):
        code = _COMMANDS[args.command](args, model, shape, dtype)
    sys.stdout.flush()  # a closed pipe fails here, inside main, not at interpreter exit
    print(f"({time.perf_counter() - t0:.2f} s, {dtype})", file=sys.stderr)
    return code or EXIT_OK


def _dtype(args: argparse.Namespace) -> torch.dtype:
    """float64 with --float64 and for the one-shot commands (unless --float32), else float32."""
    if getattr(args, "float32", False):
        return torch.float32
    return torch.float64 if args.float64 or args.command in ONE_SHOT else torch.float32


def _float64_hint(args: argparse.Namespace, exc: FxPathError) -> str:
    """What to change on the command line when the library asks for float64."""
    if "dtype=torch.float64" not in str(exc) or not hasattr(args, "float64"):
        return ""
    if getattr(args, "float32", False):
        return " (here: leave out --float32)"
    return "" if _dtype(args) == torch.float64 else " (here: add --float64)"


def _out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def _internal_error(exc: BaseException) -> int:
    print(f"fxpath: internal error, please report: {type(exc).__name__}: {exc}\n"
          "This is a bug in fxpath or in a library it calls, not a problem with your command "
          "line. Please report it with the command line, the versions of torch, torchvision "
          "and timm, and the traceback below.", file=sys.stderr)
    traceback.print_exc()
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fxpath`` console script; returns the exit code."""
    try:
        parser = build_parser()
        args = finish(parser, parser.parse_args(argv))
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code = _run(args)
    except FxPathError as exc:
        print(f"fxpath: {exc}{_float64_hint(args, exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fxpath: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fxpath scores resnet18 --top 100 | head -3`
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        if _out_of_memory(exc):
            size = getattr(args, "size", None)
            print(f"fxpath: out of memory for {getattr(args, 'model', args.command)} at input "
                  f"shape {tuple(size) if size else 'default'}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return _internal_error(exc)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
