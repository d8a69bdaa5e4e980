"""FAISS IndexFlatIP (exact cosine) over one space of the train images' embeddings."""

from skinground import cli
from skinground.index import build_index, save_index
from skinground.shards import read_space


def main(snakemake) -> None:
    _, vectors = read_space(snakemake.input.train)
    save_index(build_index(vectors), snakemake.output[0])


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
