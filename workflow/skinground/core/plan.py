"""The plan of the DAG: which models, splits, embedding spaces, methods and shards a config
makes, and how many jobs of each rule a run from nothing has.

Standard library only: the Snakefile (``rules/common.smk``) builds its rules from it, and
``skinground.cost.estimate`` counts the same jobs from it, so the shape of the DAG is written once
(``tests/test_cost.py`` checks the counts against real Snakemake dry runs). The Qwen2-VL
methods (a)-(d) are defined here; the image-encoder baselines are one method per encoder of
``model.encoders``, named as the encoder and lettered (e), (e2), ... in config order (the
paper's one encoder, MONET, is its (e)) (:func:`methods`).
Which of them run comes from ``retrieve.methods`` in the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skinground.core.outputs import IMAGE_SPACE

#: The Qwen2-VL models, with and without the adapter: they answer the questions (Fig. 2) and
#: their embeddings are extracted; so are each image encoder's (:func:`embed_models`).
QWEN_MODELS = ("tuned", "untuned")
PREDICTABLE_MODELS = QWEN_MODELS
SPLITS = ("train", "test")
#: The rules whose jobs load weights (a job's ``base`` or ``encoder`` input): embed_shard
#: loads its model's (an encoder's own, or the base model), the others the base model. A run
#: stops before any job starts when one of them would load weights not in place
#: (common.smk's ``missing_weights_stop``); ``tests/test_cost.py`` checks the list against
#: the DAG's inputs.
MODEL_RULES = ("train", "predict_shard", "embed_shard", "embed_groups")


@dataclass(frozen=True)
class Method:
    """A retrieval method: the paper's letter and name, the model whose embeddings it
    searches, and how (``search``: "attribute" = the h_im,a database of each attribute,
    "image" = the image-only database, "hierarchical" = top b by h_im, re-ranked by h_im,a)."""

    name: str
    letter: str
    title: str
    model: str
    search: str

    @property
    def per_attribute(self) -> bool:
        """Its hits depend on the attribute (else one list serves every attribute)."""
        return self.search != "image"


#: The paper's Qwen2-VL methods (a)-(d), in the order of its Fig. 4; its (e), MONET, is an
#: image encoder of the config (:func:`methods`).
QWEN_METHODS: dict[str, Method] = {m.name: m for m in (
    Method("image_text", "a", "Image + Text", "tuned", "attribute"),
    Method("hierarchical", "b", "Hierarchical", "tuned", "hierarchical"),
    Method("image_only", "c", "Image", "tuned", "image"),
    Method("image_untuned", "d", "Image Untuned", "untuned", "image"),
)}
#: The letter of the first image-encoder baseline (the paper's (e), MONET's image features);
#: the next ones are e2, e3, ... (:func:`encoder_letter`).
ENCODER_LETTER = "e"


def encoder_letter(place: int) -> str:
    """The letter of the image encoder at ``place`` (0-based) in ``model.encoders``: "e" (the
    paper's MONET), then "e2", "e3", ... Not "f", "g": those are the group methods' letters
    (:data:`GROUP_METHODS`), which the same report shows beside them."""
    return ENCODER_LETTER if place == 0 else f"{ENCODER_LETTER}{place + 1}"


#: Fig. 3 compares these two: the tuned image-only space and image + text for one attribute.
FIG3_METHODS = ("image_only", "image_text")


#: The spaces of the composed embeddings h_im,G are named ``group_<name>``.
GROUP_SPACE_PREFIX = "group_"


@dataclass(frozen=True)
class GroupMethod:
    """A multi-attribute retrieval method, evaluated per group G (``retrieve.groups``).

    ``search``: "composed" = the h_im,G database; "composed_hierarchical" = top b by h_im,
    re-ranked by h_im,G; "image" = the tuned image-only hits of method (c), reused; "fused" =
    the mean over G's attributes of the h_im,a cosine similarities (exact, over the whole
    database); "rrf" = reciprocal-rank fusion of G's per-attribute top-b lists."""

    name: str
    letter: str
    title: str
    search: str


#: The group methods: the paper's suggested extension (f, f') and three baselines.
GROUP_METHODS: dict[str, GroupMethod] = {m.name: m for m in (
    GroupMethod("composed", "f", "Composed image + text", "composed"),
    GroupMethod("composed_hierarchical", "f'", "Composed hierarchical", "composed_hierarchical"),
    GroupMethod("image_only", "c", "Image", "image"),
    GroupMethod("fused", "g", "Per-attribute fused", "fused"),
    GroupMethod("rrf", "h", "Reciprocal-rank fusion", "rrf"),
    # Not configurable: the reference the group evaluation always adds (k random train images).
    GroupMethod("random", "r", "Random train images", "random"),
)}


def group_space(name: str) -> str:
    return GROUP_SPACE_PREFIX + name


def _lookup(table: Mapping[str, Any], name: str, kind: str):
    try:
        return table[name]
    except KeyError:
        raise KeyError(f"unknown {kind} {name!r} (known: {', '.join(table)})") from None


def _in_order(table: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    """``names`` in ``table``'s order, unknown ones after them, sorted."""
    present = set(names)
    return [m for m in table if m in present] + sorted(present - set(table))


def group_method(name: str) -> GroupMethod:
    return _lookup(GROUP_METHODS, name, "group method")


def group_method_order(names: Sequence[str]) -> list[str]:
    """``names`` in ``GROUP_METHODS`` order, unknown ones after them, sorted."""
    return _in_order(GROUP_METHODS, names)


def group_method_spaces(name: str, groups: Mapping[str, Mapping]) -> tuple[list[str], list[str]]:
    """(tuned spaces searched with an index, tuned spaces read from train/test embeddings) of
    a group method over all ``groups``; "image" reads nothing (it reuses method c's hits)."""
    search = group_method(name).search
    composed = [group_space(g) for g in groups]
    members = sorted({a for g in groups.values() for a in g["attributes"]})
    if search == "composed":
        return composed, composed
    if search == "composed_hierarchical":
        return [IMAGE_SPACE], [IMAGE_SPACE, *composed]
    if search == "rrf":
        return members, members
    if search == "fused":
        return [], members
    return [], []


def retrieval_jobs(config: Mapping[str, Any]) -> list[str]:
    """The group methods that need a retrieval job of their own (image-only reuses (c))."""
    if not config["retrieve"]["groups"]:
        return []
    return [m for m in config["retrieve"]["group_methods"]
            if group_method(m).search not in ("image", "random")]


def encoders(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The image encoders of ``config`` (``model.encoders``: name -> path, format, title, hub,
    preprocessing), in the config's order."""
    return dict(config["model"].get("encoders") or {})


def embed_models(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Every model whose embeddings a config can extract: the two Qwen2-VL kinds, then the
    encoders in config order (a model's name is its folder under ``embed/``)."""
    return (*QWEN_MODELS, *encoders(config))


def methods(config: Mapping[str, Any] | None = None) -> dict[str, Method]:
    """Every retrieval method ``config`` can name, in the paper's order: (a)-(d), then one
    method per image encoder, in config order, lettered (e), (e2), ... (:func:`encoder_letter`;
    its name and model are the encoder's, its title the encoder's ``title``; it searches the
    image-only space). Without a config: the Qwen2-VL methods only."""
    table = dict(QWEN_METHODS)
    for place, (name, spec) in enumerate(encoders(config or {"model": {}}).items()):
        table[name] = Method(name, encoder_letter(place), spec["title"], name, "image")
    return table


def method(name: str, config: Mapping[str, Any] | None = None) -> Method:
    """Method ``name`` of :func:`methods` (``config``'s encoders included when given)."""
    return _lookup(methods(config), name, "retrieval method")


def method_order(names: Sequence[str], config: Mapping[str, Any] | None = None) -> list[str]:
    """``names`` in the paper's order (:func:`methods`: (a)-(d), then ``config``'s encoders
    in config order), unknown ones after them, sorted."""
    return _in_order(methods(config), names)


def method_spaces(name: str, attributes: Sequence[str],
                  config: Mapping[str, Any] | None = None) -> tuple[list[str], list[str]]:
    """(spaces searched with an index, spaces read from the train/test embeddings); an
    encoder's method is known from ``config``."""
    search = method(name, config).search
    if search == "attribute":
        return list(attributes), list(attributes)
    if search == "hierarchical":
        return [IMAGE_SPACE], [IMAGE_SPACE, *attributes]
    return [IMAGE_SPACE], [IMAGE_SPACE]


def _searches(config: Mapping[str, Any]):
    """(model, searched spaces, read spaces) of every configured method and group method."""
    attributes = list(config["attributes"])
    for name in config["retrieve"]["methods"]:
        yield (method(name, config).model, *method_spaces(name, attributes, config))
    groups = config["retrieve"]["groups"]
    for name in retrieval_jobs(config):
        yield ("tuned", *group_method_spaces(name, groups))


def embedding_spaces(config: Mapping[str, Any]) -> dict[str, dict[str, set[str]]]:
    """Per embedded model and split, the merged spaces the configured methods need (an index
    reads the train split of the space it searches)."""
    out: dict[str, dict[str, set[str]]] = {}
    for model, searched, read in _searches(config):
        splits = out.setdefault(model, {s: set() for s in SPLITS})
        splits["train"].update(read, searched)
        splits["test"].update(read)
    return out


def indexed_spaces(config: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per embedded model, the spaces with a FAISS index over the train images."""
    out: dict[str, set[str]] = {}
    for model, searched, _ in _searches(config):
        out.setdefault(model, set()).update(searched)
    return out


def group_shards(config: Mapping[str, Any]) -> bool:
    """Whether the composed embeddings are extracted (a group method reads a group space)."""
    spaces = embedding_spaces(config).get("tuned", {})
    return any(s.startswith(GROUP_SPACE_PREFIX) for split in spaces.values() for s in split)


def probed_models(config: Mapping[str, Any]) -> list[str]:
    """The models whose image-level space (h_im, an encoder's features) the configured
    methods embed in both splits: each gets a ridge probe (beyond the paper)."""
    return [m for m, splits in embedding_spaces(config).items()
            if all(IMAGE_SPACE in splits[s] for s in SPLITS)]


def predict_models(config: Mapping[str, Any]) -> list[str]:
    """The models whose answers are generated (``predict.models``), in ``PREDICTABLE_MODELS``
    order; Fig. 2 is the tuned model's, the untuned one has a table of its own."""
    return [m for m in PREDICTABLE_MODELS if m in config["predict"]["models"]]


def planned_jobs(config: Mapping[str, Any]) -> dict[str, int]:
    """Jobs per rule of a full run from nothing, as the Snakefile builds the DAG.

    A model of the rules' conditions (the cost model plans with it, without Snakemake),
    checked against Snakemake's own dry runs of the demo and the paper's config
    (tests/test_cost.py): a rule's condition changed in the Snakefile but not here fails
    there."""
    jobs: dict[str, int] = {}
    if config.get("synthetic", {}).get("enabled"):
        jobs["synthetic_data"] = 1
    if config["model"].get("build_tiny"):
        jobs["build_models"] = 1
    models = predict_models(config)
    jobs.update(run_config=1, versions=1, manifest=1, split=1, tuples=1, train=1,
                predict_shard=len(models) * int(config["predict"]["shards"]),
                merge_predictions=len(models), r2=1)
    if "untuned" in models:
        jobs["r2_untuned"] = 1
    spaces = embedding_spaces(config)
    shards = int(config["embed"]["shards"])
    jobs["embed_shard"] = len(spaces) * len(SPLITS) * shards
    if group_shards(config):
        jobs["embed_groups"] = len(SPLITS) * shards
    jobs["merge_embeddings"] = sum(len(s) for splits in spaces.values() for s in splits.values())
    jobs["build_index"] = sum(len(s) for s in indexed_spaces(config).values())
    probed = probed_models(config)
    if probed:
        jobs.update(probe=len(probed), probe_r2=1)
    jobs.update(retrieve=len(config["retrieve"]["methods"]), evaluate=1, figures=1, cost=1,
                verdict=1)
    if config["stats"]["diagnosis"]:
        jobs.update(labels=1, diagnosis=1)
    if config["retrieve"]["groups"]:
        if retrieval_jobs(config):
            jobs["retrieve_groups"] = len(retrieval_jobs(config))
        jobs.update(evaluate_groups=1, figure_groups=1)
    jobs["all"] = 1
    return jobs
