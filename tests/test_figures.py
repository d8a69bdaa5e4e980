"""Figs. 2-5 (evaluation.figures, .boxplots, .grids, scripts/figures.py) on fabricated tables, a
tiny HDF5 store of JPEG tiles and a manifest: the panels, boxes and labels drawn, the files; one
colour per method in every figure, a letter per encoder, stand-ins named so, reference lines
true where they are drawn, clipped intervals marked. Their text: tests/test_figure_text.py."""

from __future__ import annotations

import h5py
import numpy as np
import polars as pl
import pytest
from matplotlib import cbook
from matplotlib.colors import to_hex
from matplotlib.patches import PathPatch
from PIL import Image

from skinground.core.plan import FIG3_METHODS, GROUP_METHODS, group_method_order
from skinground.core.plan import methods as plan_methods
from skinground.data.images import open_images
from skinground.evaluation import boxplots, figures, grids
from skinground.evaluation.style import METHOD_COLOURS, OTHER_COLOURS

from conftest import jpeg_bytes, run_script

CENTRE = {"image_text": 15, "hierarchical": 18, "image_only": 25, "image_untuned": 48,
          "monet": 35, "medsiglip": 30}
#: A run with two image encoders, as the demo's: (a)-(d), then (e) MONET and (e2) MedSigLIP.
METHODS = plan_methods({"model": {"encoders": {"monet": {"title": "MONET"},
                                               "medsiglip": {"title": "MedSigLIP"}}}})
#: What the figures rule passes: name -> (letter, title), in the paper's order.
LEGENDS = {m: (x.letter, x.title) for m, x in METHODS.items()}
N_QUERIES, K = 30, 5
#: Fig. 3 of the area, as the figures rule draws it.
AREA = {"attribute": "tbp_lv_areaMM2", "label": "area", "methods": FIG3_METHODS, "k": K}


@pytest.fixture(scope="module")
def labels(repo_config) -> dict[str, str]:
    return {col: spec["label"] for col, spec in repo_config["attributes"].items()}


def evaluation(attributes, methods=METHODS, seed=0) -> pl.DataFrame:
    """evaluate()-shaped rows: method-dependent percentiles, ~5% excluded (null)."""
    rng = np.random.default_rng(seed)
    parts = []
    for a in attributes:
        for m in methods:
            n = N_QUERIES * K
            p = np.clip(rng.normal(CENTRE[m], 14, n), 0, 100)
            p[rng.random(n) < 0.05] = np.nan
            p[:3] = [99.0, 100.0, 0.0]  # beyond the whiskers for most methods
            parts.append(pl.DataFrame({
                "method": m, "attribute": a,
                "query_id": np.repeat([f"Q{i:03d}" for i in range(N_QUERIES)], K),
                "rank": np.tile(np.arange(1, K + 1, dtype=np.int32), N_QUERIES),
                "percentile": p,
            }).with_columns(pl.col("percentile").fill_nan(None),
                            excluded=pl.when(pl.col("percentile").is_null())
                            .then(pl.lit("query")).otherwise(pl.lit(None, pl.String))))
    return pl.concat(parts)


def boxes(ax) -> list[PathPatch]:
    return [p for p in ax.patches if isinstance(p, PathPatch)]


def png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        return img.size


def assert_written(directory, *names):
    for name in names:
        assert (directory / name).stat().st_size > 1000, name
    assert (directory / names[0]).read_bytes()[:4] == b"%PDF"
    assert not list(directory.glob(".*.tmp"))


def test_box_stats_match_matplotlib():
    table = evaluation(["x", "y"], ("image_text", "monet"))
    stats = boxplots.box_stats(table)
    assert stats.height == 4
    for row in stats.iter_rows(named=True):
        values = (table.filter((pl.col("method") == row["method"])
                               & (pl.col("attribute") == row["attribute"]))
                  ["percentile"].drop_nulls().to_numpy())
        ref = cbook.boxplot_stats(values, whis=boxplots.WHIS)[0]
        assert row["n"] == values.size
        for ours, theirs in (("q1", "q1"), ("med", "med"), ("q3", "q3"),
                             ("whislo", "whislo"), ("whishi", "whishi"), ("mean", "mean")):
            assert row[ours] == pytest.approx(ref[theirs], abs=1e-9), ours


def summary(table: pl.DataFrame) -> pl.DataFrame:
    """A summary with made-up intervals around each median (evaluate's columns)."""
    return (table.group_by("method", "attribute", maintain_order=True)
            .agg(median=pl.col("percentile").median())
            .with_columns(median_lo=pl.col("median") - 4, median_hi=pl.col("median") + 3))


def test_fig4_notches_are_the_medians_intervals(tmp_path, labels):
    attrs = list(labels)[:2]
    table = evaluation(attrs)
    plain = boxplots.fig4_percentiles(table, labels, None, tmp_path / "a.pdf", tmp_path / "a.png",
                                     methods=LEGENDS)
    notched = boxplots.fig4_percentiles(table, labels, None, tmp_path / "b.pdf",
                                       tmp_path / "b.png", methods=LEGENDS,
                                       intervals=summary(table), confidence=0.9)
    med = summary(table).filter(pl.col("attribute") == attrs[0])
    for box in boxes(notched.axes[0]):
        ys = sorted({round(float(y), 6) for y in box.get_path().vertices[:, 1]})
        row = med.filter(pl.col("method") == box.get_gid()).row(0, named=True)
        assert round(row["median_lo"], 6) in ys and round(row["median_hi"], 6) in ys
    assert all(len(b.get_path().vertices) > len(p.get_path().vertices)
               for b, p in zip(boxes(notched.axes[0]), boxes(plain.axes[0]), strict=True))
    title = " ".join(notched.legends[0].get_title().get_text().split())  # wrapped
    assert "Notches: the median's 90% bootstrap interval" in title
    assert "Notches" not in plain.legends[0].get_title().get_text()


def test_fig4_one_panel_per_attribute_one_box_per_method(tmp_path, labels):
    table = evaluation(labels)
    fig = boxplots.fig4_percentiles(table, labels, None, tmp_path / "fig4.pdf",
                                   tmp_path / "fig4.png", methods=LEGENDS)
    assert_written(tmp_path, "fig4.pdf", "fig4.png")
    width, height = png_size(tmp_path / "fig4.png")
    # 4 x 4 panels and the legend at their right, at 150 dpi
    assert 1600 < width < 2100 and 0.6 < height / width < 0.85
    assert len(fig.axes) == len(labels) == 16
    assert [ax.get_title() for ax in fig.axes] == list(labels.values())
    stats = boxplots.box_stats(table)
    ax0 = fig.axes[0]
    assert [t.get_text() for t in ax0.get_xticklabels()] == ["(a)", "(b)", "(c)", "(d)", "(e)",
                                                             "(e2)"]
    for ax in fig.axes:
        assert len(boxes(ax)) == 6
        dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
        assert len(dashed) == 1 and set(dashed[0].get_ydata()) == {50.0}
        assert ax.get_ylim() == ax0.get_ylim()  # shared y axis
        assert ax.get_ylim()[0] < 0 and ax.get_ylim()[1] > 100
    # Boxes in the paper's order, the encoders in the config's, each at its method's median
    # (image_untuned the highest), each method its own colour.
    area = stats.filter(pl.col("attribute") == "tbp_lv_areaMM2")
    med = dict(zip(area["method"], area["med"], strict=True))
    assert [p.get_gid() for p in boxes(ax0)] == list(METHODS)
    medians = {ln.get_gid(): ln.get_ydata()[0] for ln in ax0.get_lines() if ln.get_gid()}
    assert medians == pytest.approx(med)
    assert max(medians, key=medians.get) == "image_untuned"
    colours = [tuple(p.get_facecolor()) for p in boxes(ax0)]
    assert len(set(colours)) == 6
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["(a) Image + Text", "(b) Hierarchical", "(c) Image",
                      "(d) Image Untuned", "(e) MONET", "(e2) MedSigLIP", "random (50)"]


def test_fig4_panels_are_the_figures_panels_one_file_each(tmp_path, labels, monkeypatch):
    """The report's per-attribute files: each the same panel as Fig. 4's (boxes, notches,
    ticks, colours), with its own legend; the folder written whole or not at all."""
    table = evaluation(labels)
    full = boxplots.fig4_percentiles(table, labels, None, tmp_path / "fig4.pdf",
                                    tmp_path / "fig4.png", methods=LEGENDS,
                                    intervals=summary(table))
    folder = tmp_path / "fig4_attributes"
    panels = boxplots.fig4_panels(table, labels, folder, methods=LEGENDS,
                                 intervals=summary(table))
    assert list(panels) == list(labels)
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{a}.png" for a in labels)
    # The figures script's path: the same files, from Fig. 4's own box statistics.
    boxplots.fig4_percentiles(table, labels, None, tmp_path / "f.pdf", tmp_path / "f.png",
                             methods=LEGENDS, intervals=summary(table),
                             panels=tmp_path / "from_fig4")
    assert {p.name: p.read_bytes() for p in (tmp_path / "from_fig4").iterdir()} == \
        {p.name: p.read_bytes() for p in folder.iterdir()}
    for ax, (attribute, fig) in zip(full.axes, panels.items(), strict=True):
        (one,) = fig.axes
        assert one.get_title() == ax.get_title() == labels[attribute]
        assert [b.get_gid() for b in boxes(one)] == [b.get_gid() for b in boxes(ax)]
        for b, a in zip(boxes(one), boxes(ax), strict=True):
            assert np.array_equal(b.get_path().vertices, a.get_path().vertices)  # notched
            assert b.get_facecolor() == a.get_facecolor()
        assert [t.get_text() for t in one.get_xticklabels()] == \
            [t.get_text() for t in ax.get_xticklabels()]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == [t.get_text() for t in full.legends[0].get_texts()]
        width, height = png_size(folder / f"{attribute}.png")
        assert width > 250 and height > 250
    # A failure after some panels leaves the folder as it was: no half-written set.
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    drawn, draw = [], boxplots.panel_boxplots

    def failing(*args, **kwargs):
        if len(drawn) == 3:
            raise MemoryError("the fourth panel")
        drawn.append(args[1])
        return draw(*args, **kwargs)
    monkeypatch.setattr(boxplots, "panel_boxplots", failing)
    with pytest.raises(MemoryError):
        boxplots.fig4_panels(table, labels, folder, methods=LEGENDS, intervals=summary(table))
    assert len(drawn) == 3
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_fig4_without_monet_and_with_an_empty_box(tmp_path, labels):
    attrs = list(labels)[:10]
    table = evaluation(attrs, ("image_text", "hierarchical", "image_only", "image_untuned"))
    # One attribute with no percentile at all for one method (all excluded).
    table = table.with_columns(
        percentile=pl.when((pl.col("attribute") == attrs[2])
                           & (pl.col("method") == "hierarchical"))
        .then(None).otherwise(pl.col("percentile")))
    fig = boxplots.fig4_percentiles(table.lazy(), labels, {"image_only": "Image (tuned)"},
                                   tmp_path / "f.pdf", tmp_path / "f.png")
    assert_written(tmp_path, "f.pdf", "f.png")
    assert len(fig.axes) == 10  # a 3 x 4 grid, the two empty cells removed
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["(a)", "(b)", "(c)", "(d)"]
    assert [len(boxes(ax)) for ax in fig.axes] == [4, 4, 3] + [4] * 7
    assert [p.get_gid() for p in boxes(fig.axes[2])] == ["image_text", "image_only",
                                                         "image_untuned"]
    assert [p.get_path().get_extents().x0 for p in boxes(fig.axes[2])] == pytest.approx(
        [1 - 0.65 / 2, 3 - 0.65 / 2, 4 - 0.65 / 2])  # (b)'s slot left empty
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[2] == "(c) Image (tuned)" and not any("MONET" in t for t in legend)


def test_fig4_keeps_the_paper_letter_and_colour_of_each_method(tmp_path, labels):
    full = boxplots.fig4_percentiles(evaluation(list(labels)[:2]), labels, None,
                                    tmp_path / "all.pdf", tmp_path / "all.png", methods=LEGENDS)
    colour = {p.get_gid(): tuple(p.get_facecolor()) for p in boxes(full.axes[0])}
    table = evaluation(list(labels)[:2], ("image_text", "medsiglip"))
    fig = boxplots.fig4_percentiles(table, labels, None, tmp_path / "f.pdf", tmp_path / "f.png",
                                   methods=LEGENDS)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["(a)", "(e2)"]
    assert {p.get_gid(): tuple(p.get_facecolor()) for p in boxes(fig.axes[0])} == {
        m: colour[m] for m in ("image_text", "medsiglip")}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["(a) Image + Text", "(e2) MedSigLIP", "random (50)"]
    # a method the run does not define: after them, its name as its tick
    other = evaluation(list(labels)[:2], ("image_text", "monet"))
    fig = boxplots.fig4_percentiles(other, labels, None, tmp_path / "o.pdf", tmp_path / "o.png")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["(a)", "monet"]


def test_each_encoder_has_a_letter_of_its_own():
    assert [x.letter for x in METHODS.values()] == ["a", "b", "c", "d", "e", "e2"]
    three = plan_methods({"model": {"encoders": {n: {"title": n.upper()}
                                                 for n in ("monet", "medsiglip", "other")}}})
    assert [three[n].letter for n in ("monet", "medsiglip", "other")] == ["e", "e2", "e3"]
    # the paper's one encoder keeps its (e); no encoder takes a group method's letter
    assert plan_methods({"model": {"encoders": {"monet": {"title": "MONET"}}}})[
        "monet"].letter == "e"
    assert not {x.letter for x in three.values()} & {m.letter for m in GROUP_METHODS.values()
                                                      if m.name != "image_only"}


def test_stand_ins_are_named_so_in_fig4_and_its_panels(tmp_path, labels):
    two = dict(list(labels.items())[:2])
    table = evaluation(two)
    fig = boxplots.fig4_percentiles(table, two, None, tmp_path / "f.pdf", tmp_path / "f.png",
                                    methods=LEGENDS, stand_ins=["monet", "medsiglip"])
    panels = boxplots.fig4_panels(table, two, tmp_path / "panels", methods=LEGENDS,
                                  stand_ins=["monet", "medsiglip"])
    for figure in (fig, *panels.values()):
        legend = [t.get_text() for t in figure.legends[0].get_texts()]
        assert legend[4:6] == ["(e) MONET (tiny random stand-in)",
                               "(e2) MedSigLIP (tiny random stand-in)"]
        assert legend[:4] == ["(a) Image + Text", "(b) Hierarchical", "(c) Image",
                              "(d) Image Untuned"]
    real = boxplots.fig4_percentiles(table, two, None, tmp_path / "r.pdf", tmp_path / "r.png",
                                     methods=LEGENDS)
    assert not any("stand-in" in t.get_text() for t in real.legends[0].get_texts())


def group_evaluation(groups, methods=tuple(GROUP_METHODS), seed=0) -> pl.DataFrame:
    """``evaluate_groups``' rows: each group method's max and mean criterion (random's max
    well above 50, as a max of random percentiles is)."""
    rng = np.random.default_rng(seed)
    parts = []
    for g in groups:
        for m in group_method_order(list(methods)):
            n = 200
            mean = np.clip(rng.normal(50 if m == "random" else 25, 15, n), 0, 100)
            parts.append(pl.DataFrame({"method": m, "group": g, "mean": mean,
                                       "max": np.clip(mean + rng.uniform(0, 30, n), 0, 100)}))
    return pl.concat(parts)


def group_summary(table: pl.DataFrame) -> pl.DataFrame:
    """``evaluate_groups``' summary with made-up intervals around each median."""
    return (table.unpivot(["max", "mean"], index=["method", "group"], variable_name="criterion")
            .group_by("group", "method", "criterion").agg(median=pl.col("value").median())
            .with_columns(median_lo=pl.col("median") - 3, median_hi=pl.col("median") + 3))


def dashed(ax) -> list[float]:
    return [y for ln in ax.get_lines() if ln.get_linestyle() == "--"
            for y in set(ln.get_ydata())]


def test_fig5_reference_line_is_randoms_median_on_each_panel(tmp_path, labels):
    groups = {"size": ["tbp_lv_areaMM2", "tbp_lv_perimeterMM"], "colour": ["tbp_lv_A"]}
    table = group_evaluation(groups)
    fig = boxplots.fig5_groups(table, groups, labels, tmp_path / "f.pdf", tmp_path / "f.png",
                               intervals=group_summary(table))
    assert len(fig.axes) == 4
    for ax, (criterion, g) in zip(fig.axes, [("max", "size"), ("max", "colour"),
                                             ("mean", "size"), ("mean", "colour")], strict=True):
        random = table.filter((pl.col("method") == "random") & (pl.col("group") == g))
        median = boxplots.box_stats(random.select("method", attribute=pl.lit(g),
                                                  percentile=criterion))["med"].item()
        assert dashed(ax) == [pytest.approx(median)]
        (r,) = [ln for ln in ax.get_lines() if ln.get_gid() == "random"]
        assert r.get_ydata()[0] == pytest.approx(median)  # the line is (r)'s own median
    assert dashed(fig.axes[0])[0] > 60  # the max's: not 50
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[-1] == "random: the median of (r)"
    # without (r), no line and no legend entry for one
    fig = boxplots.fig5_groups(table.filter(pl.col("method") != "random"), groups, labels,
                               tmp_path / "g.pdf", tmp_path / "g.png")
    assert all(dashed(ax) == [] for ax in fig.axes)
    assert not any("random" in t.get_text() for t in fig.legends[0].get_texts())


def test_one_colour_per_method_in_every_figure(tmp_path, labels):
    two = dict(list(labels.items())[:2])
    fig4 = boxplots.fig4_percentiles(evaluation(two), two, None, tmp_path / "4.pdf",
                                     tmp_path / "4.png", methods=LEGENDS)
    four = {p.get_gid(): to_hex(p.get_facecolor()) for p in boxes(fig4.axes[0])}
    groups = {"size": ["tbp_lv_areaMM2"]}
    fig5 = boxplots.fig5_groups(group_evaluation(groups), groups, labels, tmp_path / "5.pdf",
                                tmp_path / "5.png")
    five = {p.get_gid(): to_hex(p.get_facecolor()) for p in boxes(fig5.axes[0])}
    assert four["image_only"] == five["image_only"] == METHOD_COLOURS["image_only"].lower()
    assert [four["monet"], four["medsiglip"]] == [c.lower() for c in OTHER_COLOURS[:2]]
    every = [*four.items(), *five.items()]
    assert len({c for _, c in every}) == len({m for m, _ in every})  # no two share one
    # beside Fig. 2: a probe's bars are the colour of the method searching its space
    probe = pl.DataFrame({
        "label": "area", "source": ["answers", *["probe"] * 4],
        "space": ["tuned", "tuned", "untuned", "monet", "medsiglip"],
        "r2": [0.5, 0.6, 0.4, 0.3, 0.2]}).with_columns(r2_lo=pl.col("r2") - 0.1,
                                                         r2_hi=pl.col("r2") + 0.1)
    fig = figures.fig2_probe(probe, tmp_path / "p.pdf", tmp_path / "p.png",
                             titles={"monet": "MONET", "medsiglip": "MedSigLIP"},
                             stand_ins=["monet", "medsiglip"])
    legend = fig.axes[0].get_legend()
    colour = {t.get_text(): to_hex(h.get_facecolor())
              for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    assert colour == {
        "answers (tuned)": "#4d4d4d", "probe: tuned": four["image_only"],
        "probe: untuned": four["image_untuned"],
        "probe: MONET (tiny random stand-in)": four["monet"],
        "probe: MedSigLIP (tiny random stand-in)": four["medsiglip"]}


def test_fig2_marks_a_clipped_interval_at_minus_one(tmp_path):
    table = pl.DataFrame({
        "model": "tuned", "attribute": ["a", "b", "c"], "n": 3, "n_unparsable": 0,
        "r2_filled": [0.9, -0.7, -22.2], "r2_filled_lo": [0.8, -1.32, -40.0],
        "r2_filled_hi": [0.95, -0.26, -3.0]})
    fig = figures.fig2_r2(table, {"a": "area", "b": "ΔB", "c": "ΔL"}, tmp_path / "f.pdf",
                          tmp_path / "f.png")
    ax = fig.axes[0]
    (marks,) = [ln for ln in ax.get_lines() if ln.get_gid() == "clipped"]
    assert marks.get_marker() == "v"
    assert list(marks.get_xdata()) == pytest.approx([1, 2]) and set(marks.get_ydata()) == {-1}
    # the clipped whiskers end at -1 without a cap: caps only at the unclipped interval's ends
    caps = [y for ln in ax.get_lines() if ln.get_marker() == "_" for y in ln.get_ydata()]
    assert sorted(caps) == pytest.approx([0.8, 0.95])
    assert figures.CLIPPED_NOTE in fig.get_supxlabel()
    assert "▼" in figures.CLIPPED_NOTE and "below -1" in figures.CLIPPED_NOTE
    fine = figures.fig2_r2(table.head(1), {"a": "area"}, tmp_path / "g.pdf", tmp_path / "g.png")
    assert not [ln for ln in fine.axes[0].get_lines() if ln.get_gid() == "clipped"]
    assert "▼" not in fine.get_supxlabel()


def test_pick_queries_is_deterministic():
    ids = [f"ISIC_{i:07d}" for i in range(50)]
    pick = grids.pick_queries(ids, 4, seed=3)
    assert len(set(pick)) == 4 and set(pick) <= set(ids)
    assert grids.pick_queries(list(reversed(ids)) + ids[:5], 4, seed=3) == pick
    assert grids.pick_queries(ids, 6, seed=3)[:4] == pick
    assert grids.pick_queries(ids, 4, seed=4) != pick
    assert len(grids.pick_queries(ids[:2], 4, seed=0)) == 2


# ---------------------------------------------------------------- fig. 3
@pytest.fixture(scope="module")
def retrieval(tmp_path_factory, labels):
    """A tiny store (tiles of 61-239 px), a manifest, and results of all five methods."""
    root = tmp_path_factory.mktemp("fig3")
    rng = np.random.default_rng(1)
    ids = [f"ISIC_{i:07d}" for i in range(40)]
    with h5py.File(root / "images.hdf5", "w") as h5:
        for n, i in enumerate(ids):
            h5.create_dataset(i, data=np.bytes_(jpeg_bytes(61 + (n * 37) % 179, n)))
    manifest = pl.DataFrame({"isic_id": ids, "patient_id": [f"IP_{n % 8}" for n in range(40)],
                             "target": [0] * 40})
    manifest = manifest.with_columns(
        pl.Series(col, rng.uniform(0.5, 80, 40), dtype=pl.Float64) for col in labels)
    manifest = manifest.with_columns(  # the area: one query without a value
        tbp_lv_areaMM2=pl.when(pl.col("isic_id") == ids[7]).then(None)
        .otherwise(pl.col("tbp_lv_areaMM2")))
    test, train = ids[:8], ids[8:]
    rows = []
    for m in METHODS:
        for a in ([None] if not METHODS[m].per_attribute else list(labels)):
            for q in test:
                hits = rng.choice(train, K, replace=False)
                rows += [{"method": m, "attribute": a, "query_id": q, "rank": r + 1,
                          "retrieved_id": hits[r], "score": 1.0 - r / 10} for r in range(K)]
    results = pl.DataFrame(rows, schema={"method": pl.String, "attribute": pl.String,
                                         "query_id": pl.String, "rank": pl.Int32,
                                         "retrieved_id": pl.String, "score": pl.Float32})
    # One query with only 3 image_text hits for the area.
    results = results.filter(~((pl.col("query_id") == ids[6]) & (pl.col("rank") > 3)
                               & (pl.col("method") == "image_text")
                               & (pl.col("attribute") == "tbp_lv_areaMM2")))
    return root, manifest, results, test


def test_fig3_grid_values_and_tiles(tmp_path, retrieval):
    root, manifest, results, test = retrieval
    queries = test[:3]
    area = dict(manifest.select("isic_id", "tbp_lv_areaMM2").iter_rows())
    with open_images(root / "images.hdf5") as store:
        fig = grids.fig3_retrievals(results, store, manifest, query_ids=queries, **AREA,
                                      decimals=1, pdf_path=tmp_path / "fig3.pdf",
                                      png_path=tmp_path / "fig3.png")
    assert_written(tmp_path, "fig3.pdf", "fig3.png")
    width, height = png_size(tmp_path / "fig3.png")
    fig_w, fig_h = fig.get_size_inches()
    assert abs(height / width - fig_h / fig_w) < 0.15 and width > 900
    assert len(fig.axes) == len(queries) * 2 * (K + 1)
    texts = [t.get_text() for t in fig.texts]
    assert texts.count("Image only") == 3 and texts.count("Image + Text\n(area)") == 3
    per_row = K + 1
    for qi, q in enumerate(queries):
        for mi, m in enumerate(("image_only", "image_text")):
            row = fig.axes[(2 * qi + mi) * per_row:(2 * qi + mi + 1) * per_row]
            assert row[0].get_title() == f"{area[q]:.1f} mm²"
            assert row[0].title.get_fontweight() == "bold"
            hits = (results.filter((pl.col("method") == m) & (pl.col("query_id") == q)
                                   & (pl.col("attribute").is_null()
                                      | (pl.col("attribute") == "tbp_lv_areaMM2")))
                    .sort("rank")["retrieved_id"].to_list())
            assert [ax.get_title() for ax in row[1:]] == [f"{area[i]:.1f} mm²" for i in hits]
            for ax in row:
                assert ax.images[0].get_array().shape == (160, 160, 3)


def test_fig3_missing_method_short_row_and_missing_value(tmp_path, retrieval):
    root, manifest, results, test = retrieval
    only = results.filter(pl.col("method") != "image_text")
    with open_images(root / "images.hdf5") as store:
        fig = grids.fig3_retrievals(only, store, manifest, query_ids=[test[0]], **AREA,
                                      decimals=2, pdf_path=tmp_path / "a.pdf",
                                      png_path=tmp_path / "a.png")
        assert len(fig.axes) == K + 1  # one row: image_only
        assert fig.axes[0].get_title().endswith(" mm²") and "." in fig.axes[0].get_title()
        assert len(fig.axes[0].get_title().split()[0].split(".")[1]) == 2
        # test[6] has 3 image_text hits (2 blank tiles); test[7] has no area value.
        fig = grids.fig3_retrievals(results, store, manifest, query_ids=[test[6], test[7]],
                                      **AREA, decimals=1, pdf_path=tmp_path / "b.pdf",
                                      png_path=tmp_path / "b.png")
        text_row = fig.axes[K + 1:2 * (K + 1)]
        assert [len(ax.images) for ax in text_row] == [1, 1, 1, 1, 0, 0]
        assert fig.axes[2 * (K + 1)].get_title() == "n/a"
        with pytest.raises(ValueError, match="no results"):
            grids.fig3_retrievals(results, store, manifest, query_ids=[test[0]],
                                    **dict(AREA, methods=("nope",)), decimals=1,
                                    pdf_path=tmp_path / "c.pdf",
                                    png_path=tmp_path / "c.png")
    assert_written(tmp_path, "a.pdf", "a.png")
    assert not (tmp_path / "c.png").exists()


def test_figures_script(tmp_path, labels, retrieval):
    root, manifest, results, test = retrieval
    four = list(labels)[:4]  # small, to keep the test fast
    evaluation(four, ("image_text", "image_only", "image_untuned")).write_parquet(
        tmp_path / "evaluation.parquet")
    results.filter(pl.col("attribute").is_null()).write_parquet(tmp_path / "image.parquet")
    results.filter(pl.col("attribute").is_not_null()).write_parquet(tmp_path / "text.parquet")
    manifest.write_parquet(tmp_path / "manifest.parquet")
    summary(evaluation(four, ("image_text", "image_only", "image_untuned"))).write_csv(
        tmp_path / "summary.csv")
    attributes = {col: {"label": labels[col], "decimals": 2} for col in four}
    out = tmp_path / "figs"
    kwargs = dict(
        input={"evaluation": tmp_path / "evaluation.parquet", "summary": tmp_path / "summary.csv",
               "results": [tmp_path / "image.parquet", tmp_path / "text.parquet"],
               "manifest": tmp_path / "manifest.parquet", "images": root / "images.hdf5"},
        output={"fig4_pdf": out / "fig4.pdf", "fig4_png": out / "fig4.png",
                "fig4_panels": out / "fig4_attributes",
                "fig3_pdf": out / "fig3.pdf", "fig3_png": out / "fig3.png"})
    params = {"attributes": attributes, "k": K, "methods": LEGENDS, "confidence": 0.95,
              "stand_ins": ["monet", "medsiglip"],
              "figures": {"fig3_attribute": "tbp_lv_areaMM2", "fig3_queries": 3, "seed": 0}}
    proc = run_script("figures", tmp_path, params=params, **kwargs)
    assert proc.returncode == 0, proc.log + proc.stderr
    assert_written(out, "fig4.pdf", "fig4.png", "fig3.pdf", "fig3.png")
    # Queries: test[6] (3 image_text hits) and test[7] (no area) are not candidates.
    candidates = test[:6]
    expected = grids.pick_queries(candidates, 3, 0)
    assert f"fig. 3: queries {expected}" in proc.log and "fig. 4: 4 attribute" in proc.log
    assert sorted(p.name for p in (out / "fig4_attributes").iterdir()) == \
        sorted(f"{a}.png" for a in four)
    w4, h4 = png_size(out / "fig4.png")
    w3, h3 = png_size(out / "fig3.png")
    assert w4 > h4 and h3 > w3

    bad = dict(params, attributes={**attributes, "nope": {"label": "nope", "decimals": 1}},
               figures={"fig3_attribute": "nope", "fig3_queries": 3, "seed": 0})
    proc = run_script("figures", tmp_path, params=bad, log=tmp_path / "bad.log", **kwargs)
    proc.stderr = proc.log
    assert proc.returncode == 1 and "error: fig. 3 attribute 'nope'" in proc.stderr
