"""The paper's figures, drawn on standalone matplotlib Figures (no pyplot state, no display)
and saved atomically as PDF and PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np
import polars as pl
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

from skinground.attributes import ID_COLUMN
from skinground.io import atomic_path
from skinground.plan import METHODS, method_order

#: Models in the order of the legend; others follow, sorted.
MODEL_ORDER = ("untuned", "tuned")
#: Fig. 2's y range: R² below -1 is drawn at -1 with its value written on the bar.
R2_FLOOR = -1.0
#: Width of a group of bars (seaborn's default, given explicitly for the annotations).
BAR_WIDTH = 0.8


def save_figure(fig: Figure, pdf_path: str | os.PathLike, png_path: str | os.PathLike, *,
                dpi: int = 200) -> None:
    """Write ``fig`` as PDF and PNG, each atomically."""
    for path, fmt in ((pdf_path, "pdf"), (png_path, "png")):
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")


def fig2_r2(table: pl.DataFrame, labels: Mapping[str, str], pdf_path: str | os.PathLike,
            png_path: str | os.PathLike, *, column: str = "r2_filled") -> None:
    """Fig. 2: test-set R² per attribute (x: the attribute's short label), one bar per model.

    ``table``: ``metrics.r2_table`` (model, attribute, ``column``); attributes keep the
    table's order. The y axis spans [-1, 1]: a bar whose R² is below -1 is drawn down to -1
    and its true value is written on it; an undefined R² (NaN) is marked "n/a".
    """
    attrs = list(dict.fromkeys(table["attribute"].to_list()))
    present = set(table["model"].to_list())
    hue_order = [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))
    names = [labels.get(a, a) for a in attrs]
    rows = list(table.select("model", "attribute", column).iter_rows())
    data = {
        "label": [labels.get(a, a) for _, a, _ in rows],
        "model": [m for m, _, _ in rows],
        "r2": [max(v, R2_FLOOR) if v is not None and not math.isnan(v) else math.nan
               for _, _, v in rows],
    }

    fig = Figure(figsize=(max(6.0, 0.6 * len(attrs) + 2), 4.8), layout="constrained")
    ax = fig.add_subplot()
    sns.barplot(data=data, x="label", y="r2", hue="model", order=names, hue_order=hue_order,
                palette="colorblind", errorbar=None, width=BAR_WIDTH, ax=ax)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(R2_FLOOR - 0.08, 1.1)
    ax.set_yticks([-1, -0.5, 0, 0.5, 1])
    ax.set_xlabel("")
    ax.set_ylabel("R²" + (" (unparsable answers → train mean)" if column == "r2_filled"
                          else " (parsed answers only)"))
    ax.set_title("Test-set R² per attribute")
    ax.tick_params(axis="x", labelrotation=45)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    # Annotations at seaborn's dodged bar centres (explicit width, hue_order, order).
    notes = set()
    step = BAR_WIDTH / len(hue_order)
    unparsable = {(m, a): k for m, a, k in table.select(
        "model", "attribute", pl.col("n_unparsable") if "n_unparsable" in table.columns
        else pl.lit(0)).iter_rows()}
    for m, a, value in rows:
        x = attrs.index(a) - BAR_WIDTH / 2 + step * (hue_order.index(m) + 0.5)
        if value is None or math.isnan(value):
            ax.text(x, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
        elif value < R2_FLOOR:
            notes.add(f"Bars end at {R2_FLOOR:g}; the true R² is written on them.")
            ax.text(x, R2_FLOOR + 0.03, f"{value:.3g}", ha="center", va="bottom",
                    rotation=90, fontsize=7, color="white", fontweight="bold")
        if unparsable.get((m, a)):
            notes.add("†: some answers unparsable (counted in the table).")
            if value is None or math.isnan(value):
                y = 0.17  # above "n/a"
            else:
                y = max(value, 0.0) + 0.02
            ax.text(x, y, "†", ha="center", va="bottom", fontsize=8)
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(None)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    if notes:
        fig.supxlabel("   ".join(sorted(notes)), fontsize=8, style="italic")
    save_figure(fig, pdf_path, png_path)


# ---------------------------------------------------------------- Fig. 4: percentile boxplots
#: Whisker reach in IQRs (matplotlib's default); points beyond are not drawn (see fig. 4).
WHIS = 1.5
#: The percentile of a uniformly random retrieval (evaluate's mid-rank averages exactly 50).
RANDOM_PERCENTILE = 50.0


def _letter(method: str, extras: list[str]) -> int:
    """The method's fixed index: its place in ``plan.METHODS``, then after them among
    ``extras``."""
    names = list(METHODS)
    return names.index(method) if method in METHODS else len(names) + extras.index(method)


def method_title(method: str) -> str:
    return METHODS[method].title if method in METHODS else method


def box_stats(table: pl.DataFrame | pl.LazyFrame, *, whis: float = WHIS) -> pl.DataFrame:
    """Per (method, attribute): the Tukey box of ``percentile`` (nulls/NaN = excluded, dropped).

    Columns: method, attribute, n, q1, med, q3, whislo, whishi, mean. Quartiles interpolate
    linearly (numpy's and matplotlib's default); whiskers reach the farthest value within
    ``whis`` IQRs of the box (never inside it), as ``matplotlib.cbook.boxplot_stats``.
    Computed in polars (lazily for a LazyFrame), so a paper-scale table (~47M rows) is never
    turned into Python lists. Groups with no value are absent.
    """
    p = pl.col("percentile")
    q1, q3 = p.quantile(0.25, interpolation="linear"), p.quantile(0.75, interpolation="linear")
    iqr = q3 - q1
    return (
        table.lazy()
        .select("method", "attribute", p.cast(pl.Float64))
        .filter(p.is_not_null() & p.is_not_nan())
        .group_by("method", "attribute")
        .agg(
            n=p.len().cast(pl.Int64), q1=q1, med=p.median(), q3=q3, mean=p.mean(),
            whislo=pl.min_horizontal(p.filter(p >= q1 - whis * iqr).min(), q1),
            whishi=pl.max_horizontal(p.filter(p <= q3 + whis * iqr).max(), q3),
        )
        .sort("method", "attribute")
        .collect()
    )


def _grid(n: int) -> tuple[int, int]:
    """(rows, cols) of the smallest near-square grid for ``n`` panels (16 -> 4 x 4)."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def fig4_percentiles(table: pl.DataFrame | pl.LazyFrame, labels: Mapping[str, str],
                     method_names: Mapping[str, str] | None, pdf_path: str | os.PathLike,
                     png_path: str | os.PathLike, *, dpi: int = 150) -> Figure:
    """Fig. 4: one panel per attribute (title: its label), one box per method, y = percentile.

    ``table``: :func:`skinground.evaluate.evaluate`'s rows (method, attribute, percentile;
    null = excluded) — a LazyFrame works too. Panels follow ``labels``' order (the config's),
    then any other attribute of the table in table order, on a near-square grid (16 -> 4 x 4);
    empty grid cells are removed, so ``fig.axes`` holds one Axes per attribute.

    Boxes: quartiles, the median (black) and whiskers to 1.5 IQR; outliers are NOT drawn (a
    paper-scale box holds ~590k values, so the points beyond the whiskers would be a solid
    smear; the whiskers reach the bounded 0-100 range anyway). Each method keeps the paper's
    letter (a) Image + Text ... (e) MONET and its colour (seaborn "colorblind") whether or not
    the others are present; methods absent from the table get no slot, a method without values
    for one attribute leaves its slot empty there. The dashed line at 50 marks random
    retrieval. Shared y axis 0-100 (lower is better); x ticks are the letters, and one legend
    below maps them to names. Written as PDF + PNG (``dpi``); returns the Figure (each box
    patch and median line has the method key as its ``gid``).
    """
    names = {m: method_title(m) for m in METHODS} | dict(method_names or {})
    lazy = table.lazy()
    stats = box_stats(lazy)
    in_table = lazy.select(pl.col("attribute").unique(maintain_order=True)).collect()
    in_table = in_table["attribute"].to_list()
    attrs = [a for a in labels if a in in_table] + [a for a in in_table if a not in labels]
    methods = method_order(lazy.select(pl.col("method").unique()).collect()["method"])
    extras = [m for m in methods if m not in METHODS]
    palette = sns.color_palette("colorblind", n_colors=len(METHODS) + len(extras))
    letter = {m: _letter(m, extras) for m in methods}
    tick = {m: f"({chr(ord('a') + letter[m])})" for m in methods}
    color = {m: palette[letter[m] % len(palette)] for m in methods}
    boxes = {(row["method"], row["attribute"]): row for row in stats.iter_rows(named=True)}

    nrows, ncols = _grid(len(attrs))
    width = 2.3 * ncols + 0.7
    fig = Figure(figsize=(width, max(4.0, 2.0 * nrows + 0.9)), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in axes[len(attrs):]:
        fig.delaxes(ax)
    positions = range(1, len(methods) + 1)
    for ax, a in zip(axes[:len(attrs)], attrs, strict=True):
        ax.axhline(RANDOM_PERCENTILE, color="0.4", linestyle="--", linewidth=0.9, zorder=0)
        drawn = [(pos, m) for pos, m in enumerate(methods, start=1) if (m, a) in boxes]
        if drawn:
            bxp = ax.bxp(
                [{k: boxes[m, a][k] for k in ("q1", "med", "q3", "whislo", "whishi", "mean")}
                 | {"fliers": [], "label": tick[m]} for _, m in drawn],
                positions=[pos for pos, _ in drawn], widths=0.65, patch_artist=True,
                showfliers=False, medianprops={"color": "black", "linewidth": 1.2},
                whiskerprops={"linewidth": 0.9}, capprops={"linewidth": 0.9},
                boxprops={"linewidth": 0.8})
            for patch, median, (_, m) in zip(bxp["boxes"], bxp["medians"], drawn, strict=True):
                patch.set_facecolor(color[m])
                patch.set_gid(m)  # the method key, for whoever inspects the Figure
                median.set_gid(m)
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.4")
        ax.set_title(labels.get(a, a), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax0 = axes[0]
    ax0.set_xticks(list(positions), [tick[m] for m in methods])
    ax0.set_xlim(0.4, len(methods) + 0.6)
    ax0.set_ylim(-3, 103)
    ax0.set_yticks([0, 25, 50, 75, 100])
    for ax in axes[:len(attrs)]:
        ax.tick_params(axis="x", labelsize=8, labelbottom=True, length=2)
        ax.tick_params(axis="y", labelsize=8)
    fig.supylabel("Percentile of the attribute difference\n(lower is better)", fontsize=10)
    handles = [Patch(facecolor=color[m], edgecolor="black", linewidth=0.8,
                     label=f"{tick[m]} {names.get(m, m)}") for m in methods]
    handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=0.9,
                          label=f"random ({RANDOM_PERCENTILE:g})"))
    fig.legend(handles=handles, loc="outside lower center", frameon=False,
               ncols=min(len(handles), max(2, int(width / 1.6))),
               fontsize=9, title=f"Boxes: quartiles and median; whiskers: {WHIS:g} IQR; "
                                 "outliers not drawn.", title_fontsize=8)
    save_figure(fig, pdf_path, png_path, dpi=dpi)
    return fig


# ---------------------------------------------------------------- Fig. 3: retrieval grids
#: Fig. 3's row names where they differ from the methods' titles; an attribute-specific
#: method gets " (<attribute label>)" appended.
FIG3_NAMES: dict[str, str] = {"image_only": "Image only"}
#: Units written after the value in Fig. 3 (other attributes: none).
UNITS: dict[str, str] = {
    "tbp_lv_areaMM2": "mm²", "tbp_lv_minorAxisMM": "mm", "clin_size_long_diam_mm": "mm",
    "tbp_lv_perimeterMM": "mm",
}
#: Fig. 3's geometry, inches: tile side, space for the value above a tile, gap between tiles,
#: gap after the query column, gap between query groups, margin for the row names, header.
TILE_IN, TITLE_IN, GAP_IN, QUERY_GAP_IN, GROUP_GAP_IN, NAME_IN = 1.0, 0.24, 0.06, 0.3, 0.3, 1.3
HEAD_IN = 0.22


def pick_queries(test_ids, n: int, seed: int) -> list[str]:
    """``n`` query ids drawn from ``test_ids`` (deterministic in ``seed``, independent of the
    ids' order and duplicates). Prefix-stable: a larger ``n`` keeps the smaller pick first."""
    ids = sorted(set(test_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[:max(0, int(n))]]


def format_value(value: float | None, unit: str = "", decimals: int = 1) -> str:
    """``12.3 mm²``; a missing value (None/NaN/inf) is ``n/a``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{decimals}f}" + (f" {unit}" if unit else "")


def retrieval_rows(results: pl.DataFrame | pl.LazyFrame, query_ids, method: str,
                   attribute: str, k: int) -> dict[str, list[str]]:
    """query_id -> retrieved ids by rank (1..k) for ``method`` and ``attribute``.

    Rows for the attribute are used where the method has them, else its attribute-free rows
    (image-only methods store theirs once, with a null attribute).
    """
    rows = (results.lazy()
            .filter((pl.col("method") == method) & pl.col("query_id").is_in(list(query_ids))
                    & (pl.col("rank") <= k)
                    & (pl.col("attribute").is_null() | (pl.col("attribute") == attribute)))
            .select("attribute", "query_id", "rank", "retrieved_id")
            .collect())
    specific = rows.filter(pl.col("attribute") == attribute)
    rows = specific if specific.height else rows.filter(pl.col("attribute").is_null())
    out: dict[str, list[str]] = {}
    for q, ids in (rows.sort("query_id", "rank").group_by("query_id", maintain_order=True)
                   .agg(pl.col("retrieved_id")).iter_rows()):
        out[q] = ids
    return out


def _tile(store, isic_id: str, px: int) -> np.ndarray:
    """The image resized to a ``px`` square (SLICE-3D tiles are square 15 x 15 mm crops)."""
    img = store.read(isic_id).resize((px, px), Image.Resampling.LANCZOS)
    return np.asarray(img)


def fig3_candidates(results: pl.LazyFrame, manifest: pl.DataFrame, attribute: str,
                    methods, k: int) -> list[str]:
    """Query ids with all ``k`` hits for every method in ``methods`` present in ``results``
    (for ``attribute``, or attribute-free), and a finite value of ``attribute``."""
    rows = (results.filter(pl.col("method").is_in(list(methods)) & (pl.col("rank") <= k)
                           & (pl.col("attribute").is_null()
                              | (pl.col("attribute") == attribute)))
            .group_by("method", "query_id").agg(n=pl.col("rank").n_unique()).collect())
    present = rows["method"].unique().to_list()
    complete = rows.filter(pl.col("n") >= k).group_by("query_id").agg(pl.col("method").n_unique())
    complete = set(complete.filter(pl.col("method") == len(present))["query_id"].to_list())
    valued = manifest.filter(pl.col(attribute).cast(pl.Float64).is_finite())
    return sorted(complete & set(valued[ID_COLUMN].to_list()))


def fig3_retrievals(results: pl.DataFrame | pl.LazyFrame, store, manifest: pl.DataFrame, *,
                    query_ids, attribute: str, label: str, methods, k: int, decimals: int,
                    pdf_path: str | os.PathLike, png_path: str | os.PathLike,
                    method_names=None, unit: str | None = None, tile_px: int = 160,
                    dpi: int = 150) -> Figure:
    """Fig. 3: for each query, one row per method: the query tile at the left, then its top-k.

    ``results``: :func:`skinground.retrieve.results_frame` rows (any methods; LazyFrame ok),
    ``store``: has ``read(isic_id) -> PIL image`` (:func:`skinground.data.open_images`),
    ``manifest``: ``isic_id`` + the ``attribute`` column. Above every tile its attribute value
    (``format_value``: ``decimals``, ``unit`` defaulting to ``UNITS``), the query's in bold.
    Rows are named on the left ("Image only", "Image + Text (area)"); methods absent from
    ``results`` get no row (ValueError if none is present), a query with fewer than k hits
    leaves the rest blank. Tiles are resized to ``tile_px`` squares. Written as PDF + PNG;
    returns the Figure (tile Axes titles hold the values).
    """
    query_ids = list(query_ids)
    if not query_ids:
        raise ValueError("fig. 3 needs at least one query")
    unit = UNITS.get(attribute, "") if unit is None else unit
    names = {m: method_title(m) for m in METHODS} | FIG3_NAMES | dict(method_names or {})
    hits = {m: retrieval_rows(results, query_ids, m, attribute, k) for m in methods}
    methods = [m for m in methods if hits[m]]
    if not methods:
        raise ValueError(f"no results for the methods {list(hits)} and queries {query_ids}")
    needed = set(query_ids) | {i for m in methods for ids in hits[m].values() for i in ids}
    values = dict(manifest.lazy().filter(pl.col(ID_COLUMN).is_in(list(needed)))
                  .select(ID_COLUMN, pl.col(attribute).cast(pl.Float64)).collect().iter_rows())
    tiles = {i: _tile(store, i, tile_px) for i in sorted(needed)}

    row_h = TITLE_IN + TILE_IN
    group_h = len(methods) * row_h
    width = NAME_IN + TILE_IN + QUERY_GAP_IN + k * TILE_IN + (k - 1) * GAP_IN
    height = HEAD_IN + len(query_ids) * group_h + (len(query_ids) - 1) * GROUP_GAP_IN
    fig = Figure(figsize=(width, height))
    retrieved_x = NAME_IN + TILE_IN + QUERY_GAP_IN
    for x, text in ((NAME_IN + TILE_IN / 2, "query"),
                    (retrieved_x + (k * TILE_IN + (k - 1) * GAP_IN) / 2,
                     f"top-{k} retrieved (rank 1 → {k})")):
        fig.text(x / width, 1 - HEAD_IN / 2 / height, text, ha="center", va="center",
                 fontsize=9.5, style="italic")

    def add_tile(x_in: float, top_in: float, isic_id: str | None, title: str, bold: bool):
        """An image tile whose top-left corner (incl. its title space) is at x_in, top_in."""
        ax = fig.add_axes((x_in / width, (height - top_in - row_h) / height,
                           TILE_IN / width, TILE_IN / height))
        ax.set_xticks([])
        ax.set_yticks([])
        if isic_id is None:
            ax.set_axis_off()
            return ax
        ax.imshow(tiles[isic_id], aspect="auto")
        ax.set_title(title, fontsize=8.5, pad=3, fontweight="bold" if bold else "normal")
        for spine in ax.spines.values():
            spine.set_linewidth(1.6 if bold else 0.5)
        return ax

    for qi, q in enumerate(query_ids):
        group_top = HEAD_IN + qi * (group_h + GROUP_GAP_IN)
        for mi, m in enumerate(methods):
            top = group_top + mi * row_h
            per_attribute = m in METHODS and METHODS[m].per_attribute
            name = names.get(m, m) + (f"\n({label})" if per_attribute else "")
            fig.text((NAME_IN - 0.1) / width, (height - top - TITLE_IN - TILE_IN / 2) / height,
                     name, ha="right", va="center", fontsize=9.5)
            add_tile(NAME_IN, top, q, format_value(values.get(q), unit, decimals), True)
            ids = hits[m].get(q, [])
            for r in range(k):
                x = retrieved_x + r * (TILE_IN + GAP_IN)
                i = ids[r] if r < len(ids) else None
                add_tile(x, top, i, format_value(values.get(i), unit, decimals), False)
    save_figure(fig, pdf_path, png_path, dpi=dpi)
    return fig
