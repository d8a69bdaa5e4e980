# Shared by every stage: config validation, paths, the plan of the DAG, and the helpers rules
# use to declare what they depend on (config sections and the meaning of their code as params).

import json
import os
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate

SRC = Path(workflow.basedir)
LIB_ROOT = str(SRC / "workflow")
sys.path.insert(0, LIB_ROOT)
# Scripts import the library from this checkout, so no install step is needed where a rule
# runs (a cluster node, a conda environment): their processes inherit this.
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (LIB_ROOT, os.environ.get("PYTHONPATH")) if p)
)
from skinground import outputs as out  # standard library only
from skinground import plan  # standard library only
from skinground.config import empty_sections, schema_error  # PyYAML, jsonschema
from skinground.batch import train_batch  # standard library only
from skinground.io import unwritable_folders  # standard library only


def _overlays():
    """The config sources in Snakemake's merge order: the Snakefile's configfile, then the
    --configfile files (a profile's too), then --config."""
    given = [Path(f).resolve() for f in workflow.overwrite_configfiles]
    own = [Path(f).resolve() for f in workflow.configfiles]
    files = [f for f in own if f not in given] + given
    return [
        *(yaml.safe_load(f.read_text(encoding="utf-8")) or {} for f in files),
        workflow.config_settings.config or {},
    ]


# An empty map in a config file or --config empties its section (Snakemake's merge would
# drop it silently): `retrieve.groups: {}` means no groups; the schema refuses an empty
# `attributes`.
empty_sections(config, _overlays())
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError:
    # one line naming the key, not the schema's dump (Snakemake's error holds only its text)
    raise WorkflowError(schema_error(config, SRC / "workflow/schemas/config.schema.yaml"))

# What the schema cannot say: values that must agree with each other.
if config["figures"]["fig3_attribute"] not in config["attributes"]:
    raise WorkflowError(
        f"figures.fig3_attribute: {config['figures']['fig3_attribute']!r} is not one of the "
        "configured attributes"
    )


def _known_attributes(key, names):
    """Every one of ``names`` (config ``key``) is a configured attribute."""
    unknown = [a for a in names if a not in config["attributes"]]
    if unknown:
        raise WorkflowError(f"{key}: {', '.join(unknown)} is not one of the configured attributes")


_known_attributes("data.zero_is_missing", config["data"]["zero_is_missing"])
_model = config["model"]
if (
    _model["image_size"] is None
    and None not in (_model["min_pixels"], _model["max_pixels"])
    and _model["min_pixels"] > _model["max_pixels"]
):
    raise WorkflowError(
        f"model.min_pixels ({_model['min_pixels']}) is above model.max_pixels "
        f"({_model['max_pixels']})"
    )
if not out.RUN_NAME.fullmatch(config["run"]):  # the schema's "$" lets a final newline in
    raise WorkflowError(
        f"run: {config['run']!r} is not a plain name (letters, digits, _ and -): it names the "
        "folder results/<run>/"
    )
if config["retrieve"]["k"] > config["retrieve"]["b"]:
    raise WorkflowError("retrieve.k must not exceed retrieve.b")
if config["retrieve"]["groups"] and not config["retrieve"]["group_methods"]:
    raise WorkflowError(
        "retrieve.group_methods is empty, but retrieve.groups names "
        f"{', '.join(config['retrieve']['groups'])}: list a method, or write `groups: {{}}` "
        "for no multi-attribute retrieval"
    )
for _name, _group in config["retrieve"]["groups"].items():
    _known_attributes(f"retrieve.groups.{_name}", _group["attributes"])
if (
    "image_only" in config["retrieve"]["group_methods"]
    and "image_only" not in config["retrieve"]["methods"]
):
    raise WorkflowError(
        "retrieve.group_methods has image_only, which reuses the hits of "
        "retrieve.methods' image_only: add it there too"
    )


from skinground.attributes import GROUP_TAG, METADATA_COLUMNS  # standard library only
from skinground.config import (  # PyYAML
    bookkeeping,
    non_integers,
    pixel_params,
    tracked,
    tracked_config,
)
from skinground.deps import code_hash  # standard library only
from skinground import versions  # packaging (Snakemake's own dependency)

# JSON Schema counts 2.0 as an integer; the rules would fail on it much later.
with open(SRC / "workflow" / "schemas" / "config.schema.yaml") as _f:
    _floats = non_integers(config, yaml.safe_load(_f))
if _floats:
    raise WorkflowError(f"{', '.join(_floats)}: must be a whole number (not e.g. 2.0)")

RUN = config["run"]
RESULTS = out.fill(out.RUN_FOLDER, run=RUN)
ATTRIBUTES = list(config["attributes"])


def _owned(key, path):
    """A generator's output path must lie in the run's folder: the rule owns (deletes and
    rewrites) it, so it can never be a user's real data or weights."""
    folder = os.path.normpath(RESULTS)
    if os.path.isabs(path) or not os.path.normpath(path).startswith(folder + os.sep):
        raise WorkflowError(
            f"{key}: {path!r} is written by the demo's generator, so it must lie under "
            f"{folder}/ (the run's own folder); point it there, or turn the generator off"
        )


if config["synthetic"]["enabled"]:
    for _key in ("metadata", "images"):
        _owned(f"data.{_key} (synthetic.enabled)", config["data"][_key])
ENCODERS = plan.encoders(config)
# A method is a Qwen2-VL one or an encoder's name (the schema checks the names' form only).
_unknown = [m for m in config["retrieve"]["methods"] if m not in plan.methods(config)]
if _unknown:
    raise WorkflowError(
        f"retrieve.methods: {', '.join(_unknown)} is neither a Qwen2-VL method "
        f"({', '.join(plan.QWEN_METHODS)}) nor an encoder of model.encoders "
        f"({', '.join(ENCODERS) or 'none'})"
    )
_fig3_missing = [m for m in plan.FIG3_METHODS if m not in config["retrieve"]["methods"]]
if _fig3_missing:
    raise WorkflowError(
        f"retrieve.methods lacks {', '.join(_fig3_missing)}: Fig. 3 sets image-only against "
        f"image + text retrieval ({', '.join(plan.FIG3_METHODS)}); add them"
    )
if config["model"]["build_tiny"]:
    _owned("model.base (model.build_tiny)", config["model"]["base"])
    for _name, _encoder in ENCODERS.items():
        _owned(f"model.encoders.{_name}.path (model.build_tiny)", _encoder["path"])


def src(path):
    """A file of this checkout, relative to the working directory when it is inside it, so
    that a finished run moved or copied elsewhere with its checkout keeps the same inputs."""
    return os.path.relpath(SRC / path)


def optional(path):
    """A file of this checkout as an optional input: ``[src(path)]`` where it exists, else
    ``[]`` (its appearing or going reruns the job). A script reads it with
    ``skinground.script.optional_input``, never as a path: Snakemake hands it over as a list."""
    return [src(path)] if (SRC / path).is_file() else []


# Absolute: conda: resolves a relative path against the rule file (and Snakemake records an
# environment by its content, not its path).
CPU_ENV = str(SRC / "envs" / "cpu.yaml")
GPU_ENV = str(SRC / "envs" / "gpu.yaml")
# The processor's pixel budget: what the training and every model-using rule depend on.
PIXELS = pixel_params(config["model"])


#: Where the base model's weights come from (transformers' format), for the message when
#: they are missing; an encoder names its own (model.encoders.<name>.hub).
BASE_HUB_REPO = "Qwen/Qwen2-VL-7B-Instruct"


#: Weights that are not in place yet: key ("base" or an encoder's name) -> the message that
#: says how to fetch them. A plan (lint, dry run, --dag, --summary, --report) goes on without
#: them, with one warning; a real run that would load them stops before any job starts
#: (``onstart`` in the Snakefile: ``missing_weights_stop``).
MISSING_WEIGHTS = {}


def weights(key):
    """A local model folder as an input: config model.base (``key`` "base") or an encoder's
    path (``key`` its name). When it is missing (and the demo does not build it) it is left
    out of the job's inputs, so the plan can still be made, and recorded in
    ``MISSING_WEIGHTS``: the first time, a warning names the folder and the command that
    fetches it."""
    name, path, hub = _weights_source(key)
    if config["model"]["build_tiny"] or Path(path).exists():
        return path
    if key not in MISSING_WEIGHTS:
        MISSING_WEIGHTS[key] = (
            f"{name}: the folder {path} does not exist. Fetch the weights once, on a node "
            f"with internet access: hf download {hub} --local-dir {path}  (see the "
            "README, 'Weights for the cluster')"
        )
        logger.warning(
            f"{MISSING_WEIGHTS[key]}. Planning goes on without them; a run that needs them "
            "stops before any job starts."
        )
    return []


def weights_path(key):
    """The folder of ``weights(key)`` as a job's param, for a command line (a job's input
    lacks it while it is missing): not a rerun trigger, the input is."""
    return untracked(_weights_source(key)[1])


def _weights_source(key):
    """The config key, local folder and hub repository of ``weights(key)``."""
    if key == "base":
        return "model.base", config["model"]["base"], BASE_HUB_REPO
    encoder = ENCODERS[key]
    return f"model.encoders.{key}.path", encoder["path"], encoder["hub"]


def loaded_weights(job):
    """The keys of ``weights()`` a job loads (``plan.MODEL_RULES``)."""
    if job.rule.name not in plan.MODEL_RULES:
        return set()
    model = job.wildcards.get("model")
    return {model} if model in ENCODERS else {"base"}


def missing_weights_stop():
    """Stop a real run before any job starts when a job that will run loads weights that are
    not in place (``MISSING_WEIGHTS``), with the message that says how to fetch them."""
    if not MISSING_WEIGHTS:
        return
    needed = set()
    for job in workflow.dag.needrun_jobs():
        needed |= loaded_weights(job) & MISSING_WEIGHTS.keys()
    if needed:
        raise WorkflowError("\n".join(MISSING_WEIGHTS[k] for k in sorted(needed)))


def unwritable_stop():
    """Stop a real run before any job starts when a job that will run writes in a folder this
    user cannot write in (a read-only run folder with writable files in it gave a Snakemake
    traceback when it removed a job's old output): one line naming the folder and a job."""
    for job in workflow.dag.needrun_jobs():
        blocked = unwritable_folders([*job.output, *job.log])
        if blocked:
            raise WorkflowError(
                f"{blocked[0]}: this folder is not writable, and rule {job.rule.name} writes "
                f"in it; make it writable (chmod u+w {blocked[0]}) or name another run "
                "(config key run)"
            )


def res(template, **fields):
    """A path under results/<run>/ (``skinground.outputs``), with ``fields`` filled in."""
    return f"{RESULTS}/{out.fill(template, **fields)}"


def _check_k_against_the_split():
    """Once the split exists, k hits per query need as many train images (the job checks
    it too, for a split made in the same run)."""
    path = Path(res(out.SPLIT_IDS, split="train"))
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    if config["retrieve"]["k"] > n:
        raise WorkflowError(
            f"retrieve.k = {config['retrieve']['k']} is more than the {n} train images of "
            f"{path}: lower retrieve.k"
        )


_check_k_against_the_split()


def _check_the_global_batch_against_the_gpus():
    """The train job's GPUs (a profile's set-resources) each train an equal share of the
    global batch (``batch.train_batch``); the job would stop at its start otherwise."""
    gpu = (workflow.resource_settings.overwrite_resources.get("train") or {}).get("gpu")
    gpu = getattr(gpu, "value", gpu)
    if isinstance(gpu, int) and gpu > 0:
        try:
            train_batch(config["train"]["global_batch"], config["train"]["per_device_batch"], gpu)
        except ValueError as err:
            raise WorkflowError(f"{err}: the train job's resources.gpu") from None


_check_the_global_batch_against_the_gpus()


def figure(name, ext):
    """A figure file of the paper under results/<run>/ (``out.FIGURE``)."""
    return res(out.FIGURE, name=name, ext=ext)


def log(job):
    """The log of a job under results/<run>/ (``out.LOG``)."""
    return res(out.LOG, job=job)


def benchmark(job):
    """Snakemake's benchmark of a job under results/<run>/ (``out.BENCHMARK``)."""
    return res(out.BENCHMARK, job=job)


_CODE = {}


def code(script_name):
    """A param that reruns its job when what the code does changes: the hash of its script's
    and of every skinground module the script imports, transitively, as syntax trees without
    docstrings (``skinground.deps.code_hash``). Edits to comments, docstrings or layout, a
    ``touch`` and another checkout path change nothing. The profiles leave out Snakemake's
    own ``code`` trigger (the script's modification time), which this replaces."""
    if script_name not in _CODE:
        _CODE[script_name] = code_hash(SRC / "workflow" / "scripts" / f"{script_name}.py")
    return _CODE[script_name]


def untracked(value):
    """A param the job receives that is not a rerun trigger: Snakemake leaves params derived
    from a job's resources out of its record (they follow from what is recorded), so a
    change of ``value`` reruns nothing. For bookkeeping keys (``skinground.config``)."""
    return lambda wildcards, resources: value


def section(name):
    """config[name] less its bookkeeping keys: the keys that change results."""
    return tracked(name, config[name])


# ---- used by model.smk

PREDICT_SHARDS = config["predict"]["shards"]
PREDICT_MODELS = plan.predict_models(config)
# The groups' questions are answered too when the model was trained on them.
PREDICTED_GROUPS = config["retrieve"]["groups"] if config["tuples"]["group_share"] > 0 else {}
PREDICT_QUESTIONS = {
    **{a: spec["question"] for a, spec in config["attributes"].items()},
    **{GROUP_TAG + g: spec["question"] for g, spec in PREDICTED_GROUPS.items()},
}


def adapter_for(wildcards):
    return rules.train.output.adapter if wildcards.model == "tuned" else []


# ---- used by embed.smk

N_SHARDS = config["embed"]["shards"]
GROUPS = config["retrieve"]["groups"]
ATTRIBUTE_QUESTIONS = {a: spec["question"] for a, spec in config["attributes"].items()}
GROUP_QUESTIONS = {plan.group_space(g): spec["question"] for g, spec in GROUPS.items()}
SPACES = [out.IMAGE_SPACE, *ATTRIBUTES, *GROUP_QUESTIONS]


def embedding_shards(wildcards):
    """The shard files a merged space is cut from (the composed spaces: the group shards)."""
    shard = out.GROUP_SHARD if wildcards.space.startswith(plan.GROUP_PREFIX) else out.EMBED_SHARD
    return expand(res(shard, model=wildcards.model, split=wildcards.split), shard=range(N_SHARDS))


EMBED_MODELS = plan.embed_models(config)


def embed_model_inputs(wildcards):
    if wildcards.model in ENCODERS:
        return {"encoder": weights(wildcards.model)}
    inputs = {"base": weights("base")}
    if wildcards.model == "tuned":
        inputs["adapter"] = rules.train.output.adapter
    return inputs


# ---- used by retrieve.smk

METHODS = config["retrieve"]["methods"]
#: Every method the config can name, (a)-(d) then the encoders: name -> [letter, title]
#: (Fig. 4's ticks, legend and colours, each method's fixed by its place here).
METHOD_LEGENDS = {m: [x.letter, x.title] for m, x in plan.methods(config).items()}


def retrieve_inputs(wildcards):
    model = plan.method(wildcards.method, config).model
    indexed, read = plan.method_spaces(wildcards.method, ATTRIBUTES, config)
    return {
        "index": [res(out.INDEX, model=model, space=s) for s in indexed],
        "train": [res(out.SPACE, model=model, split="train", space=s) for s in read],
        "test": [res(out.SPACE, model=model, split="test", space=s) for s in read],
    }


def retrieve_spaces(wildcards):
    """The spaces of the index / train / test inputs, in their order."""
    indexed, read = plan.method_spaces(wildcards.method, ATTRIBUTES, config)
    return {"index": indexed, "read": read}


def retrieve_params(wildcards):
    """k for every method; b only for the hierarchical one (a change reruns only it)."""
    keys = ("k", "b") if plan.method(wildcards.method, config).search == "hierarchical" else ("k",)
    return {k: config["retrieve"][k] for k in keys}


def group_retrieve_inputs(wildcards):
    indexed, read = plan.group_method_spaces(wildcards.group_method, GROUPS)
    return {
        "index": [res(out.INDEX, model="tuned", space=s) for s in indexed],
        "train": [res(out.SPACE, model="tuned", split="train", space=s) for s in read],
        "test": [res(out.SPACE, model="tuned", split="test", space=s) for s in read],
    }


def group_retrieve_spaces(wildcards):
    indexed, read = plan.group_method_spaces(wildcards.group_method, GROUPS)
    return {"index": indexed, "read": read}


def group_retrieve_params(wildcards):
    """k for every group method; b for the hierarchical one and RRF's lists; rrf_k for RRF."""
    search = plan.group_method(wildcards.group_method).search
    keys = {"composed_hierarchical": ("k", "b"), "rrf": ("k", "b", "rrf_k")}.get(search, ("k",))
    return {k: config["retrieve"][k] for k in keys}


def group_results():
    """The hits the group evaluation reads: each group method's, image-only (c)'s reused."""
    return [
        (
            res(out.HITS, method="image_only")
            if plan.group_method(m).search == "image"
            else res(out.GROUP_HITS, group_method=m)
        )
        for m in config["retrieve"]["group_methods"]
    ]


# ---- the statistics (beyond the paper)

_known_columns = [c for c in config["stats"]["diagnosis"] if c not in METADATA_COLUMNS]
if _known_columns:
    raise WorkflowError(
        f"stats.diagnosis: {', '.join(_known_columns)} is not a column of SLICE-3D's "
        "train-metadata.csv"
    )
# The bootstrap: what every table with intervals depends on; the tests' level and unit only
# change the claims' tables (the evaluations), the diagnosis columns only the diagnosis table.
BOOTSTRAP = {k: config["stats"][k] for k in ("bootstrap", "confidence", "seed")}
TESTS = {**BOOTSTRAP, **{k: config["stats"][k] for k in ("alpha", "test_unit")}}


def method_titles(names):
    """Each method's legend, "(a) Image + Text" ... (the claims' statements)."""
    return {m: f"({plan.method(m, config).letter}) {plan.method(m, config).title}" for m in names}


def group_method_titles():
    names = [*config["retrieve"]["group_methods"], "random"]
    return {m: f"({plan.group_method(m).letter}) {plan.group_method(m).title}" for m in names}


# ---- the probe (beyond the paper): every model with an image-level space in both splits

PROBED_MODELS = plan.probed_models(config)


# ---- what a run makes: every figure and table (rule all's and run_config's inputs)


def study_outputs(wildcards=None):
    """Every figure and table of the study, as the config plans them; called when the DAG is
    built, after every rule is defined."""
    outputs = [
        rules.versions.output,
        rules.split.output,
        rules.tuples.output,
        rules.r2.output,
        rules.probe_r2.output if PROBED_MODELS else [],
        rules.r2_untuned.output if "untuned" in PREDICT_MODELS else [],
        rules.evaluate.output,
        rules.diagnosis.output if config["stats"]["diagnosis"] else [],
        rules.figures.output,
        rules.cost.output,
        rules.evaluate_groups.output if GROUPS else [],
        rules.figure_groups.output if GROUPS else [],
    ]
    return [path for files in outputs for path in files]


# ---- the report (snakemake --report): every item carries the labels its tables show

#: A run's seed, on every item drawn from the trained model (the demo's seeds are runs).
TRAIN_SEED = config["train"]["seed"]
ATTRIBUTE_LABELS = {column: spec["label"] for column, spec in config["attributes"].items()}


def reported(
    path,
    caption,
    category,
    subcategory=None,
    *,
    item,
    attribute="all",
    model="—",
    seed=None,
    patterns=None,
):
    """``report()`` with the labels the report's tables show, in this order: the item
    (figure or table), its attribute(s), its model or methods, and the seed it was drawn
    with (left out where none applies: a label with two values, each on half of a table's
    items, would become a toggle). ``caption``: the name of a file of workflow/report/;
    ``attribute`` may be a function of the wildcards (a folder's ``patterns``)."""

    def labels_of(attribute):
        labels = {"item": item, "attribute": attribute, "model or method": model}
        if seed is not None:
            labels["seed"] = str(seed)
        return labels

    # Snakemake takes the labels, or a function of the wildcards giving them all, as strings
    if callable(attribute):
        labels = lambda wildcards: labels_of(attribute(wildcards))
    else:
        labels = labels_of(attribute)
    return report(
        path,
        caption=f"../report/{caption}.rst",
        category=category,
        subcategory=subcategory,
        labels=labels,
        patterns=patterns or [],
    )


def attribute_label(wildcards):
    """A report label: the attribute of a per-attribute file (its column's label)."""
    return ATTRIBUTE_LABELS[wildcards.attribute]
