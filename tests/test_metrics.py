"""skinground.evaluation.metrics: answer parsing, R², and the per-(model, attribute) R² table."""

import math

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import r2_score as sk_r2

from skinground.core.tables import markdown_table
from skinground.data.answers import parse_number, parse_number_lenient
from skinground.evaluation.metrics import lenient_r2_table, r2_score, r2_table, train_means


@pytest.mark.parametrize("text, expected", [
    ("-0.5", -0.5), ("+3", 3.0), ("42", 42.0), ("1e3", 1000.0), ("2.5E-1", 0.25),
    ("12.5 mm²", 12.5), ("  7 ", 7.0), ("7<|im_end|>", 7.0), (" 7 <|im_end|><|endoftext|>", 7.0),
    ("3.00\nThe area is", 3.0),
    ("1.2.3", None), ("abc", None), ("", None), ("   ", None), ("12.5abc", None),
    ("nan", None), ("NaN", None), ("inf", None), ("-inf", None), ("1e999", None),
    (".5", None), ("7.", None), ("about 7", None), ("7,5", None), ("<|im_end|>", None),
    (None, None),
])
def test_parse_number(text, expected):
    got = parse_number(text)
    assert got == expected and (got is None or isinstance(got, float))


def test_r2_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 500):
        y = rng.normal(5, 3, n)
        for pred in (y + rng.normal(0, 1, n), rng.normal(0, 10, n), np.full(n, y.mean())):
            assert r2_score(y, pred) == pytest.approx(sk_r2(y, pred), rel=1e-12, abs=1e-12)
    assert r2_score([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0


def test_r2_undefined_is_nan():
    assert math.isnan(r2_score([], []))
    assert math.isnan(r2_score([1.0], [1.0]))
    assert math.isnan(r2_score([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]))  # sklearn: 1.0
    assert math.isnan(r2_score([2.0, 2.0], [1.0, 3.0]))  # sklearn: 0.0
    with pytest.raises(ValueError):
        r2_score([1.0, 2.0], [1.0])


def _truth() -> pl.DataFrame:
    return pl.DataFrame({
        "isic_id": ["i1", "i2", "i3", "i4", "t1", "t2"],
        "a": [1.0, 2.0, 3.0, None, 10.0, 20.0],       # i4: missing truth
        "b": [0.0, 4.0, float("nan"), 8.0, 1.0, 3.0],  # i3: NaN counts as missing
    })


def _predictions() -> pl.DataFrame:
    rows = [
        ("tuned", "i1", "a", 1.0), ("tuned", "i2", "a", 2.0), ("tuned", "i3", "a", None),
        ("tuned", "i4", "a", 99.0),
        ("tuned", "i1", "b", 0.0), ("tuned", "i2", "b", 4.0), ("tuned", "i3", "b", 5.0),
        ("tuned", "i4", "b", 6.0),
        ("untuned", "i1", "a", None), ("untuned", "i2", "a", None), ("untuned", "i3", "a", 3.0),
    ]
    return pl.DataFrame(rows, schema={"model": pl.String, "isic_id": pl.String,
                                      "attribute": pl.String, "value": pl.Float64},
                        orient="row")


def test_train_means_skip_missing():
    means = train_means(_truth(), ["t1", "t2", "i4"], ["a", "b"])
    assert means == {"a": 15.0, "b": 4.0}


def test_r2_table_counts_unparsable_and_reports_both_r2():
    table = r2_table(_predictions(), _truth(), {"a": 2.0, "b": 4.0})
    assert table.columns == ["model", "attribute", "n", "n_unparsable", "r2_parsed",
                             "r2_filled"]
    rows = {(r["model"], r["attribute"]): r for r in table.iter_rows(named=True)}
    assert list(rows) == [("tuned", "a"), ("tuned", "b"), ("untuned", "a")]
    # tuned/a: truth 1,2,3 (i4 missing -> excluded); i3 unparsable.
    ta = rows["tuned", "a"]
    assert (ta["n"], ta["n_unparsable"]) == (3, 1)
    assert ta["r2_parsed"] == 1.0                         # (1,2) predicted exactly
    assert ta["r2_filled"] == pytest.approx(1 - 1 / 2)    # i3 filled with 2: SS_res 1, SS_tot 2
    # tuned/b: truth 0,4,8 (i3 NaN -> excluded); all parsed: preds 0,4,6.
    tb = rows["tuned", "b"]
    assert (tb["n"], tb["n_unparsable"]) == (3, 0)
    assert tb["r2_parsed"] == tb["r2_filled"] == pytest.approx(1 - 4 / 32)
    # untuned/a: 2 of 3 unparsable; one parsed value -> R² undefined; filled: 2, 2, 3.
    ua = rows["untuned", "a"]
    assert (ua["n"], ua["n_unparsable"]) == (3, 2)
    assert math.isnan(ua["r2_parsed"])
    assert ua["r2_filled"] == pytest.approx(1 - 1 / 2)


@pytest.mark.parametrize(("text", "expected"), [
    ("12.5", 12.5), ("The area of the lesion is approximately 12.5 mm².", 12.5),
    ("It is -3.25 in B.", -3.25), ("about 1e3", 1000.0), ("Values 1.2.3 and 4.5", 4.5),
    ("abc12", None), ("1.2.3", None), ("no number here", None), (None, None),
])
def test_lenient_parser_finds_a_number_anywhere(text, expected):
    assert parse_number_lenient(text) == expected


def test_lenient_table_beside_the_strict_one():
    preds = pl.DataFrame({
        "model": ["untuned"] * 3, "isic_id": ["i1", "i2", "i3"], "attribute": ["a"] * 3,
        "answer": ["It is 1.0 mm.", "2.0", "none"], "value": [None, 2.0, None],
    })
    table = lenient_r2_table(preds, _truth(), {"a": 2.0})
    row = table.row(0, named=True)
    assert (row["n"], row["n_unparsable_strict"], row["n_unparsable_lenient"]) == (3, 2, 1)
    assert row["r2_filled_lenient"] == pytest.approx(1 - 1 / 2)  # 1, 2, then 2 for 3
    assert row["r2_filled_strict"] == pytest.approx(1 - 2 / 2)   # 2, 2, 2


def test_r2_table_rejects_inconsistent_inputs():
    preds = _predictions()
    with pytest.raises(ValueError, match="train mean"):
        r2_table(preds, _truth(), {"a": 2.0})
    with pytest.raises(ValueError, match="duplicated"):
        r2_table(pl.concat([preds, preds.head(1)]), _truth(), {"a": 2.0, "b": 4.0})
    with pytest.raises(ValueError, match="not in the ground truth"):
        r2_table(preds, _truth().filter(pl.col("isic_id") != "i1"), {"a": 2.0, "b": 4.0})


def test_markdown_table():
    table = r2_table(_predictions(), _truth(), {"a": 2.0, "b": 4.0})
    md = markdown_table(table).splitlines()
    assert md[0] == "| model | attribute | n | n_unparsable | r2_parsed | r2_filled |"
    assert md[1] == "|---|---|---:|---:|---:|---:|"
    assert md[2] == "| tuned | a | 3 | 1 | 1.000 | 0.500 |"
    assert md[4] == "| untuned | a | 3 | 2 | n/a | 0.500 |"
    blank = markdown_table(pl.DataFrame({"x": [None, 1.25]}, schema={"x": pl.Float64}),
                           digits=1).splitlines()
    assert blank[2:] == ["| - |", "| 1.2 |"]


def test_fig2_draws_clipped_nan_and_unparsable(tmp_path):
    from skinground.evaluation.figures import fig2_r2

    table = pl.DataFrame({
        "model": ["tuned", "tuned", "untuned", "untuned"], "attribute": ["a", "b", "a", "b"],
        "n": [3, 3, 3, 3], "n_unparsable": [0, 1, 3, 0],
        "r2_parsed": [0.9, 0.5, math.nan, -7.5], "r2_filled": [0.9, 0.4, math.nan, -7.5],
    })
    fig2_r2(table, {"a": "area", "b": "ΔB"}, tmp_path / "f.pdf", tmp_path / "f.png")
    assert (tmp_path / "f.pdf").stat().st_size > 1000
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]


def test_fig2_shows_intervals_and_the_robust_panel(tmp_path):
    from skinground.evaluation.figures import fig2_r2

    table = pl.DataFrame({
        "model": ["tuned", "tuned"], "attribute": ["a", "b"], "n": [3, 3],
        "n_unparsable": [0, 0], "r2_parsed": [0.9, -22.2], "r2_filled": [0.9, -22.2],
        "r2_filled_lo": [0.8, -40.0], "r2_filled_hi": [0.95, -3.0],
        "spearman": [0.95, 0.7], "spearman_lo": [0.9, 0.6], "spearman_hi": [0.97, 0.8],
    })
    fig = fig2_r2(table, {"a": "area", "b": "ΔLB"}, tmp_path / "f.pdf", tmp_path / "f.png",
                  confidence=0.9)
    r2_panel, rho_panel = fig.axes
    assert "Spearman" in rho_panel.get_ylabel()
    # whiskers on both panels; the R² below -1 is clipped and written on its bar
    for ax in (r2_panel, rho_panel):
        segments = [seg for c in ax.collections for seg in c.get_segments()]
        assert len(segments) == 2
    (x0, lo), (_, hi) = [seg for c in rho_panel.collections for seg in c.get_segments()][0]
    assert (lo, hi) == pytest.approx((0.9, 0.97))
    assert "-22.2" in [t.get_text() for t in r2_panel.texts]
    assert "90% bootstrap interval" in fig.get_supxlabel()


def test_the_probe_figure_bars_and_whiskers(tmp_path):
    from skinground.evaluation import probe
    from skinground.evaluation.figures import fig2_probe

    r2 = pl.DataFrame({"model": "tuned", "attribute": ["a", "b"], "n": [10, 10],
                       "r2_filled": [0.5, 0.8], "r2_filled_lo": [0.4, 0.7],
                       "r2_filled_hi": [0.6, 0.9]})
    probes = [pl.DataFrame({"model": space, "attribute": ["b", "a"], "n_test": [10, 10],
                            "alpha_relative": [0.1, 1.0], "r2": [0.3, -2.0],
                            "r2_lo": [0.2, -3.0], "r2_hi": [0.4, -1.5]})
              for space in ("tuned", "monet")]
    table = probe.beside_answers(r2, probes, {"a": "area", "b": "ΔB"})
    assert table["attribute"].to_list() == ["a"] * 3 + ["b"] * 3
    assert table.filter(pl.col("source") == "answers")["r2"].to_list() == [0.5, 0.8]
    fig = fig2_probe(table, tmp_path / "p.pdf", tmp_path / "p.png")
    ax = fig.axes[0]
    assert len([p for p in ax.patches if p.get_height() == p.get_height()]) >= 6
    assert len([seg for c in ax.collections for seg in c.get_segments()]) == 6
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "answers (tuned)", "probe: tuned", "probe: monet"]
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_an_order_of_magnitude_is_a_factor_of_ten_floored_at_the_last_decimal():
    from skinground.evaluation.metrics import magnitude_errors

    truth = np.array([10.3, 26.3, 26.3, 0.0, 0.0, -5.0, 3.0])
    answer = np.array([120.77, 220.0, 22.0, 0.01, 0.5, 50.0, -3.0])
    assert magnitude_errors(truth, answer, 0.01).tolist() == [1, 0, 0, 0, 1, 1, 0]


def test_intervals_and_robust_metrics_beside_r2():
    """One wrong leading digit wrecks R² but not Spearman's ρ or the median error; every
    metric gets an interval that holds its value."""
    from skinground.evaluation import stats
    from skinground.evaluation.metrics import r2_table, with_intervals

    rng = np.random.default_rng(0)
    ids = [f"I{i:03d}" for i in range(120)]
    truth = rng.uniform(5, 30, 120)
    answer = truth + rng.normal(0, 1, 120)
    truth[7], answer[7] = 10.3, 120.77  # an extra leading digit
    predictions = pl.DataFrame({"model": "tuned", "isic_id": ids, "attribute": "a",
                                "value": answer})
    manifest = pl.DataFrame({"isic_id": ids, "a": truth})
    means = {"a": 17.0}
    table = r2_table(predictions, manifest, means)
    patients = [f"P{i // 4}" for i in range(120)]
    boot = stats.Bootstrap.draw(patients, 300, seed=0)
    owner = dict(zip(ids, patients, strict=True))
    out = with_intervals(table, predictions, manifest, means, boot,
                         lambda s: boot.codes([owner[i] for i in s.to_list()]), 0.95,
                         {"a": 2}).row(0, named=True)
    assert out["r2_parsed"] == table["r2_parsed"][0] < 0.5  # wrecked by one answer
    assert out["spearman"] > 0.9
    assert out["median_abs_error"] == pytest.approx(np.median(np.abs(answer - truth)))
    assert out["magnitude_share"] == pytest.approx(1 / 120)
    for name in ("r2_parsed", "r2_filled", "spearman", "median_abs_error", "magnitude_share"):
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"], name
