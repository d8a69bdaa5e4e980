"""Where a run's outputs live, under ``results/<run>/``: the one place the layout is named.

The rules declare their outputs with these templates (Snakemake wildcards in braces, joined
to the run's folder by ``res()`` in common.smk); ``skinground query``, the fidelity counts,
the tests and the benchmarks find a finished run's files through :class:`Results`. Standard
library only: the Snakefile imports it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

#: A run's folder, relative to the working directory.
RUN_FOLDER = "results/{run}"
#: What a run's name may be (config ``run``; the schema's pattern, tested equal): a plain
#: name, so that its folder is always a child of results/.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
#: The image-only embedding space (h_im, or MONET's image features); the per-attribute spaces
#: h_im,a are named by their attribute column, the composed ones by ``plan.group_space``.
IMAGE_SPACE = "im"

# ---- data
SYNTHETIC_SUMMARY = "synthetic/summary.json"
MANIFEST = "data/manifest.parquet"
DATA_REPORT = "data/report.json"
SPLIT_IDS = "split/{split}.txt"
SPLIT_SUMMARY = "split/summary.json"
LABELS = "data/labels.parquet"  # isic_id + the diagnosis columns (stats.diagnosis)
TUPLES = "tuples/train_tuples.parquet"
TUPLES_SUMMARY = "tuples/summary.json"
RUN_CONFIG = "config.yaml"

# ---- model
ADAPTER = "train/adapter"
CHECKPOINTS = "train/checkpoints"
LOSS_CSV = "train/loss.csv"
LOSS_PLOT = "train/loss.png"
TRAIN_SUMMARY = "train/summary.json"
PREDICT_SHARD = "predict/{model}/shard{shard}.parquet"
PREDICTIONS = "predict/{model}.parquet"
R2_CSV = "predict/r2.csv"
R2_MD = "predict/r2.md"
R2_GROUPS = "predict/r2_groups.csv"
R2_UNTUNED_CSV = "predict/r2_untuned.csv"
R2_UNTUNED_MD = "predict/r2_untuned.md"
# the ridge probe of one image-level space, and all of them beside the generated answers
PROBE = "probe/{model}.csv"
PROBE_R2_CSV = "predict/probe_r2.csv"
PROBE_R2_MD = "predict/probe_r2.md"

# ---- embeddings and indexes
EMBED_SHARD = "embed/{model}/{split}/shard{shard}.npz"
#: The folder of the group shards, beside the models' spaces (no encoder may be named so).
GROUP_SHARD_FOLDER = "groups"
GROUP_SHARD = f"embed/tuned/{{split}}/{GROUP_SHARD_FOLDER}/shard{{shard}}.npz"
SPACE = "embed/{model}/{split}/{space}.npz"
INDEX = "index/{model}/{space}.faiss"

# ---- retrieval and evaluation
HITS = "retrieve/{method}.parquet"
GROUP_HITS = "retrieve/groups/{group_method}.parquet"
PERCENTILES = "evaluate/percentiles.parquet"
SUMMARY_CSV = "evaluate/summary.csv"
SUMMARY_MD = "evaluate/summary.md"
GROUP_PERCENTILES = "evaluate/groups_percentiles.parquet"
GROUP_SUMMARY_CSV = "evaluate/groups_summary.csv"
GROUP_SUMMARY_MD = "evaluate/groups_summary.md"
# paired tests of the paper's claims (per attribute / group), and how many hold
PAIRED_TESTS = "evaluate/paired_tests.csv"
CLAIMS_CSV = "evaluate/claims.csv"
CLAIMS_MD = "evaluate/claims.md"
GROUP_PAIRED_TESTS = "evaluate/groups_paired_tests.csv"
GROUP_CLAIMS_CSV = "evaluate/groups_claims.csv"
GROUP_CLAIMS_MD = "evaluate/groups_claims.md"
# the share of retrieved images whose diagnosis agrees with the query's
DIAGNOSIS_CSV = "evaluate/diagnosis.csv"
DIAGNOSIS_MD = "evaluate/diagnosis.md"
#: The run judged against config verdict.expected (``evaluation.verdict``).
VERDICT_CSV = "verdict/verdict.csv"
VERDICT_MD = "verdict/verdict.md"
VERDICT_RST = "verdict/verdict.rst"

# ---- figures and cost
# fig2_r2, fig2_probe, fig3_retrievals, fig4_percentiles, fig5_groups
FIGURE = "figures/{name}.{ext}"
# Fig. 4 one attribute at a time (the report's per-attribute items): <attribute>.png
FIG4_PANELS = "figures/fig4_attributes"
COST_CSV = "cost/stages.csv"
COST_MD = "cost/cost.md"

# ---- what was measured, as the workflow's inputs (the cost model's), under the checkout:
# a measurement reaches here only through the promotion step (docs/cost-and-scale.md), which
# checks it first; no rule reads the benchmarks' own records.
MEASURED = "resources/measured/{name}.json"
GPU_MEASUREMENT = MEASURED.format(name="gpu")
TOKEN_MEASUREMENT = MEASURED.format(name="tokens")
#: The package versions a run was made with, beside its config (``skinground.core.versions``).
VERSIONS = "versions.csv"

# ---- per job: what it printed, and Snakemake's benchmark of it
LOG = "logs/{job}.log"
BENCHMARK = "benchmarks/{job}.tsv"
BENCHMARKS = "benchmarks"


def fill(template: str, **fields) -> str:
    """A template with the wildcards in ``fields`` filled in; the others stay wildcards."""
    return re.sub(r"\{(\w+)\}", lambda m: str(fields.get(m.group(1), m.group(0))), template)


@dataclass(frozen=True)
class Results:
    """A run's output folder (``results/<run>`` or wherever it was moved): its files by
    name."""

    root: Path

    @classmethod
    def of_run(cls, run: str, workdir: str | os.PathLike = ".") -> Results:
        return cls(Path(workdir) / fill(RUN_FOLDER, run=run))

    def __truediv__(self, template: str) -> Path:
        return self.root / template

    def path(self, template: str, **fields) -> Path:
        return self.root / fill(template, **fields)

    def space(self, model: str, split: str, space: str) -> Path:
        return self.path(SPACE, model=model, split=split, space=space)

    def index(self, model: str, space: str) -> Path:
        return self.path(INDEX, model=model, space=space)

    def figure(self, name: str, ext: str = "png") -> Path:
        return self.path(FIGURE, name=name, ext=ext)
