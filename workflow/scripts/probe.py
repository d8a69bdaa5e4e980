"""The ridge probe of one image-level space (h_im of a Qwen2-VL model, or an encoder's image
features) to every attribute: fitted on the train images, α by cross-validation over train
patients, R² on the test images with a bootstrap interval over test patients."""

import logging

import numpy as np
import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path
from skinground.core.tables import read_parquet
from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN
from skinground.evaluation import probe, significance
from skinground.retrieval.spaces import Space

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    attributes = snakemake.params.attributes
    manifest = read_parquet(snakemake.input.manifest)
    train, test = Space(snakemake.input.train), Space(snakemake.input.test)

    def of(ids):
        rows = pl.DataFrame({ID_COLUMN: ids}).join(manifest, on=ID_COLUMN, how="left")
        return rows, rows.select(attributes).cast(pl.Float64).fill_null(float("nan")).to_numpy()

    train_rows, train_y = of(train.ids)
    test_rows, test_y = of(test.ids)
    p = snakemake.params.probe
    x = train.rows(0, len(train))
    fits = probe.fit_probes(x, train_y, train_rows[PATIENT_COLUMN].to_list(), p["alphas"],
                            p["folds"])
    del x
    st = snakemake.params.stats
    boot = significance.patient_bootstrap(manifest, test.ids, st["bootstrap"], st["seed"])
    codes = boot.codes(test_rows[PATIENT_COLUMN].to_list())
    n_train = dict(zip(attributes, np.isfinite(train_y).sum(axis=0).tolist(), strict=True))
    rows = probe.probe_rows(snakemake.wildcards.model, attributes, fits,
                            test.rows(0, len(test)), test_y, codes, boot, st["confidence"],
                            n_train)
    for row in rows:
        log.info("%s: alpha %g (x%g), R2 %.3f [%.3f, %.3f]", row["attribute"], row["alpha"],
                 row["alpha_relative"], row["r2"], row["r2_lo"], row["r2_hi"])
    with atomic_path(snakemake.output[0]) as tmp:
        pl.DataFrame(rows).write_csv(tmp)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
