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
        csv=res("evaluate/summary.csv"),
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
        fig4_png=res("figures/fig4_percentiles.png"),
        fig3_pdf=res("figures/fig3_retrievals.pdf"),
        fig3_png=res("figures/fig3_retrievals.png"),
    params:
        attributes=config["attributes"],
        figures=config["figures"],
        k=config["retrieve"]["k"],
    log:
        res("logs/figures.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/figures.py"
