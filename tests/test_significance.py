"""Intervals on the summaries, the claims' paired tests, and the diagnosis agreement."""

import numpy as np
import polars as pl
import pytest
from scipy import stats as scipy_stats

from skinground.evaluation import diagnosis, significance, stats


@pytest.fixture
def cohort():
    """30 test patients with 2 queries each, 6 train images; manifest with patients."""
    queries = [f"Q{i:03d}" for i in range(60)]
    train = [f"T{i}" for i in range(6)]
    manifest = pl.DataFrame({
        "isic_id": queries + train,
        "patient_id": [f"P{i // 2:02d}" for i in range(60)] + [f"R{i}" for i in range(6)],
    })
    return queries, train, manifest


def evaluation(queries, rng):
    """Percentiles for 3 methods x 2 attributes x k=2: image_text is better than image_only
    on "a1" and the same on "a2"; image_untuned is worst everywhere."""
    rows = []
    for attribute, gap in (("a1", 20.0), ("a2", 0.0)):
        for q in queries:
            base = rng.uniform(20, 60)
            for method, shift in (("image_text", -gap), ("image_only", 0.0),
                                  ("image_untuned", 25.0)):
                for rank in (1, 2):
                    rows.append({"method": method, "attribute": attribute, "query_id": q,
                                 "rank": rank, "percentile": base + shift + rng.normal(0, 3)})
    return pl.DataFrame(rows)


def test_median_intervals_are_the_bootstrap_of_each_cell(cohort):
    queries, _, manifest = cohort
    table = evaluation(queries, np.random.default_rng(0))
    boot = significance.patient_bootstrap(manifest, queries, 200, seed=0)
    assert len(boot.patients) == 30  # the test patients only
    summary = table.group_by("method", "attribute", maintain_order=True).agg(
        median=pl.col("percentile").median())
    codes = significance.patient_codes(boot, manifest, table["query_id"])
    out = significance.median_intervals(summary, table, ["method", "attribute"], "percentile",
                                        boot, codes, 0.9)
    assert out.columns == ["method", "attribute", "median", "median_lo", "median_hi"]
    for row in out.iter_rows(named=True):
        cell = table.filter((pl.col("method") == row["method"])
                            & (pl.col("attribute") == row["attribute"]))
        owner = significance.patient_codes(boot, manifest, cell["query_id"])
        values = cell["percentile"].to_numpy()
        brute = [np.median(np.repeat(values, counts[owner])) for counts in boot.counts]
        assert (row["median_lo"], row["median_hi"]) == stats.interval(brute, 0.9)
        assert row["median_lo"] <= row["median"] <= row["median_hi"]


def test_claims_are_tested_per_attribute_with_holm(cohort):
    queries, _, _ = cohort
    table = evaluation(queries, np.random.default_rng(1))
    titles = {"image_text": "(a) Image + Text", "image_only": "(c) Image"}
    claims = significance.paper_claims(["image_text", "image_only", "image_untuned"], titles)
    assert [c.name for c in claims] == ["image_text vs image_only",
                                        "image_text vs image_untuned",
                                        "image_only vs image_untuned"]  # (b) is absent
    assert claims[0].statement == "(a) Image + Text retrieves closer values than (c) Image"
    per_query = significance.per_query(table, ["attribute"], "percentile")
    tests = significance.claim_tests(per_query, claims, ["attribute"], "percentile", 0.05)
    first = tests.filter(pl.col("claim") == "image_text vs image_only")
    assert first["unit"].to_list() == ["a1", "a2"]
    assert first["verdict"].to_list()[0] == "better"
    assert first["verdict"].to_list()[1] != "better"
    # the p-values: scipy's test on the per-query means, then Holm over the two attributes
    raw = []
    for attribute in ("a1", "a2"):
        mean = {m: table.filter((pl.col("method") == m) & (pl.col("attribute") == attribute))
                .group_by("query_id").agg(pl.col("percentile").mean()).sort("query_id")
                ["percentile"].to_numpy() for m in ("image_text", "image_only")}
        raw.append(scipy_stats.wilcoxon(mean["image_text"], mean["image_only"],
                                        alternative="less").pvalue)
    assert first["p_less"].to_list() == pytest.approx(raw, rel=1e-12)
    expected = np.minimum(np.maximum.accumulate(np.sort(raw) * [2, 1]), 1)[np.argsort(
        np.argsort(raw))]
    assert first["p_less_holm"].to_list() == pytest.approx(expected.tolist(), rel=1e-12)
    summary = significance.claims_summary(tests, claims)
    assert summary.row(0, named=True)["holds"] == 1
    assert summary["tested"].to_list() == [2, 2, 2]
    assert summary.row(2, named=True)["holds"] == 2  # (c) beats (d) on both


def test_patient_pairs_are_the_means_over_each_patients_queries(cohort):
    """stats.test_unit: patient — one pair per test patient, the means over its queries on
    which both methods have a value; scipy's test on those means, Holm as before."""
    queries, _, manifest = cohort
    table = evaluation(queries, np.random.default_rng(3))
    # one query without image_only's value on a1: left out of its patient's means
    table = table.with_columns(percentile=pl.when(
        (pl.col("query_id") == "Q000") & (pl.col("method") == "image_only")
        & (pl.col("attribute") == "a1")).then(None).otherwise(pl.col("percentile")))
    claims = significance.paper_claims(["image_text", "image_only"], {})
    per_query = significance.per_query(table, ["attribute"], "percentile")
    patients = manifest.select("isic_id", "patient_id")
    tests = significance.claim_tests(per_query, claims, ["attribute"], "percentile", 0.05,
                                     patients=patients)
    assert tests["n"].to_list() == [30, 30]  # patients, not queries
    owner = dict(zip(manifest["isic_id"], manifest["patient_id"], strict=True))
    raw = []
    for attribute in ("a1", "a2"):
        means = {}
        for m in ("image_text", "image_only"):
            cell = table.filter((pl.col("method") == m) & (pl.col("attribute") == attribute))
            per_q = cell.group_by("query_id").agg(pl.col("percentile").mean())
            means[m] = dict(zip(per_q["query_id"], per_q["percentile"], strict=True))
        both = [q for q in queries if means["image_only"][q] is not None]
        by_patient = {}
        for q in both:
            by_patient.setdefault(owner[q], []).append(
                (means["image_text"][q], means["image_only"][q]))
        x = [np.mean([a for a, _ in v]) for _, v in sorted(by_patient.items())]
        y = [np.mean([b for _, b in v]) for _, v in sorted(by_patient.items())]
        if attribute == "a1":  # P00's pair is its one remaining query, Q001
            assert x[0] == means["image_text"]["Q001"] and y[0] == means["image_only"]["Q001"]
        raw.append(scipy_stats.wilcoxon(x, y, alternative="less").pvalue)
    assert tests["p_less"].to_list() == pytest.approx(raw, rel=1e-12)
    assert tests["verdict"].to_list()[0] == "better"


def test_a_patients_many_queries_are_one_pair(cohort):
    """Three patients with 20 queries each, every query shifted the same way: per query the
    shift is significant; per patient three pairs cannot be (the exact one-sided p of three
    pairs is at least 1/8)."""
    queries, _, _ = cohort
    table = evaluation(queries, np.random.default_rng(4))
    manifest = pl.DataFrame({"isic_id": queries,
                             "patient_id": [f"P{i // 20}" for i in range(60)]})
    claims = significance.paper_claims(["image_text", "image_only"], {})
    per_query = significance.per_query(table, ["attribute"], "percentile")
    by_query = significance.claim_tests(per_query, claims, ["attribute"], "percentile", 0.05)
    by_patient = significance.claim_tests(per_query, claims, ["attribute"], "percentile", 0.05,
                                          patients=manifest)
    assert by_query["verdict"][0] == "better" and by_query["n"][0] == 60
    assert by_patient["verdict"][0] == "n.s." and by_patient["n"][0] == 3
    assert by_patient["p_less"][0] == pytest.approx(1 / 8)
    with pytest.raises(KeyError, match="Q059"):
        significance.claim_tests(per_query, claims, ["attribute"], "percentile", 0.05,
                                 patients=manifest.head(59))
    with pytest.raises(ValueError, match="stats.test_unit: 'image'"):
        significance.tested_evaluation(table, table, ["attribute"], "percentile", claims,
                                       significance.patient_bootstrap(manifest, queries, 100,
                                                                      0),
                                       manifest, confidence=0.9, alpha=0.05, unit="image")


def test_a_no_worse_claim_holds_where_it_is_not_significantly_worse(cohort):
    queries, _, _ = cohort
    table = evaluation(queries, np.random.default_rng(2)).with_columns(
        method=pl.col("method").replace({"image_only": "hierarchical"}))
    # hierarchical (old image_only) vs image_text: worse on a1, the same on a2
    claims = significance.paper_claims(["image_text", "hierarchical"], {})
    assert [(c.name, c.kind) for c in claims] == [("hierarchical vs image_text", "no_worse")]
    tests = significance.claim_tests(significance.per_query(table, ["attribute"],
                                                            "percentile"),
                                     claims, ["attribute"], "percentile", 0.05)
    assert tests["verdict"].to_list()[0] == "worse"
    row = significance.claims_summary(tests, claims).row(0, named=True)
    assert (row["worse"], row["holds"]) == (1, row["tested"] - 1)


def test_claims_come_in_the_configs_order():
    """A table's unique methods come in any order; the claims follow the config's."""
    order = ["image_text", "image_only", "image_untuned", "monet", "medsiglip"]
    for present in (order, order[::-1], ["medsiglip", "image_only", "monet", "extra"]):
        methods = significance.in_order(pl.Series(present), order)
        assert methods == [m for m in order if m in present] + (
            ["extra"] if "extra" in present else [])
    shuffled = significance.paper_claims(significance.in_order(order[::-1], order), {})
    assert [c.name for c in shuffled] == [c.name for c in significance.paper_claims(order, {})]


def test_group_claims_and_encoders():
    claims = significance.paper_claims(
        ["image_text", "image_only", "image_untuned", "monet", "medsiglip"], {})
    names = [c.name for c in claims]
    assert names == ["image_text vs image_only", "image_text vs image_untuned",
                     "image_text vs monet", "image_text vs medsiglip",
                     "image_only vs image_untuned", "image_only vs monet",
                     "image_only vs medsiglip", "monet vs image_untuned",
                     "medsiglip vs image_untuned"]  # "(a) most effective": (a) beats each
    group = significance.group_claims(["composed", "image_only", "rrf", "random",
                                       "composed_hierarchical"], {})
    assert [c.name for c in group] == ["composed vs image_only", "composed vs rrf",
                                       "composed vs random",
                                       "composed_hierarchical vs composed"]


def test_diagnosis_agreement_and_the_random_base_rate(cohort):
    queries, train, manifest = cohort
    labels = pl.DataFrame({
        "isic_id": queries + train,
        "iddx_1": ["Benign" if i % 3 else "Malignant" for i in range(60)]
                  + ["Benign"] * 4 + ["Malignant", None],
    })
    # method x retrieves T0 (Benign) and T4 (Malignant) for every query; T5 has no label
    results = pl.DataFrame({
        "method": "image_only", "attribute": None,
        "query_id": [q for q in queries for _ in range(3)],
        "rank": [1, 2, 3] * 60,
        "retrieved_id": ["T0", "T4", "T5"] * 60,
    }, schema_overrides={"attribute": pl.String})
    boot = significance.patient_bootstrap(manifest, queries, 300, seed=0)
    table = diagnosis.agreement(results, labels, manifest, train, ["iddx_1"], boot, 0.95)
    method, random = table.row(0, named=True), table.row(1, named=True)
    assert method["n"] == 120 and method["agreement"] == 0.5  # one of the two agrees
    assert method["agreement_lo"] == method["agreement_hi"] == 0.5
    # random: 4 of the 5 labelled train images are Benign; 40 Benign and 20 Malignant queries
    assert random["method"] == "random" and random["n"] == 60
    assert random["agreement"] == pytest.approx((40 * 0.8 + 20 * 0.2) / 60)
    assert random["agreement_lo"] < random["agreement"] < random["agreement_hi"]


def test_patient_means_do_not_depend_on_the_rows_order():
    """A patient's mean over its queries is the same float whatever order the rows come in
    (polars' parallel group_by meets them in any): a last-bit difference decides whether two
    patients' differences tie, or one is exactly zero, and so the test's p-value. Values whose
    float sum depends on the order make the point."""
    values = [1e16, 1.0, -1e16, 3.0, 0.1, 0.2, 0.3]
    queries = pl.DataFrame({
        "method": ["image_text"] * 7 + ["image_only"] * 7,
        "attribute": "a1",
        "query_id": [f"Q{i}" for i in range(7)] * 2,
        "percentile": values + [v * 0.5 for v in values],
    })
    patients = pl.DataFrame({"isic_id": [f"Q{i}" for i in range(7)], "patient_id": "P0"})
    claim = significance.paper_claims(["image_text", "image_only"], {})[0]
    seen = set()
    for seed in range(20):
        shuffled = queries.sample(fraction=1.0, shuffle=True, seed=seed)
        pair = significance.paired(shuffled, claim, ["attribute"], "percentile", patients)
        seen.add((pair["percentile"][0].hex(), pair["percentile_than"][0].hex()))
    assert len(seen) == 1, seen
