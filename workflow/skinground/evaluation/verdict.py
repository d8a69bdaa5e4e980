"""The verdict: did the run reproduce what it is judged against? Each expectation of config
``verdict.expected``'s files (``evaluation.expected``) measured on the run's own outputs, with
its test, and judged "held", "not held" or "not measurable here".

One row per expectation and unit (:data:`COLUMNS`): the unit is an attribute (Fig. 2's floor,
Fig. 4's orderings: a row per pair of methods), a scope (Fig. 3's queries, all test queries)
or ``all``, the expectation's own row, which every expectation has (for one judged per
attribute: on how many it holds). How each kind is judged:

- ``count``: the run's number equals the expected one, within the file's relative tolerance.
  A count of the data is not measurable on other data than SLICE-3D's whole (the demo's
  synthetic set, a pilot's sample of patients): :attr:`Facts.data_caveat`.
- ``r2_floor``: held where the bootstrap interval's lower bound of the tuned model's R² (Fig.
  2's: unparsable answers at the train mean) is at or above the floor.
- ``ordering``: the evaluation's paired test of the pair on the attribute
  (``evaluate/paired_tests.csv``: Wilcoxon signed-rank, one-sided, Holm across the attributes):
  "better" holds where the first method is significantly better; "no_worse" where it is not
  significantly worse, and is not measurable where there are too few pairs for the test to
  find it worse at all (Holm's smallest p-value, m / 2^n, not below alpha): a claim is never
  held by a test that cannot reject it. A method the run does not retrieve with is not
  measurable.
- ``far_off`` (``evaluation.far_off``): on Fig. 3's queries, held where the first method
  retrieves at least one far-off image and the second none (the paper's words; counted, no
  test); on all test queries, held where the second's per-query shares are significantly lower.
- ``median_count`` / ``r2_count`` (the demo's targets): a count of attributes at least the
  target (no test).

An expectation's own row: "not held" where any of its units is not held, else "not measurable
here" where any is not measurable, else "held".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from skinground.evaluation.expected import DATA_MEASURES
from skinground.evaluation.far_off import FarOff

HELD, NOT_HELD, NOT_MEASURABLE = "held", "not held", "not measurable here"
VERDICTS = (HELD, NOT_HELD, NOT_MEASURABLE)
#: The unit of an expectation's own row.
ALL = "all"
COLUMNS = {"expectation": pl.String, "file": pl.String, "group": pl.String,
           "source": pl.String, "statement": pl.String, "unit": pl.String,
           "comparison": pl.String, "expected": pl.String, "measured": pl.String,
           "value": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "test": pl.String,
           "p": pl.Float64, "verdict": pl.String, "note": pl.String}


@dataclass(frozen=True)
class Facts:
    """What the verdict reads of a run. ``attributes``: column -> label, in config order;
    ``titles``: method -> legend ("(a) Image + Text"); ``counts``: every measure of
    ``expected.ENUMS["measures"]`` the run has; ``data_caveat``: why the run's data counts are
    not SLICE-3D's (None: they are); ``r2``: the tuned rows of ``predict/r2.csv``;
    ``summary`` / ``tests``: ``evaluate/summary.csv`` and ``evaluate/paired_tests.csv``;
    ``far_off``: expectation id -> its measures, or why it is not measurable here;
    ``unit``: the tests' paired unit (``stats.test_unit``)."""

    attributes: Mapping[str, str]
    methods: Sequence[str]
    titles: Mapping[str, str]
    counts: Mapping[str, int]
    data_caveat: str | None
    r2: pl.DataFrame
    summary: pl.DataFrame
    tests: pl.DataFrame
    confidence: float
    alpha: float
    unit: str
    far_off: Mapping[str, FarOff | str] = field(default_factory=dict)

    def title(self, method: str) -> str:
        return self.titles.get(method, method)


def combine(verdicts: Sequence[str]) -> str:
    """An expectation's verdict from its units': any not held, else any not measurable."""
    if NOT_HELD in verdicts:
        return NOT_HELD
    return NOT_MEASURABLE if NOT_MEASURABLE in verdicts or not verdicts else HELD


def _row(e: Mapping, **fields) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(expectation=e["id"], file=e["file"], group=e.get("group"), source=e["source"],
               statement=" ".join(e["statement"].split()), unit=ALL, comparison="")
    row.update(fields)
    return row


def _number(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def count_rows(e: Mapping, f: Facts) -> list[dict]:
    tolerance, expected = e.get("tolerance", 0), e["value"]
    shown = _number(expected) + (f" ± {tolerance:.1%}" if tolerance else "")
    test = f"within {tolerance:.1%} of it" if tolerance else "equal"
    value = f.counts.get(e["measure"])
    if value is None:
        return [_row(e, expected=shown, measured="—", test=test, verdict=NOT_MEASURABLE,
                     note=f"the run has no {e['measure']}")]
    if e["measure"] in DATA_MEASURES and f.data_caveat:
        return [_row(e, expected=shown, measured=_number(value), value=value, test=test,
                     verdict=NOT_MEASURABLE, note=f.data_caveat)]
    held = abs(value - expected) <= tolerance * expected
    return [_row(e, expected=shown, measured=_number(value), value=value, test=test,
                 verdict=HELD if held else NOT_HELD)]


def _by_attribute(e: Mapping, f: Facts, units: list[dict]) -> list[dict]:
    """``units`` (per attribute) and the expectation's own row: on how many attributes every
    unit of the attribute holds."""
    per = {a: combine([u["verdict"] for u in units if u["unit"] == a]) for a in f.attributes}
    held = sum(v == HELD for v in per.values())
    unmeasured = sum(v == NOT_MEASURABLE for v in per.values())
    measured = f"held on {held}/{len(per)} attributes" + (
        f", {unmeasured} not measurable" if unmeasured else "")
    test = units[0]["test"] if units else ""
    own = _row(e, expected=_expected_all(e, f), measured=measured, value=held, test=test,
               verdict=combine(list(per.values())))
    return [own, *units]


def _expected_all(e: Mapping, f: Facts) -> str:
    if e["kind"] == "r2_floor":
        return f"R² ≥ {e['floor']} on every attribute"
    pairs = "; ".join(f"{f.title(a)} {_relation(e['claim'])} {f.title(b)}" for a, b in e["pairs"])
    return f"on every attribute: {pairs}"


def _relation(claim: str) -> str:
    return "better than" if claim == "better" else "no worse than"


def r2_floor_rows(e: Mapping, f: Facts) -> list[dict]:
    floor = e["floor"]
    test = f"the {f.confidence:.0%} bootstrap interval's lower bound ≥ {floor}"
    table = {r["attribute"]: r for r in f.r2.iter_rows(named=True)}
    units = []
    for a in f.attributes:
        r = table.get(a)
        if r is None or r["r2_filled_lo"] is None or not math.isfinite(r["r2_filled_lo"]):
            units.append(_row(e, unit=a, expected=f"≥ {floor}", measured="—", test=test,
                              verdict=NOT_MEASURABLE, note="no R² with an interval"))
            continue
        value, lo, hi = r["r2_filled"], r["r2_filled_lo"], r["r2_filled_hi"]
        units.append(_row(e, unit=a, expected=f"≥ {floor}",
                          measured=f"{value:.3f} [{lo:.3f}, {hi:.3f}]", value=value, lo=lo,
                          hi=hi, test=test, verdict=HELD if lo >= floor else NOT_HELD))
    return _by_attribute(e, f, units)


def _median(f: Facts, method: str, attribute: str) -> dict | None:
    rows = f.summary.filter((pl.col("method") == method) & (pl.col("attribute") == attribute))
    return rows.row(0, named=True) if rows.height else None


def _test_text(f: Facts, claim: str, tested: int) -> str:
    unit = "test patient" if f.unit == "patient" else "query"
    side = "better" if claim == "better" else "worse"
    return (f"Wilcoxon signed-rank per {unit}, one-sided ({side}), Holm over {tested} "
            f"attributes, α = {f.alpha}")


def ordering_rows(e: Mapping, f: Facts) -> list[dict]:
    claim, units = e["claim"], []
    for first, second in e["pairs"]:
        name = f"{first} vs {second}"
        tests = f.tests.filter(pl.col("claim") == name)
        test = _test_text(f, claim, tests.height)
        missing = [m for m in (first, second) if m not in f.methods]
        by_unit = {r["unit"]: r for r in tests.iter_rows(named=True)}
        for a in f.attributes:
            base = dict(unit=a, comparison=name,
                        expected=f"{f.title(first)} {_relation(claim)} {f.title(second)}",
                        test=test)
            if missing:
                units.append(_row(e, **base, measured="—", verdict=NOT_MEASURABLE,
                                  note=f"{' and '.join(missing)} not among retrieve.methods"))
                continue
            t = by_unit.get(a)
            if t is None:
                raise ValueError(f"evaluate/paired_tests.csv has no test of {name} on {a}")
            medians = [_median(f, m, a) for m in (first, second)]
            measured = " vs ".join(f"{m['median']:.1f} [{m['median_lo']:.1f}, {m['median_hi']:.1f}]"
                                   for m in medians if m is not None)
            if claim == "better":
                p, held = t["p_less_holm"], t["verdict"] == "better"
                verdict, note = (HELD if held else NOT_HELD), None
            else:
                p = t["p_greater_holm"]
                smallest = tests.height * 0.5 ** t["n"]
                if t["verdict"] == "worse":
                    verdict, note = NOT_HELD, None
                elif smallest >= f.alpha:
                    verdict = NOT_MEASURABLE
                    note = (f"{t['n']} pairs: the test cannot find it worse at α = {f.alpha} "
                            f"(smallest Holm p {smallest:.2g})")
                else:
                    verdict, note = HELD, None
            units.append(_row(e, **base, measured=f"median percentile {measured}",
                              value=t["median_difference"], p=p, verdict=verdict, note=note))
    return _by_attribute(e, f, units)


def far_off_rows(e: Mapping, f: Facts) -> list[dict]:
    first, second = e["method"], e["than"]
    comparison = f"{first} vs {second}"
    measures = f.far_off.get(e["id"])
    scopes = ("Fig. 3's queries", "all test queries")
    if not isinstance(measures, FarOff):
        note = measures or "not measured"
        units = [_row(e, unit=s, comparison=comparison, measured="—", verdict=NOT_MEASURABLE,
                      note=note) for s in scopes]
        return [_row(e, expected=_far_expected(e, f), measured="—",
                     verdict=NOT_MEASURABLE, note=note), *units]
    fig = measures.figure
    shown = "; ".join(f"{f.title(m)} {fig[m].far} of {fig[m].retrieved}" for m in (first, second))
    held = fig[first].far > 0 and fig[second].far == 0
    figure = _row(e, unit=scopes[0], comparison=comparison,
                  expected=f"{f.title(first)} some far-off images, {f.title(second)} none",
                  measured=f"far-off retrieved images: {shown}", value=fig[first].far,
                  test=f"counted on the figure's {len(measures.queries)} queries (no test)",
                  verdict=HELD if held else NOT_HELD,
                  note=f"far off: farther than the train IQR, {measures.iqr:.3g}")
    s, t = measures.shares, measures.test
    shown = "; ".join(f"{f.title(m)} {s[m].share:.1%} [{s[m].lo:.1%}, {s[m].hi:.1%}]"
                      for m in (first, second))
    unit = "test patient" if f.unit == "patient" else "query"
    every = _row(e, unit=scopes[1], comparison=comparison,
                 expected=f"{f.title(second)} fewer far-off images than {f.title(first)}",
                 measured=f"share far off: {shown}", value=s[first].share - s[second].share,
                 test=(f"Wilcoxon signed-rank of the per-query shares per {unit}, one-sided, "
                       f"α = {f.alpha}"),
                 p=t["p_less_holm"], verdict=HELD if t["verdict"] == "better" else NOT_HELD)
    units = [figure, every]
    verdict = combine([u["verdict"] for u in units])
    held_n = sum(u["verdict"] == HELD for u in units)
    return [_row(e, expected=_far_expected(e, f), measured=f"held on {held_n}/2 scopes",
                 value=held_n, test="both scopes", verdict=verdict), *units]


def _far_expected(e: Mapping, f: Facts) -> str:
    label = f.attributes.get(e["attribute"], e["attribute"])
    return (f"{f.title(e['method'])} retrieves images far off in {label}; "
            f"{f.title(e['than'])} does not")


def median_count_rows(e: Mapping, f: Facts) -> list[dict]:
    first, second, target = e["method"], e["than"], e["at_least"]
    expected = f"≥ {target} of {len(f.attributes)} attributes"
    missing = [m for m in (first, second) if m not in f.methods]
    if missing:
        return [_row(e, comparison=f"{first} vs {second}", expected=expected, measured="—",
                     verdict=NOT_MEASURABLE,
                     note=f"{' and '.join(missing)} not among retrieve.methods")]
    count = 0
    for a in f.attributes:
        m1, m2 = _median(f, first, a), _median(f, second, a)
        count += m1 is not None and m2 is not None and m1["median"] < m2["median"]
    return [_row(e, comparison=f"{first} vs {second}", expected=expected,
                 measured=f"{count}/{len(f.attributes)}", value=count,
                 test="attributes where the first median percentile is lower (no test)",
                 verdict=HELD if count >= target else NOT_HELD)]


def r2_count_rows(e: Mapping, f: Facts) -> list[dict]:
    threshold, strict, target = e["threshold"], e["strict"], e["at_least"]
    values = dict(zip(f.r2["attribute"], f.r2["r2_filled"], strict=True))
    count = sum(a in values and values[a] is not None
                and (values[a] > threshold if strict else values[a] >= threshold)
                for a in f.attributes)
    sign = ">" if strict else "≥"
    return [_row(e, expected=f"≥ {target} of {len(f.attributes)} attributes",
                 measured=f"{count}/{len(f.attributes)}", value=count,
                 test=f"attributes whose tuned R² {sign} {threshold} (no test)",
                 verdict=HELD if count >= target else NOT_HELD)]


KINDS = {"count": count_rows, "r2_floor": r2_floor_rows, "ordering": ordering_rows,
         "far_off": far_off_rows, "median_count": median_count_rows,
         "r2_count": r2_count_rows}


def judge(expectations: Sequence[Mapping], facts: Facts) -> pl.DataFrame:
    """Every expectation measured and judged: :data:`COLUMNS`, each expectation's own row
    (unit ``all``) first, then its units."""
    rows = [row for e in expectations for row in KINDS[e["kind"]](e, facts)]
    return pl.DataFrame(rows, schema=COLUMNS)


def own_rows(table: pl.DataFrame) -> pl.DataFrame:
    """Each expectation's own row (unit ``all``)."""
    return table.filter(pl.col("unit") == ALL)


def group_holds(table: pl.DataFrame, attributes: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per group: its expectations, and on how many ``attributes`` every one of them holds
    (each of its units on the attribute held)."""
    out = {}
    grouped = table.filter(pl.col("group").is_not_null() & (pl.col("unit") != ALL))
    for (group,), part in grouped.group_by("group", maintain_order=True):
        ids = part["expectation"].unique().to_list()
        out[group] = (len(ids), sum(
            all(combine(part.filter((pl.col("expectation") == i) & (pl.col("unit") == a))
                        ["verdict"].to_list()) == HELD for i in ids)
            for a in attributes))
    return out


def summary_lines(table: pl.DataFrame, attributes: Sequence[str],
                  files: Mapping[str, str]) -> list[str]:
    """The verdict in a few lines: per file (``files``: its name -> its path), how many of its
    expectations hold; per group, on how many attributes all of it holds."""
    lines = []
    own = own_rows(table)
    for name, path in files.items():
        verdicts = own.filter(pl.col("file") == name)["verdict"].to_list()
        parts = [f"{verdicts.count(v)} {v}" for v in VERDICTS if verdicts.count(v)]
        lines.append(f"Against {path}: {', '.join(parts)} (of {len(verdicts)} expectations).")
    for group, (n, held) in group_holds(table, attributes).items():
        lines.append(f"{group}: all {n} of its expectations hold on {held}/{len(attributes)} "
                     "attributes.")
    return lines
