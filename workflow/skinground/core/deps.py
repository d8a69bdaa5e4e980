"""What a script's result depends on in code: the skinground modules it imports, transitively
(imports inside functions and sub-packages included), and a hash of their meaning.

Standard library only: the Snakefile gives each rule ``code_hash`` of its script as a param,
so that a change to what the code does reruns the rule and its downstream, and nothing else
does: the hash is taken over each file's syntax tree with docstrings dropped (comments and
layout never reach the tree), so a comment or docstring edit, a reformatting, a ``touch`` or
a checkout at another path changes nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent
PACKAGE = LIB.name


def module_file(module: str) -> Path | None:
    """The file of a dotted module name inside the package (``"demo.tiny"``), or None."""
    base = LIB.joinpath(*module.split(".")) if module else LIB
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str | None:
    """The dotted name of a file inside the package (``""`` for its ``__init__``), or None."""
    try:
        parts = list(path.resolve().relative_to(LIB).with_suffix("").parts)
    except ValueError:
        return None
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _with_parents(module: str) -> set[str]:
    """A module and the packages that hold it (importing ``a.b`` runs ``a/__init__``)."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


def _version(path: Path) -> tuple[str, int, int]:
    """A file's identity for the caches below: an edit (new mtime or size) is a new key, so
    each file is parsed once per process however many rules' scripts import it."""
    st = path.stat()
    return str(path.resolve()), st.st_mtime_ns, st.st_size


@cache
def _parse(version: tuple[str, int, int]) -> ast.Module:
    """A file's syntax tree (shared: never mutate it)."""
    return ast.parse(Path(version[0]).read_text(encoding="utf-8"), filename=version[0])


def direct_imports(path: str | Path) -> set[str]:
    """The package's modules one file imports (top level or inside functions), as dotted
    names relative to the package, each with the sub-packages that hold it."""
    return set(_direct_imports(_version(Path(path))))


@cache
def _direct_imports(version: tuple[str, int, int]) -> frozenset[str]:
    path = Path(version[0])
    own = _module_name(path)
    # the package a relative import is relative to (a script outside the package has none)
    here = None if own is None else (own if path.name == "__init__.py" else own.rpartition(".")[0])
    found: set[str] = set()
    for node in ast.walk(_parse(version)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                if here is None:
                    continue
                parent = here.split(".") if here else []
                parent = parent[:len(parent) - (node.level - 1)]
                prefix = ".".join(parent + ([node.module] if node.module else []))
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                prefix = node.module[len(PACKAGE) + 1:]
            else:
                continue
            # ``from prefix import name``: name is a sub-module or a name in prefix
            for alias in node.names:
                sub = f"{prefix}.{alias.name}" if prefix else alias.name
                found.add(sub if module_file(sub) else prefix)
        elif isinstance(node, ast.Import):
            found.update(alias.name[len(PACKAGE) + 1:] for alias in node.names
                         if alias.name.startswith(PACKAGE + "."))
    return frozenset({m for name in found if module_file(name) for m in _with_parents(name)
                      if module_file(m)} - {"", own})


def module_closure(script: str | Path) -> list[Path]:
    """The package's ``__init__`` and every module ``script`` imports, transitively, sorted."""
    seen: set[str] = set()
    todo = sorted(direct_imports(script))
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(direct_imports(module_file(module)) - seen)
    return [LIB / "__init__.py"] + [module_file(m) for m in sorted(seen)]


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    return tree


def meaning(path: Path) -> str:
    """One file's code as its syntax tree without docstrings, positions, comments or layout."""
    return _meaning(_version(Path(path)))


@cache
def _meaning(version: tuple[str, int, int]) -> str:
    tree = ast.parse(Path(version[0]).read_text(encoding="utf-8"), filename=version[0])
    return ast.dump(_without_docstrings(tree), include_attributes=False)  # a tree of its own


def code_hash(script: str | Path) -> str:
    """A hash of what ``script`` and the package modules it imports do (see the module's
    docstring); files named relative to the package, so the checkout's path is not in it."""
    script = Path(script)
    h = hashlib.sha256()
    for name, path in [(script.name, script)] + [
            (str(p.relative_to(LIB)), p) for p in module_closure(script)]:
        h.update(name.encode() + b"\0" + meaning(path.resolve()).encode() + b"\0")
    return h.hexdigest()[:16]
