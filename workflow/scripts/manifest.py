"""Ingest SLICE-3D: check the metadata and images, write the manifest and the data report."""

from skinground.core import script
from skinground.core.io import atomic_path, write_json
from skinground.data import manifest


def main(snakemake) -> None:
    cfg = snakemake.params.data
    frame, report = manifest.build_manifest(
        snakemake.input.metadata, snakemake.input.images, snakemake.params.attributes,
        zero_is_missing=cfg["zero_is_missing"], verify_decode=cfg["verify_decode"],
        max_unmatched=cfg["max_unmatched_images"],
    )
    with atomic_path(snakemake.output.manifest) as tmp:
        frame.write_parquet(tmp)
    write_json(snakemake.output.report, report)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
