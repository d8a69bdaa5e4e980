"""Merge one model's answers over the predict shards (in order)."""

from skinground import cli
from skinground.io import atomic_path
from skinground.shards import merge_predictions


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--shards", nargs="+", required=True, help="shard files, in order")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    merged = merge_predictions(a.shards)
    with atomic_path(a.out) as tmp:
        merged.write_parquet(tmp)


if __name__ == "__main__":
    cli.main(run)
