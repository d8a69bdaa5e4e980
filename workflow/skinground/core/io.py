"""Atomic outputs: write to a temporary name beside the target, rename on success.

A failed or interrupted job leaves either the old file or nothing, never half a file. The
temporary names are ``.<name>.<random>.tmp``; a job killed with ``kill -9`` cannot remove
its own, so the next write of the same target removes them first (one job writes a target
at a time: Snakemake locks its outputs). What is renamed into place was flushed to disk
first (``fsync``: on NFS or Lustre a rename can otherwise reach the server before the data),
and gets the permissions of the user's umask (a file 0666, a folder 0777, less the umask),
so a colleague in the group can read a run on a shared file system.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    With ``directory=True`` the temporary path is an empty directory the caller fills.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        tmp.chmod(0o777 & ~UMASK)  # mkdtemp makes 0700
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~UMASK)  # mkstemp makes 0600
    try:
        yield tmp
        fsync_tree(tmp)
        if directory and target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove what an interrupted write of ``target`` left beside it; returns what it
    removed."""
    stale = [p for p in target.parent.glob(f".{glob_escape(target.name)}.*.tmp")]
    for p in stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _read_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status); elsewhere
    read once here, at import, by setting and restoring it (before any thread exists)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # a file system that cannot sync a folder: the data itself was synced
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Flush a file, or every file and folder of a tree, to disk."""
    if path.is_dir():
        for folder, _, files in os.walk(path):
            for name in files:
                _fsync(Path(folder) / name)
            _fsync(Path(folder))
    else:
        _fsync(path)


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_lines(path: str | os.PathLike, lines: list[str]) -> None:
    write_text(path, "".join(f"{line}\n" for line in lines))


def unwritable_folders(paths) -> list[Path]:
    """The folders, among those that writing ``paths`` needs, that this user cannot write in:
    for each path, the nearest existing folder above it (a new file or folder is made there,
    an old one replaced there). Sorted, each once."""
    blocked = set()
    for path in map(Path, paths):
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            blocked.add(folder)
    return sorted(blocked)


def read_lines(path: str | os.PathLike) -> list[str]:
    return [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line]
