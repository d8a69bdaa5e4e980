# Shared by every stage: config validation, paths, the plan of the DAG, and the helpers rules
# use to declare what they depend on (config sections as params, library modules as inputs).

import json
import os
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# What the schema cannot say: values that must agree with each other.
if config["figures"]["fig3_attribute"] not in config["attributes"]:
    raise WorkflowError(
        f"figures.fig3_attribute: {config['figures']['fig3_attribute']!r} is not one of the "
        "configured attributes"
    )
if config["retrieve"]["k"] > config["retrieve"]["b"]:
    raise WorkflowError("retrieve.k must not exceed retrieve.b")

SRC = Path(workflow.basedir)
LIB_ROOT = str(SRC / "workflow")
sys.path.insert(0, LIB_ROOT)
# Scripts import the library from this checkout, so no install step is needed where a rule
# runs (a cluster node, a conda environment): their processes inherit this.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (LIB_ROOT, os.environ.get("PYTHONPATH")) if p)
)
from skinground import plan  # standard library only
from skinground.deps import module_closure  # standard library only

RUN = config["run"]
RESULTS = f"results/{RUN}"
ATTRIBUTES = list(config["attributes"])
CPU_ENV = str(SRC / "envs" / "cpu.yaml")
GPU_ENV = str(SRC / "envs" / "gpu.yaml")
# The processor's pixel budget: what the training and every model-using rule depend on.
PIXELS = {k: config["model"][k] for k in plan.PIXEL_KEYS}


def res(path):
    """A path under results/<run>/."""
    return f"{RESULTS}/{path}"


def lib(script_name):
    """The library files whose edits must rerun a rule: every skinground module its script
    imports, transitively (Snakemake sees edits to the script itself, not to the modules it
    imports)."""
    return [str(p) for p in module_closure(SRC / "workflow" / "scripts" / f"{script_name}.py")]


# ---- used by model.smk

PREDICT_SHARDS = config["predict"]["shards"]


def adapter_for(wildcards):
    return rules.train.output.adapter if wildcards.model == "tuned" else []


# ---- used by embed.smk

N_SHARDS = config["embed"]["shards"]
EMBED_SPACES = plan.embedding_spaces(config)
INDEXED = plan.indexed_spaces(config)


def embed_model_inputs(wildcards):
    if wildcards.model == "monet":
        return {"monet": config["model"]["monet"]}
    inputs = {"base": config["model"]["base"]}
    if wildcards.model == "tuned":
        inputs["adapter"] = rules.train.output.adapter
    return inputs


# ---- used by retrieve.smk

METHODS = config["retrieve"]["methods"]


def retrieve_inputs(wildcards):
    model = plan.method(wildcards.method).model
    indexed, read = plan.method_spaces(wildcards.method, ATTRIBUTES)
    return {
        "index": [res(f"index/{model}/{s}.faiss") for s in indexed],
        "train": [res(f"embed/{model}/train/{s}.npz") for s in read],
        "test": [res(f"embed/{model}/test/{s}.npz") for s in read],
    }


def retrieve_spaces(wildcards):
    """The spaces of the index / train / test inputs, in their order."""
    indexed, read = plan.method_spaces(wildcards.method, ATTRIBUTES)
    return {"index": indexed, "read": read}


def retrieve_params(wildcards):
    """k for every method; b only for the hierarchical one (a change reruns only it)."""
    keys = ("k", "b") if plan.method(wildcards.method).search == "hierarchical" else ("k",)
    return {k: config["retrieve"][k] for k in keys}
