"""The cost of the run's config at its full scale (skinground.cost.estimate: the paper's images
unless the config samples its patients), as a CSV of the stages and the Markdown
``python -m skinground.cost`` prints (GPU-hours with the model loading, recommended runtimes,
memory, disk), with the measured token counts and GPU MFUs of resources/measured/ where the
checkout has them. An estimate, never this run's measured time: cost.md says so first."""

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, write_text
from skinground.cost import calibration, estimate, report, runtime


def main(snakemake) -> None:
    config = snakemake.params.config
    train, test = runtime.config_images(config)
    a = estimate.Assumptions(train_images=train, test_images=test)
    a = calibration.apply_tokens(a, script.optional_input(snakemake, "tokens"), required=True)
    a = calibration.apply_file(a, script.optional_input(snakemake, "gpu"), required=True)
    result = estimate.estimate_with_profiles(config, a, snakemake.input.profile,
                                             snakemake.input.site)
    stages = pl.DataFrame(result["stages"]).select(
        "stage", "rule", "jobs", "gpus_per_job", "pflop", "gpu_hours", "hours_per_job",
        "load_seconds_per_job", "in_dag", "in_naive")
    with atomic_path(snakemake.output.csv) as tmp:
        stages.write_csv(tmp)
    write_text(snakemake.output.markdown,
               report.format_scope(result, config) + "\n\n" + report.format_table(result)
               + "\n\n" + report.format_disk(result["disk"]) + "\n")


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
