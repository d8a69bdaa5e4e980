"""Top-k train images for every test query and group (retrieve.groups), with one group method
(skinground.plan.GROUP_METHODS): composed, composed hierarchical, per-attribute fused, RRF."""

import logging

import polars as pl

from skinground import cli, plan, retrieve
from skinground.index import search
from skinground.io import atomic_path

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.group_method
    spaces, cfg, groups = (snakemake.params.spaces, snakemake.params.retrieve,
                           snakemake.params.groups)
    k, how = cfg["k"], plan.group_method(name).search
    indexes, db_ids, db, query_ids, queries = retrieve.open_spaces(
        spaces, snakemake.input.index, snakemake.input.train, snakemake.input.test)
    if how == "composed_hierarchical":
        candidates = retrieve.first_stage(indexes[plan.IMAGE_SPACE], queries[plan.IMAGE_SPACE],
                                          cfg["b"])
    hits = {}
    for group, attributes in groups.items():
        space = plan.group_space(group)
        if how == "composed":
            hits[space] = retrieve.top_k(indexes[space], queries[space], k)
        elif how == "composed_hierarchical":
            hits[space] = retrieve.rerank(candidates, queries[space], retrieve.stored(db[space]),
                                          k=k)
        elif how == "fused":
            hits[space] = retrieve.fused_top_k([db[a] for a in attributes],
                                               [queries[a] for a in attributes], k)
        else:  # rrf: each attribute's top b by h_im,a, fused by reciprocal rank
            lists = [search(indexes[a], queries[a], min(cfg["b"], indexes[a].ntotal))[1]
                     for a in attributes]
            hits[space] = retrieve.reciprocal_rank_fusion(lists, k, cfg["rrf_k"])
    table = pl.concat([retrieve.results_frame(name, space, query_ids, db_ids, top.idx,
                                              top.scores) for space, top in hits.items()])
    log.info("%s: %d queries x %d groups, %d rows", name, len(query_ids), len(groups),
             table.height)
    with atomic_path(snakemake.output[0]) as tmp:
        table.write_parquet(tmp)


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
