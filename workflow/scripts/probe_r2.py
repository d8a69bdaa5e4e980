"""The probes' test R² of every image-level space beside the tuned model's generated answers'
(Fig. 2's R², unparsable answers filled with the train mean), as a table and a figure."""

import polars as pl

from skinground.core import script
from skinground.core.tables import write_summary
from skinground.evaluation import figures, probe

NOTE = ("Test-set R² per attribute: the tuned model's generated answers (Fig. 2, unparsable "
        "answers -> train mean) and a ridge probe of each image-level space (h_im of the tuned "
        "and untuned Qwen2-VL, each encoder's image features), fitted on the train images with "
        "its penalty chosen by cross-validation over train patients. _lo/_hi: the bootstrap "
        "interval over test patients.\n\n")


def main(snakemake) -> None:
    attributes = snakemake.params.attributes
    table = probe.beside_answers(pl.read_csv(snakemake.input.r2),
                                 [pl.read_csv(p) for p in snakemake.input.probes],
                                 {a: spec["label"] for a, spec in attributes.items()})
    write_summary(table, snakemake.output.csv, snakemake.output.markdown, NOTE)
    figures.fig2_probe(table, snakemake.output.fig_pdf, snakemake.output.fig_png,
                       confidence=snakemake.params.confidence, titles=snakemake.params.titles,
                       stand_ins=snakemake.params.stand_ins)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
