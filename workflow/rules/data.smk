# Data stage: (demo) synthetic dataset -> manifest -> patient split -> training tuples.

if config["synthetic"]["enabled"]:

    rule synthetic_data:
        """The embedded demo dataset, in SLICE-3D's file format."""
        output:
            metadata=config["data"]["metadata"],
            images=config["data"]["images"],
            summary=res(out.SYNTHETIC_SUMMARY),
        log:
            log("synthetic_data"),
        benchmark:
            benchmark("synthetic_data")
        conda:
            CPU_ENV
        params:
            code=code("synthetic_data"),
            synthetic=config["synthetic"],
        script:
            "../scripts/synthetic_data.py"


rule manifest:
    """Check SLICE-3D's metadata and images; one row per image with its attributes."""
    input:
        metadata=config["data"]["metadata"],
        images=config["data"]["images"],
    output:
        manifest=res(out.MANIFEST),
        report=reported(res(out.DATA_REPORT), "data_report", "Data", item="Data report"),
    log:
        log("manifest"),
    benchmark:
        benchmark("manifest")
    conda:
        CPU_ENV
    params:
        code=code("manifest"),
        data=config["data"],
        attributes=ATTRIBUTES,
    script:
        "../scripts/manifest.py"


rule labels:
    """The diagnosis columns (stats.diagnosis) of every image, beside the manifest: a change
    of them reruns only the diagnosis table."""
    input:
        metadata=config["data"]["metadata"],
        manifest=rules.manifest.output.manifest,
    output:
        res(out.LABELS),
    log:
        log("labels"),
    conda:
        CPU_ENV
    params:
        code=code("labels"),
        columns=config["stats"]["diagnosis"],
    script:
        "../scripts/labels.py"


rule split:
    """Patient-level train/test split."""
    input:
        manifest=rules.manifest.output.manifest,
    output:
        train=res(out.SPLIT_IDS, split="train"),
        test=res(out.SPLIT_IDS, split="test"),
        summary=reported(
            res(out.SPLIT_SUMMARY),
            "split",
            "Data",
            item="Patient split",
            seed=config["split"]["seed"],
        ),
    log:
        log("split"),
    benchmark:
        benchmark("split")
    conda:
        CPU_ENV
    params:
        code=code("split"),
        split=config["split"],
    script:
        "../scripts/split.py"


rule tuples:
    """Training tuples: W sampled attributes per train image (question, answer text)."""
    input:
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
    output:
        tuples=res(out.TUPLES),
        summary=res(out.TUPLES_SUMMARY),
    log:
        log("tuples"),
    benchmark:
        benchmark("tuples")
    conda:
        CPU_ENV
    params:
        code=code("tuples"),
        attributes=config["attributes"],
        tuples=config["tuples"],
        groups=GROUPS if config["tuples"]["group_share"] > 0 else {},
    script:
        "../scripts/tuples.py"


rule versions:
    """The Python packages the run computes with (``skinground.versions``: the project's
    dependencies, torch included), each beside its pin in constraints.txt, and the interpreter,
    beside the run's config; the report shows them. A changed version reruns this rule alone."""
    input:
        constraints=src(versions.CONSTRAINTS),
    output:
        reported(res(out.VERSIONS), "versions", "Run", item="Package versions"),
    log:
        log("versions"),
    localrule: True
    conda:
        CPU_ENV
    params:
        code=code("versions"),
        packages=versions.installed(),
        environment=versions.environment(),
    script:
        "../scripts/versions.py"


rule run_config:
    """The run's resolved config less its bookkeeping keys (what the results depend on), for
    ``skinground query``: written when the run has made every figure and table (its inputs),
    so it never describes a model the run does not have yet; no other rule reads it."""
    input:
        study_outputs,
    output:
        res(out.RUN_CONFIG),
    log:
        log("run_config"),
    localrule: True
    conda:
        CPU_ENV
    params:
        code=code("run_config"),
        config=tracked_config(config),
    script:
        "../scripts/run_config.py"
