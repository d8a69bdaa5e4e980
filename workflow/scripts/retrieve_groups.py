"""Top-k train images for every test query and group (retrieve.groups), with one group method
(skinground.core.plan.GROUP_METHODS): composed, composed hierarchical, per-attribute fused, RRF.

One space at a time (``methods.group_method_hits``). Peak host memory: composed and composed
hierarchical as the retrieve rule's attribute and hierarchical methods; fused two blocks of
fused vectors (~5 x 512 MiB + 4 x 512 MiB); RRF one index ``N d 4`` + the group's top-b lists
``|G| Q b 8``. ``skinground.cost.memory`` has the formulas.
"""

import logging

from skinground.core import plan, script
from skinground.retrieval import methods

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    name = snakemake.wildcards.group_method
    groups = snakemake.params.groups
    job = methods.JobSpaces(snakemake.params.spaces, snakemake.input.index,
                            snakemake.input.train, snakemake.input.test)
    hits = methods.group_method_hits(plan.group_method(name).search, job, groups,
                                     **snakemake.params.retrieve)
    rows = methods.write_results(snakemake.output[0], name, hits, job.query_ids, job.db_ids)
    log.info("%s: %d queries x %d groups, %d rows", name, len(job.query_ids), len(groups), rows)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
