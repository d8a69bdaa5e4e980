"""Top-k train images for every test query and group (retrieve.groups), with one group method
(skinground.plan.GROUP_METHODS): composed, composed hierarchical, per-attribute fused, RRF."""

import logging

from skinground import cli, plan, retrieve

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.group_method
    groups = snakemake.params.groups
    job = retrieve.JobSpaces(snakemake.params.spaces, snakemake.input.index,
                             snakemake.input.train, snakemake.input.test)
    hits = retrieve.group_method_hits(plan.group_method(name).search, job, groups,
                                      **snakemake.params.retrieve)
    rows = retrieve.write_results(snakemake.output[0], name, hits, job.query_ids, job.db_ids)
    log.info("%s: %d queries x %d groups, %d rows", name, len(job.query_ids), len(groups), rows)


if __name__ == "__main__":
    cli.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
