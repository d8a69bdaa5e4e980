# The DAG's shape per stage, from the config (skinground.core.plan): what each stage's rules
# read, their wildcards' values, and what a run makes.


# ---- used by model.smk

PREDICT_SHARDS = config["predict"]["shards"]
PREDICTED_MODELS = plan.predict_models(config)
# The groups' questions are answered too when the model was trained on them.
PREDICTED_GROUPS = config["retrieve"]["groups"] if config["tuples"]["group_share"] > 0 else {}
PREDICT_QUESTIONS = {
    **{a: spec["question"] for a, spec in config["attributes"].items()},
    **{GROUP_ATTRIBUTE_PREFIX + g: spec["question"] for g, spec in PREDICTED_GROUPS.items()},
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
    shard = (
        out.GROUP_SHARD if wildcards.space.startswith(plan.GROUP_SPACE_PREFIX) else out.EMBED_SHARD
    )
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
#: The encoders' titles in config order (the probes' legend beside Fig. 2), and those that are
#: tiny random stand-ins (model.build_tiny builds every one): the figures mark them so.
ENCODER_TITLES = {name: spec["title"] for name, spec in ENCODERS.items()}
STAND_INS = list(ENCODERS) if config["model"]["build_tiny"] else []


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
        rules.r2_untuned.output if "untuned" in PREDICTED_MODELS else [],
        rules.evaluate.output,
        rules.diagnosis.output if config["stats"]["diagnosis"] else [],
        rules.figures.output,
        rules.verdict.output,
        rules.cost.output,
        rules.evaluate_groups.output if GROUPS else [],
        rules.figure_groups.output if GROUPS else [],
    ]
    return [path for files in outputs for path in files]
