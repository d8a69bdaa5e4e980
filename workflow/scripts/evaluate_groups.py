"""The group criterion (max and mean over a group's attributes of the percentile ranks) for
every image the group methods retrieved; summary per group x method."""

import logging

import polars as pl

from skinground import group_criterion, script
from skinground.io import read_lines
from skinground.tables import write_evaluation

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    methods = snakemake.params.methods
    results = pl.concat([pl.read_parquet(p) for p in snakemake.input.results])
    results = results.filter(pl.col("method").is_in(methods))
    train = read_lines(snakemake.input.train)
    k = int(results["rank"].max())
    results = pl.concat([results, group_criterion.random_hits(results["query_id"], train, k)])
    table = group_criterion.evaluate_groups(results, pl.read_parquet(snakemake.input.manifest),
                                            train, snakemake.params.groups)
    summary = group_criterion.summarize_groups(table)
    log.info("%d rows over %d groups; %d excluded", table.height, len(snakemake.params.groups),
             int(table["excluded"].sum()))
    write_evaluation(table, summary, snakemake.output)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
