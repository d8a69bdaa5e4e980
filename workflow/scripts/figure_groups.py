"""Fig. 5 (beyond the paper): the group criterion of the retrieved images, group x method."""

import polars as pl

from skinground.core import script
from skinground.evaluation import boxplots


def main(snakemake) -> None:
    boxplots.fig5_groups(pl.scan_parquet(snakemake.input.evaluation), snakemake.params.groups,
                        snakemake.params.labels, snakemake.output.pdf, snakemake.output.png,
                        intervals=pl.read_csv(snakemake.input.summary),
                        confidence=snakemake.params.confidence)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
