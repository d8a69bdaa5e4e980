"""Figs. 3 and 4: qualitative top-k grids (image-only vs image + text for one attribute) and
the boxplots of the retrieved images' attribute-difference percentiles, per attribute x method.

Fig. 4 reads only the evaluation's method, attribute and percentile columns (lazily); Fig. 3
draws its queries (``pick_queries``: deterministic in the seed) among the test images that
have a value for the attribute and all k hits for each of its methods."""

import logging

import polars as pl

from skinground import cli, figures
from skinground.attributes import ID_COLUMN
from skinground.data import open_images
from skinground.errors import InputError

log = logging.getLogger("skinground")

FIG3_METHODS = ("image_only", "image_text")


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


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--evaluation", required=True, help="evaluate() output (parquet)")
    p.add_argument("--results", nargs="+", required=True,
                   help="results_frame rows of the methods (parquet, one or several)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--images", required=True, help="HDF5 file or JPEG folder")
    p.add_argument("--attributes", type=cli.json_arg, required=True,
                   help='config attributes, {col: {"label": ...}}, in the config\'s order')
    p.add_argument("--figures", type=cli.json_arg, required=True,
                   help='{"fig3_attribute": col, "fig3_queries": n, "seed": s} '
                        '(optional: "fig3_k", "fig3_decimals")')
    p.add_argument("--fig4-pdf", required=True)
    p.add_argument("--fig4-png", required=True)
    p.add_argument("--fig3-pdf", required=True)
    p.add_argument("--fig3-png", required=True)
    a = p.parse_args()

    labels = {col: spec.get("label", col) for col, spec in a.attributes.items()}
    spec = a.figures
    attribute = spec.get("fig3_attribute", "tbp_lv_areaMM2")
    k = int(spec.get("fig3_k", 5))
    manifest = pl.read_parquet(a.manifest)
    if attribute not in manifest.columns:
        raise InputError(f"fig. 3 attribute {attribute!r} is not a manifest column")

    evaluation = pl.scan_parquet(a.evaluation).select("method", "attribute", "percentile")
    fig = figures.fig4_percentiles(evaluation, labels, None, a.fig4_pdf, a.fig4_png)
    log.info("fig. 4: %d attribute panels", len(fig.axes))
    results = pl.concat([pl.scan_parquet(f) for f in a.results], how="vertical_relaxed")
    candidates = fig3_candidates(results, manifest, attribute, FIG3_METHODS, k)
    if not candidates:
        raise InputError(f"fig. 3: no query has {k} hits for {FIG3_METHODS} and a value of "
                         f"{attribute}")
    queries = figures.pick_queries(candidates, int(spec.get("fig3_queries", 4)),
                                   int(spec.get("seed", 0)))
    log.info("fig. 3: queries %s (of %d candidates)", queries, len(candidates))
    with open_images(a.images) as store:
        figures.fig3_retrievals(
            results, store, manifest, query_ids=queries, attribute=attribute,
            label=labels.get(attribute, attribute), methods=FIG3_METHODS, k=k,
            decimals=int(spec.get("fig3_decimals", 1)), pdf_path=a.fig3_pdf,
            png_path=a.fig3_png)


if __name__ == "__main__":
    cli.main(run)
