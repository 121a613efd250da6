"""The zoo's result files: the CSV (written and read back with its provenance line), the
expected-status file (``tests/tools/zoo_expected.csv``), and the markdown report with its coverage
figures, family tables and gap table."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from fxpath.tools.zoo.catalogue import SOURCES, natural_key
from fxpath.tools.zoo.result import FIELDS, STATUSES, ZooResult

__all__ = ["EXPECTED_COMMAND", "EXPECTED_FIELDS", "coverage", "family_summary", "gap_table",
           "read_csv", "read_info", "summary_lines", "write_csv", "write_expected",
           "write_markdown"]

#: the columns of the expected-status file (``tests/tools/zoo_expected.csv``)
EXPECTED_FIELDS = ("model", "source", "family", "status", "reason")
#: the command that regenerates it
EXPECTED_COMMAND = ("fxpath zoo --mode status --all --jobs 1 --out benchmarks/results/zoo_status "
                    "--expected tests/tools/zoo_expected.csv")


def write_csv(results: Iterable[ZooResult], path: str | Path, info: dict[str, str],
              header: Sequence[str] = (), columns: Sequence[str] = FIELDS) -> None:
    """Write the rows sorted by registry and name, after ``#`` comment lines: ``header`` and
    ``info`` (commit, versions, machine)."""
    rows = sorted(results, key=lambda r: (SOURCES.index(r.source), natural_key(r.model)))
    buf = io.StringIO()
    for line in header:
        buf.write(f"# {line}\n")
    buf.write("# " + ", ".join(f"{k}={v}" for k, v in info.items()) + "\n")
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(r.row())
    Path(path).write_text(buf.getvalue())


def write_expected(results: Iterable[ZooResult], path: str | Path, info: dict[str, str]) -> None:
    """The expected-status file: every model with its status and the reason it is not
    supported (``refused``: the first op no ReLU-DAG has; ``gap``: the first reason, a known gap
    of fxpath), after a header saying what the columns mean and how to regenerate it."""
    header = [
        "Expected status of every timm and torchvision classifier "
        "(tests/tools/test_zoo_expected.py).",
        "status: supported | refused (an op no ReLU-DAG has: the reason names the first one) |",
        "gap (a KNOWN GAP: a ReLU-DAG op or model fxpath cannot handle yet, with the reason) |",
        "skipped (the registry cannot build it). Statuses from compiling on the meta device at",
        "each model's default input size. Regenerate after a change of coverage with:",
        f"  {EXPECTED_COMMAND}",
    ]
    results = list(results)
    gaps = [f"{r.source}:{r.model}" for r in results if r.status == "gap"]
    header.append(f"known gaps: {len(gaps)}" + (f" ({', '.join(gaps)})" if gaps else ""))
    write_csv(results, path, {k: v for k, v in info.items()
                              if k in ("commit", "torch", "torchvision", "timm")},
              header, EXPECTED_FIELDS)


def read_csv(path: str | Path) -> list[ZooResult]:
    """The rows of a CSV written by `write_csv` (comment lines skipped; missing columns empty)."""
    lines = [ln for ln in Path(path).read_text().splitlines() if not ln.startswith("#")]
    return [ZooResult.from_row(row) for row in csv.DictReader(lines)]


def read_info(path: str | Path) -> dict[str, str]:
    """The ``key=value`` provenance line of a CSV written by `write_csv`."""
    for line in Path(path).read_text().splitlines():
        if line.startswith("# ") and "commit=" in line:
            return dict(kv.split("=", 1) for kv in line[2:].split(", ") if "=" in kv)
    return {}


def coverage(results: Iterable[ZooResult]) -> dict[str, dict[str, int]]:
    """Counts by registry: ``supported``, ``refused``, ``gap``, ``skipped`` and ``relu_dag``
    (supported + gap: the models that are ReLU-DAGs as far as fxpath can tell)."""
    out: dict[str, dict[str, int]] = {}
    for r in results:
        c = out.setdefault(r.source, dict.fromkeys((*STATUSES, "relu_dag"), 0))
        c[r.status] = c.get(r.status, 0) + 1
        c["relu_dag"] += r.status in ("supported", "gap")
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _family_table(results: Sequence[ZooResult]) -> list[str]:
    by_family: dict[tuple[str, str], list[ZooResult]] = defaultdict(list)
    for r in results:
        by_family[r.source, r.family].append(r)
    lines = ["| registry | family | models | supported | refused (not a ReLU-DAG) | gap "
             "(fxpath lacks it) | skipped | most common reason not |",
             "|---|---|---|---|---|---|---|---|"]
    for (source, family), rows in sorted(by_family.items()):
        c = Counter(r.status for r in rows)
        reasons = Counter(short_reason(r.reason) for r in rows if r.status in ("refused", "gap"))
        top = reasons.most_common(1)[0][0] if reasons else ""
        lines.append(f"| {source} | {family} | {len(rows)} | {c['supported']} | "
                     f"{c['refused']} | {c['gap']} | {c['skipped']} | {top} |")
    return lines


def family_summary(results: Sequence[ZooResult]) -> list[str]:
    """Markdown lines for the README: one row per family that has a ReLU-DAG (supported or
    gap), then one line naming the families refused entirely, with their commonest reason."""
    by_family: dict[tuple[str, str], list[ZooResult]] = defaultdict(list)
    for r in results:
        by_family[r.source, r.family].append(r)
    lines = ["| family | models | supported | refused | gaps | why not (commonest) |",
             "|---|---|---|---|---|---|"]
    refused_only: list[tuple[str, int, str]] = []
    for (source, family), rows in sorted(by_family.items(), key=lambda kv: (
            SOURCES.index(kv[0][0]), kv[0][1])):
        c = Counter(r.status for r in rows)
        reasons = Counter(op_reason(r.reason) for r in rows if r.status in ("refused", "gap"))
        top = reasons.most_common(1)[0][0] if reasons else ""
        if c["supported"] + c["gap"] == 0:
            refused_only.append((f"{source}:{family}", len(rows), top))
            continue
        lines.append(f"| {source}:{family} | {len(rows)} | {c['supported']} | {c['refused']} | "
                     f"{c['gap']} | {top} |")
    ops = Counter(reason for _, _, reason in refused_only)
    lines += ["", f"Refused entirely ({len(refused_only)} families, "
              f"{sum(n for _, n, _ in refused_only)} models; not ReLU-DAGs): "
              + ", ".join(f"{name} ({n})" for name, n, _ in refused_only) + ". Their commonest "
              "first reasons: " + "; ".join(f"{op} ({k} families)" for op, k in ops.most_common(6))
              + "."]
    return lines


def op_reason(reason: str) -> str:
    """``"SiLU: not positively homogeneous (...)"`` -> ``"SiLU: not positively homogeneous"``."""
    return short_reason(reason.split(" (", 1)[0])


#: the longest reason shown in a table cell
_REASON_CHARS = 90


def short_reason(reason: str) -> str:
    """``reason`` for a table cell: ``|`` escaped, and at most `_REASON_CHARS` characters, cut
    after a whole word with an ellipsis (never mid-word: "... a squeeze-excitation gate…")."""
    reason = reason.replace("|", "/")
    if len(reason) <= _REASON_CHARS:
        return reason
    cut = reason[:_REASON_CHARS]
    if reason[_REASON_CHARS].isspace() or " " not in cut:
        head = cut
    else:
        head = cut.rsplit(" ", 1)[0]
    return head.rstrip(" ,;:(") + "…"


def gap_table(results: Sequence[ZooResult]) -> list[str]:
    """Markdown lines: every gap reason, how many models it blocks, and some of them."""
    blocked: dict[str, list[str]] = defaultdict(list)
    for r in results:
        if r.status == "gap":
            blocked[short_reason(r.reason)].append(r.model)
    lines = ["| reason fxpath refuses or fails (a gap, not a non-ReLU op) | models | e.g. |",
             "|---|---|---|"]
    for reason, names in sorted(blocked.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        lines.append(f"| {reason} | {len(names)} | {', '.join(names[:6])} |")
    return lines


def summary_lines(results: Sequence[ZooResult]) -> list[str]:
    """Coverage figures: per registry, of all models and of the ReLU-DAGs."""
    lines = []
    for source, c in coverage(results).items():
        dag = c["relu_dag"]
        share = f"{100 * c['supported'] / dag:.1f}%" if dag else "-"
        lines.append(f"- {source}: {sum(c[s] for s in STATUSES)} models: {c['supported']} "
                     f"supported, {c['refused']} refused (not ReLU-DAGs), {c['gap']} gaps, "
                     f"{c['skipped']} skipped; {c['supported']} of the {dag} ReLU-DAGs work "
                     f"({share})")
    return lines


def write_markdown(results: Sequence[ZooResult], path: str | Path, info: dict[str, str],
                   title: str = "fxpath zoo sweep") -> None:
    """The markdown report: provenance, coverage, a table by family, the gaps, and one row per
    model (timings and self-checks in full mode)."""
    rows = sorted(results, key=lambda r: (SOURCES.index(r.source), natural_key(r.model)))
    full = any(r.forward_ms is not None for r in rows)
    lines = [f"# {title}", "", "Machine and settings: " + ", ".join(
        f"{k}={v}" for k, v in info.items()), "", *summary_lines(rows), "",
        "## By family", "", *_family_table(rows), "", "## Gaps", "", *gap_table(rows), "",
        "## Models", ""]
    if full:
        lines += ["Times: warm, batch 1, float32, median of paired ratios to the model's "
                  "forward. Checks (float64, random BatchNorm statistics): function = max "
                  "|IR interpreter - model| / (1 + max |model|); rescale = |change of log2 "
                  "path-norm| under fxpath.rescale; Lipschitz = max ||R(x)-R'(x)||_1 / bound "
                  "for a random same-sign perturbation (<= 1 when it holds).", "",
                  "| model | params | status or reason | log10 l1 path-norm | forward (ms) | "
                  "path-norm / forward | scores / forward | function | rescale | Lipschitz | "
                  "checks |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            state = r.status if r.status == "supported" else f"{r.status}: {short_reason(r.reason)}"
            lines.append(
                f"| {r.source}:{r.model} | {_fmt(r.params and r.params / 1e6, '.2f')}M | "
                f"{state} | {_fmt(r.log10_path_norm, '.3f')} | {_fmt(r.forward_ms, '.1f')} | "
                f"{_fmt(r.path_norm_x, '.2f')} | {_fmt(r.scores_x, '.2f')} | "
                f"{_fmt(r.function_err, '.1e')} | {_fmt(r.rescale_err, '.1e')} | "
                f"{_fmt(r.lipschitz_ratio, '.2e')} | {r.checks} |")
    else:
        lines += ["| model | family | params | status | reason |", "|---|---|---|---|---|"]
        lines += [f"| {r.source}:{r.model} | {r.family} | "
                  f"{_fmt(r.params and r.params / 1e6, '.2f')}M | {r.status} | "
                  f"{short_reason(r.reason)} |" for r in rows]
    Path(path).write_text("\n".join(lines) + "\n")
