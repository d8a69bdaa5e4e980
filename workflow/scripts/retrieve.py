"""Top-k train images for every test query with one retrieval method (skinground.plan)."""

import logging

from skinground import cli, plan, retrieve

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.method
    job = retrieve.JobSpaces(snakemake.params.spaces, snakemake.input.index,
                             snakemake.input.train, snakemake.input.test)
    hits = retrieve.method_hits(plan.method(name).search, job, snakemake.params.attributes,
                                **snakemake.params.retrieve)
    rows = retrieve.write_results(snakemake.output[0], name, hits, job.query_ids, job.db_ids)
    log.info("%s: %d queries, %d rows", name, len(job.query_ids), rows)


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
