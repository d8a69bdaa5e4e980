"""Resumable training: which checkpoints an interrupted ``train`` job may resume from.

Training is a function of its inputs: a rerun recomputes, unless it resumes an *interrupted*
run of the very same inputs. A checkpoint folder belongs to one run: ``run.json`` holds the
run's fingerprint (:func:`run_fingerprint`: the training code's hash, the training config less
bookkeeping keys, the pixel budget, the DeepSpeed config, the content of the tuples, the images
and the base model, and the number of processes; no path, so a moved run folder is the same
run). A rerun with the same fingerprint resumes from the last complete ``checkpoint-<step>``
(complete = its ``trainer_state.json``, written last, exists). Never resumed, and removed:
another run's checkpoints (one warning names what changed; for a changed process count, both
counts), and a finished run's (``finished.json``, written once the adapter is, or a checkpoint
at the run's last step: a rerun of a finished run trains from the start, so a forced rerun
gives the same adapter).
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

from skinground.core.errors import InputError
from skinground.core.io import write_json
from skinground.core.provenance import differing
from skinground.core.sections import pixel_record

log = logging.getLogger(__name__)

#: In the checkpoint directory: what the checkpoints belong to (see ``run_fingerprint``).
FINGERPRINT_FILE = "run.json"
#: In the checkpoint directory: the run finished (its adapter is written); nothing resumes it.
FINISHED_FILE = "finished.json"
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
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def content_digest(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes; of a folder, of every file's relative name and bytes
    (sorted): the same content anywhere gives the same digest."""
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    h = hashlib.sha256()
    for p in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(path).as_posix()}\0{_file_digest(p)}\0".encode())
    return h.hexdigest()


def run_fingerprint(*, code: str, base: str | os.PathLike, tuples: str | os.PathLike,
                    images: str | os.PathLike, pixels: Mapping, train_cfg: Mapping,
                    deepspeed_cfg: Mapping, processes: int) -> dict:
    """What a checkpoint must match to be resumed: the training code's hash
    (``deps.code_hash``), the training config (less bookkeeping keys), the pixel budget, the
    DeepSpeed config, the content of the tuples, the images and the base model, and the
    number of processes (a ZeRO checkpoint is cut per data-parallel rank). No path: a run
    folder moved elsewhere is the same run."""
    return {
        "code": code,
        "processes": int(processes),
        "train": dict(train_cfg),
        "pixels": pixel_record(pixels),
        "deepspeed": dict(deepspeed_cfg),
        "content_sha256": {"tuples": content_digest(tuples), "images": content_digest(images),
                           "base": content_digest(base)},
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


def _state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def is_final(checkpoint: Path) -> bool:
    """A checkpoint at its run's last step (``trainer_state.json``: global_step >= max_steps):
    the state of a finished run, which a resume would train past."""
    state = _state(checkpoint)
    return bool(state.get("max_steps")) and state.get("global_step", 0) >= state["max_steps"]


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def prepare_checkpoints(checkpoint_dir: str | os.PathLike, fingerprint: dict) -> Path | None:
    """The checkpoint to resume from, or None (train from the start). Removed first, so that
    nothing can resume them later: another run's checkpoints (a warning names the changed
    keys; a changed process count, both counts), and a finished run's (``FINISHED_FILE``, or a
    checkpoint at the run's last step). The fingerprint of this run is written."""
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    fp_file = root / FINGERPRINT_FILE
    old = _read_json(fp_file)
    # json round trip: compare like with like (tuples become lists).
    new = json.loads(json.dumps(fingerprint))
    found = [p for p in root.iterdir() if _CHECKPOINT_RE.match(p.name)]
    why = None
    if found and old != new:
        changed = differing(old or {}, new)
        if changed == ["processes"]:
            why = (f"made by {old['processes']} process(es), this run has "
                   f"{new['processes']}: a ZeRO checkpoint is cut per rank")
        else:
            why = f"another run's ({', '.join(changed) or 'no record of what made them'})"
        log.warning("%s: %d checkpoint(s) %s; setting them aside (removed) and training from "
                    "the start", root, len(found), why)
    elif found and ((root / FINISHED_FILE).exists()
                    or any(is_final(p) for p in complete_checkpoints(root))):
        why = "finished"
        log.info("%s: the checkpoints of a finished run are never resumed: a rerun recomputes; "
                 "removing them and training from the start", root)
    if why:
        for p in found:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    (root / FINISHED_FILE).unlink(missing_ok=True)
    if old != new:
        write_json(fp_file, fingerprint)
    done = complete_checkpoints(root)
    return done[-1] if done else None


def mark_finished(checkpoint_dir: str | os.PathLike, step: int) -> None:
    """The run is over (its adapter written): its checkpoints will never be resumed."""
    write_json(Path(checkpoint_dir) / FINISHED_FILE, {"step": int(step)})
