"""The paper's figures, drawn on standalone matplotlib Figures (no pyplot state, no display)
and saved atomically as PDF and PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import polars as pl
import seaborn as sns
from matplotlib.figure import Figure

from skinground.core.io import atomic_path

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
            # no creation date: the same run gives the same bytes
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight",
                        metadata={"CreationDate": None} if fmt == "pdf" else None)


def fig2_r2(table: pl.DataFrame, labels: Mapping[str, str], pdf_path: str | os.PathLike,
            png_path: str | os.PathLike, *, column: str = "r2_filled",
            confidence: float = 0.95) -> Figure:
    """Fig. 2: test-set R² per attribute (x: the attribute's short label), one bar per model.

    ``table``: ``metrics.r2_table`` (model, attribute, ``column``); attributes keep the
    table's order. The y axis spans [-1, 1]: a bar whose R² is below -1 is drawn down to -1
    and its true value is written on it; an undefined R² (NaN) is marked "n/a". With
    ``metrics.with_intervals``' columns: whiskers for ``column``'s interval, and below it a
    second panel with the robust figure, Spearman's ρ with its interval. Returns the Figure.
    """
    attrs = list(dict.fromkeys(table["attribute"].to_list()))
    present = set(table["model"].to_list())
    hue_order = [m for m in MODEL_ORDER if m in present] + sorted(present - set(MODEL_ORDER))
    robust = "spearman" in table.columns
    fig = Figure(figsize=(max(6.0, 0.6 * len(attrs) + 2), 8.4 if robust else 4.8),
                 layout="constrained")
    axes = fig.subplots(2 if robust else 1, 1, squeeze=False).ravel()
    notes = _fig2_panel(axes[0], table, labels, attrs, hue_order, column)
    axes[0].set_ylabel("R²" + (" (unparsable answers → train mean)" if column == "r2_filled"
                               else " (parsed answers only)"))
    axes[0].set_title("Test-set R² per attribute")
    if robust:
        _fig2_panel(axes[1], table, labels, attrs, hue_order, "spearman", annotate=False)
        axes[1].set_ylabel("Spearman's ρ (parsed answers)")
        axes[1].set_title("The same answers by rank: one wrong digit cannot wreck ρ")
    if f"{column}_lo" in table.columns:
        notes.add(f"Whiskers: {confidence:.0%} bootstrap interval over test patients.")
    if notes:
        fig.supxlabel("   ".join(sorted(notes)), fontsize=8, style="italic")
    save_figure(fig, pdf_path, png_path)
    return fig


def _fig2_panel(ax, table: pl.DataFrame, labels: Mapping[str, str], attrs: list[str],
                hue_order: list[str], column: str, *, annotate: bool = True) -> set[str]:
    """One panel of Fig. 2: ``column`` per attribute and model as bars on [-1, 1] (below -1
    drawn to -1, the value written on it; NaN marked "n/a"), whiskers for
    ``column``_lo/_hi when the table has them, † on bars with unparsable answers
    (``annotate``). Returns the notes for under the figure."""
    names = [labels.get(a, a) for a in attrs]
    rows = list(table.select("model", "attribute", column).iter_rows())
    data = {
        "label": [labels.get(a, a) for _, a, _ in rows],
        "model": [m for m, _, _ in rows],
        "r2": [max(v, R2_FLOOR) if v is not None and not math.isnan(v) else math.nan
               for _, _, v in rows],
    }
    sns.barplot(data=data, x="label", y="r2", hue="model", order=names, hue_order=hue_order,
                palette="colorblind", errorbar=None, width=BAR_WIDTH, ax=ax)
    _r2_axis(ax)

    # Annotations at seaborn's dodged bar centres (explicit width, hue_order, order).
    xs = [_dodged(len(hue_order), hue_order.index(m), attrs.index(a)) for m, a, _ in rows]
    if f"{column}_lo" in table.columns:
        _errorbars(ax, xs, [v for _, _, v in rows], table[f"{column}_lo"].to_list(),
                   table[f"{column}_hi"].to_list())
    notes = set()
    unparsable = {(m, a): k for m, a, k in table.select(
        "model", "attribute", pl.col("n_unparsable") if "n_unparsable" in table.columns
        else pl.lit(0)).iter_rows()}
    for x, (m, a, value) in zip(xs, rows, strict=True):
        if value is None or math.isnan(value):
            ax.text(x, 0.02, "n/a", ha="center", va="bottom", rotation=90, fontsize=7)
        elif value < R2_FLOOR:
            notes.add(f"Bars end at {R2_FLOOR:g}; the true value is written on them.")
            ax.text(x, R2_FLOOR + 0.03, f"{value:.3g}", ha="center", va="bottom",
                    rotation=90, fontsize=7, color="white", fontweight="bold")
        if annotate and unparsable.get((m, a)):
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
    return notes


def _r2_axis(ax) -> None:
    """Fig. 2's R² axis: the zero line, -1 to 1 (bars below -1 end there), the attribute
    labels slanted under their bars, a light y grid."""
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylim(R2_FLOOR - 0.08, 1.1)
    ax.set_yticks([-1, -0.5, 0, 0.5, 1])
    ax.set_xlabel("")
    ax.tick_params(axis="x", labelrotation=45)
    for tick in ax.get_xticklabels():
        tick.set_horizontalalignment("right")
        tick.set_rotation_mode("anchor")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _errorbars(ax, xs, values, lows, highs) -> None:
    """Interval whiskers at ``xs`` (NaN ones skipped), values clipped to Fig. 2's floor."""
    import numpy as np

    v, lo, hi = (np.asarray(a, dtype=float) for a in (values, lows, highs))
    ok = np.isfinite(v) & np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        shown = np.maximum(v[ok], R2_FLOOR)
        ax.errorbar(np.asarray(xs, dtype=float)[ok], shown,
                    yerr=[np.clip(shown - np.maximum(lo[ok], R2_FLOOR), 0, None),
                          np.clip(np.maximum(hi[ok], R2_FLOOR) - shown, 0, None)],
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=2, zorder=3)


def _dodged(n_hues: int, hue: int, group: int) -> float:
    """The centre of seaborn's dodged bar ``hue`` of ``group`` (explicit BAR_WIDTH)."""
    step = BAR_WIDTH / n_hues
    return group - BAR_WIDTH / 2 + step * (hue + 0.5)


def fig2_probe(table: pl.DataFrame, pdf_path: str | os.PathLike,
               png_path: str | os.PathLike, *, confidence: float = 0.95) -> Figure:
    """Beyond the paper, beside Fig. 2: per attribute, the test R² of the tuned model's
    generated answers and of each space's ridge probe, with their intervals.

    ``table``: ``probe.beside_answers`` (label, source, space, r2, r2_lo, r2_hi). The y axis
    spans [-1, 1] as Fig. 2's; lower bars end at -1. Returns the Figure.
    """
    names = list(dict.fromkeys(table["label"].to_list()))
    table = table.with_columns(
        bar=pl.when(pl.col("source") == "answers")
        .then(pl.lit("answers (tuned)"))
        .otherwise(pl.lit("probe: ") + pl.col("space")))
    bars = list(dict.fromkeys(table["bar"].to_list()))
    fig = Figure(figsize=(max(7.0, 0.75 * len(names) + 2.5), 4.8), layout="constrained")
    ax = fig.add_subplot()
    data = {"label": table["label"].to_list(), "bar": table["bar"].to_list(),
            "r2": [max(v, R2_FLOOR) if v is not None and not math.isnan(v) else math.nan
                   for v in table["r2"].to_list()]}
    sns.barplot(data=data, x="label", y="r2", hue="bar", order=names, hue_order=bars,
                palette="colorblind", errorbar=None, width=BAR_WIDTH, ax=ax)
    xs = [_dodged(len(bars), bars.index(b), names.index(a))
          for a, b in zip(table["label"], table["bar"], strict=True)]
    _errorbars(ax, xs, table["r2"], table["r2_lo"], table["r2_hi"])
    _r2_axis(ax)
    ax.set_ylabel("Test R²")
    ax.set_title("Generated answers vs a ridge probe of each image-level space")
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(None)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.supxlabel(f"Whiskers: {confidence:.0%} bootstrap interval over test patients; bars "
                  "below -1 end there.", fontsize=8, style="italic")
    save_figure(fig, pdf_path, png_path)
    return fig
