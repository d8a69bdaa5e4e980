"""Fig. 4's measure for every retrieved image: the percentile rank of its attribute difference
to the query among the differences to all train images; summary per method x attribute."""

import logging

import polars as pl

from skinground import cli, evaluate
from skinground.io import atomic_path, read_lines, write_text

log = logging.getLogger("skinground")


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--results", nargs="+", required=True, help="retrieval results parquet(s)")
    p.add_argument("--manifest", required=True)
    p.add_argument("--train-ids", required=True)
    p.add_argument("--attributes", type=cli.json_arg, required=True, help="attribute columns")
    p.add_argument("--table", required=True, help="per-item percentiles (parquet)")
    p.add_argument("--csv", required=True, help="summary (CSV)")
    p.add_argument("--markdown", required=True, help="summary (Markdown)")
    a = p.parse_args()
    results = pl.concat([pl.read_parquet(path) for path in a.results])
    table = evaluate.evaluate(results, pl.read_parquet(a.manifest), read_lines(a.train_ids),
                              a.attributes)
    summary = evaluate.summarize(table)
    log.info("%d percentile rows; %d excluded", table.height,
             table["excluded"].is_not_null().sum())
    with atomic_path(a.table) as tmp:
        table.write_parquet(tmp)
    with atomic_path(a.csv) as tmp:
        summary.write_csv(tmp)
    write_text(a.markdown, evaluate.to_markdown(summary) + "\n")


if __name__ == "__main__":
    cli.main(run)
