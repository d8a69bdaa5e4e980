"""Which library files a script depends on: the skinground modules it imports, transitively
(imports inside functions included). Standard library only: the Snakefile uses it to declare
them as a rule's inputs, so that an edit to any of them reruns the rule (Snakemake does not
see edits to imported modules by itself)."""

from __future__ import annotations

import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent
PACKAGE = LIB.name


def direct_imports(path: str | Path) -> set[str]:
    """The skinground modules one file imports (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1 and module:  # from .x import y
                found.add(module.split(".")[0])
            elif node.level == 1 or module == PACKAGE:  # from . import x / from skinground import x
                found.update(alias.name for alias in node.names)
            elif module.startswith(PACKAGE + "."):
                found.add(module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(PACKAGE + "."))
    return {m for m in found if (LIB / f"{m}.py").is_file()}


def module_closure(script: str | Path) -> list[Path]:
    """The package's ``__init__`` and every module ``script`` imports, transitively, sorted."""
    seen: set[str] = set()
    todo = sorted(direct_imports(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(direct_imports(LIB / f"{module}.py") - seen)
    return [LIB / "__init__.py"] + [LIB / f"{m}.py" for m in sorted(seen)]
