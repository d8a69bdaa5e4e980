"""Reading SLICE-3D's metadata table (``train-metadata.csv``, polars): one row per image,
``isic_id``, ``patient_id``, ``target`` and the numeric ``tbp_lv_*`` measurements.

Missing attribute values. SLICE-3D leaves some measurements empty and writes 0 for others
that could not be measured. A value is *missing* when it is empty/NaN, or when it is exactly
0 and its column is listed in ``data.zero_is_missing``. Missing values become nulls in the
manifest; the (image, attribute) pair is then excluded from tuple sampling and evaluation,
and the counts are written to the data report and the log.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from skinground.core.errors import InputError
from skinground.data.attributes import (
    ID_COLUMN,
    MISSING_ID_SPELLINGS,
    NON_NEGATIVE,
    PATIENT_COLUMN,
    TARGET_COLUMN,
)

log = logging.getLogger(__name__)

#: How many offending ids or rows an error message names before it summarises.
SHOW = 5


class DataError(InputError):
    """Bad input data: the message names the file and the column, row or id."""


def preview(items: list) -> str:
    shown = ", ".join(str(i) for i in items[:SHOW])
    return shown + (f", ... ({len(items)} in all)" if len(items) > SHOW else f" ({len(items)})")


# --------------------------------------------------------------------------- metadata


def _stray_quote(line: str, quoted: bool) -> tuple[int | None, bool]:
    """Scan one line of CSV text (``quoted``: a quoted field is open at its start): the
    column of a double quote inside an unquoted field (``pa"t``, which csv readers take
    differently), or None; and whether a quoted field goes on past the line's end. Jumps
    from quote to quote, so a line without one costs a single ``find``."""
    i = 0
    while (j := line.find('"', i)) >= 0:
        if quoted:
            if line.startswith('"', j + 1):  # an escaped "" inside the quoted field
                i = j + 2
                continue
            quoted = False
        elif j > 0 and line[j - 1] != ",":
            return j + 1, quoted
        else:
            quoted = True
        i = j + 1
    return None, quoted


def check_csv_shape(path: Path) -> None:
    """The file is a CSV the reader will take as it is meant: UTF-8, LF or CRLF line
    endings, no repeated column names, quotes balanced and only around whole fields, every
    record with the header's number of fields, and a newline at the end (a download cut
    mid-line: the last record short, or a value cut without its newline). Else DataError
    naming the file and the line."""
    quoted = False
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: line {n} is not UTF-8 text (byte "
                                f"{line[err.start]:#04x} at column {err.start + 1})") from None
            if b"\r" in line.rstrip(b"\r\n") or (line.endswith(b"\r") and n == 1):
                raise DataError(f"{path}: line {n} ends with a bare CR (old Mac line "
                                "endings): convert the file to LF or CRLF line endings")
            was_quoted = quoted
            column, quoted = _stray_quote(text, quoted)
            if column is not None:
                raise DataError(f"{path}: line {n}, column {column}: a double quote inside an "
                                "unquoted field")
            if quoted and not was_quoted:
                opened = n
    if quoted:
        raise DataError(f"{path}: line {opened} opens a double-quoted field that never "
                        "closes (a stray quote, or a cut file)")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise DataError(f"{path}: empty file")
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:
                raise DataError(f"{path}: column(s) {', '.join(repeated)} appear more than "
                                "once in the header")
            for record in reader:
                if len(record) != len(header):
                    raise DataError(
                        f"{path}: line {reader.line_num} has {len(record)} field(s), the "
                        f"header {len(header)} (a cut or damaged file? re-download it)")
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: {err} (an unbalanced or stray "
                            "double quote?)") from None
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 1))
        if size and f.read(1) != b"\n":
            raise DataError(f"{path}: the last line ({reader.line_num}) does not end with a "
                            "newline: the file looks cut (re-download it)")


def _read_csv(path: Path, **kwargs) -> pl.DataFrame:
    """polars' reader, its errors as DataError naming the file (check_csv_shape has
    already refused what we know it misreads)."""
    try:
        return pl.read_csv(path, **kwargs)
    except pl.exceptions.PolarsError as err:
        raise DataError(f"{path}: not readable as CSV ({str(err).splitlines()[0]})") from None


def read_metadata(
    csv_path: str | Path,
    attributes: Iterable[str],
    zero_is_missing: Iterable[str] = (),
) -> tuple[pl.DataFrame, dict]:
    """Read ``train-metadata.csv`` into the manifest: ids, patient, target and attributes.

    Returns the frame (attribute columns Float64, null = missing) and a report with the
    missing-value counts per attribute. Raises :class:`DataError` naming the file and the
    column/row/id for: a missing column, an empty id or patient, a duplicated ``isic_id``
    (after trimming spaces), a non-numeric or infinite attribute value, a target not 0 or 1.
    """
    path = Path(csv_path)
    attributes = list(attributes)
    zero_is_missing = set(zero_is_missing)
    if not path.is_file():
        raise DataError(f"metadata file not found: {path}")
    check_csv_shape(path)
    wanted = [ID_COLUMN, PATIENT_COLUMN, TARGET_COLUMN, *attributes]
    header = _read_csv(path, n_rows=0).columns
    missing_cols = [c for c in wanted if c not in header]
    if missing_cols:
        raise DataError(f"{path}: missing column(s) {', '.join(missing_cols)}")

    # Read the needed columns as text, then convert with our own checks, so that a bad
    # cell is reported by column and line instead of a parser's type-inference error.
    raw = _read_csv(
        path, columns=wanted, schema_overrides={c: pl.String for c in wanted},
        infer_schema=False,
    ).with_row_index("_line", offset=2)  # line 1 is the header

    for col in (ID_COLUMN, PATIENT_COLUMN):
        text = pl.col(col).str.strip_chars()
        empty = raw.filter(pl.col(col).is_null() | (text == ""))
        if empty.height:
            raise DataError(f"{path}: empty {col} on line(s) {preview(empty['_line'].to_list())}")
        missing = raw.filter(text.str.to_lowercase().is_in(list(MISSING_ID_SPELLINGS)))
        if missing.height:
            examples = [f"line {ln}: {v!r}" for ln, v in missing.select("_line", col).iter_rows()]
            raise DataError(f"{path}: {col} spelled as a missing value: {preview(examples)}; "
                            f"those rows would become one {col}: give each its real id")

    # Ids are compared as they are used: trimmed (" ISIC_1 " is ISIC_1, the same image).
    raw = raw.with_columns(pl.col(ID_COLUMN).str.strip_chars(),
                           pl.col(PATIENT_COLUMN).str.strip_chars())
    dup = raw.group_by(ID_COLUMN).len().filter(pl.col("len") > 1).sort(ID_COLUMN)
    if dup.height:
        raise DataError(f"{path}: duplicated {ID_COLUMN} {preview(dup[ID_COLUMN].to_list())}")

    numeric = [TARGET_COLUMN, *attributes]
    for col in numeric:
        text = pl.col(col).str.strip_chars()
        blank = text.is_null() | text.str.to_lowercase().is_in(["", "nan", "na"])
        bad = raw.filter(text.cast(pl.Float64, strict=False).is_null() & ~blank)
        if bad.height:
            examples = [f"line {ln}: {v!r}" for ln, v in bad.select("_line", col).iter_rows()]
            raise DataError(f"{path}: non-numeric value in column {col}: {preview(examples)}")
    frame = raw.with_columns(
        pl.col(c).str.strip_chars().cast(pl.Float64, strict=False) for c in numeric
    )
    for col in attributes:  # inf, -inf, 1e400: no measurement is infinite
        infinite = frame.filter(pl.col(col).is_infinite())
        if infinite.height:
            examples = [f"line {ln}: {v!r}"
                        for ln, v in raw.filter(pl.col("_line").is_in(infinite["_line"].to_list()))
                        .select("_line", col).iter_rows()]
            raise DataError(f"{path}: infinite value in column {col}: {preview(examples)}")
    for col in sorted(NON_NEGATIVE & set(attributes)):  # a length or area is never negative
        negative = frame.filter(pl.col(col) < 0)
        if negative.height:
            examples = [f"line {ln}: {v:g}" for ln, v in negative.select("_line", col).iter_rows()]
            raise DataError(f"{path}: negative value in column {col}, a length or area: "
                            f"{preview(examples)}")
    target = pl.col(TARGET_COLUMN)
    bad_target = frame.filter(target.is_null() | ~target.is_in([0.0, 1.0]))
    if bad_target.height:
        raise DataError(
            f"{path}: column {TARGET_COLUMN} must be 0 or 1, not on line(s) "
            f"{preview(bad_target['_line'].to_list())}"
        )

    report: dict = {"metadata": str(path), "images": frame.height, "missing": {}}
    for col in attributes:
        values = frame[col]
        n_nan = int(values.is_null().sum() + values.is_nan().sum())
        n_zero = int((values == 0).sum()) if col in zero_is_missing else 0
        report["missing"][col] = {"empty_or_nan": n_nan, "zero": n_zero, "total": n_nan + n_zero}
    frame = frame.with_columns(
        pl.when(pl.col(c).is_nan() | ((pl.col(c) == 0) & (c in zero_is_missing)))
        .then(None).otherwise(pl.col(c)).alias(c)
        for c in attributes
    )
    frame = frame.select(
        pl.col(ID_COLUMN).str.strip_chars(),
        pl.col(PATIENT_COLUMN).str.strip_chars(),
        pl.col(TARGET_COLUMN).cast(pl.Int8),
        *attributes,
    )
    empty = [c for c in attributes if frame[c].null_count() == frame.height]
    if empty and frame.height:
        raise DataError(f"{path}: no value at all in column(s) {', '.join(empty)} (empty, NaN "
                        "or a zero read as missing on every row): nothing to train or evaluate "
                        "on; drop them from attributes, or fix the export")
    report["patients"] = frame[PATIENT_COLUMN].n_unique()
    report["malignant"] = int(frame[TARGET_COLUMN].sum())
    for col, m in report["missing"].items():
        if m["total"]:
            log.info("%s: %d missing (%d empty/NaN, %d zero)", col, m["total"],
                     m["empty_or_nan"], m["zero"])
    return frame, report


def read_labels(csv_path: str | Path, columns: Sequence[str],
                ids: Iterable[str]) -> pl.DataFrame:
    """``isic_id`` and the metadata ``columns`` (as text; empty cells null, spaces trimmed)
    of the images ``ids``, from ``train-metadata.csv`` (already checked by
    :func:`read_metadata`). A column the file lacks is a DataError naming it."""
    path = Path(csv_path)
    header = _read_csv(path, n_rows=0).columns
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    wanted = list(dict.fromkeys([ID_COLUMN, *columns]))
    frame = _read_csv(path, columns=wanted, schema_overrides={c: pl.String for c in wanted},
                      infer_schema=False)
    text = [pl.col(c).str.strip_chars() for c in wanted]
    frame = frame.select(pl.when(t == "").then(None).otherwise(t).alias(c)
                         for t, c in zip(text, wanted, strict=True))
    keep = pl.Series(ID_COLUMN, list(ids), dtype=pl.String)
    return frame.filter(pl.col(ID_COLUMN).is_in(keep.implode())).sort(ID_COLUMN)
