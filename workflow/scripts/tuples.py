"""Training tuples: W attributes per train image, with question and answer text."""

import logging

import polars as pl

from skinground import cli, tuples
from skinground.attributes import ID_COLUMN
from skinground.io import atomic_path, read_lines, write_json


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--manifest", required=True)
    p.add_argument("--train", required=True, help="train isic_ids, one per line")
    p.add_argument("--attributes", type=cli.json_arg, required=True, help="config attributes")
    p.add_argument("--tuples", type=cli.json_arg, required=True, help="config section tuples")
    p.add_argument("--out", required=True)
    p.add_argument("--summary", required=True)
    a = p.parse_args()
    manifest = pl.read_parquet(a.manifest)
    train = manifest.filter(pl.col(ID_COLUMN).is_in(read_lines(a.train)))
    rows = tuples.sample_tuples(train, a.attributes, w=a.tuples["W"], seed=a.tuples["seed"])
    summary = tuples.summarize(rows, train.height, tuples.resolve_w(a.tuples["W"],
                                                                    len(a.attributes)))
    logging.getLogger("skinground").info("%d tuples from %d train images", rows.height,
                                         train.height)
    with atomic_path(a.out) as tmp:
        rows.write_parquet(tmp)
    write_json(a.summary, summary)


if __name__ == "__main__":
    cli.main(run)
