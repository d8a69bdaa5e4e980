"""FAISS IndexFlatIP (exact cosine) over one space of the train images' embeddings.

Built on the CPU (a normalised float32 copy: no GPU work). Peak host memory: the index ``N d
4`` twice (while FAISS grows its storage) + one chunk with its temporaries (~3.5 x 256 MiB):
8.5 GB at paper scale (skinground.cost.memory).
"""

from skinground.core import provenance, script
from skinground.retrieval.index import build_index, save_index
from skinground.retrieval.spaces import Space, read_record


def main(snakemake) -> None:
    """The index, and beside it the record of its space (what made the embeddings)."""
    save_index(build_index(Space(snakemake.input.train), gpu=False), snakemake.output[0])
    provenance.write_record(snakemake.output[0], {"space": read_record(snakemake.input.train)})


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
