"""Training tuples: W attributes per train image, with question and answer text."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, read_lines, write_json
from skinground.core.tables import read_parquet
from skinground.data import groups, tuples
from skinground.data.attributes import ID_COLUMN


def main(snakemake) -> None:
    attributes, cfg = snakemake.params.attributes, snakemake.params.tuples
    manifest = read_parquet(snakemake.input.manifest)
    train = manifest.filter(pl.col(ID_COLUMN).is_in(read_lines(snakemake.input.train)))
    rows = tuples.sample_tuples(train, attributes, w=cfg["W"], seed=cfg["seed"])
    rows = groups.add_group_tuples(rows, train, snakemake.params.groups, attributes,
                                   share=cfg["group_share"], seed=cfg["seed"])
    summary = tuples.summarize(rows, train.height, tuples.resolve_w(cfg["W"], len(attributes)))
    logging.getLogger("skinground").info("%d tuples from %d train images", rows.height,
                                         train.height)
    with atomic_path(snakemake.output.tuples) as tmp:
        rows.write_parquet(tmp)
    write_json(snakemake.output.summary, summary)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
