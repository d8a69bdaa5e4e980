"""Top-k train images for every test query with one retrieval method (skinground.plan)."""

import logging

import polars as pl

from skinground import cli, plan, retrieve
from skinground.io import atomic_path

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.method
    spaces, cfg = snakemake.params.spaces, snakemake.params.retrieve
    k, search = cfg["k"], plan.method(name).search
    indexes, db_ids, db, query_ids, queries = retrieve.open_spaces(
        spaces, snakemake.input.index, snakemake.input.train, snakemake.input.test)

    hits = {}  # attribute (None: image-only) -> TopK
    if search == "image":
        hits[None] = retrieve.top_k(indexes[plan.IMAGE_SPACE], queries[plan.IMAGE_SPACE], k)
    elif search == "attribute":
        for attr in snakemake.params.attributes:
            hits[attr] = retrieve.top_k(indexes[attr], queries[attr], k)
    else:  # hierarchical: the first stage once, the re-rank per attribute (stored h_im,a)
        candidates = retrieve.first_stage(indexes[plan.IMAGE_SPACE],
                                          queries[plan.IMAGE_SPACE], cfg["b"])
        for attr in snakemake.params.attributes:
            hits[attr] = retrieve.rerank(candidates, queries[attr], retrieve.stored(db[attr]),
                                         k=k)
    frames = [retrieve.results_frame(name, attr, query_ids, db_ids, top.idx, top.scores)
              for attr, top in hits.items()]
    table = pl.concat(frames)
    log.info("%s: %d queries, %d rows", name, len(query_ids), table.height)
    with atomic_path(snakemake.output[0]) as tmp:
        table.write_parquet(tmp)


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
