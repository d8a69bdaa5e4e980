"""The untuned model's test-set R² per attribute, in a table of its own (not Fig. 2): with the
strict parser the tuned model's answers are held to, and with the first number anywhere in the
answer (``answers.parse_number_lenient``), each with its count of unparsable answers."""

from skinground.core import script
from skinground.core.tables import write_summary
from skinground.evaluation import metrics

MARKDOWN_NOTE = (
    "The untuned model's test-set R² per attribute (not in Fig. 2). strict: the rule the "
    "tuned model's answers are held to (the answer starts with the number); lenient: the "
    "first number anywhere in the answer. n_unparsable: answers without a number under that "
    "rule; r2_filled: R² on all n, unparsable answers replaced by the train mean.\n\n"
)


def main(snakemake) -> None:
    inputs, attributes = snakemake.input, snakemake.params.attributes
    answers = metrics.read_answers(inputs.predictions, inputs.manifest, inputs.train, attributes)
    table = metrics.with_labels(metrics.lenient_r2_table(*answers), attributes)
    write_summary(table, snakemake.output.csv, snakemake.output.markdown, MARKDOWN_NOTE)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
