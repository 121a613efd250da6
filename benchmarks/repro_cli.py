"""What the reproduction scripts share: writing a run's result files and their command line.

``pruning_repro``, ``quantization_repro``, ``tightness``, ``training_repro`` and
``structured_repro`` each have a
``QUICK`` (digits) and a ``FULL`` (MNIST) config, a ``run(config)``, a ``to_markdown(result)``
and a ``plot(result, path)``; this module gives them one ``--quick/--full/--threads/--out/
--render`` command line and one way of writing ``<prefix>_<name>.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ToMarkdown = Callable[[dict], str]
Plot = Callable[[dict, Path], None]


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """``n`` torch threads inside the block, the caller's setting restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def write_results(result: dict, out_dir: Path, prefix: str, name: str, to_markdown: ToMarkdown,
                  plot: Plot, json_default: Callable[[Any], Any] | None = None) -> None:
    """``out_dir/<prefix>_<name>.json``, ``.md`` and ``.png`` of one run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{prefix}_{name}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1, default=json_default))
    stem.with_suffix(".md").write_text(to_markdown(result))
    plot(result, stem.with_suffix(".png"))


def main(argv: Sequence[str] | None, doc: str, *, quick: Any, full: Any,
         run: Callable[[Any], dict], to_markdown: ToMarkdown, plot: Plot,
         quick_help: str = "digits 8x8 (default)", full_help: str = "MNIST",
         seeds: bool = False, check_full: Callable[[Any], int | None] | None = None) -> int:
    """The command line of a reproduction script; returns its exit code.

    ``seeds``: offer ``--seeds``. ``check_full``: called with the full config before a
    ``--full`` run; a non-None return is the exit code (e.g. MNIST cannot be fetched).
    """
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help=quick_help)
    mode.add_argument("--full", action="store_true", help=full_help)
    if seeds:
        ap.add_argument("--seeds", type=int, nargs="+", help="override the seeds")
    ap.add_argument("--threads", type=int, help="torch threads (default: 1 quick, 2 full)")
    ap.add_argument("--out", help="results folder (default benchmarks/results)")
    ap.add_argument("--render", metavar="JSON", help="only rewrite the .md and .png of a run")
    args = ap.parse_args(argv)
    if args.render:
        path = Path(args.render)
        result = json.loads(path.read_text())
        path.with_suffix(".md").write_text(to_markdown(result))
        plot(result, path.with_suffix(".png"))
        return 0
    cfg = full if args.full else quick
    if seeds and args.seeds:
        cfg = replace(cfg, seeds=tuple(args.seeds))
    if args.threads:
        cfg = replace(cfg, threads=args.threads)
    if args.out:
        cfg = replace(cfg, out_dir=args.out)
    if args.full and check_full is not None and (code := check_full(cfg)) is not None:
        return code
    result = run(cfg)
    print(json.dumps(result["claims"], indent=1))
    print(f"total {result['seconds']:.1f}s")
    return 0
