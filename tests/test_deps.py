"""A rule reruns by the meaning of its code: each script's import closure inside the package
(sub-packages included) and the hash of its syntax trees (``skinground.core.deps``), which the
Snakefile gives every rule as its ``code`` param."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from skinground.core import deps
from skinground.core.deps import code_hash, direct_imports, module_closure

from conftest import REPO

LIB = REPO / "workflow" / "skinground"
SCRIPTS = REPO / "workflow" / "scripts"


def test_closure_follows_imports_transitively_and_inside_functions():
    closure = {str(p.relative_to(LIB).with_suffix(""))
               for p in module_closure(SCRIPTS / "predict.py")}
    # predict.py -> model.loading (load_qwen) -> core.config, and lora only inside a function;
    # the answers' parse without the R² tables (evaluation.metrics)
    assert {"__init__", "core/__init__", "core/script", "core/errors", "core/io", "core/sections",
            "model/loading", "model/lora", "model/predict", "model/prefix", "data/answers",
            "data/images", "data/shards"} <= closure
    # nor the config loader (its checks name the retrieval plan) nor R² tables
    assert not {"model/embed", "demo/synthetic", "demo/tiny", "evaluation/metrics",
                "core/config", "core/plan"} & closure


def test_every_import_of_every_script_is_covered():
    for script in SCRIPTS.glob("*.py"):
        closure = module_closure(script)
        assert all(p.is_file() for p in closure)
        for path in closure:
            assert {deps.module_file(m) for m in direct_imports(path)} <= set(closure), (
                script.name, path.name)


def test_the_model_rules_do_not_depend_on_the_retrieval_plan():
    for script in ("train", "predict", "embed"):
        assert "plan.py" not in {p.name for p in module_closure(SCRIPTS / f"{script}.py")}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A copy of ``skinground.core.deps`` inside a package of its own with a sub-package, and a
    script that imports from it in every form: (deps module, script path)."""
    lib = tmp_path / "skinground"
    (lib / "demo" / "deep").mkdir(parents=True)
    (lib / "core").mkdir()
    shutil.copy(LIB / "core" / "deps.py", lib / "core" / "deps.py")
    files = {
        "__init__.py": '"""Package."""\n',
        "core/__init__.py": "",
        "base.py": 'X = 1\n',
        "util.py": "from .base import X\n\n\ndef f():\n    return X + 1\n",
        "unused.py": "Y = 2\n",
        "demo/__init__.py": "",
        "demo/tiny.py": ("from ..util import f\nfrom . import deep\n\n\n"
                         "def build():\n    from .deep.leaf import Z\n    return f() + Z\n"),
        "demo/deep/__init__.py": "",
        "demo/deep/leaf.py": "Z = 3\n",
    }
    for name, text in files.items():
        (lib / name).write_text(text)
    script = tmp_path / "scripts" / "build.py"
    script.parent.mkdir()
    script.write_text('"""Entry point."""\nfrom skinground.demo import tiny\n\n'
                      'print(tiny.build())  # the number\n')
    spec = importlib.util.spec_from_file_location("copied_deps", lib / "core" / "deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, script


def test_closure_walks_sub_packages_and_relative_imports(package):
    d, script = package
    names = {str(p.relative_to(d.LIB)) for p in d.module_closure(script)}
    assert names == {"__init__.py", "demo/__init__.py", "demo/tiny.py", "util.py", "base.py",
                     "demo/deep/__init__.py", "demo/deep/leaf.py"}


def test_comments_docstrings_layout_and_touch_keep_the_hash(package):
    d, script = package
    before = d.code_hash(script)
    tiny = d.LIB / "demo" / "tiny.py"
    tiny.write_text('"""Now with a docstring."""\n# and a comment\n' + tiny.read_text()
                    .replace("def build():\n", 'def build():\n    """Build it."""\n')
                    .replace("return f() + Z", "return (f()\n            + Z)  # sum"))
    script.write_text(script.read_text().replace("# the number", "# printed"))
    for path in d.LIB.rglob("*.py"):
        os.utime(path, (1, 1))
    assert d.code_hash(script) == before


def test_a_code_change_anywhere_in_the_closure_changes_the_hash(package):
    d, script = package
    before = d.code_hash(script)
    leaf = d.LIB / "demo" / "deep" / "leaf.py"
    leaf.write_text("Z = 4\n")
    assert d.code_hash(script) != before
    leaf.write_text("Z = 3\n")
    assert d.code_hash(script) == before
    (d.LIB / "unused.py").write_text("Y = 5\n")  # not imported: no change
    assert d.code_hash(script) == before


def test_the_hash_does_not_depend_on_the_checkout_path(package, tmp_path):
    d, script = package
    moved = tmp_path / "elsewhere"
    shutil.copytree(d.LIB.parent, moved)
    spec = importlib.util.spec_from_file_location("moved_deps", moved / "skinground/core/deps.py")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    assert other.code_hash(moved / "scripts" / "build.py") == d.code_hash(script)


def test_each_real_script_has_its_own_hash():
    hashes = {s.stem: code_hash(s) for s in SCRIPTS.glob("*.py")}
    assert len(set(hashes.values())) == len(hashes)
