"""Fig. 2: the tuned model's test-set R² per attribute from its predictions, as CSV, Markdown
and a bar chart (the paper's Fig. 2). Unparsable answers are counted; R² is given on the parsed
answers and with the unparsable ones replaced by the attribute's train mean; beside it the
metrics one wrong digit cannot wreck (Spearman's ρ, the median absolute error, the share off by
an order of magnitude), each with a bootstrap interval over test patients."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, read_lines
from skinground.core.tables import write_summary
from skinground.data import groups
from skinground.evaluation import figures, metrics, significance

log = logging.getLogger("skinground")

MARKDOWN_NOTE = (
    "Test-set R² per attribute. n: test (image, attribute) pairs with a ground-truth value; "
    "n_unparsable: answers that are not a number; r2_parsed: R² on the parsed answers only; "
    "r2_filled: R² on all n, unparsable answers replaced by the attribute's train mean. "
    "n/a: undefined (fewer than 2 values or no variance). On the parsed answers: spearman "
    "(Spearman's ρ), median_abs_error, magnitude_share (the share off by a factor of 10 or "
    "more). _lo/_hi: the bootstrap interval over test patients.\n\n"
)


def main(snakemake) -> None:
    attributes = snakemake.params.attributes
    predictions, manifest, means = metrics.read_answers(
        snakemake.input.predictions, snakemake.input.manifest, snakemake.input.train, attributes)
    is_group = pl.col("attribute").str.starts_with(groups.GROUP_ATTRIBUTE_PREFIX)
    table = metrics.r2_table(predictions.filter(~is_group), manifest, means)
    by_group = metrics.group_r2(predictions, manifest, means, snakemake.params.groups)
    with atomic_path(snakemake.output.groups_csv) as tmp:
        by_group.write_csv(tmp)
    st = snakemake.params.stats
    boot = significance.patient_bootstrap(manifest, read_lines(snakemake.input.test),
                                          st["bootstrap"], st["seed"])
    table = metrics.with_intervals(
        table, predictions.filter(~is_group), manifest, means, boot,
        lambda ids: significance.patient_codes(boot, manifest, ids), st["confidence"],
        {a: spec["decimals"] for a, spec in attributes.items()})
    table = metrics.with_labels(table, attributes)
    for row in table.iter_rows(named=True):
        log.info("%s %s: n=%d unparsable=%d R2 parsed=%.3f filled=%.3f", row["model"],
                 row["attribute"], row["n"], row["n_unparsable"], row["r2_parsed"],
                 row["r2_filled"])
    write_summary(table, snakemake.output.csv, snakemake.output.markdown, MARKDOWN_NOTE)
    labels = {col: spec["label"] for col, spec in attributes.items()}
    figures.fig2_r2(table, labels, snakemake.output.fig_pdf, snakemake.output.fig_png,
                    confidence=st["confidence"])


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
