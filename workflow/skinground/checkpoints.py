"""Resumable training: which checkpoints an interrupted ``train`` job may resume from.

A checkpoint folder belongs to one run: ``run.json`` holds the run's fingerprint (the training
config less bookkeeping keys, the pixel budget, the DeepSpeed config, the tuples' content and
the base model). A rerun with the same fingerprint resumes from the last complete
``checkpoint-<step>`` (complete = its ``trainer_state.json``, written last, exists); any other
run's checkpoints are removed and training starts over.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from skinground.config import PIXEL_KEYS, tracked
from skinground.errors import InputError
from skinground.io import write_json

log = logging.getLogger(__name__)

#: In the checkpoint directory: what the checkpoints belong to (see ``run_fingerprint``).
FINGERPRINT_FILE = "run.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: flock's errors where the file system has no locks (NFS without lockd, Lustre noflock).
UNLOCKABLE = (errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOLCK)
#: In the checkpoint directory: held (flock) by the one training job that may write there.
LOCK_FILE = ".lock"
_PR_SET_PDEATHSIG = 1


class CheckpointsLocked(InputError):
    """Another training process holds the checkpoint directory."""


def lock_checkpoints(checkpoint_dir: str | os.PathLike) -> IO:
    """An exclusive lock on ``checkpoint_dir`` for as long as the returned file stays open
    (in this process or any child that inherits it). Raises :class:`CheckpointsLocked`
    naming the directory and the holder's pid when another trainer has it."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    f = open(root / LOCK_FILE, "a+")  # held open by the caller
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in UNLOCKABLE:
            log.warning("%s: this file system does not support flock (%s; e.g. Lustre mounted "
                        "noflock): training goes on unlocked, so make sure no second job "
                        "trains into this folder", root, os.strerror(err.errno))
        elif err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        else:
            f.seek(0)
            holder = f.read().strip() or "?"
            f.close()
            raise CheckpointsLocked(
                f"{root}: another training process (pid {holder}) holds its lock; a second "
                "trainer would race it on the same checkpoints. Wait for it to end, or stop "
                "it") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent ends (torchrun's workers start in a
    session of their own, so a kill of the job's process group would not reach them); if the
    parent is already gone, end now."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before the signal was armed
        os._exit(1)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_fingerprint(*, base: str | os.PathLike, tuples: str | os.PathLike,
                    model_cfg: Mapping, train_cfg: Mapping, deepspeed_cfg: Mapping) -> dict:
    """What a checkpoint must match to be resumed: the training config (less bookkeeping
    keys), the pixel budget, the DeepSpeed config, the tuples' content and the base model."""
    base = Path(base)
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                     for p in base.glob("*.safetensors"))
    return {
        "train": tracked("train", train_cfg),
        "pixels": {k: model_cfg.get(k) for k in PIXEL_KEYS},
        "deepspeed": dict(deepspeed_cfg),
        "tuples_sha256": _file_digest(Path(tuples)),
        "base": {"path": str(base.resolve()),
                 "config_sha256": _file_digest(base / "config.json"),
                 "weights": [list(w) for w in weights]},
    }


def complete_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-<step>`` folders holding a ``trainer_state.json`` (written last, so the
    folder is complete), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def prepare_checkpoints(checkpoint_dir: str | os.PathLike, fingerprint: dict) -> Path | None:
    """The checkpoint to resume from, or None. Checkpoints of another run (no or another
    fingerprint) are removed; the fingerprint of this run is written."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    fp_file = root / FINGERPRINT_FILE
    old = None
    if fp_file.is_file():
        try:
            old = json.loads(fp_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
    # json round trip: compare like with like (tuples become lists).
    same = old == json.loads(json.dumps(fingerprint))
    stale = [p for p in root.iterdir() if _CHECKPOINT_RE.match(p.name)]
    if not same and stale:
        log.warning("%s: %d checkpoint(s) from another run (config, tuples or base model "
                    "changed); removing them and starting over", root, len(stale))
        for p in stale:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if not same:
        write_json(fp_file, fingerprint)
    done = complete_checkpoints(root)
    return done[-1] if done else None
