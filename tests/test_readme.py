"""The README and docs/: their measured sections are what bench/readme.py makes of
bench/results/*.json and the cost model (regenerated, never typed by hand), every relative link
leads somewhere, and .ci/run runs the README's two commands as written."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from readme import BLOCKS

#: The README is the front page; the rest lives in docs/.
README_MAX_LINES = 250


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_every_generated_block_is_what_the_results_make():
    """``bench/readme.py --check`` regenerates every block, in README.md and in docs/, and
    finds each page as it is."""
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "readme.py"), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: python bench/readme.py)"


def test_each_block_is_in_one_page_with_its_end():
    where: dict[str, list[str]] = {}
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for name in re.findall(r"<!-- generated: (\S+) ", text):
            where.setdefault(name, []).append(page.name)
            assert f"<!-- end: {name} -->" in text.split(f"<!-- generated: {name} ", 1)[1], \
                f"{page.name}: block {name} has no end marker"
    assert sorted(where) == sorted(BLOCKS), "every block bench/readme.py makes, and only those"
    assert all(len(found) == 1 for found in where.values()), where


def test_the_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md: {lines} lines; move a section to docs/"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, no punctuation, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_leads_somewhere():
    """Each relative link of README.md and docs/*.md names a file of the checkout, and its
    #anchor, if any, a heading of that file."""
    broken = []
    for page in pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.exists() or REPO.resolve() not in dest.parents:
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and (dest.suffix != ".md" or anchor not in anchors(dest)):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, broken


def readme_commands() -> list[str]:
    """The fenced commands of the README's "Two commands" section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_ci_runs_the_readmes_commands_as_written():
    """.ci/run runs each of the README's two commands exactly as written, each on a line of
    its own (checks may stand around them, nothing may replace them), the demo first; the
    tests run with no skip allowed and reuse the demo run the first command made."""
    commands = readme_commands()
    assert len(commands) == 2, commands
    assert all("\n" not in c for c in commands), commands
    assert commands[0].endswith("snakemake --profile profiles/demo")
    assert commands[1].endswith("python -m pytest -q")
    for command in commands:
        assert "-c constraints.txt -e " in command, command  # the pinned install
    lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    where = [lines.index(c) if c in lines else -1 for c in commands]
    assert -1 not in where, f".ci/run does not run, as written: {commands[where.index(-1)]}"
    assert where[0] < where[1]
    before_tests = lines[:where[1]]
    assert any(re.match(r"export .*SKINGROUND_NO_SKIPS=1", x) for x in before_tests)
    assert any(re.match(r'export .*SKINGROUND_DEMO_RUN="\$PWD"', x) for x in before_tests)
    # nothing after the first command undoes it: no second demo, no results/ removed
    assert not [x for x in lines[where[0] + 1:] if "rm -rf results" in x]


def test_the_demo_dag_numbers_the_docs_state_are_a_dry_runs(tmp_path):
    """The demo DAG's job count the benchmarks table states (``bench/demo_dag.py``'s record)
    is what a dry run of the whole demo DAG plans today, rule by rule: a DAG that grew since
    the bench last ran fails here (rerun ``python bench/demo_dag.py``)."""
    import json

    from conftest import copy_workflow, planned_jobs

    work = copy_workflow(tmp_path / "checkout")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/demo", "-n",
                           "--forceall"], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    planned = planned_jobs(proc.stdout + proc.stderr)
    record = json.loads((REPO / "bench" / "results" / "demo_dag.json").read_text())
    assert record["jobs"] == sum(planned.values()), "bench/results/demo_dag.json is stale"
    # the rules with a benchmark file, each with as many jobs as the plan's
    assert {rule: r["jobs"] for rule, r in record["rules"].items()} == {
        rule: planned.get(rule) for rule in record["rules"]}
