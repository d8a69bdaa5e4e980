"""Fig. 4 and Fig. 5: the percentile ranks of retrieved images as boxplots, one box per
method, drawn on standalone matplotlib Figures and saved as ``figures`` saves them."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from skinground.core.io import atomic_path
from skinground.core.plan import GROUP_METHODS, QWEN_METHODS, group_method_order
from skinground.evaluation.figures import save_figure
from skinground.evaluation.style import method_colours, stand_in

#: Whisker reach in IQRs (matplotlib's default); points beyond are not drawn (see fig. 4).
WHIS = 1.5
#: The percentile of a uniformly random retrieval (evaluate's mid-rank averages exactly 50).
RANDOM_PERCENTILE = 50.0
#: A panel's size in inches (width, height) in the grids of Figs. 4 and 5, and alone.
PANEL_IN = (2.3, 2.0)
PANEL_ALONE_IN = (3.4, 3.0)


def method_title(method: str) -> str:
    """A Qwen2-VL method's title (``plan.QWEN_METHODS``), else the name itself."""
    return QWEN_METHODS[method].title if method in QWEN_METHODS else method


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
                     png_path: str | os.PathLike, *,
                     methods: Mapping[str, Sequence[str]] | None = None,
                     intervals: pl.DataFrame | None = None, confidence: float = 0.95,
                     dpi: int = 150, panels: str | os.PathLike | None = None,
                     stand_ins: Collection[str] = ()) -> Figure:
    """Fig. 4: one panel per attribute (title: its label), one box per method, y = percentile.

    ``table``: :func:`percentile.evaluate`'s rows (method, attribute, percentile;
    null = excluded) — a LazyFrame works too. Panels follow ``labels``' order (the config's),
    then any other attribute of the table in table order, on a near-square grid (16 -> 4 x 4);
    empty grid cells are removed, so ``fig.axes`` holds one Axes per attribute.

    Boxes: quartiles, the median (black) and whiskers to 1.5 IQR; outliers are NOT drawn (a
    paper-scale box holds ~590k values, so the points beyond the whiskers would be a solid
    smear; the whiskers reach the bounded 0-100 range anyway). ``methods``: the run's methods,
    name -> (letter, title), in the paper's order (``plan.methods(config)``: (a) Image + Text
    ... (d), then the image encoders (e), (e2), ..., e.g. (e) MONET, (e2) MedSigLIP; default:
    the Qwen2-VL methods only). Each keeps its letter and its colour (``style.method_colours``
    over ``methods``: the same in every figure) whether or not the others are present; a
    method not in ``methods`` follows them, sorted, its name as its tick. Methods absent from
    the table get no slot, a method without values for one attribute leaves its slot empty
    there. The dashed line at 50 marks random retrieval. Shared y axis 0-100 (lower is
    better); x ticks are the letters, and one legend at the right maps them to names (a
    method of ``stand_ins``, an encoder ``model.build_tiny`` built, marked "tiny random
    stand-in"). Written as PDF + PNG (``dpi``); returns the Figure (each box patch and median
    line has the method key as its ``gid``). ``intervals``: the evaluation summary (method,
    attribute, median_lo, median_hi): each box's notch is its median's bootstrap interval
    (``confidence``). ``panels``: a folder to also write each attribute's panel alone into,
    from the same box statistics (:func:`fig4_panels`).
    """
    layout = _fig4_layout(table, labels, method_names, methods, stand_ins)
    by_attribute = _intervals(intervals, "attribute")
    fig = panel_boxplots(layout.stats, [(a, labels.get(a, a)) for a in layout.attrs],
                         layout.drawn, **layout.style, intervals=by_attribute,
                         confidence=confidence, reference=_random(layout.attrs),
                         reference_label=f"random ({RANDOM_PERCENTILE:g})")
    save_figure(fig, pdf_path, png_path, dpi=dpi)
    if panels is not None:
        _write_panels(layout, labels, panels, by_attribute, confidence)
    return fig


def fig4_panels(table: pl.DataFrame | pl.LazyFrame, labels: Mapping[str, str],
                folder: str | os.PathLike, *,
                methods: Mapping[str, Sequence[str]] | None = None,
                intervals: pl.DataFrame | None = None, confidence: float = 0.95,
                dpi: int = 110, stand_ins: Collection[str] = ()) -> dict[str, Figure]:
    """Fig. 4 one attribute at a time, for the report's per-attribute items:
    ``folder``/<attribute>.png, each the attribute's panel of :func:`fig4_percentiles` (the
    same boxes, ticks, colours and notches) with its own legend, on a larger panel. The folder
    is written atomically; returns attribute -> its Figure, in panel order."""
    return _write_panels(_fig4_layout(table, labels, None, methods, stand_ins), labels, folder,
                         _intervals(intervals, "attribute"), confidence, dpi)


def _write_panels(layout, labels, folder, by_attribute, confidence, dpi: int = 110):
    """``fig4_panels``' files from Fig. 4's layout (``_fig4_layout``)."""
    panels = {}
    with atomic_path(folder, directory=True) as tmp:
        for a in layout.attrs:
            fig = panel_boxplots(layout.stats.filter(pl.col("attribute") == a),
                                 [(a, labels.get(a, a))], layout.drawn, **layout.style,
                                 grid=(1, 1), intervals=by_attribute, confidence=confidence,
                                 reference=_random([a]),
                                 reference_label=f"random ({RANDOM_PERCENTILE:g})",
                                 panel_in=PANEL_ALONE_IN)
            fig.savefig(tmp / f"{a}.png", dpi=dpi, bbox_inches="tight")
            panels[a] = fig
    return panels


class _Fig4Layout(NamedTuple):
    stats: pl.DataFrame
    attrs: list[str]
    drawn: list[str]
    style: dict


def _random(keys) -> dict[str, float]:
    """Fig. 4's reference line, true on every panel: random retrieval's percentile."""
    return dict.fromkeys(keys, RANDOM_PERCENTILE)


def _fig4_layout(table, labels, method_names, methods, stand_ins=()) -> _Fig4Layout:
    """Fig. 4's boxes (``box_stats``), its panels in order, the methods drawn and their
    ticks, colours, names and y label (``fig4_percentiles``' docstring)."""
    known = ({m: (q.letter, q.title) for m, q in QWEN_METHODS.items()} if methods is None
             else {m: tuple(v) for m, v in methods.items()})
    names = {m: title for m, (_, title) in known.items()} | dict(method_names or {})
    names = {m: stand_in(title, m, stand_ins) for m, title in names.items()}
    lazy = table.lazy()
    stats = box_stats(lazy)
    in_table = lazy.select(pl.col("attribute").unique(maintain_order=True)).collect()
    in_table = in_table["attribute"].to_list()
    attrs = [a for a in labels if a in in_table] + [a for a in in_table if a not in labels]
    present = set(lazy.select(pl.col("method").unique()).collect()["method"])
    extras = sorted(present - set(known))
    colours = method_colours([*known, *extras])  # every known method: fixed colours
    drawn = [m for m in colours if m in present]
    tick = {m: f"({known[m][0]})" if m in known else m for m in drawn}
    color = {m: colours[m] for m in drawn}
    return _Fig4Layout(stats, attrs, drawn, {
        "tick": tick, "color": color, "names": names,
        "ylabel": "Percentile of the attribute difference\n(lower is better)"})


def _intervals(summary: pl.DataFrame | None, key: str) -> dict | None:
    """(method, panel key) -> (median_lo, median_hi) of a summary (``key``: its panel
    column)."""
    if summary is None:
        return None
    return {(m, a): (lo, hi) for m, a, lo, hi in
            summary.select("method", key, "median_lo", "median_hi").iter_rows()}


def panel_boxplots(stats: pl.DataFrame, panels, methods, *, tick, color, names, ylabel: str,
                   grid: tuple[int, int] | None = None, intervals: Mapping | None = None,
                   confidence: float = 0.95, reference: Mapping | None = None,
                   reference_label: str = "", panel_in: tuple[float, float] = PANEL_IN) -> Figure:
    """Fig. 4's layout: one Axes per panel ``(key, title)`` (``stats``' ``attribute`` column
    holds the key), one box per method at a fixed slot, 0-100 shared y axis, x ticks
    ``tick[m]``, the y label beside the grid and one legend at its right mapping ticks to
    ``names``, under the caption of what boxes, whiskers and notches are. The figure is the
    grid (``panel_in`` per panel) plus the legend's width, so no text leaves it or lies on
    another. ``intervals``: (method, key) -> (lo, hi) of each median, drawn as the box's
    notch. ``reference``: key -> the value of random retrieval on that panel (or None), drawn
    as a dashed line, ``reference_label`` in the legend."""
    boxes = {(row["method"], row["attribute"]): row for row in stats.iter_rows(named=True)}

    def notch(m, a):
        lo, hi = (intervals or {}).get((m, a), (None, None))
        med = boxes[m, a]["med"]
        ok = lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi)
        return {"cilo": lo if ok else med, "cihi": hi if ok else med}
    nrows, ncols = grid or _grid(len(panels))
    grid_w, grid_h = panel_in[0] * ncols + 0.7, panel_in[1] * nrows + 0.9
    fig = Figure(figsize=(grid_w, grid_h), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in axes[len(panels):]:
        fig.delaxes(ax)
    positions = range(1, len(methods) + 1)
    references = False
    for ax, (a, title) in zip(axes[:len(panels)], panels, strict=True):
        ref = (reference or {}).get(a)
        if ref is not None and math.isfinite(ref):
            ax.axhline(ref, color="0.4", linestyle="--", linewidth=0.9, zorder=0)
            references = True
        drawn = [(pos, m) for pos, m in enumerate(methods, start=1) if (m, a) in boxes]
        if drawn:
            bxp = ax.bxp(
                [{k: boxes[m, a][k] for k in ("q1", "med", "q3", "whislo", "whishi", "mean")}
                 | {"fliers": [], "label": tick[m]} | notch(m, a) for _, m in drawn],
                positions=[pos for pos, _ in drawn], widths=0.65, patch_artist=True,
                showfliers=False, shownotches=intervals is not None,
                medianprops={"color": "black", "linewidth": 1.2},
                whiskerprops={"linewidth": 0.9}, capprops={"linewidth": 0.9},
                boxprops={"linewidth": 0.8})
            for patch, median, (_, m) in zip(bxp["boxes"], bxp["medians"], drawn, strict=True):
                patch.set_facecolor(color[m])
                patch.set_gid(m)  # the method key, for whoever inspects the Figure
                median.set_gid(m)
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center",
                    va="center", fontsize=8, color="0.4")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax0 = axes[0]
    ax0.set_xticks(list(positions), [tick[m] for m in methods])
    ax0.set_xlim(0.4, len(methods) + 0.6)
    ax0.set_ylim(-3, 103)
    ax0.set_yticks([0, 25, 50, 75, 100])
    for ax in axes[:len(panels)]:
        ax.tick_params(axis="x", labelsize=8, labelbottom=True, length=2)
        ax.tick_params(axis="y", labelsize=8)
    fig.supylabel(ylabel, fontsize=10)
    handles = [Patch(facecolor=color[m], edgecolor="black", linewidth=0.8,
                     label=f"{tick[m]} {names.get(m, m)}") for m in methods]
    if references:
        handles.append(Line2D([], [], color="0.4", linestyle="--", linewidth=0.9,
                              label=reference_label))
    caption = (f"Boxes: quartiles and median; whiskers: {WHIS:g} IQR; outliers not drawn."
               + (f" Notches: the median's {confidence:.0%} bootstrap interval over test "
                  "patients." if intervals else ""))
    longest = max(len(h.get_label()) for h in handles)
    legend = fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=9,
                        title=textwrap.fill(caption, max(30, int(1.3 * longest) + 4)),
                        title_fontsize=8,
                        alignment="left")
    # The legend takes the width it needs at the grid's right, the grid keeps its own.
    size = legend.get_window_extent(FigureCanvasAgg(fig).get_renderer())
    fig.set_size_inches(grid_w + size.width / fig.dpi + 0.2,
                        max(grid_h, size.height / fig.dpi + 0.3))
    return fig


def fig5_groups(table: pl.DataFrame | pl.LazyFrame, groups: Mapping[str, Sequence[str]],
                labels: Mapping[str, str], pdf_path: str | os.PathLike,
                png_path: str | os.PathLike, *, intervals: pl.DataFrame | None = None,
                confidence: float = 0.95, dpi: int = 150) -> Figure:
    """Fig. 5 (beyond the paper): one panel per (criterion, group) — top row the max over the
    group's attributes of the percentile ranks, bottom row their mean — one box per group
    method (``plan.GROUP_METHODS``' letters and names, each in its colour of every figure:
    ``style.method_colours``), in the style of Fig. 4.

    ``table``: :func:`skinground.data.groups.evaluate_groups`' rows (method, group, max, mean);
    ``intervals``: its summary (group, method, criterion, median_lo, median_hi), drawn as
    notches. The dashed line of a panel is random train images' (r) median there (the max of
    a group's random percentiles is not 50): none where (r) has no box.
    """
    lazy = table.lazy()
    present = lazy.select(pl.col("method").unique()).collect()["method"].to_list()
    methods = group_method_order(present)
    colours = method_colours([*GROUP_METHODS, *methods])
    tick = {m: f"({GROUP_METHODS[m].letter})" if m in GROUP_METHODS else m for m in methods}
    names = {m: GROUP_METHODS[m].title if m in GROUP_METHODS else m for m in methods}
    color = {m: colours[m] for m in methods}
    stats, panels = [], []
    for criterion in ("max", "mean"):
        for g, members in groups.items():
            key = f"{criterion}:{g}"
            stats.append(box_stats(lazy.filter(pl.col("group") == g).select(
                "method", attribute=pl.lit(key), percentile=pl.col(criterion))))
            panels.append((key, f"{g} ({criterion})\n" + textwrap.fill(
                ", ".join(labels.get(a, a) for a in members), 30)))
    stats = pl.concat(stats)
    tick_r = f"({GROUP_METHODS['random'].letter})"
    random = dict(stats.filter(pl.col("method") == "random").select("attribute", "med")
                  .iter_rows())
    if intervals is not None:
        intervals = intervals.with_columns(
            key=pl.col("criterion") + pl.lit(":") + pl.col("group"))
    fig = panel_boxplots(stats, panels, methods, tick=tick, color=color,
                         names=names, grid=(2, max(1, len(groups))),
                         intervals=_intervals(intervals, "key"), confidence=confidence,
                         reference=random, reference_label=f"random: the median of {tick_r}",
                         ylabel="Group criterion: max / mean over the group's attributes\n"
                                "of the percentile ranks (lower is better)")
    save_figure(fig, pdf_path, png_path, dpi=dpi)
    return fig
