"""Fig. 4's measure for every retrieved image: the percentile rank of its attribute difference
to the query among the differences to all train images; summary per method x attribute."""

import logging

import polars as pl

from skinground import evaluate, script
from skinground.io import read_lines
from skinground.tables import write_evaluation

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    results = pl.concat([pl.read_parquet(path) for path in snakemake.input.results])
    table = evaluate.evaluate(results, pl.read_parquet(snakemake.input.manifest),
                              read_lines(snakemake.input.train), snakemake.params.attributes)
    summary = evaluate.summarize(table)
    log.info("%d percentile rows; %d excluded", table.height,
             table["excluded"].is_not_null().sum())
    write_evaluation(table, summary, snakemake.output)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
