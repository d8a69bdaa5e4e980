"""Training tuples: counts, distinct attributes per image, uniform sampling, determinism."""

import math

import numpy as np
import polars as pl
import pytest

from skinground.data.tuples import TupleError, resolve_w, sample_tuples, summarize

ATTRS = {f"a{i:02d}": {"question": f"What is a{i:02d}?", "decimals": i % 3} for i in range(16)}


def train_frame(n=3000, missing=0.1, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.normal(10, 3, (n, len(ATTRS)))
    values[rng.random(values.shape) < missing] = np.nan
    values[:5] = np.nan  # images with no attribute at all
    values[5, 2:] = np.nan  # an image with only 2
    data = {"isic_id": [f"ISIC_{i:07d}" for i in range(n)]}
    data.update({name: values[:, k] for k, name in enumerate(ATTRS)})
    return pl.DataFrame(data).with_columns(pl.col(a).fill_nan(None) for a in ATTRS)


def test_count_is_sum_of_min_w_and_available():
    train = train_frame()
    available = train.select(pl.col(a).is_not_null().cast(pl.Int32) for a in ATTRS).to_numpy()
    out = sample_tuples(train, ATTRS, w=5, seed=0)
    assert out.height == int(np.minimum(available.sum(1), 5).sum())
    s = summarize(out, train.height, 5)
    assert s["images_with_fewer_than_W"] == 6 and s["tuples"] == out.height


def test_attributes_distinct_per_image_and_never_missing():
    train = train_frame()
    out = sample_tuples(train, ATTRS, w=5, seed=0)
    per_image = out.group_by("isic_id").agg(pl.col("attribute").n_unique().alias("u"),
                                            pl.len().alias("n"))
    assert (per_image["u"] == per_image["n"]).all()
    values = out.join(train.unpivot(index="isic_id", variable_name="attribute"),
                      on=["isic_id", "attribute"])
    assert values["value"].is_not_null().all()
    assert out.filter(pl.col("isic_id") == "ISIC_0000005").height == 2


def test_attribute_frequency_near_uniform():
    out = sample_tuples(train_frame(missing=0.0), ATTRS, w=5, seed=7)
    counts = out.group_by("attribute").len()["len"].to_numpy()
    expected = out.height / len(ATTRS)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert len(counts) == 16
    assert chi2 < 37.7  # chi-square, 15 degrees of freedom, p = 0.001


def test_answers_and_questions_follow_the_config():
    train = train_frame(n=50)
    out = sample_tuples(train, ATTRS, w="all", seed=0)
    row = out.row(0, named=True)
    value = train.filter(pl.col("isic_id") == row["isic_id"])[row["attribute"]][0]
    decimals = ATTRS[row["attribute"]]["decimals"]
    assert len(row["answer"].partition(".")[2]) == decimals
    assert math.isclose(float(row["answer"]), value, abs_tol=10 ** -decimals)
    assert row["question"] == ATTRS[row["attribute"]]["question"]


def test_same_config_gives_byte_identical_output(tmp_path):
    train = train_frame()
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        sample_tuples(train.sample(fraction=1.0, shuffle=True, seed=len(name)), ATTRS, w=5,
                      seed=seed).write_parquet(tmp_path / f"{name}.parquet")
    a, b, c = ((tmp_path / f"{n}.parquet").read_bytes() for n in "abc")
    assert a == b and a != c


@pytest.mark.parametrize("w", [0, 17, "some", 2.5])
def test_bad_w(w):
    with pytest.raises(TupleError, match="tuples.W"):
        resolve_w(w, 16)


def test_format_answer():
    from skinground.data.answers import format_answer

    assert format_answer(1.234, 2) == "1.23"
    assert format_answer(-0.001, 2) == "0.00"
    assert format_answer(12.0, 0) == "12"
    with pytest.raises(ValueError):
        format_answer(float("nan"), 2)
