"""The group criterion (max and mean over a group's attributes of the percentile ranks) for
every image the group methods retrieved; summary per group x method with bootstrap
intervals, and the multi-attribute claims tested per group and criterion."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.io import read_lines
from skinground.core.tables import read_parquet, write_claims, write_evaluation
from skinground.evaluation import group_criterion, significance

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    methods = snakemake.params.methods
    results = pl.concat([read_parquet(p) for p in snakemake.input.results])
    results = results.filter(pl.col("method").is_in(methods))
    train = read_lines(snakemake.input.train)
    manifest = read_parquet(snakemake.input.manifest)
    k = int(results["rank"].max())
    results = pl.concat([results, group_criterion.random_hits(results["query_id"], train, k)])
    table = group_criterion.evaluate_groups(results, manifest, train, snakemake.params.groups)
    log.info("%d rows over %d groups; %d excluded", table.height, len(snakemake.params.groups),
             int(table["excluded"].sum()))
    st = snakemake.params.stats
    boot = significance.patient_bootstrap(manifest, read_lines(snakemake.input.test),
                                          st["bootstrap"], st["seed"])
    titles = snakemake.params.titles
    claims = significance.group_claims(significance.in_order(table["method"], titles), titles)
    long = group_criterion.criteria_long(table)
    tested = significance.tested_evaluation(
        long, group_criterion.summarize_groups(table), ["group", "criterion"], "value", claims,
        boot, manifest, confidence=st["confidence"], alpha=st["alpha"], unit=st["test_unit"])
    write_evaluation(table, tested.summary, snakemake.output)
    write_claims(tested, snakemake.output, alpha=st["alpha"], unit="group and criterion",
                 paired=st["test_unit"])


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
