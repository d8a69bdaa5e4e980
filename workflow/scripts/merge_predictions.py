"""Merge one model's answers over the predict shards (in order)."""

from skinground.core import script
from skinground.core.io import atomic_path
from skinground.data.shards import merge_predictions


def main(snakemake) -> None:
    merged = merge_predictions(snakemake.input.shards)
    with atomic_path(snakemake.output[0]) as tmp:
        merged.write_parquet(tmp)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
