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
