"""The verdict as text: ``verdict.md`` (what ``skinground verdict`` prints) and ``verdict.rst``
(the report's first page, ``workflow/report/workflow.rst``). Both hold the summary lines;
the Markdown one row per expectation, the attributes' matrix of the per-attribute
expectations, the other units and the notes; the reStructuredText each verdict's
expectations, short."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import polars as pl

from skinground.evaluation.verdict import (
    ALL,
    HELD,
    NOT_HELD,
    NOT_MEASURABLE,
    combine,
    own_rows,
)

#: The matrix's marks.
MARKS = {HELD: "✓", NOT_HELD: "✗", NOT_MEASURABLE: "–"}
TITLE = "Verdict: did run {run} reproduce the paper?"
EXPECTATION_HEADER = ("expectation", "source", "in its words", "expected", "measured", "test",
                      "verdict")
SCOPE_HEADER = ("expectation", "scope", "expected", "measured", "test", "verdict")


def expectation_rows(table: pl.DataFrame) -> list[list[str]]:
    """One row per expectation (its own row): :data:`EXPECTATION_HEADER`."""
    return [[r["expectation"], r["source"], r["statement"], r["expected"], r["measured"],
             r["test"] or "", r["verdict"]] for r in own_rows(table).iter_rows(named=True)]


def scope_rows(table: pl.DataFrame, labels: Mapping[str, str]) -> list[list[str]]:
    """The units that are neither an expectation's own row nor an attribute (Fig. 3's
    scopes): :data:`SCOPE_HEADER`."""
    units = table.filter(~pl.col("unit").is_in([ALL, *labels]))
    return [[r["expectation"], r["unit"], r["expected"], r["measured"], r["test"] or "",
             r["verdict"]] for r in units.iter_rows(named=True)]


def matrix(table: pl.DataFrame, labels: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """The per-attribute expectations' verdicts, an attribute a row (its label): header and
    rows of :data:`MARKS`."""
    units = table.filter(pl.col("unit").is_in(list(labels)))
    ids = units["expectation"].unique(maintain_order=True).to_list()
    rows = []
    for a, label in labels.items():
        row = [label]
        for i in ids:
            v = units.filter((pl.col("expectation") == i) & (pl.col("unit") == a))["verdict"]
            row.append(MARKS[combine(v.to_list())])
        rows.append(row)
    return ["attribute", *ids], rows


def notes(table: pl.DataFrame) -> list[str]:
    """The distinct notes (why a unit is not measurable, what "far off" means), each once."""
    seen: dict[str, list[str]] = {}
    for r in table.filter(pl.col("note").is_not_null()).iter_rows(named=True):
        where = r["expectation"] if r["unit"] == ALL else f"{r['expectation']} ({r['unit']})"
        seen.setdefault(r["note"], []).append(where)
    return [f"{', '.join(_first(w))}: {note}" for note, w in seen.items()]


def _first(where: Sequence[str], n: int = 3) -> list[str]:
    return list(where[:n]) + ([f"and {len(where) - n} more"] if len(where) > n else [])


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cells(values):
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    return [cells(header), "|" + "---|" * len(header), *(cells(r) for r in rows)]


def markdown(table: pl.DataFrame, lines: Sequence[str], labels: Mapping[str, str],
             run: str, judged: Sequence[str]) -> str:
    """``verdict.md``: the title, the files judged against, the summary lines, the
    expectations' table, the attributes' matrix and the notes."""
    out = [f"# {TITLE.format(run=run)}", "",
           f"Judged against {', '.join(judged)} (config verdict.expected): held, not held, or "
           "not measurable here. Per unit in verdict.csv.", ""]
    out += [f"- {line}" for line in lines]
    out += ["", *_md_table(EXPECTATION_HEADER, expectation_rows(table))]
    header, rows = matrix(table, labels)
    if rows and len(header) > 1:
        out += ["", "Per attribute (✓ held, ✗ not held, – not measurable here):", "",
                *_md_table(header, rows)]
    if scopes := scope_rows(table, labels):
        out += ["", "Per scope:", "", *_md_table(SCOPE_HEADER, scopes)]
    if n := notes(table):
        out += ["", "Notes:", "", *(f"- {note}" for note in n)]
    return "\n".join(out) + "\n"


def _rst(value) -> str:
    """``value`` as reStructuredText's plain text: markup characters escaped, and a start that
    would open a list ("(b) Hierarchical", "- ", "1.") too."""
    text = str(value).replace("\\", "\\\\").replace("*", "\\*").replace("`", "\\`")
    text = text.replace("|", "\\|").replace("_", "\\_")
    text = re.sub(r"^([(\-+#]|\d+[.)])", r"\\\1", text)
    return text or "\\ "


def by_verdict(table: pl.DataFrame) -> dict[str, list[str]]:
    """Each verdict's expectations, in the files' order, each with what it measured where it
    was judged over several units ("fig2_r2 (held on 6/16 attributes)")."""
    out: dict[str, list[str]] = {v: [] for v in (NOT_HELD, NOT_MEASURABLE, HELD)}
    for r in own_rows(table).iter_rows(named=True):
        shown = r["expectation"]
        if r["measured"].startswith("held on"):
            shown += f" ({r['measured']})"
        out[r["verdict"]].append(shown)
    return out


def rst(table: pl.DataFrame, lines: Sequence[str], run: str, judged: Sequence[str]) -> str:
    """``verdict.rst``, the report's first page: the title, the files judged against, the
    summary lines and each verdict's expectations, short (Snakemake's report centres its first
    page vertically, so a page taller than the window loses its top); the table is the report's
    Verdict item and verdict.md."""
    title = TITLE.format(run=run)
    out = [title, "=" * len(title), "",
           _rst(f"Judged against {', '.join(judged)} (config verdict.expected)."), ""]
    out += [f"- {_rst(line)}" for line in lines]
    for verdict, names in by_verdict(table).items():
        if names:
            out += ["", f"**{verdict.capitalize()}**: {_rst(', '.join(names))}."]
    unmeasured = table.filter(pl.col("verdict") == NOT_MEASURABLE)["note"].drop_nulls()
    reasons = list(dict.fromkeys(unmeasured.to_list()))
    if reasons:
        more = f"; and {len(reasons) - 3} more" if len(reasons) > 3 else ""
        out += ["", _rst(f"Why not measurable: {'; '.join(reasons[:3])}{more}.")]
    return "\n".join(out) + "\n"
