"""The library's shape: stage sub-packages whose imports point down only, no import cycles,
no module over 400 lines, and nothing in the workflow that depends on bench/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "workflow" / "skinground"

#: The stages, lowest first: a module may import its own stage and the stages before it.
STAGES = ("core", "data", "model", "retrieval", "evaluation", "cost", "demo")
#: Above every stage: the ``skinground`` command.
TOP = ("cli",)
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted name (below ``skinground``) -> file, for every module of the package."""
    found = {}
    for path in sorted(LIB.rglob("*.py")):
        parts = list(path.relative_to(LIB).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """The package's modules one file imports, anywhere in it (dotted, below ``skinground``)."""
    known = modules()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level and (
                node.module == "skinground" or node.module.startswith("skinground.")):
            base = node.module.removeprefix("skinground").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in known else base)
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("skinground.") for a in node.names
                      if a.name.startswith("skinground.")}
    return {m for m in found if m}


def stage(module: str) -> str:
    return module.split(".")[0]


def test_every_module_sits_in_a_stage():
    loose = [m for m in modules() if m and stage(m) not in STAGES + TOP]
    assert not loose, f"modules outside the stage packages {STAGES}: {loose}"


def test_imports_point_down_only():
    """A stage imports only itself and the stages before it in ``STAGES`` (cli: any)."""
    rank = {s: i for i, s in enumerate(STAGES + TOP)}
    upward = []
    for name, path in modules().items():
        if not name:
            continue
        for target in imports(path):
            if rank[stage(target)] > rank[stage(name)]:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that point up a stage: " + ", ".join(sorted(upward))


def test_no_import_cycles():
    graph = {name: imports(path) - {name} for name, path in modules().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*trail[trail.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", sorted(modules()))
def test_no_module_over_400_lines(name):
    lines = len(modules()[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"skinground.{name}: {lines} lines (at most {MAX_LINES})"


def test_the_checks_can_fail(tmp_path, monkeypatch):
    """The helpers above see an upward import and a cycle where there is one."""
    fake = tmp_path / "skinground"
    for rel, text in {"core/__init__.py": "", "core/a.py": "from skinground.data import b\n",
                      "data/__init__.py": "", "data/b.py": "from skinground.core import a\n"
                      }.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    monkeypatch.setattr(__import__(__name__), "LIB", fake)
    with pytest.raises(AssertionError, match="core.a -> data.b"):
        test_imports_point_down_only()
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_nothing_in_the_workflow_imports_bench():
    """bench/ stands outside the workflow: no library module, script or rule file imports a
    bench module or reads a file under bench/ (tests/test_cost.py checks the DAG's inputs)."""
    bench = {p.stem for p in (REPO / "bench").glob("*.py")}
    offenders = []
    for path in [*LIB.rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in bench | {"bench"}]
    assert not offenders, offenders


def test_no_file_of_the_workflow_names_bench():
    """The workflow (library, scripts, rules, report captions, schema) never names a file of
    bench/: the benches measure it from outside; what they measured reaches it through
    resources/measured/ alone."""
    named = [str(p.relative_to(REPO)) for p in (REPO / "workflow").rglob("*")
             if p.is_file() and p.suffix in (".py", ".smk", ".rst", ".yaml", ".json")
             and "bench/" in p.read_text(encoding="utf-8")]
    snakefile = (REPO / "Snakefile").read_text(encoding="utf-8")
    assert not named and "bench/" not in snakefile, named
