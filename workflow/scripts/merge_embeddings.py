"""Merge one embedding space over the shards of a (model, split)."""

from skinground import cli
from skinground.shards import merge_space, write_space


def main(snakemake) -> None:
    ids, vectors = merge_space(snakemake.input.shards, snakemake.wildcards.space)
    write_space(snakemake.output[0], ids, vectors)


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
