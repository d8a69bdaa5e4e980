"""Top-k train images for every test query with one retrieval method (skinground.core.plan; its
search kind is ``params.search``).

One space at a time (``methods.method_hits``). Peak host memory, N train and Q test images of
width d: image / attribute methods ``N d 4`` (one float32 index) + a query block (~3.5 x 256
MiB) + ``Q k 12`` (the hits); hierarchical ``max(N d 4 + a query block, Q b 8 + a re-rank
batch)`` (the batch: its unique candidate rows, float16 and float32, and their products with
the batch's queries); plus ~120 B of ids per image and the process (~110 MiB). On faiss-gpu
the GPU holds the index, a query block and FAISS's scratch (1.5 GiB). ``skinground.cost.memory``
has the formulas; at paper scale 4.8 GB host, 5.9 GB GPU.
"""

import logging

from skinground.core import script
from skinground.retrieval import methods

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.method
    job = methods.JobSpaces(snakemake.params.spaces, snakemake.input.index,
                            snakemake.input.train, snakemake.input.test)
    hits = methods.method_hits(snakemake.params.search, job, snakemake.params.attributes,
                               **snakemake.params.retrieve)
    rows = methods.write_results(snakemake.output[0], name, hits, job.query_ids, job.db_ids)
    log.info("%s: %d queries, %d rows", name, len(job.query_ids), rows)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
