"""The README's measured sections are what bench/readme.py makes of bench/results/*.json and
the cost model: regenerated, never typed by hand."""

import re
import subprocess
import sys

from conftest import REPO


def test_readme_blocks_are_regenerated_from_the_results():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "readme.py"), "--check"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr + " (run: python bench/readme.py)"
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for block in ("demo", "benchmarks", "groups", "reliability", "cost"):
        assert f"<!-- generated: {block} " in readme and f"<!-- end: {block} -->" in readme


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
