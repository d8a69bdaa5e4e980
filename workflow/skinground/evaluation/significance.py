"""Intervals on the evaluation summaries and paired tests of the paper's claims.

- :func:`median_intervals`: a bootstrap interval (over test patients, ``stats``)
  for every median of a summary (Fig. 4's per method x attribute, Fig. 5's per group x method
  x criterion).
- :func:`per_query`: one value per query and cell, the mean over its k retrieved images.
- :data:`paper_claims` / :func:`claim_tests`: the paper's statements about Fig. 4 as pairs of
  methods, each tested per attribute (or group) with a Wilcoxon signed-rank test, one-sided in
  each direction, Holm-corrected across the attributes; :func:`claims_summary` counts on how
  many attributes each holds significantly.

The paired unit of the tests (``stats.test_unit``): the test *patient* (config.yaml), the
mean over the patient's queries of each method's per-query value, so that the pairs are
independent (the split drew patients, and a patient's lesions are alike), as the patient
bootstrap's intervals are; or the *query*, every query its own pair (more pairs, but a
patient's queries are correlated, so its p-values are too small).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN
from skinground.evaluation import stats
from skinground.evaluation.claims import claim_pairs

#: The paired units ``stats.test_unit`` can name.
TEST_UNITS = ("patient", "query")


def patient_bootstrap(manifest: pl.DataFrame, test_ids: Sequence[str], replicates: int,
                   seed: int) -> stats.Bootstrap:
    """The bootstrap of a run's tables: resamples of the test split's patients (every table
    of a run draws the same replicates from the same config)."""
    patients = manifest.filter(pl.col(ID_COLUMN).is_in(list(test_ids)))[PATIENT_COLUMN]
    return stats.Bootstrap.draw(patients.to_list(), replicates, seed)


def patient_codes(boot: stats.Bootstrap, manifest: pl.DataFrame,
                  ids: pl.Series) -> np.ndarray:
    """Each image id's patient as an index into ``boot.patients``."""
    owner = dict(zip(manifest[ID_COLUMN].to_list(), manifest[PATIENT_COLUMN].to_list(),
                     strict=True))
    try:
        return boot.codes([owner[i] for i in ids.to_list()])
    except KeyError as err:
        raise KeyError(f"image {err.args[0]!r} is not in the manifest") from None


def median_intervals(summary: pl.DataFrame, table: pl.DataFrame, by: Sequence[str],
                     value: str, boot: stats.Bootstrap, codes: np.ndarray,
                     confidence: float, *, prefix: str = "median") -> pl.DataFrame:
    """``summary`` (one row per ``by`` cell) with ``<prefix>_lo`` / ``<prefix>_hi``: the
    bootstrap interval of the median of ``table[value]`` in each cell. ``codes``: the
    patient of each row of ``table`` (its query's)."""
    keys = list(by)
    cells = table.select(keys).with_row_index("_row")
    rows = []
    for key, part in cells.group_by(keys, maintain_order=True):
        idx = part["_row"].to_numpy()
        reps = stats.bootstrap_median(boot, codes[idx], table[value].to_numpy()[idx])
        lo, hi = stats.interval(reps, confidence)
        rows.append({**dict(zip(keys, key, strict=True)), f"{prefix}_lo": lo,
                     f"{prefix}_hi": hi})
    schema = {**{k: table.schema[k] for k in keys}, f"{prefix}_lo": pl.Float64,
              f"{prefix}_hi": pl.Float64}
    intervals = pl.DataFrame(rows, schema=schema)
    out = summary.join(intervals, on=keys, how="left", maintain_order="left")
    median_at = out.columns.index(prefix) + 1 if prefix in out.columns else len(out.columns)
    order = [c for c in out.columns if c not in (f"{prefix}_lo", f"{prefix}_hi")]
    order[median_at:median_at] = [f"{prefix}_lo", f"{prefix}_hi"]
    return out.select(order)


def per_query(table: pl.DataFrame, by: Sequence[str], value: str) -> pl.DataFrame:
    """The mean of ``value`` over each query's retrieved images, per ``by`` cell and
    ``method`` (null where none of them has a value)."""
    return table.group_by(*by, "method", "query_id").agg(pl.col(value).mean())


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A statement of the paper about two methods: ``better`` retrieves closer values than
    ``than`` (kind "better"), or is not worse than it (kind "no_worse")."""

    better: str
    than: str
    kind: str
    statement: str

    @property
    def name(self) -> str:
        return f"{self.better} vs {self.than}"


def in_order(present: Iterable[str], order: Iterable[str]) -> list[str]:
    """The ``present`` methods in ``order`` (the config's: the titles' keys), any others
    after them by name: so that a run's claims come in the same order every time (a table's
    unique values do not)."""
    present, order = set(present), list(order)
    return [m for m in order if m in present] + sorted(present - set(order))


def paper_claims(methods: Iterable[str], titles: Mapping[str, str]) -> list[Claim]:
    """The paper's claims about Fig. 4 among ``methods`` (``claims.claim_pairs``: a claim needs
    both of its methods), each with its statement. ``titles``: method -> its legend."""

    def t(m):
        return titles.get(m, m)

    verbs = {"better": "retrieves closer values than", "no_worse": "does not lower the quality of"}
    return [Claim(first, second, kind, f"{t(first)} {verbs[kind]} {t(second)}")
            for first, second, kind in claim_pairs(list(methods))]


def group_claims(methods: Iterable[str], titles: Mapping[str, str]) -> list[Claim]:
    """The claims of multi-attribute retrieval (Fig. 5) among ``methods``: the composed
    h_im,G (f) beats image-only (c), the fused spaces (g), reciprocal-rank fusion (h) and
    random images; the hierarchical composed (f') is no worse than (f)."""
    present = list(methods)

    def t(m):
        return titles.get(m, m)

    claims = [Claim("composed", other, "better",
                    f"{t('composed')} retrieves closer values than {t(other)}")
              for other in ("image_only", "fused", "rrf", "random")]
    claims.append(Claim("composed_hierarchical", "composed", "no_worse",
                        f"{t('composed_hierarchical')} does not lower the quality of "
                        f"{t('composed')}"))
    return _present(claims, present)


def _present(claims: list[Claim], methods: list[str]) -> list[Claim]:
    return [c for c in claims if c.better in methods and c.than in methods]


TEST_COLUMNS = {"claim": pl.String, "better": pl.String, "than": pl.String,
                "unit": pl.String, "n": pl.Int64, "median_difference": pl.Float64,
                "p_less": pl.Float64, "p_greater": pl.Float64, "p_less_holm": pl.Float64,
                "p_greater_holm": pl.Float64, "verdict": pl.String}


def paired(queries: pl.DataFrame, claim: Claim, by: Sequence[str], value: str,
           patients: pl.DataFrame | None = None) -> pl.DataFrame:
    """The pairs of a claim's test per ``by`` cell: ``value`` (``better``'s) and
    ``value_than``, for every query both methods have a finite value on; with ``patients``
    (query_id -> patient_id), one pair per patient instead: the means over those queries of
    the patient. Column ``pair``: the query's or the patient's id."""
    keys = list(by)
    than = f"{value}_than"
    pairs = (queries.filter(pl.col("method") == claim.better).drop("method")
             .join(queries.filter(pl.col("method") == claim.than).drop("method"),
                   on=[*keys, "query_id"], suffix="_than")
             .filter(pl.col(value).is_not_null() & pl.col(value).is_finite()
                     & pl.col(than).is_not_null() & pl.col(than).is_finite()))
    if patients is None:
        return pairs.rename({"query_id": "pair"}).select(*keys, "pair", value, than)
    joined = pairs.join(patients.rename({ID_COLUMN: "query_id", PATIENT_COLUMN: "pair"}),
                        on="query_id", how="left")
    missing = joined.filter(pl.col("pair").is_null())["query_id"]
    if len(missing):
        raise KeyError(f"image {missing[0]!r} is not in the manifest")
    # each patient's values summed in sorted order: the same bits whatever order polars'
    # parallel group_by meets the rows in (a last-bit difference decides whether two patients'
    # differences tie, or one is zero, and so the Wilcoxon p-value)
    return (joined.group_by(*keys, "pair")
            .agg(pl.col(value).sort().mean(), pl.col(than).sort().mean())
            .select(*keys, "pair", value, than))


def claim_tests(queries: pl.DataFrame, claims: Sequence[Claim], by: Sequence[str],
                value: str, alpha: float, *,
                patients: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every claim on every ``by`` cell (an attribute; a group and criterion): the pairs of
    its two methods (:func:`paired`: per query, or per patient with ``patients``), a Wilcoxon
    signed-rank test that ``better`` is lower (p_less) and one that it is higher (p_greater),
    each Holm-corrected across the claim's cells. verdict: "better" / "worse" (Holm p below
    ``alpha``) or "n.s.". ``queries``: :func:`per_query`'s frame. ``unit``: the cell's ``by``
    values joined by "/"; ``n``: its pairs."""
    keys = list(by)
    rows = []
    for claim in claims:
        pair = paired(queries, claim, keys, value, patients)
        tests = []
        for key, part in pair.sort([*keys, "pair"]).group_by(keys, maintain_order=True):
            x, y = part[value].to_numpy(), part[f"{value}_than"].to_numpy()
            less, greater = stats.wilcoxon(x, y, "less"), stats.wilcoxon(x, y, "greater")
            tests.append(("/".join(map(str, key)), less, greater.pvalue))
        p_less = stats.holm([t[1].pvalue for t in tests])
        p_greater = stats.holm([t[2] for t in tests])
        for (unit, less, greater), pl_h, pg_h in zip(tests, p_less, p_greater, strict=True):
            verdict = ("better" if pl_h < alpha else "worse" if pg_h < alpha else "n.s.")
            rows.append({"claim": claim.name, "better": claim.better, "than": claim.than,
                         "unit": unit, "n": less.n, "median_difference": less.median_difference,
                         "p_less": less.pvalue, "p_greater": greater, "p_less_holm": pl_h,
                         "p_greater_holm": pg_h, "verdict": verdict})
    return pl.DataFrame(rows, schema=TEST_COLUMNS)


def claims_summary(tests: pl.DataFrame, claims: Sequence[Claim]) -> pl.DataFrame:
    """Per claim: the cells tested, on how many the first method is significantly better,
    significantly worse, or neither, and on how many the claim holds: significantly better
    (kind "better"), or not significantly worse (kind "no_worse")."""
    rows = []
    for claim in claims:
        verdicts = tests.filter(pl.col("claim") == claim.name)["verdict"].to_list()
        better, worse = verdicts.count("better"), verdicts.count("worse")
        holds = better if claim.kind == "better" else len(verdicts) - worse
        rows.append({"claim": claim.name, "statement": claim.statement, "kind": claim.kind,
                     "tested": len(verdicts), "holds": holds, "better": better,
                     "worse": worse, "not_significant": verdicts.count("n.s.")})
    return pl.DataFrame(rows, schema={"claim": pl.String, "statement": pl.String,
                                      "kind": pl.String, "tested": pl.Int64,
                                      "holds": pl.Int64, "better": pl.Int64,
                                      "worse": pl.Int64, "not_significant": pl.Int64})


@dataclass(frozen=True)
class Tested:
    """An evaluation's summary with its intervals, its per-cell paired tests and the claims'
    counts."""

    summary: pl.DataFrame
    tests: pl.DataFrame
    claims: pl.DataFrame


def tested_evaluation(table: pl.DataFrame, summary: pl.DataFrame, by: Sequence[str],
                      value: str, claims: Sequence[Claim], boot: stats.Bootstrap,
                      manifest: pl.DataFrame, *, confidence: float, alpha: float,
                      unit: str) -> Tested:
    """Intervals on ``summary``'s medians (cells ``by`` + method) and the claims' tests on
    the per-query means of ``table[value]``, paired per ``unit`` (:data:`TEST_UNITS`)."""
    if unit not in TEST_UNITS:
        raise ValueError(f"stats.test_unit: {unit!r} is not one of {', '.join(TEST_UNITS)}")
    codes = patient_codes(boot, manifest, table["query_id"])
    with_ci = median_intervals(summary, table, [*by, "method"], value, boot, codes,
                               confidence)
    patients = manifest.select(ID_COLUMN, PATIENT_COLUMN) if unit == "patient" else None
    tests = claim_tests(per_query(table, by, value), claims, by, value, alpha,
                        patients=patients)
    return Tested(with_ci, tests, claims_summary(tests, claims))
