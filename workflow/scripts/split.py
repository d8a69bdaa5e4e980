"""Patient-level train/test split of the manifest."""

import polars as pl

from skinground import cli, split
from skinground.attributes import ID_COLUMN
from skinground.io import write_json, write_lines


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--manifest", required=True)
    p.add_argument("--split", type=cli.json_arg, required=True, help="config section split")
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--summary", required=True)
    a = p.parse_args()
    assigned = split.split_patients(pl.read_parquet(a.manifest), **a.split)
    for name, path in (("train", a.train), ("test", a.test)):
        write_lines(path, assigned.filter(pl.col("split") == name)[ID_COLUMN].to_list())
    write_json(a.summary, split.summarize(assigned))


if __name__ == "__main__":
    cli.main(run)
