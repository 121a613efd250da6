"""The tables of measured figures in README.md and docs/*.md, written from benchmarks/results/.

Every such table sits between two markers in a markdown file::

    <!-- table: bench_cpu -->
    (written by this script: a line naming the result file and the run, then the table)
    <!-- end table -->

NAME is a key of `TABLES`; its renderer reads the result files (JSON, or CSV for the zoo) and
returns the text. Nothing is measured or typed in by hand here: to change a figure, re-run the
benchmark that writes the result file (benchmarks/README.md), then this script.

    python benchmarks/tables.py            # rewrite every table in README.md and docs/*.md
    python benchmarks/tables.py --check    # change nothing; exit 1 naming each stale table
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fxpath.tools.zoo.report import op_reason

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

#: a table block: the begin marker, the generated text, the end marker
BLOCK = re.compile(r"(?P<begin><!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                   r"(?P<end><!-- end table -->)", re.S)
BEGIN = re.compile(r"<!-- table: ([^ ]*) -->")


def documents(root: Path = ROOT) -> list[Path]:
    """The markdown files whose tables this script writes: README.md and docs/*.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


# -- reading the result files -------------------------------------------------------------------

@cache
def _json(name: str) -> Any:
    return json.loads((RESULTS / name).read_text())


@cache
def _csv(name: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The provenance line (``# key=value, ...``) and the rows of a zoo CSV."""
    lines = (RESULTS / name).read_text().splitlines()
    info = dict(item.split("=", 1) for item in lines[0].lstrip("# ").split(", ") if "=" in item)
    return info, list(csv.DictReader(line for line in lines if not line.startswith("#")))


# -- formatting ---------------------------------------------------------------------------------

def _x(v: float | None) -> str:
    """A ratio to the forward: 3 significant figures (0.99x, 2.61x, 29.9x, 138x)."""
    if v is None:
        return "-"
    return f"{v:.0f}x" if v >= 100 else f"{v:.1f}x" if v >= 10 else f"{v:.2f}x"


def _ms(v: float) -> str:
    return f"{v:.0f} ms" if v >= 10 else f"{v:.1f} ms"


def _pm(values: Sequence[float]) -> str:
    """Mean ± sample standard deviation, two decimals."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def _model(name: str) -> str:
    return f"{name.split(':', 1)[1]} (timm)" if name.startswith("timm:") else name


def _run(machine: dict[str, str] | str) -> str:
    """The run a result file records: commit, processor, threads, torch."""
    if isinstance(machine, str):
        return machine
    parts = [f"commit {machine['commit']}" if "commit" in machine else "commit not recorded",
             machine.get("gpu") or machine.get("cpu", "?"),
             f"{machine['threads']} threads" if "threads" in machine else "",
             f"torch {machine['torch']}"]
    return ", ".join(p for p in parts if p)


def _source(files: Iterable[str], run: str) -> str:
    named = " and ".join(f"`benchmarks/results/{f}`" for f in files)
    return f"From {named} ({run}):"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _block(source: str, *tables: list[str]) -> str:
    parts = [source]
    for t in tables:
        parts += ["", *t]
    return "\n".join(parts)


# -- the tables ---------------------------------------------------------------------------------

def bench_cpu() -> str:
    """Every timed call on the CPU, as ratios to the model's forward (bench_path.py)."""
    d = _json("bench_cpu.json")
    rows = [(_model(m), _ms(r["forward_ms"]), _x(r["cold_path_norm_x"]),
             _x(r["warm_path_norm_x"]), _x(r["warm_path_magnitude_x"]),
             _x(r["warm_path_magnitude_out_x"]), _x(r["warm_path_metric_x"]), _x(r["prune_x"]),
             f"{_x(r['warm_path_norm_dense_x'])} / {_x(r['warm_path_magnitude_dense_x'])}",
             _x(r.get("published_path_norm_x")), _x(r.get("published_path_magnitude_x")))
            for m, r in d["rows"].items()]
    return _block(_source(["bench_cpu.json"], _run(d["machine"])), _table(
        ("model", "forward", "cold path_norm", "warm path_norm", "warm path_magnitude",
         "same, `out=`", "warm path_metric", "prune", "warm norm / scores, `interior=False`",
         "published-style norm", "published-style scores"), rows))


def bench_cpu_memory() -> str:
    """Peak tensor memory of each call on the CPU (bench_path.py)."""
    d = _json("bench_cpu.json")
    keys = ("forward", "cold_path_norm", "warm_path_norm", "warm_path_magnitude",
            "warm_path_magnitude_out", "warm_path_metric", "prune")
    rows = [(_model(m), *(f"{r[k + '_peak_mib']:.0f}" for k in keys))
            for m, r in d["rows"].items()]
    return _block(_source(["bench_cpu.json"], _run(d["machine"])) + " peak MiB of one call, "
                  "on top of what exists before it", _table(
                      ("model", "forward", "cold path_norm", "warm path_norm",
                       "warm path_magnitude", "same, `out=`", "warm path_metric", "prune"), rows))


def bench_gpu() -> str:
    """Every timed call on a GPU, as ratios to the model's forward (bench_path.py)."""
    d = _json("bench_gpu.json")
    rows = [(_model(m), _ms(r["forward_ms"]), _x(r["forward_ieee_x"]),
             _x(r["cold_path_norm_x"]), _x(r["warm_path_norm_x"]),
             _x(r["warm_path_magnitude_x"]), _x(r["warm_path_metric_x"]), _x(r["prune_x"]),
             f"{_x(r['warm_path_norm_eager_x'])} / {_x(r['warm_path_magnitude_eager_x'])}",
             f"{_x(r['warm_path_norm_interior_x'])} / {_x(r['warm_path_magnitude_interior_x'])}",
             _x(r.get("published_path_norm_x")), _x(r.get("published_path_magnitude_x")))
            for m, r in d["rows"].items()]
    return _block(_source(["bench_gpu.json"], _run(d["machine"])), _table(
        ("model", "forward", "same, no TF32", "cold path_norm", "warm path_norm",
         "warm path_magnitude", "warm path_metric", "prune", "norm / scores, no CUDA graphs",
         "norm / scores, `interior=True`", "published-style norm", "published-style scores"),
        rows))


def headline() -> str:
    """The README's figures: warm calls on the CPU and on a GPU, as ratios to the forward."""
    cpu, gpu = _json("bench_cpu.json"), _json("bench_gpu.json")
    rows = []
    for m, r in cpu["rows"].items():
        g = gpu["rows"][m]
        rows.append((_model(m), *(_x(r[k]) for k in (
            "warm_path_norm_x", "warm_path_magnitude_x", "warm_path_metric_x")),
            *(_x(g[k]) for k in ("warm_path_norm_x", "warm_path_magnitude_x",
                                 "warm_path_metric_x"))))
    source = (f"From `benchmarks/results/bench_cpu.json` ({_run(cpu['machine'])}) and "
              f"`benchmarks/results/bench_gpu.json` ({_run(gpu['machine'])}):")
    return _block(source, _table(
        ("model", "CPU path-norm", "CPU scores", "CPU path-metric", "GPU path-norm",
         "GPU scores", "GPU path-metric"), rows))


def live_params() -> str:
    """The old cache hit against the live call (live_params.py)."""
    d = _json("live_params_cpu.json")
    rows = [(m, _ms(r["forward_ms"]), f"{_x(r['norm_cached'])} / {_x(r['norm_live'])}",
             f"{_x(r['scores_cached'])} / {_x(r['scores_live'])}") for m, r in d["rows"].items()]
    return _block(_source(["live_params_cpu.json"], _run(d["machine"])), _table(
        ("model", "forward", "path-norm: old cache hit / live", "scores: old cache hit / live"),
        rows))


def _scaling(name: str) -> str:
    d = _json(name)

    def cells(r: dict[str, float]) -> tuple[str, ...]:
        f = r["forward_ms"]
        return (_ms(f), f"{_ms(r['path_norm_ms'])} ({_x(r['path_norm_ms'] / f)})",
                f"{_ms(r['path_magnitude_ms'])} ({_x(r['path_magnitude_ms'] / f)})")

    rows = [(f"{r['model']} at 224x224", *cells(r)) for r in d["depth"]]
    rows += [(f"resnet18 at {r['side']}x{r['side']}", *cells(r)) for r in d["pixels"]]
    return _block(_source([name], _run(d["machine"])), _table(
        ("model", "forward", "warm path_norm (/ forward)", "warm path_magnitude (/ forward)"),
        rows))


def scaling_cpu() -> str:
    """Cost against depth and against input size on the CPU (bench_path.py --scaling)."""
    return _scaling("scaling_cpu.json")


def scaling_gpu() -> str:
    """Cost against depth and against input size on a GPU (bench_path.py --scaling)."""
    return _scaling("scaling_gpu.json")


def frontends() -> str:
    """torch.fx and torch.export side by side (frontends.py)."""
    d = _json("frontends_cpu.json")
    rows = [(m, _ms(r["forward_ms"]), _x(r["cold_fx"]), _x(r["cold_export"]),
             _x(r["cold_exported"]), f"{_x(r['warm_norm_fx'])} / {_x(r['warm_norm_export'])}",
             f"{_x(r['warm_scores_fx'])} / {_x(r['warm_scores_export'])}")
            for m, r in d["rows"].items()]
    return _block(_source(["frontends_cpu.json"], _run(d["machine"])), _table(
        ("model", "forward", "cold, torch.fx", "cold, torch.export",
         "cold, already exported", "warm norm, fx / export", "warm scores, fx / export"), rows))


def dense() -> str:
    """Dense-prediction models: supported or why not, path-norm, costs (dense.py)."""
    d = _json("dense_cpu.json")
    rows = [(r["model"], "supported", f"{r['log10_l1']:.4f}", f"{r['path_norm']:.2f}x",
             f"{r['scores']:.2f}x") if r["status"] == "supported"
            else (r["model"], r["status"], "-", "-", "-") for r in d["rows"]]
    run = f"3x{d['size']}x{d['size']}, {d['repeats']} repeats, {_run(d['machine'])}"
    return _block(_source(["dense_cpu.json"], run), _table(
        ("model", "fxpath", "l^1 path-norm (log10)", "path-norm / forward",
         "scores / forward"), rows))


def _zoo_run(info: dict[str, str]) -> str:
    return (f"commit {info.get('commit', '?')}, timm {info.get('timm', '?')}, "
            f"torchvision {info.get('torchvision', '?')}")


def zoo_families() -> str:
    """One row per family with a ReLU-DAG (supported or gap) (zoo_status.csv)."""
    info, rows = _csv("zoo_status.csv")
    by_family: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        by_family[r["source"], r["family"]].append(r)
    out = []
    for (source, family), members in sorted(by_family.items()):
        c = Counter(r["status"] for r in members)
        if c["supported"] + c["gap"] == 0:
            continue
        reasons = Counter(op_reason(r["reason"]) for r in members
                          if r["status"] in ("refused", "gap"))
        top = reasons.most_common(1)[0][0] if reasons else ""
        out.append((f"{source}:{family}", len(members), c["supported"], c["refused"], c["gap"],
                    top))
    return _block(_source(["zoo_status.csv"], _zoo_run(info)), _table(
        ("family", "models", "supported", "refused", "gaps", "why not (commonest)"), out))


def zoo_registries() -> str:
    """Coverage per registry (zoo_status.csv)."""
    info, rows = _csv("zoo_status.csv")
    out = []
    for source in sorted({r["source"] for r in rows}):
        members = [r for r in rows if r["source"] == source]
        c = Counter(r["status"] for r in members)
        dag = [r for r in members if r["status"] in ("supported", "gap")]
        arch = {r["arch"] for r in dag}
        arch_ok = {r["arch"] for r in dag if r["status"] == "supported"}
        share = f"{100 * c['supported'] / len(dag):.0f}%" if dag else "-"
        out.append((source, len(members), c["supported"], c["refused"], c["gap"],
                    f"{c['supported']} / {len(dag)} models ({share}), "
                    f"{len(arch_ok)} / {len(arch)} architectures"))
    return _block(_source(["zoo_status.csv"], _zoo_run(info)), _table(
        ("registry", "models", "supported", "refused (not ReLU-DAGs)", "gaps",
         "coverage of the ReLU-DAGs"), out))


def zoo_full() -> str:
    """Full mode, one model per architecture: self-checks and costs (zoo_cpu.csv)."""
    info, rows = _csv("zoo_cpu.csv")
    out = []
    for source in sorted({r["source"] for r in rows}):
        ok = [r for r in rows if r["source"] == source and r["status"] == "supported"]

        def worst(key: str, rs: list[dict[str, str]] = ok) -> str:
            return f"{max(float(r[key]) for r in rs):.1g}"

        def cost(key: str, rs: list[dict[str, str]] = ok) -> str:
            top = max(rs, key=lambda r: float(r[key]))
            return (f"{statistics.median(float(r[key]) for r in rs):.1f} (at most "
                    f"{float(top[key]):.1f}, `{top['model']}`)")

        out.append((source, sum(r["source"] == source for r in rows), len(ok),
                    sum(r["checks"] == "pass" for r in ok), worst("function_err"),
                    worst("rescale_err"), worst("lipschitz_ratio"), cost("path_norm_x"),
                    cost("scores_x")))
    run = f"{_zoo_run(info)}, {info.get('size', '?')}, {info.get('threads_per_worker')} thread"
    return _block(_source(["zoo_cpu.csv"], run), _table(
        ("registry", "architectures", "supported", "pass the 3 checks", "largest function error",
         "largest rescale change", "largest Lipschitz ratio", "path-norm / forward: median",
         "scores / forward: median"), out))


def _pruning(key: str) -> str:
    d = _json("pruning_repro_full.json")
    sparsities = d["config"]["sparsities"]
    criteria = list(dict.fromkeys(r["criterion"] for r in d["rows"]))
    rows = [(c, *(_pm([r[key] for r in d["rows"]
                       if r["criterion"] == c and r["sparsity_target"] == s])
                  for s in sparsities)) for c in criteria]
    dense_acc = _pm([s["dense_acc"] for s in d["seeds"]])
    run = (f"{d['config']['dataset']}, {len(d['seeds'])} seeds, mean ± std; "
           f"dense: {dense_acc}")
    return _block(_source(["pruning_repro_full.json"], run), _table(
        ("pruned", *(f"{s:.0%}" for s in sparsities)), rows))


def pruning_finetuned() -> str:
    """Top-1 test accuracy after pruning and fine-tuning (pruning_repro.py --full)."""
    return _pruning("acc_finetuned")


def pruning_pruned() -> str:
    """Top-1 test accuracy right after pruning, before fine-tuning (pruning_repro.py --full)."""
    return _pruning("acc_pruned")


def quantization_cost() -> str:
    """The cost of a certificate against the forward (quantization_repro.py --quick)."""
    d = _json("quantization_repro_quick.json")
    cost = {(c["model"], c["threads"]): c for c in d["cost"]}
    threads = sorted({t for _, t in cost})
    models = list(dict.fromkeys(m for m, _ in cost))
    rows = [(m, *(_x(cost[m, t]["certificate_over_forward"]) for t in threads),
             *(_x(cost[m, t]["with_norm_over_forward"]) for t in threads)) for m in models]
    header = ("model", *(f"certificate, {t} thread{'s' * (t > 1)}" for t in threads),
              *(f"with a fresh path-norm, {t} thread{'s' * (t > 1)}" for t in threads))
    machine = {k: v for k, v in d["machine"].items() if k != "threads"}  # the table's columns
    return _block(_source(["quantization_repro_quick.json"], _run(machine)),
                  _table(header, rows))


def generalization() -> str:
    """The generalization bound's ingredients and factors (generalization_table.py)."""
    d = _json("generalization_table.json")
    c = d["config"]

    def published(r: dict[str, Any]) -> str:
        if r["published_factor"] is None:
            return "-"
        ok = "matches" if r["matches"] else "differs"
        return f"{r['published_factor']:.4f} / {r['published_sharpened_factor']:.4f} ({ok})"

    rows = [(r["model"], r["depth"], r["max_pool_kernel"], r["max_pool_types"],
             r["max_pools_on_path"], f"{r['constant']:.3f}", f"{r['sharpened_constant']:.3f}",
             f"{r['factor']:.4f}", f"{r['sharpened_factor']:.4f}", published(r),
             f"{r['log10_path_norm']:.1f}", f"{r['log10_bound']:.1f}") for r in d["rows"]]
    run = (f"n = {c['n_train']}, B = {c['input_bound']}, "
           f"{'x'.join(str(s) for s in c['input_shape'])}, random initialization (seed "
           f"{c['seed']}); commit {d['machine']['commit']}, torch {d['machine']['torch']}")
    return _block(_source(["generalization_table.json"], run), _table(
        ("model", "D", "K", "P", "M", "C", "C'", "4CB/sqrt(n)", "4C'B/sqrt(n)",
         "published", "log10 path-norm", "log10 bound"), rows))


# -- structured pruning (also the .md of structured_zoo.py) ---------------------------------

def _r(pair: list[int]) -> str:
    return f"{pair[1] / pair[0]:.3f}"


def _relative(value: float) -> str:
    """The relative path-metric, its distance to 1 shown when that is below 1e-6."""
    if value == 1.0:
        return "1"
    return f"1 - {1 - value:.1e}" if 1 - value < 1e-6 else f"{value:.6f}"


def _spared(names: list[str], shown: int = 3) -> str:
    """The spared layers: a count and the first few names (all of them are in the .json)."""
    if not names:
        return "none"
    listed = ", ".join(f"`{n}`" for n in names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)}: {listed}{more}"


def structured_zoo_table(result: dict[str, Any]) -> str:
    """The zoo table (one line per model; a refused model gets its error)."""
    lines = ["| model | params small / dense | MACs small / dense | channels left | batch-8 "
             "speed-up (CPU time) | prune_channels / forward (CPU time) | path-metric "
             "(relative) | exact | twin gap | spared layers |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        label = f"{r['model']} ({r['library']})"
        if "error" in r:
            lines.append(f"| {label} | refused: {r['error'].replace('|', '/')} "
                         + "| " * 8 + "|")
            continue
        p, m = r["prune"], r["metric"]
        spared = _spared(r["spared"])
        lines.append(
            f"| {label} | {_r(r['params'])} | {_r(r['macs'])} | {_r(r['channels'])} | "
            f"{r['latency']['speedup']:.2f}x ({r['latency']['cpu_speedup']:.2f}x) | "
            f"{p['ratio']:.0f}x ({p['cpu_ratio']:.0f}x) | "
            f"{m['value']:.3e} ({_relative(m['relative'])}) | {m['exact']} | {r['twin_gap']:.1e} | "
            f"{spared} |")
    return "\n".join(lines) + "\n"


def structured_zoo_provenance(result: dict[str, Any]) -> str:
    """One paragraph: where and when the figures come from."""
    m = result["machine"]
    start, end = result["load_average_start"][0], result["load_average_end"][0]
    shape = "x".join(map(str, result["input_shape"]))
    return (f"Measured by `benchmarks/structured_zoo.py` at commit `{m['commit']}` "
            f"(fxpath/apps/structured/ digest `{result.get('structured_sources', '?')}`) on "
            f"{m.get('cpu', 'an unnamed CPU')} ({result['threads']} torch thread(s) of "
            f"{m['cpu_count']} CPUs), torch {m['torch']}, python {m['python']}; input "
            f"{shape}, {result['amount']:.0%} of the channels, criterion "
            f"`{result['criterion']}`, {result['scope']} scope. The machine is shared with "
            f"other work: load average {start:.1f} at the start and {end:.1f} at the end, so "
            f"the times move; the ratios are of measurements taken side by side (the prune "
            f"against the median of six one-image forwards around it; the speed-up is the "
            f"median of {result['repeats']} paired batch-{result['batch']} forwards).")

def structured_zoo() -> str:
    """Channel pruning at 50% on the zoo (structured_zoo.py)."""
    result = _json("structured_zoo_cpu.json")
    return f"{structured_zoo_provenance(result)}\n\n{structured_zoo_table(result).rstrip()}"


#: every table, by the name its markers carry
TABLES: dict[str, Callable[[], str]] = {f.__name__: f for f in (
    headline, bench_cpu, bench_cpu_memory, bench_gpu, live_params, scaling_cpu, scaling_gpu,
    frontends, dense, zoo_families, zoo_registries, zoo_full, pruning_finetuned, pruning_pruned,
    quantization_cost, generalization, structured_zoo)}


# -- rewriting the documents --------------------------------------------------------------------

class TableError(Exception):
    """A marker without its end, or naming no table."""


def rewrite(text: str, where: str = "") -> tuple[str, list[str]]:
    """``text`` with every table block rewritten, and the names of the blocks that changed."""
    blocks = list(BLOCK.finditer(text))
    begun = BEGIN.findall(text)
    if len(begun) != len(blocks) or text.count("<!-- end table -->") != len(blocks):
        raise TableError(f"{where}: unbalanced table markers (begin {len(begun)}, "
                         f"end {text.count('<!-- end table -->')}, matched {len(blocks)})")
    stale: list[str] = []
    out, pos = [], 0
    for m in blocks:
        name = m["name"]
        if name not in TABLES:
            raise TableError(f"{where}: no table named {name!r} (known: {', '.join(TABLES)})")
        body = "\n" + TABLES[name]() + "\n\n"
        if body != m["body"]:
            stale.append(name)
        out += [text[pos:m.start()], m["begin"], body, m["end"]]
        pos = m.end()
    out.append(text[pos:])
    return "".join(out), stale


def update(check: bool, root: Path = ROOT) -> list[str]:
    """Rewrite (or, with ``check``, only compare) every document; ``"FILE: table NAME"`` for
    each table whose text differs from what the result files give."""
    stale = []
    for path in documents(root):
        text = path.read_text()
        new, names = rewrite(text, str(path.relative_to(root)))
        stale += [f"{path.relative_to(root)}: table {n}" for n in names]
        if names and not check:
            path.write_text(new)
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 when every table is current (after rewriting, or checked)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 and name each table that is stale")
    args = p.parse_args(argv)
    try:
        stale = update(args.check)
    except TableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in stale:
        print(f"{'stale' if args.check else 'rewrote'}: {s}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
