# skinground: Qwen2-VL grounded in quantitative SLICE-3D lesion attributes, and
# attribute-specific image retrieval. See README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/planning.smk"
include: "workflow/rules/inputs.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/retrieve.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


onstart:
    placeholder_account_stop()
    missing_weights_stop()
    unwritable_stop()


rule all:
    """Every figure and table of the study, and last the run's config (written once they are
    all made: what ``skinground query`` reads)."""
    default_target: True
    input:
        rules.run_config.output,
        study_outputs(),
