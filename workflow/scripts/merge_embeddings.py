"""Merge one embedding space over the shards of a (model, split), streaming."""

from skinground import cli
from skinground.spaces import merge_space


def main(snakemake) -> None:
    merge_space(snakemake.input.shards, snakemake.wildcards.space, snakemake.output[0])


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
