"""Top-k train images for every test query with one of the five methods: (a) image_text,
(b) hierarchical, (c) image_only, (d) image_untuned, (e) monet."""

import logging

import polars as pl

from skinground import cli, retrieve
from skinground.index import load_index
from skinground.io import atomic_path
from skinground.shards import IMAGE_SPACE, read_space

log = logging.getLogger("skinground")


def spaces(pairs: list[str]) -> dict[str, str]:
    """``SPACE=PATH`` arguments as a mapping."""
    return dict(pair.split("=", 1) for pair in pairs)


def aligned(named: dict[str, str]) -> tuple[list[str], dict]:
    """Read merged spaces that must share their ids (one split of one model)."""
    ids, vectors = None, {}
    for space, path in named.items():
        space_ids, vectors[space] = read_space(path)
        if ids is not None and space_ids != ids:
            raise ValueError(f"{path}: ids differ from the other spaces of its split")
        ids = space_ids
    return ids, vectors


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--method", choices=retrieve.METHODS, required=True)
    p.add_argument("--retrieve", type=cli.json_arg, required=True, help="config retrieve")
    p.add_argument("--attributes", type=cli.json_arg, default=[], help="attribute columns")
    p.add_argument("--index", nargs="+", required=True, help="SPACE=train index (.faiss)")
    p.add_argument("--train", nargs="+", required=True, help="SPACE=merged train space")
    p.add_argument("--test", nargs="+", required=True, help="SPACE=merged test space")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    k, method = a.retrieve["k"], a.method
    indexes = {space: load_index(path) for space, path in spaces(a.index).items()}
    db_ids, db = aligned(spaces(a.train))
    query_ids, queries = aligned(spaces(a.test))
    retrieve.check_disjoint(query_ids, db_ids)

    hits = {}  # attribute (None: image-only) -> TopK
    if method in retrieve.IMAGE_ONLY_METHODS:
        hits[None] = retrieve.top_k(indexes[IMAGE_SPACE], queries[IMAGE_SPACE], k)
    elif method == "image_text":
        for attr in a.attributes:
            hits[attr] = retrieve.top_k(indexes[attr], queries[attr], k)
    else:  # hierarchical: the first stage once, the re-rank per attribute (stored h_im,a)
        candidates = retrieve.first_stage(indexes[IMAGE_SPACE], queries[IMAGE_SPACE],
                                          a.retrieve["b"])
        for attr in a.attributes:
            hits[attr] = retrieve.rerank(candidates, queries[attr], retrieve.stored(db[attr]),
                                         k=k)
    frames = [retrieve.results_frame(method, attr, query_ids, db_ids, top.idx, top.scores)
              for attr, top in hits.items()]
    table = pl.concat(frames)
    log.info("%s: %d queries, %d rows", method, len(query_ids), table.height)
    with atomic_path(a.out) as tmp:
        table.write_parquet(tmp)


if __name__ == "__main__":
    cli.main(run)
