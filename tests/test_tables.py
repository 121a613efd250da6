"""The tables of measured figures in README.md and docs/*.md are the ones `benchmarks/tables.py`
writes from benchmarks/results/, and the documents cite only result files that exist."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_tables():
    spec = importlib.util.spec_from_file_location("fxpath_bench_tables",
                                                  ROOT / "benchmarks" / "tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


tables = _load_tables()

#: a table row with a measured-looking cell: a ratio such as ``2.61x`` or a time such as ``15 ms``
MEASURED_ROW = re.compile(r"^\|.*\|\s*\**\d+(\.\d+)?(x| ms)\**\s*(/|\|)", re.M)


def _outside_blocks(text: str) -> str:
    return tables.BLOCK.sub("", text)


def test_committed_tables_are_current() -> None:
    """`python benchmarks/tables.py --check` passes: no table differs from its result file."""
    assert tables.update(check=True) == [], "stale tables: run python benchmarks/tables.py"


def test_every_table_is_used_somewhere() -> None:
    used = {m["name"] for path in tables.documents() for m in
            tables.BLOCK.finditer(path.read_text())}
    assert used == set(tables.TABLES)


def test_no_measured_table_outside_the_markers() -> None:
    """A table of ratios or times typed into a document by hand, not written by the script."""
    for path in tables.documents():
        rows = MEASURED_ROW.findall(_outside_blocks(path.read_text()))
        assert not rows, f"{path.name}: a table of measured figures outside the table markers"


def test_check_names_the_stale_table_and_writes_nothing(tmp_path: Path) -> None:
    for path in tables.documents():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    readme = tmp_path / "README.md"
    text = readme.read_text()
    stale = text.replace("| resnet18 |", "| resnet18 (typed by hand) |", 1)
    assert stale != text
    readme.write_text(stale)
    assert tables.update(check=True, root=tmp_path) == ["README.md: table headline"]
    assert readme.read_text() == stale
    assert tables.update(check=False, root=tmp_path) == ["README.md: table headline"]
    assert readme.read_text() == text
    assert tables.update(check=True, root=tmp_path) == []


def test_main_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert tables.main(["--check"]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("text", "message"), [
    ("<!-- table: headline -->\nno end\n", "unbalanced table markers"),
    ("x\n<!-- end table -->\n", "unbalanced table markers"),
    ("<!-- table: nosuch -->\n<!-- end table -->\n", "no table named 'nosuch'"),
])
def test_malformed_markers_are_refused(text: str, message: str) -> None:
    with pytest.raises(tables.TableError, match=message):
        tables.rewrite(text, "doc.md")


def _cited(text: str) -> set[str]:
    """Every ``benchmarks/results/...`` path a text names, braces expanded."""
    out = set()
    for m in re.finditer(r"benchmarks/results/[\w./{},-]*[\w}]", text):
        path = m.group(0)
        brace = re.search(r"\{([^}]*)\}", path)
        options = brace.group(1).split(",") if brace else [""]
        for o in options:
            out.add(path[:brace.start()] + o + path[brace.end():] if brace else path)
    return out


def test_cited_result_files_exist_and_the_readme_cites_no_history() -> None:
    for path in [*tables.documents(), ROOT / "benchmarks" / "README.md"]:
        text = path.read_text()
        for cited in _cited(text):
            cited = cited.rstrip("/")
            target = ROOT / cited  # a file, a folder, or a stem (``--out STEM``)
            found = target.exists() or any(target.parent.glob(target.name + ".*"))
            assert found, f"{path.name} cites {cited}, which does not exist"
    assert "results/history" not in (ROOT / "README.md").read_text()


def test_no_machine_paths_in_documents_and_results() -> None:
    """Documents and result files name no machine path and no workspace file."""
    files = [*tables.documents(), ROOT / "benchmarks" / "README.md",
             *(p for p in (ROOT / "benchmarks" / "results").rglob("*")
               if p.is_file() and p.suffix in (".md", ".json", ".csv"))]
    bad = re.compile(r"PATHS\.md|\.\./shared|(?<![\w.])/(work|tmp|home|root)/")
    for path in files:
        m = bad.search(path.read_text())
        assert m is None, f"{path.relative_to(ROOT)} names {m.group(0)!r}"


def test_benchmarks_readme_lists_every_script() -> None:
    """benchmarks/README.md has a row for each script and module of benchmarks/."""
    listed = set(re.findall(r"^\| `([\w.]+)`", (ROOT / "benchmarks" / "README.md").read_text(),
                            re.M))
    scripts = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    assert scripts - listed == set(), "add a row to benchmarks/README.md for each"
