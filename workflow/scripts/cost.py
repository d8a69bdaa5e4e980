"""The paper-scale cost of the run's config (skinground.cost.estimate), as a CSV of the stages
and the Markdown table ``python -m skinground.cost`` prints, with the measured token counts and
GPU MFUs of resources/measured/ where the checkout has them."""

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, write_text
from skinground.cost import calibration, estimate, report


def main(snakemake) -> None:
    a = estimate.Assumptions()
    a = calibration.apply_tokens(a, script.optional_input(snakemake, "tokens"), required=True)
    a = calibration.apply_file(a, script.optional_input(snakemake, "gpu"), required=True)
    result = estimate.estimate_with_profiles(snakemake.params.config, a,
                                             snakemake.input.profile, snakemake.input.site)
    stages = pl.DataFrame(result["stages"]).select(
        "stage", "rule", "jobs", "gpus_per_job", "pflop", "gpu_hours", "hours_per_job",
        "in_dag", "in_naive")
    with atomic_path(snakemake.output.csv) as tmp:
        stages.write_csv(tmp)
    write_text(snakemake.output.markdown, report.format_table(result) + "\n")


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
