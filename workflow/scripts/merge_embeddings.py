"""Merge one embedding space over the shards of a (model, split)."""

from skinground import cli
from skinground.shards import merge_space, write_space


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--shards", nargs="+", required=True, help="shard files, in order")
    p.add_argument("--space", required=True, help="'im' or an attribute column")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    ids, vectors = merge_space(a.shards, a.space)
    write_space(a.out, ids, vectors)


if __name__ == "__main__":
    cli.main(run)
