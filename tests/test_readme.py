"""The README's measured sections are what bench/readme.py makes of bench/results/*.json and
the cost model: regenerated, never typed by hand."""

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
