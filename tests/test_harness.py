"""The test harness's own helpers that guard the CI machine."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from conftest import pids_with_argv, run_group


def test_run_group_kills_the_commands_children_on_timeout():
    """A timed-out command's whole process group goes (Snakemake's jobs, torchrun's workers),
    not the command alone."""
    marker = b"import time; time.sleep(3001)"
    child = [sys.executable, "-c", marker.decode()]
    parent = [sys.executable, "-c",
              f"import subprocess, time; subprocess.Popen({child!r}); time.sleep(3001)"]
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(parent, timeout=3)
    deadline = time.monotonic() + 10
    while pids_with_argv(lambda argv: marker in argv) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pids_with_argv(lambda argv: marker in argv)
    done = run_group([sys.executable, "-c", "print('out'); import sys; sys.exit(3)"], timeout=60)
    assert (done.returncode, done.stdout) == (3, "out\n")
