"""The plan of the DAG: which models, splits, embedding spaces, methods and shards a config
makes, and how many jobs of each rule a run from nothing has.

Standard library only: the Snakefile (``rules/common.smk``) builds its rules from it, and
``skinground.cost`` counts the same jobs from it, so the shape of the DAG is written once
(``tests/test_cost.py`` checks the counts against real Snakemake dry runs). The retrieval
methods are defined here; which of them run comes from ``retrieve.methods`` in the config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The Qwen2-VL models that answer the questions (Fig. 2): with and without the adapter.
PREDICT_MODELS = ("tuned", "untuned")
#: The models whose embeddings are extracted: the two Qwen2-VL kinds and MONET.
EMBED_MODELS = ("tuned", "untuned", "monet")
SPLITS = ("train", "test")
#: The image-only embedding space (h_im, or MONET's image features); the per-attribute
#: spaces h_im,a are named by their attribute column.
IMAGE_SPACE = "im"
#: The processor's pixel budget: the ``model`` keys every model-using rule depends on.
PIXEL_KEYS = ("image_size", "min_pixels", "max_pixels")


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


#: The paper's five methods, in the order of its Fig. 4.
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("image_text", "a", "Image + Text", "tuned", "attribute"),
    Method("hierarchical", "b", "Hierarchical", "tuned", "hierarchical"),
    Method("image_only", "c", "Image", "tuned", "image"),
    Method("image_untuned", "d", "Image Untuned", "untuned", "image"),
    Method("monet", "e", "MONET", "monet", "image"),
)}
#: Fig. 3 compares these two: the tuned image-only space and image + text for one attribute.
FIG3_METHODS = ("image_only", "image_text")


def method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown retrieval method {name!r} (known: {', '.join(METHODS)})") \
            from None


def method_order(names: Sequence[str]) -> list[str]:
    """``names`` in the paper's order (``METHODS``), unknown ones after them, sorted."""
    present = set(names)
    return [m for m in METHODS if m in present] + sorted(present - set(METHODS))


def method_spaces(name: str, attributes: Sequence[str]) -> tuple[list[str], list[str]]:
    """(spaces searched with an index, spaces read from the train/test embeddings)."""
    search = method(name).search
    if search == "attribute":
        return list(attributes), list(attributes)
    if search == "hierarchical":
        return [IMAGE_SPACE], [IMAGE_SPACE, *attributes]
    return [IMAGE_SPACE], [IMAGE_SPACE]


def embedding_spaces(config: Mapping[str, Any]) -> dict[str, dict[str, set[str]]]:
    """Per embedded model and split, the merged spaces the configured methods need (an index
    reads the train split of the space it searches)."""
    attributes = list(config["attributes"])
    out: dict[str, dict[str, set[str]]] = {}
    for name in config["retrieve"]["methods"]:
        searched, read = method_spaces(name, attributes)
        splits = out.setdefault(method(name).model, {s: set() for s in SPLITS})
        splits["train"].update(read, searched)
        splits["test"].update(read)
    return out


def indexed_spaces(config: Mapping[str, Any]) -> dict[str, set[str]]:
    """Per embedded model, the spaces with a FAISS index over the train images."""
    attributes = list(config["attributes"])
    out: dict[str, set[str]] = {}
    for name in config["retrieve"]["methods"]:
        out.setdefault(method(name).model, set()).update(method_spaces(name, attributes)[0])
    return out


def planned_jobs(config: Mapping[str, Any]) -> dict[str, int]:
    """Jobs per rule of a full run from nothing, as the Snakefile builds the DAG."""
    jobs: dict[str, int] = {}
    if config.get("synthetic", {}).get("enabled"):
        jobs["synthetic_data"] = 1
    if config["model"].get("build_tiny"):
        jobs["build_models"] = 1
    jobs.update(manifest=1, split=1, tuples=1, train=1,
                predict_shard=len(PREDICT_MODELS) * int(config["predict"]["shards"]),
                merge_predictions=len(PREDICT_MODELS), r2=1)
    spaces = embedding_spaces(config)
    jobs["embed_shard"] = len(spaces) * len(SPLITS) * int(config["embed"]["shards"])
    jobs["merge_embeddings"] = sum(len(s) for splits in spaces.values() for s in splits.values())
    jobs["build_index"] = sum(len(s) for s in indexed_spaces(config).values())
    jobs.update(retrieve=len(config["retrieve"]["methods"]), evaluate=1, figures=1, all=1)
    return jobs
