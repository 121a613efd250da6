"""The ``fxpath zoo`` command: its flags (`add_arguments`), its body (`run`: sweep, merge or
list as the flags say, with a progress bar and the results written as they come) and `main`
(``python -m fxpath.tools.zoo``, ``benchmarks/zoo.py``)."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fxpath.errors import ArgumentError, FxPathError
from fxpath.tools.zoo.catalogue import SOURCES, ZooModel, catalog, parse_shard, select, shard
from fxpath.tools.zoo.checks import run_one
from fxpath.tools.zoo.pool import TerminateOnSigterm, sweep
from fxpath.tools.zoo.provenance import provenance
from fxpath.tools.zoo.report import (
    coverage,
    read_csv,
    read_info,
    summary_lines,
    write_csv,
    write_expected,
    write_markdown,
)
from fxpath.tools.zoo.result import STATUSES, ZooResult, failed

__all__ = ["DESCRIPTION", "Progress", "add_arguments", "main", "run"]

#: the one-line description of ``fxpath zoo`` (``--help`` of `main`)
DESCRIPTION = "The zoo sweep: every timm and torchvision classifier compiled, timed and " \
              "self-checked."


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"each input dimension must be an integer, got "
                                         f"{text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"each input dimension must be an integer >= 1, got "
                                         f"{text!r}")
    return value


def _shard_arg(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``fxpath zoo`` (also ``benchmarks/zoo.py``)."""
    p.add_argument("--mode", choices=("full", "status"), default="full",
                   help="full: compile, time and self-check each model with random weights; "
                        "status: compile on the meta device only (supported or the first "
                        "reason not; seconds for the whole zoo) (default: %(default)s)")
    p.add_argument("--source", choices=("all", *SOURCES), default="all",
                   help="which registry (default: %(default)s)")
    p.add_argument("--all", dest="every", action="store_true",
                   help="every model, not one per architecture (default: one per "
                        "architecture, the first in natural order)")
    p.add_argument("--family", metavar="GLOB", nargs="+", default=[],
                   help="only these families (timm's module, torchvision's: resnet, "
                        "'vgg*') (default: all)")
    p.add_argument("--filter", metavar="GLOB", nargs="+", default=[],
                   help="only model names matching a glob ('resnet*', 'torchvision:*') "
                        "(default: all)")
    p.add_argument("--shard", metavar="I/N", type=_shard_arg,
                   help="run shard I of N (0-based): every N-th model of the sorted list, so "
                        "that N machines (a Slurm array, Kubernetes jobs) share the sweep; "
                        "merge their CSVs with --merge (default: the whole list)")
    p.add_argument("--jobs", metavar="N", type=_nonneg, default=1,
                   help="worker processes, each model in a worker of its own (0: in this "
                        "process, no isolation) (default: %(default)s)")
    p.add_argument("--timeout", metavar="S", type=_seconds,
                   help="seconds per model before its worker is killed and the model "
                        "recorded as a gap (default: 600 in full mode, 300 in status mode)")
    p.add_argument("--size", metavar="DIM", type=_size, nargs="+",
                   help="input shape for every model, e.g. --size 3 64 64 (default: each "
                        "model's own: timm's input_size, the torchvision weights' crop)")
    p.add_argument("--repeats", metavar="N", type=_size, default=3,
                   help="timed repeats per quantity, median reported (default: %(default)s)")
    p.add_argument("--max-params", metavar="P", type=float, default=2e8,
                   help="full mode: skip models with more parameters (default: %(default)g)")
    p.add_argument("--no-checks", action="store_true",
                   help="full mode: skip the three float64 self-checks (default: run them)")
    p.add_argument("--threads", metavar="N", type=_size, default=1,
                   help="torch threads per worker (default: %(default)s)")
    p.add_argument("--out", metavar="STEM", default="zoo",
                   help="write STEM.csv and STEM.md (default: %(default)s)")
    p.add_argument("--resume", action="store_true",
                   help="keep the rows of an existing STEM.csv and sweep only the other "
                        "models (default: start afresh)")
    p.add_argument("--expected", metavar="CSV",
                   help="also write the expected-status file (model, source, family, status, "
                        "reason), e.g. tests/tools/zoo_expected.csv (default: none)")
    p.add_argument("--merge", metavar="CSV", nargs="+",
                   help="merge shard CSVs into STEM.csv and STEM.md instead of sweeping "
                        "(default: sweep)")
    p.add_argument("--list", action="store_true",
                   help="print the models the flags select, one per line, and stop "
                        "(default: sweep them)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (default: a tqdm bar on stderr)")
    p.add_argument("--json", action="store_true",
                   help="print the results as one JSON object: the counts per registry and "
                        "status and the files written, or with --list the models (default: "
                        "text)")


def _selected(args: argparse.Namespace) -> list[ZooModel]:
    """The models the flags select (then the shard of them).

    Raises:
        ArgumentError: no model matches ``--source``, ``--family`` and ``--filter``.
    """
    sources = SOURCES if args.source == "all" else (args.source,)
    models = select(catalog(sources), every=args.every, families=args.family,
                    patterns=args.filter)
    if not models:
        chosen = [f"--source {args.source}"]
        chosen += [f"--family {shlex.join(args.family)}"] if args.family else []
        chosen += [f"--filter {shlex.join(args.filter)}"] if args.filter else []
        raise ArgumentError(f"no model matches {', '.join(chosen)}: nothing to sweep ('fxpath "
                            "zoo --list --all' lists every model; a glob matches the whole "
                            "name, e.g. 'resnet*')")
    if args.shard:
        models = shard(models, *args.shard)
    return models


def _finish(args: argparse.Namespace, results: Sequence[ZooResult],
            written: Sequence[Path]) -> None:
    """The summary lines and the files written, or the same as JSON (``--json``)."""
    if args.json:
        print(json.dumps({"coverage": coverage(results), "models": len(results),
                          "written": [str(p) for p in written]}, indent=2))
        return
    print("\n".join(summary_lines(results)))
    if written:
        print(f"wrote {' and '.join(str(p) for p in written)}")


class Progress:
    """A tqdm bar on stderr with the running counts per status (none with ``--no-progress``)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.counts: Counter[str] = Counter()
        self.bar: Any = None
        if enabled:
            from tqdm import tqdm  # a dependency of fxpath; imported here: only the zoo uses it

            self.bar = tqdm(total=total, unit="model", dynamic_ncols=True, file=sys.stderr)

    def update(self, r: ZooResult) -> None:
        """Count ``r`` and move the bar on by one."""
        self.counts[r.status] += 1
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k}={self.counts[k]}" for k in STATUSES
                                              if self.counts[k]) + f" last={r.model}")
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar (its last state stays on stderr)."""
        if self.bar is not None:
            self.bar.close()


def _outputs_of(stem: str) -> tuple[Path, Path]:
    base = Path(stem)
    if base.suffix in (".csv", ".md"):
        base = base.with_suffix("")
    return base.with_suffix(".csv"), base.with_suffix(".md")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": args.mode, "selection": "all" if args.every else
                           "one per architecture", "threads_per_worker": args.threads}
    if args.size:
        out["size"] = "x".join(map(str, args.size))
    if args.family:
        out["family"] = " ".join(args.family)
    if args.filter:
        out["filter"] = " ".join(args.filter)
    if args.shard:
        out["shard"] = f"{args.shard[0]}/{args.shard[1]}"
    if args.mode == "full":
        out["repeats"] = args.repeats
    return out


def _write_all(results: Sequence[ZooResult], csv_path: Path, md_path: Path,
               info: dict[str, str], expected: str | None) -> None:
    write_csv(results, csv_path, info)
    write_markdown(results, md_path, info)
    if expected:
        write_expected(results, expected, info)


def _two_phases(todo: Sequence[ZooModel], options: dict[str, Any], args: argparse.Namespace,
                timeout: float, on_result: Callable[[ZooResult], None], measuring: list[bool],
                supported: list[ZooModel]) -> None:
    """The status of every model on the meta device, workers reused (cheap); in full mode the
    supported ones (``on_result`` collects them in ``supported``) are then measured, each in a
    fresh worker."""
    status_size = options["size"] if args.mode == "status" else None
    sweep(todo, run_one, {**options, "mode": "status", "size": status_size}, failure=failed,
          jobs=args.jobs, timeout=min(timeout, 300.0), tasks_per_worker=50,
          threads=args.threads, on_result=on_result)
    if args.mode == "full":
        measuring[0] = True
        sweep(supported, run_one, options, failure=failed, jobs=args.jobs, timeout=timeout,
              tasks_per_worker=1, threads=args.threads, on_result=on_result)


def run(args: argparse.Namespace) -> int:
    """``fxpath zoo``: sweep (or merge, or list) as the flags say; returns the exit code (0:
    a refused model or a gap is a result, not a failure of the sweep).

    Raises:
        ArgumentError: the flags select no model.
    """
    csv_path, md_path = _outputs_of(args.out)
    if args.merge:
        results = [r for path in args.merge for r in read_csv(path)]
        info = read_info(args.merge[0]) or provenance()
        info["merged"] = str(len(args.merge))
        _write_all(results, csv_path, md_path, info, args.expected)
        _finish(args, results, [csv_path, md_path])
        return 0
    models = _selected(args)
    if args.list:
        print(json.dumps([m.spec for m in models], indent=2) if args.json
              else "\n".join(m.spec for m in models))
        return 0
    done: list[ZooResult] = read_csv(csv_path) if args.resume and csv_path.exists() else []
    seen = {(r.source, r.model) for r in done}
    todo = [m for m in models if (m.source, m.name) not in seen]
    info = provenance(**_settings(args))
    options = {"mode": args.mode, "size": tuple(args.size) if args.size else None,
               "repeats": args.repeats, "max_params": args.max_params,
               "checks": not args.no_checks}
    timeout = args.timeout or (300.0 if args.mode == "status" else 600.0)
    progress = Progress(len(todo), not args.no_progress)
    results = list(done)
    supported: list[ZooModel] = []
    by_key = {(m.source, m.name): m for m in todo}
    measuring = [False]  # full mode, phase 2

    def on_result(r: ZooResult) -> None:
        if args.mode == "full" and not measuring[0] and r.status == "supported":
            supported.append(by_key[r.source, r.model])  # measured in phase 2
            return
        results.append(r)
        progress.update(r)
        if len(results) % 25 == 0:  # survive an interruption of a long sweep (--resume)
            write_csv(results, csv_path, info)

    try:
        with TerminateOnSigterm():
            _two_phases(todo, options, args, timeout, on_result, measuring, supported)
    finally:
        progress.close()
        _write_all(results, csv_path, md_path, info, args.expected)
    _finish(args, results, [csv_path, md_path])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fxpath.tools.zoo``: the same as ``fxpath zoo`` (exit code 2 and one line
    ``fxpath zoo: ...`` for flags that select no model)."""
    p = argparse.ArgumentParser(prog="fxpath zoo", description=DESCRIPTION)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except FxPathError as exc:
        print(f"fxpath zoo: {exc}", file=sys.stderr)
        return 2
