"""Retrieval for a new query image, with the hierarchical method computed on the fly.

The paper's hierarchical method needs only the image-only database B^(im) of the train
images: the top b candidates by h_im are embedded with the question Q(a) by forward passes of
the tuned model, on the fly, and re-ranked by h_im,a — no stored per-attribute database.
:func:`on_the_fly` is that candidate function; with the same model it returns what the stored
h_im,a database holds (the forward pass is deterministic, and the vectors are rounded to the
database's float16), so both paths give the same top-k. A group's question Q(G) is asked the
same way (h_im,G). :class:`Run` opens what a finished run left in its folder
(``skinground.core.outputs``; :func:`find_workdir` finds the project folder holding it) and
:func:`ask` answers and retrieves for one image (``skinground query``), through
:func:`hierarchical_new_image`; :func:`export_image` writes one image of the run's store as a
file (``skinground export-image``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from skinground.core import outputs as out
from skinground.core import provenance
from skinground.core.config import ConfigError, load
from skinground.core.errors import InputError
from skinground.core.outputs import Results
from skinground.core.tables import read_parquet
from skinground.data.answers import parse_group_answer, parse_number
from skinground.data.images import decode_image, open_images
from skinground.model.embed import prefix_shared_embeddings
from skinground.retrieval.search import CandidateFn, TopK, hierarchical


def as_stored(vectors) -> np.ndarray:
    """Vectors as the embedding files hold them: rounded to float16, as float32."""
    return np.asarray(vectors, dtype=np.float32).astype(np.float16).astype(np.float32)


def on_the_fly(model, processor, store, train_ids: Sequence[str], question: str, *,
               batch_images: int, token: str) -> CandidateFn:
    """``candidate_ima`` for :func:`skinground.retrieval.search.rerank`: h_im,a (at ``token``,
    as the run stored it: config ``embed.h_ima_token``) of the given train rows, computed by
    prefix-shared forward passes on their images, ``batch_images`` at a time."""
    train_ids = list(train_ids)

    def embed_rows(rows: np.ndarray) -> np.ndarray:
        blocks = []
        for start in range(0, len(rows), batch_images):
            images = [store.read(train_ids[r]) for r in rows[start:start + batch_images]]
            _, h_ima = prefix_shared_embeddings(model, processor, images, [question],
                                                batch_images=batch_images, token=token)
            blocks.append(as_stored(h_ima[:, 0]))
        return np.concatenate(blocks) if blocks else np.empty((0, 0), np.float32)

    return embed_rows


def hierarchical_new_image(model, processor, store, train_ids: Sequence[str], im_index,
                           h_im, h_ima, question: str, *, b: int, k: int,
                           token: str, batch_images: int) -> TopK:
    """Method (b) for an image outside the database (what ``skinground query`` runs): its
    top ``b`` train rows by h_im, re-ranked by the h_im,a (or h_im,G) of ``question``,
    computed on the fly for the candidates (:func:`on_the_fly`). ``h_im``, ``h_ima``: the
    query image's [1, d] vectors as the model gives them (rounded here as the run stored
    its own)."""
    return hierarchical(im_index, as_stored(h_im), as_stored(h_ima), b=b, k=k,
                        candidate_ima=on_the_fly(model, processor, store, train_ids, question,
                                                 batch_images=batch_images, token=token))


# ---------------------------------------------------------------- a finished run


class RunNotFinished(InputError):
    """A file the query needs is missing: the message names it and the rule that makes it."""


#: What a query reads in a run's folder (``skinground.core.outputs``), and the rule that makes it.
RUN_FILES = {
    out.RUN_CONFIG: "run_config",
    out.MANIFEST: "manifest",
    out.ADAPTER: "train",
    out.fill(out.SPACE, model="tuned", split="train", space=out.IMAGE_SPACE): "merge_embeddings",
    out.fill(out.INDEX, model="tuned", space=out.IMAGE_SPACE): "build_index",
}


def find_workdir(name: str, workdir: str | Path | None = None,
                 start: str | Path | None = None) -> Path:
    """The project folder holding run ``name``'s folder (``results/<name>/``, the folder the
    workflow ran in: the run's config paths are relative to it): ``workdir`` where given,
    else the first of ``start`` (default: the current folder) and the folders above it that
    holds one, as git finds ``.git``. ``InputError`` saying where it looked, and how to
    point at the folder, when there is none."""
    folder = out.fill(out.RUN_FOLDER, run=name)
    if workdir is not None:
        root = Path(workdir)
        if not root.is_dir():
            raise InputError(f"--workdir {workdir}: no such folder")
        if (root / folder).is_dir():
            return root
        hint = ""
        if (root / out.RUN_CONFIG).is_file() and root.resolve().parts[-2:] == tuple(
                folder.split("/")):
            hint = f"; this is the run's own folder: --workdir {root.resolve().parents[1]}"
        raise InputError(f"run {name!r}: no {folder}/ in --workdir {workdir}: give the project "
                         f"folder that holds {folder}/, where the workflow ran{hint}")
    here = Path.cwd() if start is None else Path(start)
    here = here.resolve()
    for root in (here, *here.parents):
        if (root / folder).is_dir():
            return root
    raise InputError(f"run {name!r}: no {folder}/ in {here} or any folder above it: run "
                     f"skinground in the project folder that holds {folder}/ (or below it), "
                     "or give --workdir DIR, that folder (a run not made yet: run the "
                     "workflow first)")


@dataclass
class Asked:
    """One question put to a query image: an attribute (``members`` = [it]) or a group;
    ``label`` is how the figures name it (the attribute's label, or the group's name)."""

    name: str
    label: str
    question: str
    members: list[str]
    decimals: list[int]

    @property
    def is_group(self) -> bool:
        return len(self.members) > 1 or self.name != self.members[0]


class Run:
    """What a finished run left in its folder: its config, the tuned model, the h_im
    index of the train images and their ids, the manifest and the image store. ``root``:
    the project folder (:func:`find_workdir`); ``needs``: the files checked, rel -> the rule
    that makes it (a query's by default)."""

    def __init__(self, root: str | Path, name: str, needs: dict[str, str] = RUN_FILES):
        self.root = Path(root)
        self.results = Results.of_run(name, self.root)
        for rel, rule in needs.items():
            if not (self.results / rel).exists():
                raise RunNotFinished(
                    f"run {name!r} is not finished: {self.results / rel} is missing (made by "
                    f"rule {rule}; run the workflow first, e.g. snakemake --profile ...)")
        self.name = name
        # through the workflow's one loader: the schema's defaults fill the keys the run's
        # config leaves out (its bookkeeping keys); a refused one is named, file and key
        path = self.results / out.RUN_CONFIG
        try:
            self.config = load([path])
        except ConfigError as err:
            named = str(err).startswith(f"{path}:")  # the file itself: load names it
            raise ConfigError(str(err) if named else f"{path}: {err}") from None
        self.attributes = self.config["attributes"]
        self.groups = self.config["retrieve"]["groups"]
        # where the run read h_im,a: its index's record says (``load``)
        self.h_ima_token = self.config["embed"]["h_ima_token"]

    def asked(self, attributes: Sequence[str], groups: Sequence[str]) -> list[Asked]:
        """The questions for ``attributes`` (columns or labels) and ``groups``, each asked
        once; an unknown name raises ``InputError`` listing the valid ones. Nothing asked:
        ``figures.fig3_attribute``."""
        by_label = {spec["label"]: col for col, spec in self.attributes.items()}

        def attribute(col: str) -> Asked:
            spec = self.attributes[col]
            return Asked(col, spec["label"], spec["question"], [col], [spec["decimals"]])

        questions = []
        for a in attributes:
            col = a if a in self.attributes else by_label.get(a)
            if col is None:
                valid = ", ".join(f"{spec['label']} ({col})"
                                  for col, spec in self.attributes.items())
                raise InputError(f"unknown attribute {a!r}; valid (label or column): {valid}")
            if all(x.name != col for x in questions):
                questions.append(attribute(col))
        for group in dict.fromkeys(groups):
            if group not in self.groups:
                raise InputError(f"unknown group {group!r}; valid: "
                                 f"{', '.join(self.groups) or '(none configured)'}")
            g = self.groups[group]
            questions.append(Asked(group, group, g["question"], list(g["attributes"]),
                             [self.attributes[a]["decimals"] for a in g["attributes"]]))
        return questions or [attribute(self.config["figures"]["fig3_attribute"])]

    def trained(self, a: Asked) -> bool:
        """Whether the run's model was trained on ``a``'s question: an attribute's always, a
        group's only where ``tuples.group_share`` > 0."""
        return not a.is_group or self.config["tuples"]["group_share"] > 0

    def untrained(self, asked: Sequence[Asked]) -> str | None:
        """A one-line warning where ``asked`` holds a question the run's model was never
        trained on (:meth:`trained`); else None."""
        groups = [a.name for a in asked if not self.trained(a)]
        if not groups:
            return None
        return (f"run {self.name!r} trained no group questions (tuples.group_share = 0): the "
                f"model's answer to {', '.join(groups)} is untrained; the retrieval (h_im,G) "
                "is computed all the same")

    def database_size(self) -> int:
        """How many train images the run's database holds (their ids only are read)."""
        from skinground.retrieval.spaces import read_ids

        return len(read_ids(self.results.space("tuned", "train", out.IMAGE_SPACE)))

    def made_together(self) -> tuple[dict, dict]:
        """The records of the adapter and of the h_im index (``skinground.core.provenance``),
        checked to belong together and to this run's config: the pixel budget the model was
        trained with, and the embeddings' (pixels, h_im,a token). Raises ``ProvenanceError``
        naming the files and the keys that differ (a config changed and not yet run through,
        an index left from another training)."""
        from skinground.core.sections import pixel_record, tracked

        adapter = self.results / out.ADAPTER
        index = self.results.index("tuned", out.IMAGE_SPACE)
        made = provenance.read_record(adapter)
        if made is None:
            raise provenance.ProvenanceError(
                f"{adapter}: no record of what made it ({provenance.RECORD}; trained before "
                "skinground kept one): rerun the workflow to retrain it")
        space = (provenance.read_record(index) or {}).get("space")
        if space is None:
            raise provenance.ProvenanceError(
                f"{index}: no record of what made it: rerun the workflow to rebuild it")
        stale = provenance.differing(space["adapter"], made)
        if stale:
            raise provenance.ProvenanceError(
                f"{index} was made from another training than {adapter} (they differ in "
                f"{', '.join(stale)}): finish the run (snakemake ...) before querying it")
        if space["pixels"] != made["pixels"]:
            keys = provenance.differing(space["pixels"], made["pixels"], "model.")
            raise provenance.ProvenanceError(
                f"{index} embedded images under another pixel budget than {adapter} was "
                f"trained with ({', '.join(keys)}): finish the run before querying it")
        config = {"train": tracked("train", self.config["train"]),
                  "pixels": pixel_record(self.config["model"])}
        ahead = provenance.differing({"train": made["train"], "pixels": made["pixels"]}, config)
        if ahead:
            raise provenance.ProvenanceError(
                f"{self.results / out.RUN_CONFIG} is not the config {adapter} was trained with "
                f"(they differ in {', '.join(ahead)}): finish the run before querying it")
        return made, space

    def load(self):
        """The manifest, the train images' ids and h_im index, the image store (opened once,
        for every query image), and last the tuned model and processor (under the pixel
        budget it was trained with, from its record)."""
        from skinground.model.loading import load_qwen
        from skinground.retrieval.index import load_index

        path = self.path
        made, space = self.made_together()
        self.h_ima_token = space["h_ima_token"]
        # The run's files first, the model last: a damaged one is named before any model work.
        self.manifest = read_parquet(self.results / out.MANIFEST)
        with np.load(self.results.space("tuned", "train", out.IMAGE_SPACE)) as f:
            self.train_ids = f["ids"].tolist()
        self.im_index = load_index(self.results.index("tuned", out.IMAGE_SPACE))
        self.store = open_images(path(self.config["data"]["images"]))
        self.model, self.processor = load_qwen(
            path(self.config["model"]["base"]), made["pixels"], self.results / out.ADAPTER)
        return self

    def path(self, p: str | Path) -> Path:
        """A path of the run's config: relative ones are relative to the project folder."""
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def split_ids(self, split: str) -> list[str]:
        """The sorted ids of ``split`` (train, test) as the run split them; [] if not yet."""
        path = self.results.path(out.SPLIT_IDS, split=split)
        return sorted(path.read_text().split()) if path.is_file() else []


def read_image(path: str | Path) -> Image.Image:
    """An RGB image from a file, as the run's images are decoded (``images.decode_image``:
    EXIF orientation, 16-bit, float and transparency converted, a pixel limit); ``InputError``
    naming the file when it is not one. A path that is not a regular file (a FIFO, a device,
    a folder) is refused before it is opened: reading a FIFO would wait forever."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise InputError(f"{path}: not a regular file")
    return decode_image(path, str(path))


def ask(run: Run, image: Image.Image, asked: Sequence[Asked], *, k: int, b: int) -> list[dict]:
    """For each question: the model's answer (generated from the same prefix pass as the
    query's h_im and h_im,a), its parsed values, and the top ``k`` train images by the
    hierarchical method on the fly (top ``b`` by h_im, re-ranked by h_im,a or h_im,G), with
    their cosine and their values of the asked attributes."""
    from skinground.model.predict import image_once

    token = run.h_ima_token
    once = image_once(run.model, run.processor, [image], [a.question for a in asked],
                      max_new_tokens=int(run.config["predict"]["max_new_tokens"]), token=token)
    tok = run.processor.tokenizer
    values = run.manifest.select("isic_id", *{m for a in asked for m in a.members})
    rows = []
    for j, a in enumerate(asked):
        top = hierarchical_new_image(run.model, run.processor, run.store, run.train_ids,
                                     run.im_index, once.h_im, once.h_ima[:, j], a.question,
                                     b=b, k=k, token=token,
                                     batch_images=run.config["embed"]["batch_images"])
        ids = [run.train_ids[i] for i in top.idx[0]]
        hits = values.filter(pl.col("isic_id").is_in(ids))
        by_id = {r["isic_id"]: r for r in hits.iter_rows(named=True)}
        answer = tok.decode(once.tokens[j], skip_special_tokens=True)
        predicted = (parse_group_answer(answer, len(a.members)) if a.is_group
                     else [parse_number(answer)])
        rows.append({
            "name": a.name, "label": a.label, "question": a.question, "members": a.members,
            "trained": run.trained(a),
            "answer": answer, "predicted": dict(zip(a.members, predicted, strict=True)),
            "hits": [{"rank": r + 1, "isic_id": i, "cosine": float(top.scores[0, r]),
                      "values": {m: by_id[i][m] for m in a.members}}
                     for r, i in enumerate(ids)],
        })
    return rows


#: An image's id in a store (SLICE-3D's isic_id, e.g. ISIC_0015670): a plain name, never a
#: path into the HDF5 file or out of the image folder.
IMAGE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: What ``export_image`` writes, by the file's suffix.
EXPORT_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}


def pick_image(run: Run, isic_id: str | None) -> str:
    """``isic_id`` checked to be an id (never a path), or the run's first test image."""
    if isic_id is None:
        test = run.split_ids("test")
        if not test:
            raise RunNotFinished(
                f"run {run.name!r} has no test images yet: "
                f"{run.results.path(out.SPLIT_IDS, split='test')} is missing (made by rule "
                "split); give an isic_id")
        return test[0]
    if not IMAGE_ID.fullmatch(isic_id):
        raise InputError(f"{isic_id!r}: not an image id (an isic_id, e.g. ISIC_0015670)")
    return isic_id


def export_image(run: Run, isic_id: str, path: str | Path) -> tuple[str, Image.Image]:
    """Image ``isic_id`` of the run's image store (config ``data.images``) written to
    ``path`` atomically: as the JPEG bytes the store holds (``.jpg``: a query of the file sees
    what the run saw), or as a PNG. Returns its split (train, test or "") and the image.
    ``InputError`` for an id the store does not hold, before anything is written; the caller
    checks ``path`` (``cli.check_out``)."""
    from skinground.core.io import atomic_path

    source = run.path(run.config["data"]["images"])
    with open_images(source) as store:
        try:
            data = store.read_bytes(isic_id)
        except InputError as err:
            if not str(err).endswith(f"no image for {isic_id}"):
                raise  # the store itself is damaged: its own message
            raise InputError(f"run {run.name!r}: no image {isic_id!r} in its image store "
                             f"{source} (its test images: "
                             f"{run.results.path(out.SPLIT_IDS, split='test')})") from None
        image = store.read(isic_id)  # decodable: checked before anything is written
    split = next((s for s in ("test", "train") if isic_id in set(run.split_ids(s))), "")
    fmt = EXPORT_FORMATS[Path(path).suffix.lower()]
    with atomic_path(path) as tmp:
        if fmt == "JPEG" and data[:3] == b"\xff\xd8\xff":
            tmp.write_bytes(data)
        else:
            image.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return split, image
