"""FAISS IndexFlatIP (exact cosine) over one space of the train images' embeddings."""

from skinground import cli
from skinground.index import build_index, save_index
from skinground.spaces import Space


def main(snakemake) -> None:
    save_index(build_index(Space(snakemake.input.train), gpu=False), snakemake.output[0])


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
