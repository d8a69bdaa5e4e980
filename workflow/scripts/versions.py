"""The run's package versions beside their pins (``core.versions``), as a CSV: one row per
package, then the interpreter and platform."""

import polars as pl

from skinground.core import script, versions
from skinground.core.io import atomic_path


def main(snakemake) -> None:
    pins = versions.read_pins(snakemake.input.constraints)
    rows = versions.table(snakemake.params.packages, pins)
    rows += [{"package": key, "version": value, "pin": "", "state": "environment"}
             for key, value in snakemake.params.environment.items()]
    with atomic_path(snakemake.output[0]) as tmp:
        pl.DataFrame(rows, schema=dict.fromkeys(("package", "version", "pin", "state"),
                                                pl.String)).write_csv(tmp)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
