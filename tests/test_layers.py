"""The house rules of the package layout: imports point only down the pipeline.

Each module of fxpath belongs to one layer (its subpackage, or a top-level module); a module may
import only from its own layer or from layers below it. The check reads every module's imports
(top-level and inside functions) with `ast`, so it needs no import side effects.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: lowest first: a module may import its own layer and the layers before it
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fxpath.errors", "fxpath.validate"),
    ("fxpath.ir",),
    ("fxpath.runtime", "fxpath.layout", "fxpath.kernels"),
    ("fxpath.ops",),
    ("fxpath.codegen",),
    ("fxpath.passes",),
    ("fxpath.frontend",),
    ("fxpath.engine",),
    ("fxpath.quantities",),
    ("fxpath.program", "fxpath.api"),
    ("fxpath.apps",),
    ("fxpath.tools",),
    ("fxpath", "fxpath.torch_pruning"),  # the package's faces: the public API, the plug-in
)


def _modules() -> dict[str, Path]:
    mods = {}
    for p in [*ROOT.glob("fxpath/**/*.py"), *ROOT.glob("passes/**/*.py")]:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "passes":
            parts = ["fxpath", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = p
    return mods


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The fxpath modules ``name`` imports (a name imported from a package counts as the
    package, unless it is a submodule)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                if sub in MODULES:
                    found.add(sub)
                elif mod in MODULES:
                    found.add(mod)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
    found.discard(name)
    return found


def _layer(module: str) -> int:
    best, depth = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            hit = module == prefix or module.startswith(prefix + ".")
            if hit and prefix.count(".") > depth:
                best, depth = i, prefix.count(".")
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best


GRAPH = nx.DiGraph((m, t) for m, p in MODULES.items() for t in _imports(m, p))
GRAPH.add_nodes_from(MODULES)


def test_no_import_circles() -> None:
    cycles = list(nx.simple_cycles(GRAPH))
    assert cycles == [], f"import circles: {cycles[:5]}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_pipeline(module: str) -> None:
    up = [t for t in GRAPH.successors(module) if _layer(t) > _layer(module)]
    assert up == [], f"{module} (layer {LAYERS[_layer(module)]}) imports from above it: {up}"


def test_no_private_names_imported_across_modules() -> None:
    bad = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fxpath"):
                bad += [f"{name}: {node.module}.{a.name}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert bad == []


def test_at_most_twelve_modules_directly_in_the_package() -> None:
    top = sorted(p.name for p in (ROOT / "fxpath").glob("*.py"))
    assert len(top) <= 12, top


@pytest.mark.parametrize("folder", ["fxpath", "passes"])
def test_no_file_over_650_lines(folder: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 650}
    assert long == {}


def test_every_package_is_installed() -> None:
    """pyproject.toml lists every package folder (a wheel would silently leave one out)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {"fxpath.passes"} | {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fxpath").rglob("__init__.py")}
    assert found == listed
