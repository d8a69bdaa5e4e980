# Retrieval stage: the methods (a)-(d) and the image encoders (e), (e2), ..., and (beyond the paper)
# the group methods of retrieve.groups.


rule retrieve:
    """Top-k train images for every test query, with one method."""
    input:
        unpack(retrieve_inputs),
    output:
        res(out.HITS),
    log:
        log("retrieve/{method}"),
    benchmark:
        benchmark("retrieve/{method}")
    wildcard_constraints:
        method="|".join(METHODS),
    conda:
        GPU_ENV
    params:
        code=code("retrieve"),
        # how the method searches (plan.Method.search: an encoder's is "image")
        search=lambda wildcards: plan.method(wildcards.method, config).search,
        spaces=retrieve_spaces,
        retrieve=retrieve_params,
        attributes=ATTRIBUTES,
    script:
        "../scripts/retrieve.py"


if GROUPS:

    rule retrieve_groups:
        """Top-k train images for every test query and group, with one group method."""
        input:
            unpack(group_retrieve_inputs),
        output:
            res(out.GROUP_HITS),
        log:
            log("retrieve/groups_{group_method}"),
        benchmark:
            benchmark("retrieve/groups_{group_method}")
        wildcard_constraints:
            group_method="|".join(plan.retrieval_jobs(config)),
        conda:
            GPU_ENV
        params:
            code=code("retrieve_groups"),
            spaces=group_retrieve_spaces,
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            retrieve=group_retrieve_params,
        script:
            "../scripts/retrieve_groups.py"
