"""The paper's figures, drawn on standalone matplotlib Figures (no pyplot state, no display)
and saved atomically as PDF and PNG."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import polars as pl
import seaborn as sns
from matplotlib.figure import Figure

from skinground.io import atomic_path

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
