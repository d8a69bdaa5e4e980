"""Figs. 3 and 4: qualitative top-k grids (image-only vs image + text for one attribute) and
the boxplots of the retrieved images' attribute-difference percentiles, per attribute x method
(the whole figure, and each attribute's panel alone for the report).

Fig. 4 reads only the evaluation's method, attribute and percentile columns (lazily); Fig. 3
draws its queries (``pick_queries``: deterministic in the seed) among the test images that
have a value for the attribute and all k hits for each of its methods."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.errors import InputError
from skinground.core.plan import FIG3_METHODS
from skinground.core.tables import read_parquet
from skinground.data.images import open_images
from skinground.evaluation import boxplots, grids

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    attributes, spec, k = (snakemake.params.attributes, snakemake.params.figures,
                           snakemake.params.k)
    labels = {col: a["label"] for col, a in attributes.items()}
    attribute = spec["fig3_attribute"]
    manifest = read_parquet(snakemake.input.manifest)
    if attribute not in manifest.columns:
        raise InputError(f"fig. 3 attribute {attribute!r} is not a column of "
                         f"{snakemake.input.manifest}")
    out = snakemake.output

    evaluation = pl.scan_parquet(snakemake.input.evaluation).select("method", "attribute",
                                                                     "percentile")
    fig = boxplots.fig4_percentiles(evaluation, labels, None, out.fig4_pdf, out.fig4_png,
                                   methods=snakemake.params.methods,
                                   intervals=pl.read_csv(snakemake.input.summary),
                                   confidence=snakemake.params.confidence,
                                   panels=out.fig4_panels,
                                   stand_ins=snakemake.params.stand_ins)
    log.info("fig. 4: %d attribute panels, each also alone in %s", len(fig.axes),
             out.fig4_panels)
    results = pl.concat([pl.scan_parquet(f) for f in snakemake.input.results],
                        how="vertical_relaxed")
    queries = grids.fig3_queries(results, manifest, attribute, k, spec["fig3_queries"],
                                 spec["seed"])
    if not queries:
        raise InputError(f"fig. 3: no query has {k} hits for {FIG3_METHODS} and a value of "
                         f"{attribute}")
    log.info("fig. 3: queries %s", queries)
    with open_images(snakemake.input.images) as store:
        grids.fig3_retrievals(
            results, store, manifest, query_ids=queries, attribute=attribute,
            label=labels[attribute], methods=FIG3_METHODS, k=k,
            decimals=attributes[attribute]["decimals"], pdf_path=out.fig3_pdf,
            png_path=out.fig3_png)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
