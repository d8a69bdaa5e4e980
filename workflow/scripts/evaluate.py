"""Fig. 4's measure for every retrieved image: the percentile rank of its attribute difference
to the query among the differences to all train images; summary per method x attribute with
bootstrap intervals, and the paper's claims tested per attribute."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.io import read_lines
from skinground.core.tables import read_parquet, write_claims, write_evaluation
from skinground.evaluation import percentile, significance

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    results = pl.concat([read_parquet(path) for path in snakemake.input.results])
    manifest = read_parquet(snakemake.input.manifest)
    table = percentile.evaluate(results, manifest, read_lines(snakemake.input.train),
                              snakemake.params.attributes)
    log.info("%d percentile rows; %d excluded", table.height,
             table["excluded"].is_not_null().sum())
    st = snakemake.params.stats
    boot = significance.patient_bootstrap(manifest, read_lines(snakemake.input.test),
                                          st["bootstrap"], st["seed"])
    titles = snakemake.params.titles
    claims = significance.paper_claims(significance.in_order(table["method"], titles), titles)
    tested = significance.tested_evaluation(
        table, percentile.summarize(table), ["attribute"], "percentile", claims, boot, manifest,
        confidence=st["confidence"], alpha=st["alpha"], unit=st["test_unit"])
    write_evaluation(table, tested.summary, snakemake.output)
    write_claims(tested, snakemake.output, alpha=st["alpha"], unit="attribute",
                 paired=st["test_unit"])


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
