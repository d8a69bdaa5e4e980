"""Tables for people: a polars frame as GitHub-flavoured Markdown (the run's summaries, the
README's generated tables)."""

from __future__ import annotations

import math

import polars as pl


def markdown_table(table: pl.DataFrame, *, digits: int = 3, null: str = "-") -> str:
    """``table`` as a Markdown table: floats rounded to ``digits``, NaN as "n/a", null as
    ``null``; numeric columns right-aligned. Ends with a newline."""
    def cell(v) -> str:
        if v is None:
            return null
        if isinstance(v, float):
            return "n/a" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    lines = ["| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---:" if table.schema[c].is_numeric() else "---"
                            for c in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join(lines) + "\n"


def write_evaluation(table: pl.DataFrame, summary: pl.DataFrame, output) -> None:
    """An evaluation's outputs, each atomically: the per-row ``output.table`` (parquet), the
    ``output.csv`` summary and its ``output.markdown`` table."""
    from skinground.io import atomic_path, write_text

    with atomic_path(output.table) as tmp:
        table.write_parquet(tmp)
    with atomic_path(output.csv) as tmp:
        summary.write_csv(tmp)
    write_text(output.markdown, markdown_table(summary, digits=1) + "\n")


def write_summary(summary: pl.DataFrame, csv_path, markdown_path, note: str = "") -> None:
    """A summary table, each atomically: as CSV, and as ``note`` + its Markdown table."""
    from skinground.io import atomic_path, write_text

    with atomic_path(csv_path) as tmp:
        summary.write_csv(tmp)
    write_text(markdown_path, note + markdown_table(summary))
