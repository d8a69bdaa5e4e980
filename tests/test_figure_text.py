"""Every figure of the workflow, drawn from small fabricated tables at the size the workflow
writes it: no two texts overlap and every text lies inside the figure.

The texts are the ones the renderer draws (titles, axis labels, tick labels, legend texts and
titles, suptitles and supxlabels, annotations, texts on bars), each measured with
``get_window_extent(renderer)`` on an Agg canvas; a rotated text is its own rotated rectangle,
not the axis-aligned box around it (slanted tick labels side by side do not touch, their boxes
would)."""

from __future__ import annotations

import math
from unittest import mock

import matplotlib
import numpy as np
import polars as pl
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from skinground.core.plan import FIG3_METHODS
from skinground.core.plan import methods as plan_methods
from skinground.data.images import open_images
from skinground.evaluation import boxplots, figures, grids

from test_figures import K, evaluation, group_evaluation, group_summary, retrieval, summary  # noqa: F401 - retrieval: a fixture

#: Two texts may share this much (pixels at 100 dpi): the antialiased edge of a glyph box.
TOLERANCE = 0.5
#: The demo's encoders: tiny random stand-ins (model.build_tiny).
DEMO = {"model": {"encoders": {"monet": {"title": "MONET"},
                               "medsiglip": {"title": "MedSigLIP"}}}}
#: The paper's: MONET alone, its own weights.
PAPER = {"model": {"encoders": {"monet": {"title": "MONET"}}}}
#: The stand-ins of each (model.build_tiny): every encoder of the demo, none of the paper.
STAND_INS = {True: tuple(DEMO["model"]["encoders"]), False: ()}


def legends(config) -> dict[str, tuple[str, str]]:
    """What the figures rule passes as ``methods``: name -> (letter, title)."""
    return {m: (x.letter, x.title) for m, x in plan_methods(config).items()}


# ---------------------------------------------------------------- the check


def drawn_texts(fig: Figure) -> list[tuple[Text, np.ndarray]]:
    """Every non-empty text the renderer draws in ``fig``, with the four corners (display
    pixels) of its rotated rectangle."""
    canvas = FigureCanvasAgg(fig)
    drawn: list[Text] = []
    draw = Text.draw

    def recording(self, renderer):
        draw(self, renderer)
        if self.get_visible() and self.get_text().strip():
            drawn.append(self)

    with mock.patch.object(Text, "draw", recording):
        canvas.draw()
    renderer = canvas.get_renderer()
    return [(t, corners(t, renderer)) for t in dict.fromkeys(drawn)]


def corners(text: Text, renderer) -> np.ndarray:
    """The corners of ``text``'s rectangle as drawn: its window extent, or for a slanted text
    the rectangle of its unrotated size about the same centre, turned by its angle."""
    box = text.get_window_extent(renderer)
    angle = math.radians(text.get_rotation())
    if math.isclose(math.sin(2 * angle), 0, abs_tol=1e-9):  # 0, 90, 180, 270 degrees
        return np.array([[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]])
    flat = Text(0, 0, text.get_text(), fontproperties=text.get_fontproperties(),
                linespacing=text.get_linespacing())
    flat.set_figure(text.get_figure(root=True))
    w, h = flat.get_window_extent(renderer).size
    u = np.array([math.cos(angle), math.sin(angle)])
    v = np.array([-math.sin(angle), math.cos(angle)])
    c = np.array([(box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2])
    return np.array([c + su * u * w / 2 + sv * v * h / 2
                     for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))])


def overlap(p: np.ndarray, q: np.ndarray, tol: float) -> bool:
    """Whether two convex quadrilaterals share more than ``tol`` along every separating axis
    (the separating-axis theorem)."""
    for poly in (p, q):
        for i in range(4):
            edge = poly[(i + 1) % 4] - poly[i]
            axis = np.array([-edge[1], edge[0]]) / (np.hypot(*edge) or 1.0)
            a, b = p @ axis, q @ axis
            if min(a.max(), b.max()) - max(a.min(), b.min()) <= tol:
                return False
    return True


def text_problems(fig: Figure) -> list[str]:
    """The texts of ``fig`` that overlap another or leave the figure, described."""
    texts = drawn_texts(fig)
    tol = TOLERANCE * fig.dpi / 100
    box = fig.bbox
    problems = []
    for t, c in texts:
        if (c[:, 0].min() < box.x0 - tol or c[:, 0].max() > box.x1 + tol
                or c[:, 1].min() < box.y0 - tol or c[:, 1].max() > box.y1 + tol):
            problems.append(f"outside the figure: {t.get_text()!r}")
    if not texts:
        return problems
    lo = np.array([c.min(axis=0) for _, c in texts])
    hi = np.array([c.max(axis=0) for _, c in texts])
    # pairs whose enclosing boxes meet (cheap, vectorised), then their rectangles (exact)
    meet = ((np.minimum(hi[:, None], hi[None]) - np.maximum(lo[:, None], lo[None])) > tol).all(-1)
    for i, j in zip(*np.nonzero(np.triu(meet, 1)), strict=True):
        (s, p), (t, q) = texts[i], texts[j]
        if overlap(p, q, tol):
            problems.append(f"overlap: {s.get_text()!r} and {t.get_text()!r}")
    return problems


def assert_text_clear(fig: Figure) -> None:
    problems = text_problems(fig)
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_overlap_and_a_text_outside():
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.set_ylabel("a long label")
    fig.text(0.06, 0.5, "over the y label", rotation=90, va="center")
    fig.text(0.9, 0.9, "beyond the right edge")
    problems = text_problems(fig)
    assert "overlap: 'a long label' and 'over the y label'" in problems
    assert "outside the figure: 'beyond the right edge'" in problems
    # slanted tick labels side by side: their boxes overlap, their rectangles do not
    fig = Figure(figsize=(4, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xticks(range(6), [f"label number {i}" for i in range(6)], rotation=45,
                  ha="right", rotation_mode="anchor")
    assert text_problems(fig) == []


# ---------------------------------------------------------------- the figures


@pytest.fixture(scope="module")
def attributes(repo_config) -> dict:
    return repo_config["attributes"]


@pytest.fixture(scope="module")
def labels(attributes) -> dict[str, str]:
    return {col: spec["label"] for col, spec in attributes.items()}


def r2_table(labels, *, models=("tuned",)) -> pl.DataFrame:
    """``r2.py``'s table (intervals and Spearman's ρ): a value below -1 (written on its bar),
    an interval reaching below -1 (demo's ΔB), an undefined R², unparsable answers."""
    rng = np.random.default_rng(0)
    rows = []
    for m in models:
        for i, a in enumerate(labels):
            r2 = float(rng.uniform(-0.2, 0.95))
            lo, hi = r2 - 0.15, min(r2 + 0.1, 1.0)
            if i == 4:
                r2, lo, hi = -0.70, -1.32, -0.26
            if i == 7:
                r2, lo, hi = -22.2, -40.0, -3.0
            if i == 9:
                r2 = lo = hi = math.nan
            rows.append({"model": m, "attribute": a, "label": labels[a], "n": 300,
                         "n_unparsable": 3 if i in (2, 9) else 0,
                         "r2_filled": r2, "r2_filled_lo": lo, "r2_filled_hi": hi,
                         "spearman": 0.6, "spearman_lo": 0.5, "spearman_hi": 0.7})
    return pl.DataFrame(rows)


def probe_table(labels, spaces=("tuned", "untuned", "monet", "medsiglip")) -> pl.DataFrame:
    """``probe.beside_answers``' table: the answers, then one probe per space."""
    rng = np.random.default_rng(1)
    rows = []
    for i, a in enumerate(labels):
        for source, space in [("answers", "tuned"), *(("probe", s) for s in spaces)]:
            r2 = -0.7 if (i, source) == (4, "answers") else float(rng.uniform(0, 0.95))
            rows.append({"attribute": a, "label": labels[a], "source": source, "space": space,
                         "r2": r2, "r2_lo": -1.32 if r2 < 0 else r2 - 0.1,
                         "r2_hi": min(r2 + 0.1, 1.0)})
    return pl.DataFrame(rows)


@pytest.mark.parametrize(("robust", "n"), [(True, 16), (False, 16), (True, 10)],
                         ids=["with-rho", "r2-only", "every-note-on-10"])
def test_fig2_text_is_clear(tmp_path, labels, robust, n):
    some = dict(list(labels.items())[:n])
    table = r2_table(some)
    if not robust:
        table = table.drop("spearman", "spearman_lo", "spearman_hi")
    assert_text_clear(figures.fig2_r2(table, some, tmp_path / "f.pdf", tmp_path / "f.png"))


@pytest.mark.parametrize("config", [DEMO, PAPER], ids=["demo", "paper"])
def test_fig2_probe_text_is_clear(tmp_path, labels, config):
    encoders = config["model"]["encoders"]
    fig = figures.fig2_probe(probe_table(labels, ("tuned", "untuned", *encoders)),
                             tmp_path / "p.pdf", tmp_path / "p.png",
                             titles={m: e["title"] for m, e in encoders.items()},
                             stand_ins=STAND_INS[config is DEMO])
    assert_text_clear(fig)


@pytest.mark.parametrize("attribute", ["tbp_lv_areaMM2", "tbp_lv_norm_border"])
def test_fig3_text_is_clear(tmp_path, retrieval, labels, attribute):  # noqa: F811
    root, manifest, results, test = retrieval
    with open_images(root / "images.hdf5") as store:
        fig = grids.fig3_retrievals(results, store, manifest, query_ids=test[:2],
                                    attribute=attribute, label=labels[attribute],
                                    methods=FIG3_METHODS, k=K, decimals=2,
                                    pdf_path=tmp_path / "f.pdf", png_path=tmp_path / "f.png")
    assert_text_clear(fig)


@pytest.mark.parametrize("config", [DEMO, PAPER], ids=["demo", "paper"])
def test_fig4_and_its_panels_text_is_clear(tmp_path, labels, config):
    table = evaluation(labels, tuple(plan_methods(config)))
    kwargs = {"methods": legends(config), "intervals": summary(table),
              "stand_ins": STAND_INS[config is DEMO]}
    fig = boxplots.fig4_percentiles(table, labels, None, tmp_path / "f.pdf", tmp_path / "f.png",
                                    **kwargs)
    assert_text_clear(fig)
    two = dict(list(labels.items())[:2])  # a grid of one row: the legend is the taller
    assert_text_clear(boxplots.fig4_percentiles(
        evaluation(two, tuple(plan_methods(config))), two, None, tmp_path / "t.pdf",
        tmp_path / "t.png", **{**kwargs, "intervals": None}))
    # the report's panels: the same layout for every attribute, the longest labels here
    some = {a: labels[a] for a in ("tbp_lv_areaMM2", "tbp_lv_norm_border", "tbp_lv_deltaLB")}
    table = evaluation(some, tuple(plan_methods(config)))
    panels = boxplots.fig4_panels(table, some, tmp_path / "panels", methods=legends(config),
                                  intervals=summary(table), stand_ins=STAND_INS[config is DEMO])
    for panel in panels.values():
        assert_text_clear(panel)


@pytest.mark.parametrize("groups", ["config", "one-wide"])
def test_fig5_text_is_clear(tmp_path, repo_config, labels, groups):
    groups = ({g: spec["attributes"] for g, spec in repo_config["retrieve"]["groups"].items()}
              if groups == "config" else {"shape": list(labels)[8:13]})
    table = group_evaluation(groups)
    fig = boxplots.fig5_groups(table, groups, labels, tmp_path / "f.pdf", tmp_path / "f.png",
                               intervals=group_summary(table))
    assert_text_clear(fig)


def test_the_loss_plot_text_is_clear(tmp_path, monkeypatch):
    from skinground.model import loss_log

    rows = [{"step": s, "loss": 6 * math.exp(-s / 100) + 1.1, "learning_rate": 1e-3}
            for s in range(0, 2401, 50)]
    kept = []
    monkeypatch.setattr("matplotlib.pyplot.close", kept.append)
    with matplotlib.rc_context():  # plot_loss sets seaborn's theme
        loss_log.plot_loss(tmp_path / "loss.png", rows, title="LoRA fine-tuning (2400 steps)")
        (fig,) = kept
        assert_text_clear(fig)
