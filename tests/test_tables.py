"""Reading the workflow's tables: a damaged parquet file is one line naming it and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest

from skinground.core.errors import InputError
from skinground.core.tables import REMAKE, read_parquet

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "manifest.parquet"
    pl.DataFrame({"isic_id": [f"ISIC_{i:07d}" for i in range(500)],
                  "size": [float(i) for i in range(500)]}).write_parquet(path)
    return path


@pytest.mark.parametrize("damage", ["cut", "metadata", "footer", "empty"])
def test_a_damaged_table_is_named_in_one_line(table, damage):
    """polars raised a ComputeError ("File out of specification") through every script."""
    data = table.read_bytes()
    table.write_bytes({"cut": data[: len(data) // 2],
                       "metadata": data[:-40] + b"\xff" * 32 + data[-8:],
                       "footer": data[:-30] + b"\0" * 30, "empty": b""}[damage])
    with pytest.raises(InputError) as err:
        read_parquet(table)
    message = str(err.value)
    assert message.startswith(f"{table}: not a readable parquet file (") and "\n" not in message
    assert message.endswith(f"; {REMAKE}")


def test_a_missing_table_and_a_missing_column_are_named(table, tmp_path):
    with pytest.raises(InputError, match=f"^{tmp_path / 'nope.parquet'}: no such file$"):
        read_parquet(tmp_path / "nope.parquet")
    with pytest.raises(InputError, match=f'^{table}: .*"colour"'):
        read_parquet(table, columns=["isic_id", "colour"])
    assert read_parquet(table, columns=["size"]).columns == ["size"]
    assert read_parquet(table).equals(pl.read_parquet(table))


def test_every_reader_of_a_table_goes_through_read_parquet():
    """One reader: a script or module that called polars directly crashed with its error."""
    direct = re.compile(r"\bpl\.read_parquet\(")
    offenders = [str(p.relative_to(REPO))
                 for root in ("workflow", "bench") for p in sorted((REPO / root).rglob("*.py"))
                 if direct.search(p.read_text()) and p.name != "tables.py"]
    assert offenders == []
