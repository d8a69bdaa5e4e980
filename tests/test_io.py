"""Atomic outputs: all or nothing, and no temporaries left by an interrupted write."""

from __future__ import annotations

import pytest

from skinground.io import atomic_path, write_text


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

    from skinground.figures import save_figure

    fig = Figure()
    fig.subplots().plot([1, 2, 3])
    save_figure(fig, tmp_path / "a.pdf", tmp_path / "a.png")
    time.sleep(1.1)
    save_figure(fig, tmp_path / "b.pdf", tmp_path / "b.png")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
