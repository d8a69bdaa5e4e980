"""Ingest SLICE-3D: check the metadata and images, write the manifest and the data report."""

from skinground import cli, data
from skinground.io import atomic_path, write_json


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--metadata", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--data", type=cli.json_arg, required=True, help="config section data")
    p.add_argument("--attributes", type=cli.json_arg, required=True, help="config attributes")
    p.add_argument("--manifest", required=True)
    p.add_argument("--report", required=True)
    a = p.parse_args()
    frame, report = data.build_manifest(
        a.metadata, a.images, list(a.attributes),
        zero_is_missing=a.data["zero_is_missing"], verify_decode=a.data["verify_decode"],
    )
    with atomic_path(a.manifest) as tmp:
        frame.write_parquet(tmp)
    write_json(a.report, report)


if __name__ == "__main__":
    cli.main(run)
