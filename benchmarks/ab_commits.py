"""Interleaved A/B of ``bench_path.py`` across commits: same machine, same run, alternating.

Each commit is checked out into its own ``git worktree`` (in a temporary folder) and
``benchmarks/bench_path.py`` of *that* commit runs in a fresh process with the worktree first on
``PYTHONPATH``. The commits take turns, round after round, so that a drift of the machine's speed
hits all of them alike. Reported: per commit, the median over rounds of each ratio to the forward.

    python benchmarks/ab_commits.py 18cd4b0 6c0e88d HEAD --models resnet18 resnet50 --rounds 3

Writes ``benchmarks/results/ab_<first>_<last>_cpu.{json,md}`` with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def git(*args: str, cwd: Path = ROOT) -> str:
    """``git args`` in ``cwd``, stdout stripped."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def worktree(commit: str, into: Path) -> Path:
    """A detached checkout of ``commit``; ``passes/`` is also reachable as ``fxpath/passes``
    (the installed layout maps it there), so ``PYTHONPATH`` alone imports that commit."""
    path = into / commit
    git("worktree", "add", "--detach", str(path), commit)
    link = path / "fxpath" / "passes"
    if (path / "passes").is_dir() and not link.exists():
        link.symlink_to(path / "passes", target_is_directory=True)
    return path


def run_once(tree: Path, env: dict[str, str], models: list[str], repeats: int, threads: int,
             tag: str) -> dict:
    """One ``bench_path.py`` run of the commit checked out at ``tree`` (``env``: its
    `environment`); its JSON rows."""
    cmd = [sys.executable, "benchmarks/bench_path.py", "--models", *models, "--repeats",
           str(repeats), "--threads", str(threads), "--no-baseline", "--no-memory", "--tag", tag]
    subprocess.run(cmd, cwd=tree, env=env, check=True, capture_output=True, text=True)
    return json.loads((tree / "benchmarks" / "results" / f"bench_cpu_{tag}.json").read_text())


def environment(tree: Path) -> dict[str, str]:
    """The environment that imports the commit at ``tree`` (checked: not the installed tree)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "benchmarks"),
                                                        str(tree / "tests")])}
    where = subprocess.run([sys.executable, "-c", "import fxpath.passes as p; print(p.__file__)"],
                           cwd=tree, env=env, check=True, capture_output=True, text=True)
    if not Path(where.stdout.strip()).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: imports {where.stdout.strip()}, not its own checkout")
    return env


def import_seconds(tree: Path, env: dict[str, str], times: int = 5) -> float:
    """Median wall time of ``python -c "import fxpath"`` (a fresh process each time) for the
    commit at ``tree``, less that of ``python -c "import torch"`` measured alongside."""

    def once(stmt: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], cwd=tree, env=env, check=True)
        return time.perf_counter() - t0

    return statistics.median(once("import fxpath") - once("import torch") for _ in range(times))


def main() -> None:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("commits", nargs="*")
    ap.add_argument("--render", type=Path, help="only rewrite the .md of this result .json")
    ap.add_argument("--models", nargs="+", default=["resnet18", "resnet50"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.render is not None:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return
    shas = [git("rev-parse", "--short", c) for c in args.commits]
    runs: dict[str, list[dict]] = {s: [] for s in shas}
    machine: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {s: worktree(s, Path(tmp)) for s in shas}
        envs = {s: environment(trees[s]) for s in shas}  # checked once per checkout
        try:
            for r in range(args.rounds):
                for s in shas:
                    t0 = time.perf_counter()
                    data = run_once(trees[s], envs[s], args.models, args.repeats, args.threads,
                                    f"ab{r}")
                    machine = {k: v for k, v in data["machine"].items() if k != "commit"}
                    data["rows"]["import"] = {"fxpath_s": import_seconds(trees[s], envs[s])}
                    runs[s].append(data["rows"])
                    print(f"round {r} {s}: {time.perf_counter() - t0:.0f} s", flush=True)
        finally:
            for s in shas:
                git("worktree", "remove", "--force", str(trees[s]))
    loads = os.getloadavg()
    out = {"machine": {**machine, "commits": shas, "rounds": args.rounds,
                       "repeats": args.repeats, "load_after": [round(v, 2) for v in loads]},
           "runs": runs}
    stem = RESULTS / f"ab_{shas[0]}_{shas[-1]}_cpu"
    stem.with_suffix(".json").write_text(json.dumps(out, indent=1))
    stem.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    """The table of medians over rounds: wall-time ratio (CPU-time ratio) per op and commit."""
    info, runs = out["machine"], out["runs"]
    shas = info["commits"]
    models = [m for m in runs[shas[0]][0] if m != "import"]
    machine = {k: v for k, v in info.items() if k not in ("commits", "rounds", "repeats")}
    lines = [f"Interleaved A/B of bench_path.py: {info['rounds']} rounds, the commits in turn, "
             f"{info['repeats']} paired repeats per op. Machine: {machine}.", "",
             "Median over rounds of each ratio to the plain forward (float32, batch 1): wall "
             "time (CPU time of the process).", "",
             "| model | op | " + " | ".join(shas) + " |", "|---|---|" + "---|" * len(shas)]
    for m in models:
        ops = [k[:-2] for k in runs[shas[0]][0][m] if k.endswith("_x") and not
               k.endswith("_cpu_x") and all(k in run[m] for s in shas for run in runs[s])]
        for op in ops:
            cells = [f"{statistics.median(r[m][op + '_x'] for r in runs[s]):.2f}x "
                     f"({statistics.median(r[m][op + '_cpu_x'] for r in runs[s]):.2f}x)"
                     for s in shas]
            lines.append(f"| {m} | {op} | " + " | ".join(cells) + " |")
    if all("import" in r for s in shas for r in runs[s]):
        lines += ["", "`import fxpath` (a fresh process; less `import torch` timed alongside; "
                  "median of 5 per round, then over rounds): " + ", ".join(
                      f"{s} {1e3 * statistics.median(r['import']['fxpath_s'] for r in runs[s]):.0f}"
                      " ms" for s in shas) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
