# Shared by every stage: config validation, paths, and the helpers rules use to declare
# what they depend on (config sections as params, library modules as inputs).

import json
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
sys.path.insert(0, str(SRC / "workflow"))
from skinground.deps import module_closure  # standard library only
RUN = config["run"]
RESULTS = f"results/{RUN}"
ATTRIBUTES = list(config["attributes"])
CPU_ENV = str(SRC / "envs" / "cpu.yaml")
GPU_ENV = str(SRC / "envs" / "gpu.yaml")
QUESTIONS = [a["question"] for a in config["attributes"].values()]
QUESTION_OF = {name: {"question": a["question"]} for name, a in config["attributes"].items()}
LABEL_OF = {name: {"label": a["label"]} for name, a in config["attributes"].items()}
# The processor's pixel budget: what the training and every model-using rule depend on.
PIXELS = json.dumps(
    {k: config["model"][k] for k in ("image_size", "min_pixels", "max_pixels")}, sort_keys=True
)

# Scripts import the library from this checkout, so no install step is needed where a rule
# runs (a cluster node, a conda environment).
shell.prefix(
    "set -euo pipefail; export PYTHONPATH="
    + str(SRC / "workflow")
    + "${{PYTHONPATH:+:$PYTHONPATH}}; "
)


def res(path):
    """A path under results/<run>/."""
    return f"{RESULTS}/{path}"


def section(*keys):
    """Config sections as one JSON string: a rule's params, so that a change to exactly
    these sections (and no other) reruns the rule."""
    if len(keys) == 1:
        return json.dumps(config[keys[0]])
    return json.dumps({k: config[k] for k in keys})


def script(name):
    """The entry point of a rule, in workflow/scripts/."""
    return str(SRC / "workflow" / "scripts" / f"{name}.py")


def code(script_name):
    """The files whose edits must rerun a rule: its script and every skinground module the
    script imports, transitively (Snakemake does not see edits to imported modules)."""
    path = script(script_name)
    return [path] + [str(p) for p in module_closure(path)]


# ---- used by model.smk

MODEL_KINDS = ["tuned", "untuned"]
PREDICT_SHARDS = config["predict"]["shards"]


def adapter_for(wildcards):
    return rules.train.output.adapter if wildcards.model == "tuned" else []


# ---- used by embed.smk

EMBED_MODELS = ["tuned", "untuned", "monet"]
SPLITS = ["train", "test"]
N_SHARDS = config["embed"]["shards"]


def embed_model_inputs(wildcards):
    if wildcards.model == "monet":
        return {"monet": config["model"]["monet"]}
    inputs = {"base": config["model"]["base"]}
    if wildcards.model == "tuned":
        inputs["adapter"] = rules.train.output.adapter
    return inputs


def embed_model_args(wildcards, input):
    if wildcards.model == "monet":
        return f"--monet {input.monet}"
    args = f"--base {input.base}"
    return args + (f" --adapter {input.adapter}" if wildcards.model == "tuned" else "")


# ---- used by retrieve.smk

METHODS = config["retrieve"]["methods"]
# Which model's spaces each method searches.
METHOD_MODEL = {"image_text": "tuned", "hierarchical": "tuned", "image_only": "tuned",
                "image_untuned": "untuned", "monet": "monet"}


def method_spaces(method):
    """(searched spaces with an index, spaces read from the train/test embeddings)."""
    if method == "image_text":
        return ATTRIBUTES, ATTRIBUTES
    if method == "hierarchical":
        return ["im"], ["im", *ATTRIBUTES]
    return ["im"], ["im"]


def retrieve_inputs(wildcards):
    model = METHOD_MODEL[wildcards.method]
    indexed, read = method_spaces(wildcards.method)
    return {
        "index": [res(f"index/{model}/{s}.faiss") for s in indexed],
        "train": [res(f"embed/{model}/train/{s}.npz") for s in read],
        "test": [res(f"embed/{model}/test/{s}.npz") for s in read],
    }


def space_args(wildcards, input):
    """--index/--train/--test as SPACE=PATH pairs, in the order of method_spaces."""
    indexed, read = method_spaces(wildcards.method)
    return (f"--index {space_pairs(indexed, input.index)}"
            f" --train {space_pairs(read, input.train)} --test {space_pairs(read, input.test)}")


def space_pairs(spaces, paths):
    return " ".join(f"{s}={p}" for s, p in zip(spaces, paths))


def retrieve_params(wildcards):
    """k for every method; b only for the hierarchical one (a change reruns only it)."""
    keys = ("k", "b") if wildcards.method == "hierarchical" else ("k",)
    return json.dumps({k: config["retrieve"][k] for k in keys})
