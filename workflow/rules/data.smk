# Data stage: (demo) synthetic dataset -> manifest -> patient split -> training tuples.

if config["synthetic"]["enabled"]:

    rule synthetic_data:
        """The embedded demo dataset, in SLICE-3D's file format."""
        input:
            code=code("synthetic_data"),
        output:
            metadata=config["data"]["metadata"],
            images=config["data"]["images"],
            summary=res("synthetic/summary.json"),
        params:
            synthetic=section("synthetic"),
        log:
            res("logs/synthetic_data.log"),
        conda:
            CPU_ENV
        benchmark:
            res("benchmarks/synthetic_data.tsv")
        shell:
            "python {input.code[0]} --synthetic {params.synthetic:q}"
            " --metadata {output.metadata} --images {output.images}"
            " --summary {output.summary} > {log} 2>&1"


rule manifest:
    """Check SLICE-3D's metadata and images; one row per image with its attributes."""
    input:
        metadata=config["data"]["metadata"],
        images=config["data"]["images"],
        code=code("manifest"),
    output:
        manifest=res("data/manifest.parquet"),
        report=res("data/report.json"),
    params:
        data=section("data"),
        attributes=json.dumps(ATTRIBUTES),
    log:
        res("logs/manifest.log"),
    conda:
        CPU_ENV
    benchmark:
        res("benchmarks/manifest.tsv")
    shell:
        "python {input.code[0]} --metadata {input.metadata} --images {input.images}"
        " --data {params.data:q} --attributes {params.attributes:q}"
        " --manifest {output.manifest} --report {output.report} > {log} 2>&1"


rule split:
    """Patient-level train/test split."""
    input:
        manifest=rules.manifest.output.manifest,
        code=code("split"),
    output:
        train=res("split/train.txt"),
        test=res("split/test.txt"),
        summary=res("split/summary.json"),
    params:
        split=section("split"),
    log:
        res("logs/split.log"),
    conda:
        CPU_ENV
    shell:
        "python {input.code[0]} --manifest {input.manifest} --split {params.split:q}"
        " --train {output.train} --test {output.test} --summary {output.summary}"
        " > {log} 2>&1"


rule tuples:
    """Training tuples: W sampled attributes per train image (question, answer text)."""
    input:
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        code=code("tuples"),
    output:
        tuples=res("tuples/train_tuples.parquet"),
        summary=res("tuples/summary.json"),
    params:
        attributes=section("attributes"),
        tuples=section("tuples"),
    log:
        res("logs/tuples.log"),
    conda:
        CPU_ENV
    benchmark:
        res("benchmarks/tuples.tsv")
    shell:
        "python {input.code[0]} --manifest {input.manifest} --train {input.train}"
        " --attributes {params.attributes:q} --tuples {params.tuples:q}"
        " --out {output.tuples} --summary {output.summary} > {log} 2>&1"
