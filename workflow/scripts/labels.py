"""The images' diagnosis labels (config stats.diagnosis) from SLICE-3D's metadata, for the
diagnosis-agreement table."""


from skinground.core import script
from skinground.core.io import atomic_path
from skinground.core.tables import read_parquet
from skinground.data.attributes import ID_COLUMN
from skinground.data.metadata import read_labels


def main(snakemake) -> None:
    ids = read_parquet(snakemake.input.manifest, columns=[ID_COLUMN])[ID_COLUMN]
    labels = read_labels(snakemake.input.metadata, snakemake.params.columns, ids.to_list())
    with atomic_path(snakemake.output[0]) as tmp:
        labels.write_parquet(tmp)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
