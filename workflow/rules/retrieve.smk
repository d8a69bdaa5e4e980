# Retrieval stage: the methods (a)-(d) and the image encoders (e) -> percentile evaluation
# (Fig. 4's measure) -> figures.


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


rule figures:
    """Fig. 4 (percentile boxplots, 16 attributes x methods) and Fig. 3 (top-k grids)."""
    input:
        evaluation=rules.evaluate.output.table,
        summary=rules.evaluate.output.csv,
        results=expand(res(out.HITS), method=METHODS),
        manifest=rules.manifest.output.manifest,
        images=config["data"]["images"],
    output:
        fig4_pdf=figure("fig4_percentiles", "pdf"),
        fig4_png=reported(
            figure("fig4_percentiles", "png"),
            "fig4",
            "Retrieval",
            "Paper (Fig. 4)",
            item="Fig. 4",
            model="every method",
            seed=TRAIN_SEED,
        ),
        fig4_panels=reported(
            directory(res(out.FIG4_PANELS)),
            "fig4_panel",
            "Retrieval",
            "Paper (Fig. 4)",
            item="Fig. 4, one attribute",
            attribute=attribute_label,
            model="every method",
            seed=TRAIN_SEED,
            patterns=["{attribute}.png"],
        ),
        fig3_pdf=figure("fig3_retrievals", "pdf"),
        fig3_png=reported(
            figure("fig3_retrievals", "png"),
            "fig3",
            "Retrieval",
            "Paper (Fig. 3)",
            item="Fig. 3",
            attribute=ATTRIBUTE_LABELS[config["figures"]["fig3_attribute"]],
            model="(a) Image + Text and (c) Image",
            seed=TRAIN_SEED,
        ),
    log:
        log("figures"),
    benchmark:
        benchmark("figures")
    conda:
        CPU_ENV
    params:
        code=code("figures"),
        confidence=config["stats"]["confidence"],
        attributes=config["attributes"],
        figures=config["figures"],
        k=config["retrieve"]["k"],
        methods=METHOD_LEGENDS,
    script:
        "../scripts/figures.py"


# ---- multi-attribute retrieval (beyond the paper): the groups of retrieve.groups

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

    rule figure_groups:
        """Fig. 5: boxplots of the group criterion, group x method, in the style of Fig. 4."""
        input:
            evaluation=rules.evaluate_groups.output.table,
            summary=rules.evaluate_groups.output.csv,
        output:
            pdf=figure("fig5_groups", "pdf"),
            png=reported(
                figure("fig5_groups", "png"),
                "fig5",
                "Retrieval",
                "Beyond the paper: groups (Fig. 5)",
                item="Fig. 5",
                attribute="the groups of retrieve.groups",
                model="every group method",
                seed=TRAIN_SEED,
            ),
        log:
            log("figure_groups"),
        benchmark:
            benchmark("figure_groups")
        conda:
            CPU_ENV
        params:
            code=code("figure_groups"),
            confidence=config["stats"]["confidence"],
            groups={g: spec["attributes"] for g, spec in GROUPS.items()},
            labels={a: spec["label"] for a, spec in config["attributes"].items()},
        script:
            "../scripts/figure_groups.py"


rule cost:
    """The paper-scale GPU-hours and peak memory of this config (skinground.cost), for the
    report."""
    input:
        profile=src("profiles/default/config.yaml"),
        site=src("profiles/slurm/config.yaml"),
        # what was measured (resources/measured/): the prompt and answer token counts under
        # the 7B's tokenizer, the MFUs of the GPU check
        tokens=optional(out.TOKEN_MEASUREMENT),
        gpu=optional(out.GPU_MEASUREMENT),
        # the encoders' architectures, where their folders are here (skinground.flops; the
        # demo's tiny stand-ins are costed as their hub models)
        encoders=[
            p
            for p in (Path(e["path"]) / "config.json" for e in ENCODERS.values())
            if not config["model"]["build_tiny"] and p.is_file()
        ],
    output:
        csv=reported(res(out.COST_CSV), "cost", "Cost", item="Paper-scale cost", model="7B"),
        markdown=res(out.COST_MD),
    log:
        log("cost"),
    localrule: True
    conda:
        CPU_ENV
    params:
        code=code("cost"),
        # every section as it is (batch sizes and predicted models change the estimate), but
        # train's bookkeeping keys, which the cost model does not read
        config={**config, "train": section("train")},
    script:
        "../scripts/cost.py"
