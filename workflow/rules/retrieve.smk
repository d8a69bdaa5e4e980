# Retrieval stage: the five methods -> percentile evaluation (Fig. 4's measure) -> figures.

rule retrieve:
    """Top-k train images for every test query, with one method."""
    input:
        unpack(retrieve_inputs),
        code=code("retrieve"),
    output:
        res("retrieve/{method}.parquet"),
    wildcard_constraints:
        method="|".join(METHOD_MODEL),
    params:
        spaces=space_args,
        retrieve=retrieve_params,
        attributes=json.dumps(ATTRIBUTES),
    log:
        res("logs/retrieve/{method}.log"),
    conda:
        GPU_ENV
    shell:
        "python {input.code[0]} --method {wildcards.method} --retrieve {params.retrieve:q}"
        " --attributes {params.attributes:q} {params.spaces} --out {output} > {log} 2>&1"


rule evaluate:
    """Percentile rank of every retrieved image's attribute difference; summary tables."""
    input:
        results=expand(res("retrieve/{method}.parquet"), method=METHODS),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        code=code("evaluate"),
    output:
        table=res("evaluate/percentiles.parquet"),
        csv=res("evaluate/summary.csv"),
        markdown=res("evaluate/summary.md"),
    params:
        attributes=json.dumps(ATTRIBUTES),
    log:
        res("logs/evaluate.log"),
    benchmark:
        res("benchmarks/evaluate.tsv")
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --results {input.results} --manifest {input.manifest}"
        " --train-ids {input.train} --attributes {params.attributes:q}"
        " --table {output.table} --csv {output.csv} --markdown {output.markdown}"
        " > {log} 2>&1"


rule figures:
    """Fig. 4 (percentile boxplots, 16 attributes x methods) and Fig. 3 (top-k grids)."""
    input:
        evaluation=rules.evaluate.output.table,
        results=expand(res("retrieve/{method}.parquet"), method=METHODS),
        manifest=rules.manifest.output.manifest,
        images=config["data"]["images"],
        code=code("figures"),
    output:
        fig4_pdf=res("figures/fig4_percentiles.pdf"),
        fig4_png=res("figures/fig4_percentiles.png"),
        fig3_pdf=res("figures/fig3_retrievals.pdf"),
        fig3_png=res("figures/fig3_retrievals.png"),
    params:
        labels=json.dumps(LABEL_OF),
        figures=section("figures"),
    log:
        res("logs/figures.log"),
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --evaluation {input.evaluation} --results {input.results}"
        " --manifest {input.manifest} --images {input.images}"
        " --attributes {params.labels:q} --figures {params.figures:q}"
        " --fig4-pdf {output.fig4_pdf} --fig4-png {output.fig4_png}"
        " --fig3-pdf {output.fig3_pdf} --fig3-png {output.fig3_png} > {log} 2>&1"
