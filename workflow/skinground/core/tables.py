"""Tables for people: a polars frame as GitHub-flavoured Markdown (the run's summaries, the
README's generated tables)."""

from __future__ import annotations

import math
import os

import polars as pl

from skinground.core.errors import InputError

#: What to do about a damaged table.
REMAKE = "delete it and rerun the workflow to remake it"


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None) -> pl.DataFrame:
    """The table at ``path`` (only ``columns``, if given). A missing, cut or damaged file
    raises ``InputError`` in one line naming it and the fix, not polars' error."""
    try:
        return pl.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, pl.exceptions.PolarsError) as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        reason = lines[0] if lines else type(err).__name__
        if isinstance(err, pl.exceptions.ColumnNotFoundError):
            raise InputError(f"{path}: {reason}") from None
        raise InputError(f"{path}: not a readable parquet file ({reason[:160]}); "
                         f"{REMAKE}") from None


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
    from skinground.core.io import atomic_path, write_text

    with atomic_path(output.table) as tmp:
        table.write_parquet(tmp)
    with atomic_path(output.csv) as tmp:
        summary.write_csv(tmp)
    write_text(output.markdown, markdown_table(summary, digits=1) + "\n")


def write_summary(summary: pl.DataFrame, csv_path, markdown_path, note: str = "") -> None:
    """A summary table, each atomically: as CSV, and as ``note`` + its Markdown table."""
    from skinground.core.io import atomic_path, write_text

    with atomic_path(csv_path) as tmp:
        summary.write_csv(tmp)
    write_text(markdown_path, note + markdown_table(summary))


CLAIMS_NOTE = (
    "The paper's claims, tested per {unit}: a Wilcoxon signed-rank test of the two methods' "
    "values (a query's value: the mean over its k retrieved images; lower is better), "
    "{paired}, one-sided in each direction, Holm-corrected across the {unit}s at alpha = "
    "{alpha}. holds: {unit}s where the first method is significantly better (a \"no_worse\" "
    "claim: not significantly worse). better / worse / not_significant: the verdicts.\n\n")

#: How the note describes each ``stats.test_unit``.
PAIRED = {
    "patient": "paired per test patient (the mean over the patient's queries: independent "
               "pairs, n = patients)",
    "query": "paired per query (n = queries; a patient's queries are not independent, and the "
             "test treats them as if they were, so its p-values are too small)",
}


def write_claims(tested, output, *, alpha: float, unit: str, paired: str) -> None:
    """The paired tests (``output.tests``, CSV) and the claims' counts (``output.claims``
    CSV and ``output.claims_md``), each atomically; ``tested``: ``significance.Tested``,
    its cells called ``unit`` in the note, its pairs per ``paired`` (``stats.test_unit``)."""
    from skinground.core.io import atomic_path

    with atomic_path(output.tests) as tmp:
        tested.tests.write_csv(tmp)
    write_summary(tested.claims, output.claims, output.claims_md,
                  CLAIMS_NOTE.format(unit=unit, alpha=alpha, paired=PAIRED[paired]))
