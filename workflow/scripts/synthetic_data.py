"""Generate the embedded demo dataset in SLICE-3D's file format (CSV + HDF5 of JPEGs)."""

import logging

from skinground.core import script
from skinground.core.io import write_json
from skinground.demo import synthetic


def main(snakemake) -> None:
    s = snakemake.params.synthetic
    summary = synthetic.generate(
        snakemake.output.metadata, snakemake.output.images, n_patients=s["patients"],
        n_images=s["images"], seed=s["seed"], min_px=s["min_px"], max_px=s["max_px"],
        fov_mm=s["field_of_view_mm"], jpeg_quality=s["jpeg_quality"],
        missing_fraction=s["missing_fraction"], malignant_fraction=s["malignant_fraction"],
        size_coupling=s["size_coupling"],
    )
    logging.getLogger("skinground").info("synthetic SLICE-3D: %s", summary)
    write_json(snakemake.output.summary, summary)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
