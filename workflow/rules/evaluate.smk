# Evaluation stage: R² of the answers (Fig. 2's numbers), the probes (beyond the paper), the
# percentile ranks of the retrieved images (Fig. 4's measure) with the claims' tests, the
# diagnosis, and the verdict: the run judged against the paper's values and claims.


rule r2:
    """R² per attribute of the tuned model's answers (unparsable answers counted), and
    Fig. 2."""
    input:
        predictions=res(out.PREDICTIONS, model="tuned"),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        test=rules.split.output.test,
    output:
        csv=reported(
            res(out.R2_CSV),
            "r2",
            "Training and prediction",
            item="R² (table)",
            model="tuned",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.R2_MD),
        groups_csv=res(out.R2_GROUPS),
        fig_pdf=figure("fig2_r2", "pdf"),
        fig_png=reported(
            figure("fig2_r2", "png"),
            "fig2",
            "Training and prediction",
            item="Fig. 2",
            model="tuned",
            seed=TRAIN_SEED,
        ),
    log:
        log("r2"),
    conda:
        CPU_ENV
    params:
        code=code("r2"),
        attributes=config["attributes"],
        groups=PREDICTED_GROUPS,
        stats=BOOTSTRAP,
    script:
        "../scripts/r2.py"


if "untuned" in PREDICTED_MODELS:

    rule r2_untuned:
        """The untuned model's R² per attribute in a table of its own (not Fig. 2): with the
        strict parser, and with the first number anywhere in the answer."""
        input:
            predictions=res(out.PREDICTIONS, model="untuned"),
            manifest=rules.manifest.output.manifest,
            train=rules.split.output.train,
        output:
            csv=reported(
                res(out.R2_UNTUNED_CSV),
                "r2_untuned",
                "Training and prediction",
                item="R², untuned (table)",
                model="untuned",
            ),
            markdown=res(out.R2_UNTUNED_MD),
        log:
            log("r2_untuned"),
        conda:
            CPU_ENV
        params:
            code=code("r2_untuned"),
            attributes=config["attributes"],
        script:
            "../scripts/r2_untuned.py"


rule probe:
    """A ridge probe of one model's image-level space to every attribute (beyond the paper):
    fitted on the train images, R² on the test images."""
    input:
        train=res(out.SPACE, split="train", space=out.IMAGE_SPACE),
        test=res(out.SPACE, split="test", space=out.IMAGE_SPACE),
        manifest=rules.manifest.output.manifest,
    output:
        res(out.PROBE),
    log:
        log("probe/{model}"),
    benchmark:
        benchmark("probe/{model}")
    wildcard_constraints:
        model="|".join(PROBED_MODELS),
    conda:
        CPU_ENV
    params:
        code=code("probe"),
        attributes=ATTRIBUTES,
        probe=config["probe"],
        stats=BOOTSTRAP,
    script:
        "../scripts/probe.py"


rule probe_r2:
    """The probes' R² beside the generated answers' (Fig. 2's), as a table and a figure."""
    input:
        r2=rules.r2.output.csv,
        probes=expand(res(out.PROBE), model=PROBED_MODELS),
    output:
        csv=reported(
            res(out.PROBE_R2_CSV),
            "probe_r2",
            "Training and prediction",
            item="Probe R² (table)",
            model="ridge probe of each image-level space",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.PROBE_R2_MD),
        fig_pdf=figure("fig2_probe", "pdf"),
        fig_png=reported(
            figure("fig2_probe", "png"),
            "fig2_probe",
            "Training and prediction",
            item="Fig. 2, probe",
            model="ridge probe of each image-level space",
            seed=TRAIN_SEED,
        ),
    log:
        log("probe_r2"),
    conda:
        CPU_ENV
    params:
        code=code("probe_r2"),
        attributes=config["attributes"],
        confidence=config["stats"]["confidence"],
        titles=ENCODER_TITLES,
        stand_ins=STAND_INS,
    script:
        "../scripts/probe_r2.py"


rule evaluate:
    """Percentile rank of every retrieved image's attribute difference; summary tables with
    bootstrap intervals; the paper's claims tested per attribute."""
    input:
        results=expand(res(out.HITS), method=METHODS),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        test=rules.split.output.test,
    output:
        table=res(out.PERCENTILES),
        csv=reported(
            res(out.SUMMARY_CSV),
            "summary",
            "Retrieval",
            "Paper (Fig. 4)",
            item="Fig. 4 (table)",
            model="every method",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.SUMMARY_MD),
        tests=res(out.PAIRED_TESTS),
        claims=reported(
            res(out.CLAIMS_CSV),
            "claims",
            "Retrieval",
            "Beyond the paper: statistics",
            item="The paper's claims, tested",
            model="every method",
            seed=TRAIN_SEED,
        ),
        claims_md=res(out.CLAIMS_MD),
    log:
        log("evaluate"),
    benchmark:
        benchmark("evaluate")
    conda:
        CPU_ENV
    params:
        code=code("evaluate"),
        attributes=ATTRIBUTES,
        stats=TESTS,
        titles=method_titles(METHODS),
    script:
        "../scripts/evaluate.py"


rule diagnosis:
    """The share of retrieved images whose diagnosis agrees with the query's, per method, with
    random retrieval's base rate beside it."""
    input:
        results=expand(res(out.HITS), method=METHODS),
        labels=rules.labels.output[0],
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        test=rules.split.output.test,
    output:
        csv=reported(
            res(out.DIAGNOSIS_CSV),
            "diagnosis",
            "Retrieval",
            "Beyond the paper: statistics",
            item="Diagnosis agreement",
            model="every method",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.DIAGNOSIS_MD),
    log:
        log("diagnosis"),
    conda:
        CPU_ENV
    params:
        code=code("diagnosis"),
        columns=config["stats"]["diagnosis"],
        stats=BOOTSTRAP,
        methods=METHODS,
    script:
        "../scripts/diagnosis.py"


if GROUPS:

    rule evaluate_groups:
        """The group criterion for every retrieved image: the max and the mean over the
        group's attributes of their percentile ranks; summary per group x method."""
        input:
            results=group_results(),
            manifest=rules.manifest.output.manifest,
            train=rules.split.output.train,
            test=rules.split.output.test,
        output:
            table=res(out.GROUP_PERCENTILES),
            csv=reported(
                res(out.GROUP_SUMMARY_CSV),
                "groups_summary",
                "Retrieval",
                "Beyond the paper: groups (Fig. 5)",
                item="Fig. 5 (table)",
                attribute="the groups of retrieve.groups",
                model="every group method",
                seed=TRAIN_SEED,
            ),
            markdown=res(out.GROUP_SUMMARY_MD),
            tests=res(out.GROUP_PAIRED_TESTS),
            claims=reported(
                res(out.GROUP_CLAIMS_CSV),
                "groups_claims",
                "Retrieval",
                "Beyond the paper: statistics",
                item="The claims on groups, tested",
                attribute="the groups of retrieve.groups",
                model="every group method",
                seed=TRAIN_SEED,
            ),
            claims_md=res(out.GROUP_CLAIMS_MD),
        log:
            log("evaluate_groups"),
        benchmark:
            benchmark("evaluate_groups")
        conda:
            CPU_ENV
        params:
            code=code("evaluate_groups"),
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            methods=config["retrieve"]["group_methods"],
            stats=TESTS,
            titles=group_method_titles(),
        script:
            "../scripts/evaluate_groups.py"


rule verdict:
    """The run judged against the expectation files of config verdict.expected (the paper's
    values and claims; the demo's targets): per expectation and unit, what was expected, what
    the run measured, the test, and held / not held / not measurable here. The report's first
    page; ``skinground verdict`` prints it."""
    input:
        data_report=rules.manifest.output.report,
        split=rules.split.output.summary,
        tuples=rules.tuples.output.summary,
        r2=rules.r2.output.csv,
        summary=rules.evaluate.output.csv,
        tests=rules.evaluate.output.tests,
        percentiles=rules.evaluate.output.table,
        hits=expand(res(out.HITS), method=[m for m in plan.FIG3_METHODS if m in METHODS]),
        manifest=rules.manifest.output.manifest,
        train=rules.split.output.train,
        test=rules.split.output.test,
    output:
        csv=reported(
            res(out.VERDICT_CSV),
            "verdict",
            "Verdict",
            item="Verdict (table)",
            model="every method",
            seed=TRAIN_SEED,
        ),
        markdown=res(out.VERDICT_MD),
        rst=res(out.VERDICT_RST),
    log:
        log("verdict"),
    conda:
        CPU_ENV
    params:
        code=code("verdict"),
        run=RUN,
        expected=EXPECTED,
        files=EXPECTED_FILES,
        labels=ATTRIBUTE_LABELS,
        methods=METHODS,
        titles=method_titles(METHODS),
        config_counts={
            "attributes": len(ATTRIBUTES),
            "k": config["retrieve"]["k"],
            "b": config["retrieve"]["b"],
        },
        data_caveat=expected_files.data_caveat(config),
        stats=TESTS,
        # Fig. 3's draw of its queries (the attribute is the expectation's)
        figures={k: config["figures"][k] for k in ("fig3_queries", "seed")},
        k=config["retrieve"]["k"],
    script:
        "../scripts/verdict.py"
