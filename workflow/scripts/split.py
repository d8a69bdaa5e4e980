"""Patient-level train/test split of the manifest."""

import polars as pl

from skinground.core import script
from skinground.core.io import write_json, write_lines
from skinground.core.tables import read_parquet
from skinground.data import split
from skinground.data.attributes import ID_COLUMN


def main(snakemake) -> None:
    assigned = split.split_patients(read_parquet(snakemake.input.manifest),
                                    **snakemake.params.split)
    for name in ("train", "test"):
        write_lines(snakemake.output[name],
                    assigned.filter(pl.col("split") == name)[ID_COLUMN].to_list())
    write_json(snakemake.output.summary, split.summarize(assigned))


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
