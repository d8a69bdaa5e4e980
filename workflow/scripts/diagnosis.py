"""The share of retrieved images whose diagnosis agrees with the query's, per method and label
column, beside random retrieval's base rate (bootstrap intervals over test patients)."""

import polars as pl

from skinground.core import script
from skinground.core.io import read_lines
from skinground.core.tables import read_parquet, write_summary
from skinground.evaluation import diagnosis, significance

NOTE = ("The share of retrieved images (top k) whose label agrees with the query's, per "
        "method; attribute-specific methods pool their k images of every attribute. random: "
        "the expected share of a random train image (the base rate; n = queries). Intervals: "
        "bootstrap over test patients.\n\n")


def main(snakemake) -> None:
    st = snakemake.params.stats
    manifest = read_parquet(snakemake.input.manifest)
    boot = significance.patient_bootstrap(manifest, read_lines(snakemake.input.test),
                                          st["bootstrap"], st["seed"])
    results = pl.concat([read_parquet(p) for p in snakemake.input.results])
    table = diagnosis.agreement(results, read_parquet(snakemake.input.labels), manifest,
                                read_lines(snakemake.input.train), snakemake.params.columns,
                                boot, st["confidence"], snakemake.params.methods)
    write_summary(table, snakemake.output.csv, snakemake.output.markdown, NOTE)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
