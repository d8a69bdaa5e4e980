"""The conda environments of the rules (envs/*.yaml, used with `--sdm conda`) agree with
pyproject.toml, with the pins of constraints.txt and with what the rules' scripts import; the
pins cover what is installed."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from skinground.core import versions

from conftest import REPO

ENVS = {"CPU_ENV": REPO / "envs/cpu.yaml", "GPU_ENV": REPO / "envs/gpu.yaml"}
WORKFLOW = REPO / "workflow"

# pyproject (pip) name -> its name in envs/gpu.yaml (conda-forge, or pip under `pip:`) where
# they differ: the cluster gets the CUDA builds.
GPU_NAME = {"torch": "pytorch-gpu", "faiss-cpu": "faiss-gpu-cu12"}
# pyproject (pip) name -> its name in envs/cpu.yaml where they differ.
CPU_NAME = {"torch": "pytorch"}
# pyproject dependencies that no rule environment needs: Snakemake runs on the submit host
# (or in the job, from the host's installation) and only the rule's command runs in its env.
DRIVER_ONLY = {
    # A script: job unpickles the Snakemake object with the host's snakemake (the preamble
    # appends its path to sys.path): a second copy in the env could only disagree with it.
    "snakemake": "runs the workflow; not imported by any rule script",
    "jsonschema": "config validation in the Snakefile (snakemake.utils.validate)",
}
# import name -> distribution (pip) name, for every third-party import of the scripts and
# the skinground library. A new import must be added here (and to pyproject and the envs).
IMPORT_TO_DIST = {
    "PIL": "pillow",
    "yaml": "pyyaml",
    "faiss": "faiss-cpu",
    "numpy": "numpy",
    "polars": "polars",
    "h5py": "h5py",
    "matplotlib": "matplotlib",
    "seaborn": "seaborn",
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "accelerate": "accelerate",
    "peft": "peft",
    "deepspeed": "deepspeed",
    "jsonschema": "jsonschema",
    "snakemake": "snakemake",
    "scipy": "scipy",
    "sklearn": "scikit-learn",
    "packaging": "packaging",
}
PINS = versions.read_pins(REPO / versions.CONSTRAINTS)


def env_file(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def parse_env(path: Path) -> dict[str, SpecifierSet]:
    """Package name -> version constraint, conda and pip entries together."""
    packages: dict[str, SpecifierSet] = {}
    for dep in env_file(path)["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                req = Requirement(pip_dep)
                packages[canonicalize_name(req.name)] = req.specifier
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)\s*(.*)", dep.strip())
        assert m, f"{path.name}: cannot read {dep!r}"
        name, spec = m.groups()
        if spec.startswith("=") and not spec.startswith("=="):  # conda's python=3.11
            spec = f"=={spec[1:]}.*" if spec[1:].count(".") < 2 else f"=={spec[1:]}"
        packages[canonicalize_name(name)] = SpecifierSet(spec)
    return packages


def pyproject_deps() -> dict[str, SpecifierSet]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    return {canonicalize_name(r.name): r.specifier for r in reqs}


def rule_envs() -> dict[str, tuple[str | None, str | None]]:
    """rule -> (its conda env's name in common.smk, its script name), from the .smk files."""
    text = "\n".join(p.read_text() for p in sorted((WORKFLOW / "rules").glob("*.smk")))
    rules = {}
    for block in re.split(r"\n(?=[ \t]*rule \w+:)", text):
        m = re.match(r"\s*rule (\w+):", block)
        if not m:
            continue
        env = re.search(r"conda:\s*\n\s*(\w+)", block)
        script = re.search(r'code=code\("(\w+)"\)', block)  # the script its code is
        rules[m.group(1)] = (env and env.group(1), script and script.group(1))
    return rules


def _top_level_imports(statements) -> list[ast.stmt]:
    """Import statements run when the module is imported (not in functions, classes or
    `if TYPE_CHECKING:`)."""
    found = []
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            found += _top_level_imports(node.orelse)
        else:
            for field in ("body", "orelse", "handlers", "finalbody"):
                found += _top_level_imports(getattr(node, field, []) or [])
            if isinstance(node, ast.ExceptHandler):
                found += _top_level_imports(node.body)
    return found


def _imported(nodes) -> set[str]:
    names = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif n.level:  # relative, inside skinground
            names |= ({f"skinground.{n.module}"} if n.module
                      else {f"skinground.{a.name}" for a in n.names})
        elif n.module == "skinground":
            names |= {f"skinground.{a.name}" for a in n.names}
        else:
            names.add(n.module)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Top-level package names a script needs: everything the script itself imports (scripts
    import lazily inside run()), plus what the skinground modules it reaches import when
    imported (their function-level imports are for paths other rules take, e.g. faiss)."""
    todo = [(script, True)]
    seen, third = set(), set()
    while todo:
        path, is_script = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] \
            if is_script else _top_level_imports(tree.body)
        for name in _imported(nodes):
            parts = name.split(".")
            if parts[0] == "skinground":
                module = WORKFLOW / "skinground" / (f"{parts[1]}.py" if len(parts) > 1
                                                   else "__init__.py")
                if module.exists():
                    todo.append((module, False))
            elif parts[0] not in sys.stdlib_module_names:
                third.add(parts[0])
    return third


def test_envs_parse():
    for name, path in ENVS.items():
        env = env_file(path)
        assert set(env) == {"channels", "dependencies"}, name
        assert env["channels"][0] == "conda-forge", name
        packages = parse_env(path)
        assert packages["python"] == SpecifierSet("==3.11.*"), name
    assert sorted(p.name for p in (REPO / "envs").glob("*.yaml")) == ["cpu.yaml", "gpu.yaml"]


def test_every_rule_declares_an_env():
    common = (WORKFLOW / "rules/common.smk").read_text()
    for var, path in ENVS.items():
        assert f'{var} = str(SRC / "envs" / "{path.name}")' in common
    rules = rule_envs()
    assert len(rules) >= 14
    missing = sorted(rule for rule, (env, _) in rules.items() if env not in ENVS)
    assert not missing, f"rules without conda: CPU_ENV/GPU_ENV: {missing}"


def test_gpu_env_has_every_runtime_dependency():
    """Every runtime dependency, at the pin of constraints.txt (torch, unpinned there: at
    pyproject's range), inside pyproject's range."""
    gpu = parse_env(ENVS["GPU_ENV"])
    for dist, spec in pyproject_deps().items():
        if dist in DRIVER_ONLY:
            continue
        name = canonicalize_name(GPU_NAME.get(dist, dist))
        assert name in gpu, f"pyproject dependency {dist} is not in envs/gpu.yaml (as {name})"
        expected = spec if dist in versions.UNPINNED else SpecifierSet(f"=={PINS[dist]}")
        assert gpu[name] == expected, f"{dist}: envs/gpu.yaml {gpu[name]}, not {expected}"
        assert dist in versions.UNPINNED or PINS[dist] in spec, (dist, PINS[dist], spec)


@pytest.mark.parametrize("var", sorted(ENVS))
def test_env_pins_are_the_constraints(var):
    """Every library of a rule environment is pinned (==) at constraints.txt's version: the
    versions that shape the numbers (transformers, peft, deepspeed, accelerate, faiss,
    polars) are the ones CI passed with, under `--sdm conda` too."""
    names = CPU_NAME if var == "CPU_ENV" else GPU_NAME
    conda_name = {canonicalize_name(v): canonicalize_name(k) for k, v in names.items()}
    for name, spec in parse_env(ENVS[var]).items():
        if name in ("python", "pip"):
            continue
        dist = conda_name.get(name, name)
        if dist in versions.UNPINNED:
            continue
        assert spec == SpecifierSet(f"=={PINS[dist]}"), (
            f"{ENVS[var].name}: {name} {spec}, but constraints.txt pins {dist}=={PINS[dist]}")


def test_the_pins_cover_the_installed_set():
    """constraints.txt pins every package `pip install -e '.[test]'` brings (torch aside), at
    the version installed here, and nothing else: CI installs with it, so a package without a
    pin, a pin that is not honoured or a stale pin fails here."""
    installed = versions.closure(versions.PROJECT, ("test",))
    unpinned = sorted(set(installed) - set(PINS))
    assert not unpinned, f"installed without a pin in constraints.txt: {unpinned}"
    differ = {n: (v, PINS[n]) for n, v in installed.items() if PINS[n] != v}
    assert not differ, f"installed version != constraints.txt's (installed, pin): {differ}"
    stale = sorted(set(PINS) - set(installed))
    assert not stale, f"constraints.txt pins what the install does not bring: {stale}"


def test_read_pins_refuses_a_line_that_is_no_pin(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# header\nnumpy==2.4.6\n\npolars>=1\n")
    with pytest.raises(ValueError, match=r"c.txt:4: not a 'name==version' pin: 'polars>=1'"):
        versions.read_pins(path)
    path.write_text("# header\nNumPy==2.4.6  # a comment\nscikit_learn==1.9.1\n")
    assert versions.read_pins(path) == {"numpy": "2.4.6", "scikit-learn": "1.9.1"}


def test_envs_have_no_package_pyproject_lacks():
    deps = pyproject_deps()
    for var, path in ENVS.items():
        names = CPU_NAME if var == "CPU_ENV" else GPU_NAME
        known = {canonicalize_name(names.get(d, d)) for d in deps}
        extra = set(parse_env(path)) - known - {"python", "pip"}
        assert not extra, f"{path.name} has packages pyproject.toml lacks: {sorted(extra)}"


def test_every_import_is_a_declared_dependency():
    """What the scripts and the library import is declared in pyproject.toml."""
    deps = pyproject_deps()
    files = [*(WORKFLOW / "scripts").glob("*.py"), *(WORKFLOW / "skinground").rglob("*.py")]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for name in _imported(nodes):
            top = name.split(".")[0]
            if top == "skinground" or top in sys.stdlib_module_names:
                continue
            assert top in IMPORT_TO_DIST, f"{path.name} imports {top}: add it to IMPORT_TO_DIST"
            dist = canonicalize_name(IMPORT_TO_DIST[top])
            assert dist in deps, (f"{path.relative_to(REPO)} imports {top}, but {dist} is not "
                                  "a dependency in pyproject.toml")


@pytest.mark.parametrize("rule", sorted(rule_envs()))
def test_rule_env_has_what_its_script_imports(rule):
    var, script = rule_envs()[rule]
    assert script, f"rule {rule}: no script"
    names = CPU_NAME if var == "CPU_ENV" else GPU_NAME
    env = parse_env(ENVS[var])
    for top in sorted(third_party_imports(WORKFLOW / "scripts" / f"{script}.py")):
        dist = IMPORT_TO_DIST[top]
        name = canonicalize_name(names.get(dist, dist))
        assert name in env, (f"rule {rule} ({script}.py) imports {top}, which "
                             f"{ENVS[var].relative_to(REPO)} lacks (as {name})")


def test_the_runs_versions_and_their_state():
    """What the versions rule records: the project's runtime closure with torch (and its
    build) in it, and each package's state against the pins."""
    run = versions.installed()
    assert {"transformers", "peft", "deepspeed", "accelerate", "faiss-cpu", "polars",
            "torch", "numpy"} <= set(run)
    assert "pytest" not in run and "skinground" not in run  # no test extras, not itself
    from importlib.metadata import version

    assert run["transformers"] == version("transformers") and run["torch"] == version("torch")
    assert "torch" not in versions.closure(versions.PROJECT, ("test",))  # the pins' set
    rows = versions.table({"numpy": "2.4.6", "polars": "9.9", "torch": "2.13.0+cpu"},
                          {"numpy": "2.4.6", "polars": "2.1.0"})
    assert [(r["package"], r["pin"], r["state"]) for r in rows] == [
        ("numpy", "2.4.6", "pinned"), ("polars", "2.1.0", "differs"), ("torch", "", "unpinned")]
