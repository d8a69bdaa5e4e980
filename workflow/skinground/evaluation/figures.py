"""The paper's figures, drawn on standalone matplotlib Figures (no pyplot state, no display)
and saved atomically as PDF and PNG."""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Collection, Mapping

import polars as pl
import seaborn as sns
from matplotlib.figure import Figure

from skinground.core.io import atomic_path
from skinground.evaluation.style import ANSWER_COLOURS, method_colours, stand_in

#: Models in the order of the legend; others follow, sorted.
MODEL_ORDER = ("untuned", "tuned")
#: Fig. 2's y range: R² below -1 is drawn at -1 with its value written on the bar.
R2_FLOOR = -1.0
#: Width of a group of bars (seaborn's default, given explicitly for the annotations).
BAR_WIDTH = 0.8
#: The mark at -1 of an interval that reaches below it (drawn down to -1, clipped there).
CLIPPED = "▼"
#: The method that searches each Qwen2-VL model's image-level space h_im: its probe's bars
#: beside Fig. 2 take the method's colour (an encoder's probe: the encoder's method's).
PROBED_METHOD = {"tuned": "image_only", "untuned": "image_untuned"}


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
    ``metrics.with_intervals``' columns: whiskers for ``column``'s interval (one reaching
    below -1 drawn to -1 and marked there with ``CLIPPED``), and below it a second panel with
    the robust figure, Spearman's ρ with its interval. The notes under the figure say what
    each mark means. Returns the Figure.
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
        fig.supxlabel(_notes(sorted(notes), fig), fontsize=8, style="italic")
    save_figure(fig, pdf_path, png_path)
    return fig


def _notes(notes: list[str], fig: Figure) -> str:
    """The notes under a figure, as many to a line as its width holds (8 pt italic)."""
    width = max(40, int(fig.get_figwidth() * 72 / 4.6))  # characters of ~4.6 pt
    lines: list[str] = []
    for note in notes:
        if lines and len(lines[-1]) + 3 + len(note) <= width:
            lines[-1] += "   " + note
        else:
            lines += textwrap.wrap(note, width)
    return "\n".join(lines)


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
    others = iter(sns.color_palette("colorblind"))
    palette = {m: ANSWER_COLOURS.get(m) or next(others) for m in hue_order}
    sns.barplot(data=data, x="label", y="r2", hue="model", order=names, hue_order=hue_order,
                palette=palette, saturation=1, errorbar=None, width=BAR_WIDTH, ax=ax)
    _r2_axis(ax)

    # Annotations at seaborn's dodged bar centres (explicit width, hue_order, order).
    xs = [_dodged(len(hue_order), hue_order.index(m), attrs.index(a)) for m, a, _ in rows]
    notes = set()
    if f"{column}_lo" in table.columns and _errorbars(
            ax, xs, [v for _, _, v in rows], table[f"{column}_lo"].to_list(),
            table[f"{column}_hi"].to_list()):
        notes.add(CLIPPED_NOTE)
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


#: The note under a figure with a clipped interval.
CLIPPED_NOTE = (f"{CLIPPED}: the interval reaches below {R2_FLOOR:g} (clipped there; its end is "
                "in the table).")


def _errorbars(ax, xs, values, lows, highs) -> bool:
    """Interval whiskers at ``xs`` (NaN ones skipped), values clipped to Fig. 2's floor: an
    interval reaching below it is drawn down to it without a cap and marked there with
    ``CLIPPED`` (a downward triangle). Returns whether any interval was clipped."""
    import numpy as np

    x, v, lo, hi = (np.asarray(a, dtype=float) for a in (xs, values, lows, highs))
    ok = np.isfinite(v) & np.isfinite(lo) & np.isfinite(hi)
    clipped = ok & (lo < R2_FLOOR)
    for part, caps in ((ok & ~clipped, 2), (clipped, 0)):
        if part.any():
            shown = np.maximum(v[part], R2_FLOOR)
            ax.errorbar(x[part], shown,
                        yerr=[np.clip(shown - np.maximum(lo[part], R2_FLOOR), 0, None),
                              np.clip(np.maximum(hi[part], R2_FLOOR) - shown, 0, None)],
                        fmt="none", ecolor="black", elinewidth=0.8, capsize=caps, zorder=3)
    if clipped.any():
        ax.plot(x[clipped], np.full(int(clipped.sum()), R2_FLOOR), linestyle="none",
                marker="v", markersize=5, color="black", zorder=4, gid="clipped")
    return bool(clipped.any())


def _dodged(n_hues: int, hue: int, group: int) -> float:
    """The centre of seaborn's dodged bar ``hue`` of ``group`` (explicit BAR_WIDTH)."""
    step = BAR_WIDTH / n_hues
    return group - BAR_WIDTH / 2 + step * (hue + 0.5)


def fig2_probe(table: pl.DataFrame, pdf_path: str | os.PathLike,
               png_path: str | os.PathLike, *, confidence: float = 0.95,
               titles: Mapping[str, str] | None = None,
               stand_ins: Collection[str] = ()) -> Figure:
    """Beyond the paper, beside Fig. 2: per attribute, the test R² of the tuned model's
    generated answers and of each space's ridge probe, with their intervals.

    ``table``: ``probe.beside_answers`` (label, source, space, r2, r2_lo, r2_hi). The y axis
    spans [-1, 1] as Fig. 2's; lower bars end at -1, lower intervals are marked there as
    Fig. 2's. ``titles``: the run's image encoders, name -> title, in config order (a probe
    of an encoder is named by its title, marked "tiny random stand-in" when in
    ``stand_ins``). A probe's bars take the colour of the method that searches its space
    (the tuned h_im: (c)'s, the untuned: (d)'s, an encoder's: its own method's), the
    answers' a grey of their own. Returns the Figure.
    """
    titles = dict(titles or {})
    names = list(dict.fromkeys(table["label"].to_list()))
    legend_of = {m: stand_in(t, m, stand_ins) for m, t in titles.items()}
    table = table.with_columns(
        bar=pl.when(pl.col("source") == "answers")
        .then(pl.lit("answers (tuned)"))
        .otherwise(pl.lit("probe: ") + pl.col("space").replace(legend_of)))
    bars = list(dict.fromkeys(table["bar"].to_list()))
    method = {"answers": None} | PROBED_METHOD
    spaces = table["space"].unique(maintain_order=True).to_list()
    colours = method_colours([*PROBED_METHOD.values(), *titles,
                              *(s for s in spaces if s not in PROBED_METHOD)])
    palette = {}
    for source, space, bar in table.select("source", "space", "bar").unique(
            maintain_order=True).iter_rows():
        palette[bar] = (ANSWER_COLOURS["tuned"] if source == "answers"
                        else colours[method.get(space, space)])
    fig = Figure(figsize=(max(7.0, 0.75 * len(names) + 2.5), 4.8), layout="constrained")
    ax = fig.add_subplot()
    data = {"label": table["label"].to_list(), "bar": table["bar"].to_list(),
            "r2": [max(v, R2_FLOOR) if v is not None and not math.isnan(v) else math.nan
                   for v in table["r2"].to_list()]}
    sns.barplot(data=data, x="label", y="r2", hue="bar", order=names, hue_order=bars,
                palette=palette, saturation=1, errorbar=None, width=BAR_WIDTH, ax=ax)
    xs = [_dodged(len(bars), bars.index(b), names.index(a))
          for a, b in zip(table["label"], table["bar"], strict=True)]
    clipped = _errorbars(ax, xs, table["r2"], table["r2_lo"], table["r2_hi"])
    _r2_axis(ax)
    ax.set_ylabel("Test R²")
    ax.set_title("Generated answers vs a ridge probe of each image-level space")
    legend = ax.get_legend()
    if legend is not None:
        legend.set_title(None)
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    notes = [f"Whiskers: {confidence:.0%} bootstrap interval over test patients; bars below "
             f"{R2_FLOOR:g} end there."] + ([CLIPPED_NOTE] if clipped else [])
    fig.supxlabel(_notes(notes, fig), fontsize=8, style="italic")
    save_figure(fig, pdf_path, png_path)
    return fig
