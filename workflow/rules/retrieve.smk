# Retrieval stage: the five methods -> percentile evaluation (Fig. 4's measure) -> figures.

rule retrieve:
    """Top-k train images for every test query, with one method."""
    input:
        unpack(retrieve_inputs),
        lib=lib("retrieve"),
    output:
        res("retrieve/{method}.parquet"),
    wildcard_constraints:
        method="|".join(METHODS),
    params:
        spaces=retrieve_spaces,
        retrieve=retrieve_params,
        attributes=ATTRIBUTES,
    log:
        res("logs/retrieve/{method}.log"),
    benchmark:
        res("benchmarks/retrieve/{method}.tsv")
    conda:
        GPU_ENV
    script:
        "../scripts/retrieve.py"


rule evaluate:
    """Percentile rank of every retrieved image's attribute difference; summary tables."""
    input:
        results=expand(res("retrieve/{method}.parquet"), method=METHODS),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        lib=lib("evaluate"),
    output:
        table=res("evaluate/percentiles.parquet"),
        csv=report(res("evaluate/summary.csv"), caption="../report/summary.rst",
                   category="Retrieval", subcategory="Paper (Fig. 4)"),
        markdown=res("evaluate/summary.md"),
    params:
        attributes=ATTRIBUTES,
    log:
        res("logs/evaluate.log"),
    benchmark:
        res("benchmarks/evaluate.tsv")
    conda:
        CPU_ENV
    script:
        "../scripts/evaluate.py"


rule figures:
    """Fig. 4 (percentile boxplots, 16 attributes x methods) and Fig. 3 (top-k grids)."""
    input:
        evaluation=rules.evaluate.output.table,
        results=expand(res("retrieve/{method}.parquet"), method=METHODS),
        manifest=rules.manifest.output.manifest,
        images=config["data"]["images"],
        lib=lib("figures"),
    output:
        fig4_pdf=res("figures/fig4_percentiles.pdf"),
        fig4_png=report(res("figures/fig4_percentiles.png"), caption="../report/fig4.rst",
                        category="Retrieval", subcategory="Paper (Fig. 4)"),
        fig3_pdf=res("figures/fig3_retrievals.pdf"),
        fig3_png=report(res("figures/fig3_retrievals.png"), caption="../report/fig3.rst",
                        category="Retrieval", subcategory="Paper (Fig. 3)"),
    params:
        attributes=config["attributes"],
        figures=config["figures"],
        k=config["retrieve"]["k"],
    log:
        res("logs/figures.log"),
    benchmark:
        res("benchmarks/figures.tsv")
    conda:
        CPU_ENV
    script:
        "../scripts/figures.py"


# ---- multi-attribute retrieval (beyond the paper): the groups of retrieve.groups

if GROUPS:

    rule retrieve_groups:
        """Top-k train images for every test query and group, with one group method."""
        input:
            unpack(group_retrieve_inputs),
            lib=lib("retrieve_groups"),
        output:
            res("retrieve/groups/{group_method}.parquet"),
        wildcard_constraints:
            group_method="|".join(plan.retrieval_jobs(config)),
        params:
            spaces=group_retrieve_spaces,
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            retrieve=group_retrieve_params,
        log:
            res("logs/retrieve/groups_{group_method}.log"),
        benchmark:
            res("benchmarks/retrieve/groups_{group_method}.tsv")
        conda:
            GPU_ENV
        script:
            "../scripts/retrieve_groups.py"

    rule evaluate_groups:
        """The group criterion for every retrieved image: the max and the mean over the
        group's attributes of their percentile ranks; summary per group x method."""
        input:
            results=group_results(),
            manifest=rules.manifest.output.manifest,
            train=rules.split.output.train,
            lib=lib("evaluate_groups"),
        output:
            table=res("evaluate/groups_percentiles.parquet"),
            csv=report(res("evaluate/groups_summary.csv"),
                       caption="../report/groups_summary.rst", category="Retrieval",
                       subcategory="Beyond the paper: groups (Fig. 5)"),
            markdown=res("evaluate/groups_summary.md"),
        params:
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            methods=config["retrieve"]["group_methods"],
        log:
            res("logs/evaluate_groups.log"),
        benchmark:
            res("benchmarks/evaluate_groups.tsv")
        conda:
            CPU_ENV
        script:
            "../scripts/evaluate_groups.py"

    rule figure_groups:
        """Fig. 5: boxplots of the group criterion, group x method, in the style of Fig. 4."""
        input:
            evaluation=rules.evaluate_groups.output.table,
            lib=lib("figure_groups"),
        output:
            pdf=res("figures/fig5_groups.pdf"),
            png=report(res("figures/fig5_groups.png"), caption="../report/fig5.rst",
                       category="Retrieval", subcategory="Beyond the paper: groups (Fig. 5)"),
        params:
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            labels={a: spec["label"] for a, spec in config["attributes"].items()},
        log:
            res("logs/figure_groups.log"),
        benchmark:
            res("benchmarks/figure_groups.tsv")
        conda:
            CPU_ENV
        script:
            "../scripts/figure_groups.py"


rule cost:
    """The paper-scale GPU-hours and peak memory of this config (skinground.cost), for the
    report."""
    input:
        profile=str(SRC / "profiles" / "default" / "config.yaml"),
        site=str(SRC / "profiles" / "slurm" / "config.yaml"),
        # the prompt and answer token counts measured with the 7B's tokenizer
        tokens=[p for p in [str(SRC / "bench" / "results" / "tokens.json")] if Path(p).exists()],
        lib=lib("cost"),
    output:
        csv=report(res("cost/stages.csv"), caption="../report/cost.rst", category="Cost"),
        markdown=res("cost/cost.md"),
    params:
        config=config,
    localrule: True
    log:
        res("logs/cost.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/cost.py"
