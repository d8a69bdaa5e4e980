"""What every entry point in workflow/scripts/ shares: logging, and one-line errors.

Rules run their scripts with Snakemake's ``script:`` directive: a script's ``main(snakemake)``
reads ``snakemake.input``/``output``/``params``/``log``/``threads`` (paths and config sections
named once, in the rule) and is run by :func:`run`. The training script, which relaunches
itself under torchrun, has a command line too (``train.py JOB.json``, run by :func:`main`).
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT, force=True)


def _fail(exc: Exception) -> None:
    logging.getLogger("skinground").error("%s", exc)
    print(f"error: {exc}", file=sys.stderr, flush=True)
    sys.exit(1)


@contextmanager
def output_to(log_path: str | os.PathLike | None):
    """stdout and stderr (the file descriptors, so native libraries' output too) appended to
    ``log_path`` while the block runs, as ``> log 2>&1`` does for a shell rule."""
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab", buffering=0) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def run(main: Callable, snakemake) -> None:
    """Run a rule's ``main(snakemake)`` with its output in the rule's log file; a known input
    error ends the job with its one-line message (in the log) and exit status 1."""
    from skinground.core.errors import InputError

    log = snakemake.log[0] if len(snakemake.log) else None
    with output_to(log):
        setup_logging()
        try:
            main(snakemake)
            log_peak_memory()
        except InputError as exc:
            _fail(exc)
        except Exception:  # a bug, not bad input: the traceback, in the rule's log
            traceback.print_exc()
            sys.stderr.flush()
            sys.exit(1)


def optional_input(snakemake, name: str) -> Path | None:
    """The one file of a rule's optional named input (``optional()`` in common.smk: a list of
    zero or one path), or None. Snakemake hands a named input given as a list to the script as
    a list even with one item, so no script reads such an input as a path itself."""
    files = snakemake.input.get(name) or []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if len(files) > 1:
        raise ValueError(f"input {name!r}: one optional file expected, got {list(files)}")
    return Path(files[0]) if files else None


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far: the kernel's high-water mark of its
    address space (``VmHWM``, exact, reset by ``exec``). Not ``getrusage``'s ``ru_maxrss``:
    that one keeps the PARENT's size at ``fork`` across the ``exec``, so a job started by a
    large Snakemake process would report Snakemake's memory as its own."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


#: The line every job's log ends with (the scale benchmark reads it: docs/cost-and-scale.md).
PEAK_LINE = "peak memory (max RSS): {mib:.1f} MiB"


def log_peak_memory() -> None:
    logging.getLogger("skinground").info(PEAK_LINE.format(mib=peak_rss_bytes() / 2**20))


def torch_threads(n: int) -> None:
    """Torch's CPU threads = the job's threads (Snakemake's ``threads``)."""
    import torch

    if n and n > 0:
        torch.set_num_threads(int(n))


# ---------------------------------------------------------------- the one command line (train)


def main(entry: Callable[[], None]) -> None:
    """Run a command-line ``entry()``; a known input error ends the process with its
    message, not a traceback."""
    from skinground.core.errors import InputError

    setup_logging()
    try:
        entry()
    except InputError as exc:
        _fail(exc)
