"""Generate the embedded demo dataset in SLICE-3D's file format (CSV + HDF5 of JPEGs)."""

import logging

from skinground import cli, synthetic
from skinground.io import write_json


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--synthetic", type=cli.json_arg, required=True,
                   help="config section synthetic")
    p.add_argument("--metadata", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--summary", required=True)
    a = p.parse_args()
    s = a.synthetic
    summary = synthetic.generate(
        a.metadata, a.images, n_patients=s["patients"], n_images=s["images"], seed=s["seed"],
        min_px=s["min_px"], max_px=s["max_px"], fov_mm=s["field_of_view_mm"],
        jpeg_quality=s["jpeg_quality"], missing_fraction=s["missing_fraction"],
        malignant_fraction=s["malignant_fraction"],
    )
    logging.getLogger("skinground").info("synthetic SLICE-3D: %s", summary)
    write_json(a.summary, summary)


if __name__ == "__main__":
    cli.main(run)
