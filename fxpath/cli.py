"""The ``fxpath`` command line: path-norms, scores and pruning of timm/torchvision models.

    fxpath norm resnet18                       # timm model, l^1 and l^2 path-norms
    fxpath norm torchvision:resnet50 --size 3 224 224
    fxpath scores resnet18 --top 10            # tensors carrying the most path mass
    fxpath prune torchvision:resnet18 --amount 0.6

Exit codes: 0 success, 1 internal error (a bug, reported with its traceback), 2 usage error,
unknown model or a model fxpath refuses (message ``fxpath: ...`` on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from .api import compile as compile_program
from .errors import FxPathError
from .prune import prune

__all__ = ["EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_model",
           "build_parser", "exponent", "fraction", "main", "parse_model", "positive_int", "seed",
           "suggestions"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: input shape of torchvision models (their builders do not record one)
TORCHVISION_INPUT_SIZE = (3, 224, 224)
_PREFIXES = ("timm", "torchvision")

_MODEL_HELP = """\
MODEL is a timm model name (resnet18, also with a pretrained tag: resnet18.a1_in1k),
timm:NAME, or torchvision:NAME (torchvision:resnet18). The model is built with random
weights (seeded by --seed, no download) and put in eval mode; a misspelt name is
answered with the closest registered names."""

_EXIT_HELP = """\
exit codes:
  0    success
  1    internal error: a bug in fxpath or a library it calls (message and traceback
       on stderr; please report it)
  2    usage error: a bad flag value, an unknown model, a model that cannot be built
       or that fxpath refuses (not a ReLU network, wrong --size); one line
       'fxpath: ...' or the usage and the error on stderr
  130  interrupted (Ctrl-C)"""

_EXAMPLES = {
    None: """\
  fxpath norm resnet18                         # l^1 and l^2 path-norms, timm ResNet-18
  fxpath norm torchvision:resnet18 --float64   # torchvision's, computed in float64
  fxpath scores resnet18 --top 5               # the 5 tensors with the most path mass
  fxpath prune torchvision:resnet18 --amount 0.6 --steps 5
  fxpath norm --help                           # the flags of one subcommand""",
    "norm": """\
  fxpath norm resnet18
  fxpath norm torchvision:resnet18 --float64
  fxpath norm timm:resnet50 --q 1 2 4 --size 3 160 160
  fxpath norm torchvision:vgg11 --seed 1""",
    "scores": """\
  fxpath scores resnet18 --top 5
  fxpath scores torchvision:resnet18 --top 20 --float64""",
    "prune": """\
  fxpath prune resnet18                               # 60% of conv/linear weights
  fxpath prune torchvision:resnet18 --amount 0.9 --steps 10
  fxpath prune resnet18 --criterion magnitude --scope layer""",
}

_SUBCOMMANDS = {
    "norm": ("l^q path-norms (value and log10)",
             "Print the l^q path-norm ||Phi(theta)||_q of MODEL for each --q, with its value\n"
             "(10 significant digits; inf only beyond float64) and its log10."),
    "scores": ("path mass through each parameter tensor",
               "Print the parameter tensors of MODEL that carry the most l^1 path mass: the\n"
               "sum of the path-magnitude scores of the tensor's entries, largest first."),
    "prune": ("prune by path-magnitude and print the certified path-metric",
              "Prune the conv and linear weights of MODEL and print the overall sparsity and\n"
              "the certified l^1 path-metric between the dense and the pruned model: the\n"
              "outputs move by at most max(1, ||x||_inf) times this value."),
}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written; a wider column for the flags."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


# -- parse-time validation (argparse ``type=`` functions) -----------------------------------

def _parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be an integer, got {text!r}") from None


def positive_int(what: str = "the value") -> Callable[[str], int]:
    """A ``type=`` function accepting integers >= 1; ``what`` names them in messages."""

    def parse(text: str) -> int:
        value = _parse_int(text, what)
        if value < 1:
            raise argparse.ArgumentTypeError(f"{what} must be an integer >= 1, got {text!r}")
        return value

    return parse


def seed(text: str) -> int:
    """A seed ``torch.manual_seed`` accepts: an integer in [-2**63, 2**64 - 1]."""
    value = _parse_int(text, "seed")
    if not -(2**63) <= value < 2**64:
        raise argparse.ArgumentTypeError(f"seed must be in [-2**63, 2**64 - 1], got {text}")
    return value


def _parse_float(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} must be a number, got {text!r}") from None


def exponent(text: str) -> float:
    """A path-norm exponent ``q``: a finite number > 0."""
    q = _parse_float(text, "q")
    if q == math.inf:
        raise argparse.ArgumentTypeError(
            f"q={text}: the l^inf path-norm is not supported; use a finite q > 0")
    if math.isnan(q) or q <= 0:
        raise argparse.ArgumentTypeError(f"q must be a finite number > 0, got {text!r}")
    return q


def fraction(text: str) -> float:
    """A pruning amount: a number in [0, 1]."""
    value = _parse_float(text, "amount")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"amount must be in [0, 1], got {text!r}")
    return value


def parse_model(spec: str) -> tuple[str, str]:
    """Split MODEL into ``(registry, name)``: ``"resnet18"`` -> ``("timm", "resnet18")``.

    Raises:
        argparse.ArgumentTypeError: an unknown prefix or an empty name.
    """
    prefix, sep, name = spec.partition(":")
    if not sep:
        prefix, name = "timm", spec
    elif prefix not in _PREFIXES:
        raise argparse.ArgumentTypeError(
            f"unknown model prefix {prefix + ':'!r} in {spec!r}: use a timm name, timm:NAME "
            "or torchvision:NAME")
    if not name.strip():
        raise argparse.ArgumentTypeError(f"empty model name in {spec!r}")
    return prefix, name


def _model_spec(text: str) -> str:
    parse_model(text)
    return text


# -- models ---------------------------------------------------------------------------------

def _registry(prefix: str) -> list[str]:
    if prefix == "torchvision":
        import torchvision

        return list(torchvision.models.list_models())
    import timm

    return list(timm.list_models())


def _known(prefix: str, name: str) -> bool:
    if prefix == "torchvision":
        return name in _registry("torchvision")
    import timm

    return bool(timm.is_model(name))  # accepts pretrained tags: resnet18.a1_in1k


def _spell(prefix: str, name: str, bare: bool) -> str:
    return name if bare and prefix == "timm" else f"{prefix}:{name}"


def suggestions(spec: str, n: int = 5) -> list[str]:
    """Registered MODEL strings close to ``spec``, the most likely first.

    The name's own registry is searched; an exact name in the other one comes first, and when
    the own registry has nothing close, the other one's close names are offered.
    """
    prefix, name = parse_model(spec)
    bare = ":" not in spec
    other = "timm" if prefix == "torchvision" else "torchvision"
    arch = name.split(".", 1)[0] if prefix == "timm" else name  # timm tags: arch.tag
    own = difflib.get_close_matches(arch, _registry(prefix), n)
    found = [_spell(prefix, m, bare) for m in own]
    theirs = _registry(other)
    if arch in theirs:
        found.insert(0, _spell(other, arch, bare))
    elif not own:
        found = [_spell(other, m, bare) for m in difflib.get_close_matches(arch, theirs, n)]
    return found[:n]


def _unknown_model(spec: str) -> FxPathError:
    prefix, name = parse_model(spec)
    close = suggestions(spec)
    hint = (f"did you mean {', '.join(close)}?" if close else
            f"no close match among the {len(_registry(prefix))} {prefix} models "
            f"({prefix}.{'models.' if prefix == 'torchvision' else ''}list_models() lists them)")
    where = "" if spec == name else f" in {spec!r}"
    return FxPathError(f"unknown {prefix} model {name!r}{where}; {hint}")


def build_model(spec: str) -> tuple[nn.Module, tuple[int, ...]]:
    """Build MODEL (``name``, ``timm:name`` or ``torchvision:name``) with random weights.

    Returns the model in eval mode and its default per-sample input shape.

    Raises:
        FxPathError: an unknown prefix or name (with close matches), or any failure while
            building the model (the message names the model).
    """
    try:
        prefix, name = parse_model(spec)
    except argparse.ArgumentTypeError as exc:
        raise FxPathError(str(exc)) from None
    if not _known(prefix, name):
        raise _unknown_model(spec)
    try:
        if prefix == "torchvision":
            import torchvision

            model = torchvision.models.get_model(name, weights=None)
            shape: tuple[int, ...] = TORCHVISION_INPUT_SIZE
        else:
            import timm

            model = timm.create_model(name, pretrained=False)
            shape = tuple(model.pretrained_cfg.get("input_size", TORCHVISION_INPUT_SIZE))
    except (KeyboardInterrupt, FxPathError):
        raise
    except Exception as exc:  # any failure of a registry's builder is the model's, not ours
        raise FxPathError(f"could not build {spec!r}: {type(exc).__name__}: {exc}") from exc
    return model.eval(), shape


# -- the parser -----------------------------------------------------------------------------

def _add_common(c: argparse.ArgumentParser) -> None:
    c.add_argument("model", metavar="MODEL", type=_model_spec,
                   help="timm name, timm:NAME or torchvision:NAME (see 'fxpath --help')")
    c.add_argument("--size", metavar="DIM", type=positive_int("each input dimension"), nargs="+",
                   help="per-sample input shape without the batch dimension, positive "
                        "integers, e.g. --size 3 160 160 (default: the model's own: timm's "
                        "input_size, 3 224 224 for torchvision)")
    c.add_argument("--seed", metavar="N", type=seed, default=0,
                   help="seed of the random weights (default: %(default)s)")
    c.add_argument("--float64", action="store_true",
                   help="compute the path network in float64 (default: float32)")


def _add_subcommand(sub: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    short, description = _SUBCOMMANDS[name]
    c = sub.add_parser(name, help=short, formatter_class=_Formatter,
                       description=f"{description}\n\n{_MODEL_HELP}",
                       epilog=f"examples:\n{_EXAMPLES[name]}\n\n{_EXIT_HELP}")
    _add_common(c)
    return c


def build_parser() -> argparse.ArgumentParser:
    """The ``fxpath`` argument parser (subcommands ``norm``, ``scores``, ``prune``)."""
    from . import __version__

    p = argparse.ArgumentParser(
        prog="fxpath", formatter_class=_Formatter,
        description="Path-norms, path-magnitude scores and path-magnitude pruning of timm and "
                    f"torchvision\nReLU networks.\n\n{_MODEL_HELP}",
        epilog=f"examples:\n{_EXAMPLES[None]}\n\n{_EXIT_HELP}")
    p.add_argument("--version", action="version", version=f"fxpath {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           title="commands")
    c = _add_subcommand(sub, "norm")
    c.add_argument("--q", metavar="Q", type=exponent, nargs="+", default=[1.0, 2.0],
                   help="exponents of the l^q path-norms, finite numbers > 0 (default: 1 2)")
    c = _add_subcommand(sub, "scores")
    c.add_argument("--top", metavar="N", type=positive_int(), default=10,
                   help="how many tensors to print, N >= 1 (default: %(default)s)")
    c = _add_subcommand(sub, "prune")
    c.add_argument("--amount", metavar="A", type=fraction, default=0.6,
                   help="fraction of the conv/linear weights to set to zero, in [0, 1] "
                        "(default: %(default)s)")
    c.add_argument("--criterion", default="path_magnitude",
                   choices=["path_magnitude", "magnitude"],
                   help="score of a weight: its share of path mass, or |w| "
                        "(default: %(default)s)")
    c.add_argument("--scope", default="global", choices=["global", "layer"],
                   help="one threshold over all weights, or one per tensor "
                        "(default: %(default)s)")
    c.add_argument("--steps", metavar="N", type=positive_int(), default=1,
                   help="prune-and-rescore rounds, N >= 1; the kept fraction shrinks "
                        "geometrically to 1 - A (default: %(default)s)")
    return p


# -- the subcommands ------------------------------------------------------------------------

def _norm(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
          dtype: torch.dtype) -> None:
    prog = compile_program(model, shape, dtype=dtype)
    for q in args.q:
        pn = prog.path_norm(q)
        print(f"l^{q:g} path-norm of {args.model} at {shape}: {pn.value:.10g} "
              f"(log10 {pn.log10:.10f})")


def _scores(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
            dtype: torch.dtype) -> None:
    scores = compile_program(model, shape, dtype=dtype).path_magnitude()
    mass = sorted(((float(s.sum()), n) for n, s in scores.items()), key=lambda t: (-t[0], t[1]))
    print(f"path mass fraction through each tensor of {args.model} at {shape} "
          f"(top {min(args.top, len(mass))} of {len(mass)}):")
    for m, n in mass[:args.top]:
        print(f"  {m:10.6f}  {n}")


def _prune(args: argparse.Namespace, model: nn.Module, shape: tuple[int, ...],
           dtype: torch.dtype) -> None:
    report = prune(model, args.amount, shape, criterion=args.criterion, scope=args.scope,
                   steps=args.steps, dtype=dtype)
    steps = f", {args.steps} steps" if args.steps > 1 else ""
    print(f"{args.model} at {shape}: pruned {report.overall_sparsity:.1%} of the conv/linear "
          f"weights by {args.criterion} ({args.scope}{steps})")
    metric = report.metric
    kind = "exact" if metric.exact else "upper bound"
    print(f"certified l^1 path-metric to the dense model: {metric.value:.10g} "
          f"(log10 {metric.log10:.10f}, relative {metric.relative:.6g}, {kind})")


_Command = Callable[[argparse.Namespace, nn.Module, tuple[int, ...], torch.dtype], None]
_COMMANDS: dict[str, _Command] = {"norm": _norm, "scores": _scores, "prune": _prune}


def _run(args: argparse.Namespace) -> None:
    torch.manual_seed(args.seed)
    model, shape = build_model(args.model)
    shape = tuple(args.size) if args.size else shape
    dtype = torch.float64 if args.float64 else torch.float32
    t0 = time.perf_counter()
    _COMMANDS[args.command](args, model, shape, dtype)
    sys.stdout.flush()  # a closed pipe fails here, inside main, not at interpreter exit
    print(f"({time.perf_counter() - t0:.2f} s, {dtype})", file=sys.stderr)


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
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors (already printed)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        _run(args)
    except FxPathError as exc:
        float64 = "dtype=torch.float64" in str(exc) and not args.float64
        hint = " (here: add --float64)" if float64 else ""
        print(f"fxpath: {exc}{hint}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fxpath: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fxpath scores resnet18 --top 100 | head -3`
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        if _out_of_memory(exc):
            print(f"fxpath: out of memory for {args.model} at input shape "
                  f"{tuple(args.size) if args.size else 'default'}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return _internal_error(exc)
    return EXIT_OK


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout without a file descriptor (captured in tests)
        pass


if __name__ == "__main__":
    sys.exit(main())
