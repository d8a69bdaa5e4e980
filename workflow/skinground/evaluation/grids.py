"""Fig. 3: for a few test queries, the top-k train images of image-only vs image + text
retrieval for one attribute, with the attribute's value above every tile."""

from __future__ import annotations

import math
import os

import numpy as np
import polars as pl
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.textpath import TextPath
from PIL import Image

from skinground.core.plan import FIG3_METHODS, QWEN_METHODS
from skinground.data.attributes import ID_COLUMN
from skinground.evaluation.boxplots import method_title
from skinground.evaluation.figures import save_figure

#: Fig. 3's row names where they differ from the methods' titles; an attribute-specific
#: method gets " (<attribute label>)" appended.
FIG3_NAMES: dict[str, str] = {"image_only": "Image only"}
#: Units written after the value in Fig. 3 (other attributes: none).
UNITS: dict[str, str] = {
    "tbp_lv_areaMM2": "mm²", "tbp_lv_minorAxisMM": "mm", "clin_size_long_diam_mm": "mm",
    "tbp_lv_perimeterMM": "mm",
}
#: Fig. 3's geometry, inches: tile side, space for the value above a tile, gap between tiles,
#: gap after the query column, gap between query groups, margin for the row names (at least:
#: wider where a name needs it), header.
TILE_IN, TITLE_IN, GAP_IN, QUERY_GAP_IN, GROUP_GAP_IN, NAME_IN = 1.0, 0.24, 0.06, 0.3, 0.3, 1.3
HEAD_IN = 0.22
#: The row names' font size, points.
NAME_PT = 9.5


def pick_queries(test_ids, n: int, seed: int) -> list[str]:
    """``n`` query ids drawn from ``test_ids`` (deterministic in ``seed``, independent of the
    ids' order and duplicates). Prefix-stable: a larger ``n`` keeps the smaller pick first."""
    ids = sorted(set(test_ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in order[:max(0, int(n))]]


def tile_title(value: float | None, unit: str = "", decimals: int = 1) -> str:
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


def tile_image(store, isic_id: str, px: int) -> np.ndarray:
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


def fig3_queries(results: pl.LazyFrame, manifest: pl.DataFrame, attribute: str, k: int,
                 n: int, seed: int) -> list[str]:
    """Fig. 3's queries: ``n`` of :func:`fig3_candidates` for ``plan.FIG3_METHODS``, drawn
    with ``seed`` (:func:`pick_queries`); [] where no query qualifies. The figure draws them
    and the verdict measures them (``evaluation.far_off``)."""
    return pick_queries(fig3_candidates(results, manifest, attribute, FIG3_METHODS, k), n, seed)


def fig3_retrievals(results: pl.DataFrame | pl.LazyFrame, store, manifest: pl.DataFrame, *,
                    query_ids, attribute: str, label: str, methods, k: int, decimals: int,
                    pdf_path: str | os.PathLike, png_path: str | os.PathLike,
                    method_names=None, unit: str | None = None, tile_px: int = 160,
                    dpi: int = 150) -> Figure:
    """Fig. 3: for each query, one row per method: the query tile at the left, then its top-k.

    ``results``: :func:`skinground.retrieval.search.results_frame` rows (any methods; LazyFrame ok),
    ``store``: has ``read(isic_id) -> PIL image`` (:func:`skinground.data.images.open_images`),
    ``manifest``: ``isic_id`` + the ``attribute`` column. Above every tile its attribute value
    (``tile_title``: ``decimals``, ``unit`` defaulting to ``UNITS``), the query's in bold.
    Rows are named on the left ("Image only", "Image + Text (area)"); methods absent from
    ``results`` get no row (ValueError if none is present), a query with fewer than k hits
    leaves the rest blank. Tiles are resized to ``tile_px`` squares. Written as PDF + PNG;
    returns the Figure (tile Axes titles hold the values).
    """
    query_ids = list(query_ids)
    if not query_ids:
        raise ValueError("fig. 3 needs at least one query")
    unit = UNITS.get(attribute, "") if unit is None else unit
    names = {m: method_title(m) for m in QWEN_METHODS} | FIG3_NAMES | dict(method_names or {})
    hits = {m: retrieval_rows(results, query_ids, m, attribute, k) for m in methods}
    methods = [m for m in methods if hits[m]]
    if not methods:
        raise ValueError(f"no results for the methods {list(hits)} and queries {query_ids}")
    needed = set(query_ids) | {i for m in methods for ids in hits[m].values() for i in ids}
    values = dict(manifest.lazy().filter(pl.col(ID_COLUMN).is_in(list(needed)))
                  .select(ID_COLUMN, pl.col(attribute).cast(pl.Float64)).collect().iter_rows())
    tiles = {i: tile_image(store, i, tile_px) for i in sorted(needed)}

    def tile(i):
        return None if i is None else (tiles[i], tile_title(values.get(i), unit, decimals))

    groups = []
    for q in query_ids:
        rows = []
        for m in methods:
            per_attribute = m in QWEN_METHODS and QWEN_METHODS[m].per_attribute
            ids = hits[m].get(q, [])
            rows.append((names.get(m, m) + (f"\n({label})" if per_attribute else ""), tile(q),
                         [tile(ids[r]) if r < len(ids) else None for r in range(k)]))
        groups.append(rows)
    fig = draw_grid(groups, k)
    save_figure(fig, pdf_path, png_path, dpi=dpi)
    return fig


def draw_grid(groups, k: int) -> Figure:
    """The grid of Fig. 3: per query group, rows ``(name, query tile, [k retrieved tiles])``,
    a tile being ``(image array, title)`` or None (blank); the query's title in bold. The
    names' margin is ``NAME_IN``, or the longest name's width where that is more."""
    row_h = TITLE_IN + TILE_IN
    n_rows = sum(len(g) for g in groups)
    name_in = max([NAME_IN] + [_text_in(name) + 0.2 for rows in groups for name, *_ in rows])
    width = name_in + TILE_IN + QUERY_GAP_IN + k * TILE_IN + (k - 1) * GAP_IN
    height = HEAD_IN + n_rows * row_h + (len(groups) - 1) * GROUP_GAP_IN
    fig = Figure(figsize=(width, height))
    retrieved_x = name_in + TILE_IN + QUERY_GAP_IN
    for x, text in ((name_in + TILE_IN / 2, "query"),
                    (retrieved_x + (k * TILE_IN + (k - 1) * GAP_IN) / 2,
                     f"top-{k} retrieved (rank 1 → {k})")):
        fig.text(x / width, 1 - HEAD_IN / 2 / height, text, ha="center", va="center",
                 fontsize=9.5, style="italic")

    def add_tile(x_in: float, top_in: float, tile, bold: bool):
        """An image tile whose top-left corner (incl. its title space) is at x_in, top_in."""
        ax = fig.add_axes((x_in / width, (height - top_in - row_h) / height,
                           TILE_IN / width, TILE_IN / height))
        ax.set_xticks([])
        ax.set_yticks([])
        if tile is None:
            ax.set_axis_off()
            return ax
        ax.imshow(tile[0], aspect="auto")
        ax.set_title(tile[1], fontsize=8.5, pad=3, fontweight="bold" if bold else "normal")
        for spine in ax.spines.values():
            spine.set_linewidth(1.6 if bold else 0.5)
        return ax

    top = HEAD_IN
    for rows in groups:
        for name, query, retrieved in rows:
            fig.text((name_in - 0.1) / width, (height - top - TITLE_IN - TILE_IN / 2) / height,
                     name, ha="right", va="center", fontsize=NAME_PT)
            add_tile(name_in, top, query, True)
            for r, t in enumerate(retrieved):
                add_tile(retrieved_x + r * (TILE_IN + GAP_IN), top, t, False)
            top += row_h
        top += GROUP_GAP_IN
    return fig


def _text_in(text: str, size: float = NAME_PT) -> float:
    """The width in inches of ``text``'s longest line at ``size`` points (the default font)."""
    prop = FontProperties(size=size)
    return max(TextPath((0, 0), line, prop=prop).get_extents().width
               for line in text.splitlines() or [""]) / 72
