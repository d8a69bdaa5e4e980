"""Rules declare the library files their scripts import, so an edit reruns them."""

from skinground.deps import direct_imports, module_closure

from conftest import REPO

LIB = REPO / "workflow" / "skinground"


def test_closure_follows_imports_transitively_and_inside_functions():
    closure = {p.stem for p in module_closure(REPO / "workflow/scripts/predict.py")}
    # predict.py -> models (load_qwen) -> plan, and lora only inside a function.
    assert {"__init__", "cli", "errors", "io", "models", "plan", "lora", "predict", "prefix",
            "metrics", "data", "shards"} <= closure
    assert "embed" not in closure and "synthetic" not in closure and "tiny" not in closure


def test_every_import_of_every_script_is_covered():
    for script in (REPO / "workflow" / "scripts").glob("*.py"):
        closure = {p.stem for p in module_closure(script)}
        for module in closure - {"__init__"}:
            assert direct_imports(LIB / f"{module}.py") <= closure, (script.name, module)
        assert all((LIB / f"{m}.py").exists() for m in closure)
