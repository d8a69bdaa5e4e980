"""The verdict: the run judged against the expectation files of config verdict.expected (the
paper's reported values and claims, the demo's targets), one row per expectation and unit with
what was expected, what the run measured, the test and held / not held / not measurable here
(``skinground.evaluation.verdict``); as CSV, Markdown (``skinground verdict``) and
reStructuredText (the report's first page)."""

import json
import logging

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, read_lines, write_text
from skinground.core.tables import read_parquet
from skinground.evaluation import far_off, significance, verdict, verdict_text

log = logging.getLogger("skinground")


def read_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def run_counts(i, config_counts) -> dict:
    """The counts of expected.ENUMS["measures"] from the run's data report, split and tuples."""
    split, tuples = read_json(i.split), read_json(i.tuples)
    return {"images": read_json(i.data_report)["images"],
            "train_images": split["train"]["images"], "test_images": split["test"]["images"],
            "train_patients": split["train"]["patients"],
            "test_patients": split["test"]["patients"], "train_tuples": tuples["tuples"],
            **config_counts}


def far_off_measures(i, p, manifest, expectations) -> dict:
    """Each far_off expectation's measures, or why they are not measurable here."""
    wanted = [e for e in expectations if e["kind"] == "far_off"]
    if not wanted:
        return {}
    table = pl.scan_parquet(i.percentiles)  # far_off reads one attribute of two methods
    hits = pl.concat([pl.scan_parquet(f) for f in i.hits], how="vertical_relaxed")
    st, fig = p.stats, p.figures
    boot = significance.patient_bootstrap(manifest, read_lines(i.test), st["bootstrap"],
                                          st["seed"])
    train = read_lines(i.train)
    out = {}
    for e in wanted:
        missing = [m for m in (e["method"], e["than"]) if m not in p.methods]
        if missing:
            out[e["id"]] = f"{' and '.join(missing)} not among retrieve.methods"
        elif e["attribute"] not in p.labels:
            out[e["id"]] = f"{e['attribute']} is not an attribute of the run"
        else:
            out[e["id"]] = far_off.measure(
                table, hits, manifest, train, boot, attribute=e["attribute"],
                method=e["method"], than=e["than"], k=p.k, queries=fig["fig3_queries"],
                seed=fig["seed"], confidence=st["confidence"], alpha=st["alpha"],
                unit=st["test_unit"])
    return out


def main(snakemake) -> None:
    i, p, out = snakemake.input, snakemake.params, snakemake.output
    manifest = read_parquet(i.manifest)
    r2 = pl.read_csv(i.r2).filter(pl.col("model") == "tuned")
    st = p.stats
    facts = verdict.Facts(
        attributes=p.labels, methods=p.methods, titles=p.titles,
        counts=run_counts(i, p.config_counts), data_caveat=p.data_caveat, r2=r2,
        summary=pl.read_csv(i.summary), tests=pl.read_csv(i.tests),
        confidence=st["confidence"], alpha=st["alpha"], unit=st["test_unit"],
        far_off=far_off_measures(i, p, manifest, p.expected))
    table = verdict.judge(p.expected, facts)
    lines = verdict.summary_lines(table, list(p.labels), p.files)
    for line in lines:
        log.info("%s", line)
    with atomic_path(out.csv) as tmp:
        table.write_csv(tmp)
    judged = list(p.files.values())
    write_text(out.markdown, verdict_text.markdown(table, lines, p.labels, p.run, judged))
    write_text(out.rst, verdict_text.rst(table, lines, p.run, judged))


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
