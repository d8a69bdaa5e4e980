"""Merge one embedding space over the shards of a (model, split), streaming.

Peak host memory: the ids (~120 B each) + one shard's member, twice (``2 (N / S) d 2`` bytes
for N images in S shards): 0.2 GB at paper scale, whatever the number of shards.
"""

from skinground.core import script
from skinground.retrieval.spaces import merge_space


def main(snakemake) -> None:
    merge_space(snakemake.input.shards, snakemake.wildcards.space, snakemake.output[0])


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
