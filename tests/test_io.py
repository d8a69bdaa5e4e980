"""Atomic outputs: all or nothing, and no temporaries left by an interrupted write."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinground.core.io import atomic_path, write_text


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    write_text(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_the_next_write_removes_what_a_killed_write_left(tmp_path):
    """kill -9 skips the clean-up: the temporaries stay until the target is written again."""
    (tmp_path / ".out.txt.k3j9.tmp").write_text("left by a killed job")
    (tmp_path / ".adapter.x1y2.tmp").mkdir()
    (tmp_path / ".adapter.x1y2.tmp" / "weights").write_text("partial")
    (tmp_path / ".other.txt.a1b2.tmp").write_text("another target's: kept")
    (tmp_path / ".out[1].txt.zz.tmp").write_text("a name glob would mistake: kept")
    write_text(tmp_path / "out.txt", "new")
    with atomic_path(tmp_path / "adapter", directory=True) as tmp:
        (tmp / "weights").write_text("complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.txt.a1b2.tmp", ".out[1].txt.zz.tmp", "adapter", "out.txt"]
    assert (tmp_path / "adapter" / "weights").read_text() == "complete"


def test_figures_are_byte_identical_across_saves(tmp_path):
    """No creation date in the PDF: the same figure gives the same bytes."""
    import time

    from matplotlib.figure import Figure

    from skinground.evaluation.figures import save_figure

    fig = Figure()
    fig.subplots().plot([1, 2, 3])
    save_figure(fig, tmp_path / "a.pdf", tmp_path / "a.png")
    time.sleep(1.1)
    save_figure(fig, tmp_path / "b.pdf", tmp_path / "b.png")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_outputs_get_the_users_umask_files_and_folders(tmp_path):
    """A colleague in the group can read a run: mkstemp's 0600 and mkdtemp's 0700 are
    replaced by the umask's modes (here 027: files 0640, folders 0750)."""
    import subprocess
    import sys

    code = ("import os, sys; os.umask(0o027)\n"
            "from pathlib import Path\n"
            "from skinground.core.io import atomic_path, write_text\n"
            "root = Path(sys.argv[1])\n"
            "write_text(root / 'a.txt', 'x')\n"
            "with atomic_path(root / 'adapter', directory=True) as d:\n"
            "    (d / 'w.bin').write_bytes(b'1')\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "adapter").stat().st_mode & 0o777 == 0o750


def test_reading_the_umask_does_not_change_it():
    import os

    from skinground.core import io

    before = os.umask(0o022)
    os.umask(before)
    assert io._read_umask() == before
    after = os.umask(0o022)
    os.umask(after)
    assert after == before


def test_what_is_renamed_into_place_was_synced_first(tmp_path, monkeypatch):
    import os

    synced, at_rename = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (
        synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    monkeypatch.setattr(os, "replace", lambda a, b: (
        at_rename.append({os.path.basename(p) for p in synced}), real_replace(a, b)))
    with atomic_path(tmp_path / "model", directory=True) as d:
        (d / "sub").mkdir()
        (d / "sub" / "weights.safetensors").write_bytes(b"w")
        (d / "config.json").write_text("{}")
    assert {"weights.safetensors", "config.json", "sub"} <= at_rename[0]
    assert synced[-1] == str(tmp_path)  # the folder that holds the new name, after it


def test_unwritable_folders_are_the_nearest_existing_ones_above(tmp_path, monkeypatch):
    """What a job writes needs its folder, or the nearest existing one above it when the
    folder is yet to be made, writable; each such folder once."""
    import os

    from skinground.core.io import unwritable_folders

    locked = tmp_path / "run" / "train"
    (locked / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "index").mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: (Path(p) != locked) and real(p, mode))
    assert unwritable_folders([locked / "loss.csv", locked / "new" / "deeper" / "x.json",
                               locked / "adapter", tmp_path / "run" / "index" / "im.faiss",
                               tmp_path / "run" / "new" / "x"]) == [locked]
    assert unwritable_folders([locked / "adapter" / "made_by.json"]) == []
