# skinground: Qwen2-VL grounded in quantitative SLICE-3D lesion attributes, and
# attribute-specific image retrieval. See README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/retrieve.smk"


onstart:
    missing_weights_stop()


rule all:
    """Every figure and table of the study."""
    default_target: True
    input:
        rules.run_config.output,
        rules.versions.output,
        rules.split.output,
        rules.tuples.output,
        rules.r2.output,
        rules.probe_r2.output if PROBED_MODELS else [],
        rules.r2_untuned.output if "untuned" in PREDICT_MODELS else [],
        rules.evaluate.output,
        rules.diagnosis.output if config["stats"]["diagnosis"] else [],
        rules.figures.output,
        rules.cost.output,
        rules.evaluate_groups.output if GROUPS else [],
        rules.figure_groups.output if GROUPS else [],
