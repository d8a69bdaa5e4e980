# Report stage: the figures, the paper-scale cost, the run's package versions and, written
# last, its config.


rule figures:
    """Fig. 4 (percentile boxplots, attributes x methods, and each attribute's panel alone)
    and Fig. 3 (top-k grids)."""
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
        stand_ins=STAND_INS,
    script:
        "../scripts/figures.py"


# ---- multi-attribute retrieval (beyond the paper): the groups of retrieve.groups


if GROUPS:

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
    """The GPU-hours, peak memory and disk of this config at its scale (skinground.cost), for
    the report: an estimate, not this run's time."""
    input:
        profile=src("profiles/default/config.yaml"),
        site=src("profiles/slurm/config.yaml"),
        # what was measured (resources/measured/): the prompt and answer token counts under
        # the 7B's tokenizer, the MFUs of the GPU check
        tokens=optional(out.TOKEN_MEASUREMENT),
        gpu=optional(out.GPU_MEASUREMENT),
        # the encoders' architectures, where their folders are here (skinground.cost.flops; the
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
        # train's bookkeeping keys, which the cost model does not read, save_total_limit aside
        # (the checkpoints it keeps are disk)
        config={
            **config,
            "train": {
                **section("train"),
                "save_total_limit": config["train"]["save_total_limit"],
            },
        },
    script:
        "../scripts/cost.py"


rule versions:
    """The Python packages the run computes with (``skinground.core.versions``: the project's
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
