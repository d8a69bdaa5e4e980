# Data stage: (demo) synthetic dataset -> manifest -> patient split -> training tuples.

if config["synthetic"]["enabled"]:

    rule synthetic_data:
        """The embedded demo dataset, in SLICE-3D's file format."""
        input:
            lib=lib("synthetic_data"),
        output:
            metadata=config["data"]["metadata"],
            images=config["data"]["images"],
            summary=res("synthetic/summary.json"),
        params:
            synthetic=config["synthetic"],
        log:
            res("logs/synthetic_data.log"),
        conda:
            CPU_ENV
        benchmark:
            res("benchmarks/synthetic_data.tsv")
        script:
            "../scripts/synthetic_data.py"


rule manifest:
    """Check SLICE-3D's metadata and images; one row per image with its attributes."""
    input:
        metadata=config["data"]["metadata"],
        images=config["data"]["images"],
        lib=lib("manifest"),
    output:
        manifest=res("data/manifest.parquet"),
        report=report(res("data/report.json"), caption="../report/data_report.rst",
                      category="Data"),
    params:
        data=config["data"],
        attributes=ATTRIBUTES,
    log:
        res("logs/manifest.log"),
    conda:
        CPU_ENV
    benchmark:
        res("benchmarks/manifest.tsv")
    script:
        "../scripts/manifest.py"


rule split:
    """Patient-level train/test split."""
    input:
        manifest=rules.manifest.output.manifest,
        lib=lib("split"),
    output:
        train=res("split/train.txt"),
        test=res("split/test.txt"),
        summary=report(res("split/summary.json"), caption="../report/split.rst",
                       category="Data"),
    params:
        split=config["split"],
    log:
        res("logs/split.log"),
    benchmark:
        res("benchmarks/split.tsv")
    conda:
        CPU_ENV
    script:
        "../scripts/split.py"


rule tuples:
    """Training tuples: W sampled attributes per train image (question, answer text)."""
    input:
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        lib=lib("tuples"),
    output:
        tuples=res("tuples/train_tuples.parquet"),
        summary=res("tuples/summary.json"),
    params:
        attributes=config["attributes"],
        tuples=config["tuples"],
        groups=GROUPS if config["tuples"]["group_share"] > 0 else {},
    log:
        res("logs/tuples.log"),
    conda:
        CPU_ENV
    benchmark:
        res("benchmarks/tuples.tsv")
    script:
        "../scripts/tuples.py"


rule run_config:
    """The run's resolved config, for ``skinground query``: any config change rewrites it,
    and no other rule reads it."""
    input:
        lib=lib("run_config"),
    output:
        res("config.yaml"),
    params:
        config=config,
    localrule: True
    log:
        res("logs/run_config.log"),
    conda:
        CPU_ENV
    script:
        "../scripts/run_config.py"
