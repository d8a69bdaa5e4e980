"""How the training tuples (image, Q(a), y_a) become batches: the two layouts of ``train.layout``.

- ``per_tuple`` (the paper's): one sequence per tuple, ``chat_prompt(Q(a)) + y_a + <|im_end|>``,
  right-padded (:class:`PerTupleCollator`); the image is encoded once per tuple.
- ``per_image`` (image-once): the tuples of a batch are grouped by image
  (:class:`ImageGroupedSampler` yields each image's tuples one after another); each image's
  prefix runs once, with gradients, and every suffix ``Q(a) ... assistant\\n y_a <|im_end|>``
  attends to that prefix and to itself only (:func:`image_once_loss`, the KV-cache mechanism of
  :mod:`skinground.model.prefix`). Each answer is conditioned exactly as in the per-tuple layout, so
  the loss and every gradient are the same for the same tuples (tested to 1e-5); the vision
  encoder and the prefix run once per image and batch instead of once per tuple.

In both layouts the labels are the answer tokens and the closing ``<|im_end|>`` (the model
learns to stop); everything else is -100. A batch holds ``train.per_device_batch`` tuples in
either layout, so ``train.global_batch`` counts tuples in both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import modeling_utils

from skinground.core.errors import InputError
from skinground.core.names import LAYOUTS
from skinground.core.tables import read_parquet
from skinground.data.attributes import ID_COLUMN
from skinground.data.images import ImageStore, open_images
from skinground.data.metadata import DataError
from skinground.model import prefix as P
from skinground.model.loading import EOS_TOKEN, chat_prompt

#: Newer transformers (5.25; not 5.17) take a boolean mask as ``logits_to_keep``
#: (``modeling_utils.slice_logits_to_keep``); before, every position's logits, then the mask.
MASKED_LOGITS = hasattr(modeling_utils, "slice_logits_to_keep")
TUPLE_COLUMNS = (ID_COLUMN, "attribute", "question", "answer")
IGNORE_INDEX = -100
#: At most this many bytes of encoded image prefixes are kept by ``cache_prefixes``.
PREFIX_CACHE_BYTES = 2 << 30
#: The prefix's keys in a per-image batch (the processor's outputs for the images).
PREFIX_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw",
               "mm_token_type_ids")


class TrainError(InputError):
    """A training input or setting is invalid (message names the file or config key)."""


# --------------------------------------------------------------------------- the tuples


class TupleDataset(torch.utils.data.Dataset):
    """The training tuples: item ``i`` is ``{"isic_id", "image", "question", "answer"}`` of
    row ``i``.

    Images are read from the store (HDF5 or JPEG folder) on access; the store is opened
    lazily in each process (so DataLoader workers get their own handle). ``cache_images``
    keeps decoded images in memory (per process): worth it when the images are few and each
    is used many times (the demo: every attribute of every image, several epochs).
    """

    def __init__(self, tuples_parquet: str | os.PathLike, images_path: str | os.PathLike, *,
                 cache_images: bool = False, check_images: bool = True):
        path = Path(tuples_parquet)
        if not path.is_file():
            raise TrainError(f"tuples file not found: {path}")
        frame = read_parquet(path)
        missing = [c for c in TUPLE_COLUMNS if c not in frame.columns]
        if missing:
            raise TrainError(f"{path}: missing column(s) {', '.join(missing)}")
        if frame.height == 0:
            raise TrainError(f"{path}: no training tuples")
        nulls = [c for c in TUPLE_COLUMNS if frame[c].null_count()]
        if nulls:
            raise TrainError(f"{path}: empty values in column(s) {', '.join(nulls)}")
        self.source = path
        self.ids: list[str] = frame[ID_COLUMN].to_list()
        self.attributes: list[str] = frame["attribute"].to_list()
        self.questions: list[str] = frame["question"].to_list()
        self.answers: list[str] = frame["answer"].to_list()
        self.images_path = Path(images_path)
        self.cache: dict[str, Image.Image] | None = {} if cache_images else None
        self._store: ImageStore | None = None
        self._pid: int | None = None
        if check_images:
            with open_images(self.images_path) as store:
                absent = sorted(set(self.ids) - store.ids())
            if absent:
                raise DataError(f"{self.images_path}: no image for {len(absent)} tuple id(s), "
                                f"e.g. {', '.join(absent[:3])} (tuples: {path})")

    def __len__(self) -> int:
        return len(self.ids)

    def n_images(self) -> int:
        return len(set(self.ids))

    def _images(self) -> ImageStore:
        if self._store is None or self._pid != os.getpid():
            self._store = open_images(self.images_path)
            self._pid = os.getpid()
        return self._store

    def image(self, isic_id: str) -> Image.Image:
        if self.cache is not None:
            img = self.cache.get(isic_id)
            if img is None:
                img = self.cache[isic_id] = self._images().read(isic_id)
            return img
        return self._images().read(isic_id)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"isic_id": self.ids[i], "image": self.image(self.ids[i]),
                "question": self.questions[i], "answer": self.answers[i]}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_store"] = None
        state["_pid"] = None
        return state


class ImageGroupedSampler(torch.utils.data.Sampler):
    """Tuple indices image by image: the images in a seeded random order (a new one each
    epoch, ``set_epoch``), each image's tuples one after another in their file order. A batch
    of consecutive indices then holds few images, each with several questions.

    The order depends only on ``seed`` and the epoch, so a resumed run sees the same batches.
    """

    def __init__(self, ids: Sequence[str], seed: int):
        groups: dict[str, list[int]] = {}
        for i, isic_id in enumerate(ids):
            groups.setdefault(isic_id, []).append(i)
        self.groups = list(groups.values())
        self.seed = int(seed)
        self.epoch = 0
        self.n = len(ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.groups))
        for g in order.tolist():
            yield from self.groups[g]


# --------------------------------------------------------------------------- collators


class PerTupleCollator:
    """The ``per_tuple`` layout: one right-padded sequence per tuple, answer-only labels.

    Text per item: ``chat_prompt(processor, question) + answer + "<|im_end|>"``. ``labels``
    equal ``input_ids`` on the answer tokens and the final ``<|im_end|>``, -100 elsewhere
    (system/user turn, image tokens, assistant header, padding). The boundary is found by
    tokenizing the prompt (with its image tokens expanded as the processor does) and checking
    that it is a prefix of the full sequence.
    """

    def __init__(self, processor):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_token = processor.image_token
        self.merge = processor.image_processor.merge_size
        self.eos_id = self.tokenizer.convert_tokens_to_ids(EOS_TOKEN)

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [chat_prompt(self.processor, it["question"]) for it in items]
        texts = [p + it["answer"] + EOS_TOKEN for p, it in zip(prompts, items, strict=True)]
        batch = self.processor(text=texts, images=[it["image"] for it in items],
                               padding=True, padding_side="right", return_tensors="pt")
        input_ids = batch["input_ids"]
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        n_image = (batch["image_grid_thw"].prod(dim=1) // self.merge**2).tolist()
        expanded = [p.replace(self.image_token, self.image_token * n, 1)
                    for p, n in zip(prompts, n_image, strict=True)]
        prompt_ids = self.tokenizer(expanded, add_special_tokens=False)["input_ids"]
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for i, (ids, n) in enumerate(zip(prompt_ids, lengths, strict=True)):
            k = len(ids)
            if k >= n or input_ids[i, :k].tolist() != ids:
                raise TrainError(
                    f"the prompt's tokens are not a prefix of the prompt + answer's tokens "
                    f"(question {items[i]['question']!r}, answer {items[i]['answer']!r})")
            if input_ids[i, n - 1] != self.eos_id:
                raise TrainError(f"sequence {i} does not end with {EOS_TOKEN}")
            labels[i, k:n] = input_ids[i, k:n]
        out = {key: batch[key] for key in PREFIX_KEYS}
        out["labels"] = labels
        return out


class ImageOnceCollator:
    """The ``per_image`` layout: the batch's images once, their suffixes as rows.

    Items are grouped by ``isic_id`` (in order of first appearance). Returns the images'
    prefixes (``PREFIX_KEYS``, left-padded) and, per tuple, ``suffix_ids``/``suffix_mask``
    (right-padded ``Q(a)<|im_end|>\\n<|im_start|>assistant\\n y_a <|im_end|>``),
    ``suffix_rows`` (the prefix row each suffix continues) and ``labels`` (the suffix's
    answer tokens and closing ``<|im_end|>``; -100 elsewhere).

    ``cache_prefixes``: keep each image's encoded prefix (its pixel values and tokens) by
    ``isic_id``, up to ``PREFIX_CACHE_BYTES``, and build later batches from them (identical to
    encoding the batch; worth it when images come back every epoch, as in the demo).
    """

    def __init__(self, processor, *, cache_prefixes: bool = False):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.pad_id = self.tokenizer.pad_token_id
        self.prefix_text, _ = P.split_template(processor, [])
        self._suffix: dict[str, tuple[str, list[int]]] = {}
        self._prefixes: dict[str, dict[str, torch.Tensor]] | None = (
            {} if cache_prefixes else None)
        self._prefix_bytes = 0

    def prefixes(self, ids: Sequence[str], images: Sequence) -> dict[str, torch.Tensor]:
        """The images' prefixes, left-padded (``PREFIX_KEYS``), from the cache where held."""
        if self._prefixes is None:
            return P.encode(self.processor, images, [self.prefix_text] * len(images),
                            padding_side="left")
        encoded = []
        for isic_id, image in zip(ids, images, strict=True):
            one = self._prefixes.get(isic_id)
            if one is None:
                one = P.encode(self.processor, [image], [self.prefix_text])
                size = sum(t.nbytes for t in one.values())
                if self._prefix_bytes + size <= PREFIX_CACHE_BYTES:
                    self._prefixes[isic_id] = one
                    self._prefix_bytes += size
            encoded.append(one)
        return P.stack_prefixes(encoded, self.pad_id)

    def suffix(self, question: str) -> tuple[str, list[int]]:
        """The question's suffix text (``Q(a)<|im_end|>\n<|im_start|>assistant\n``) and its
        tokens, computed once per question."""
        if question not in self._suffix:
            text = P.split_template(self.processor, [question])[1][0]
            self._suffix[question] = text, self.tokenizer(text, add_special_tokens=False)[
                "input_ids"]
        return self._suffix[question]

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        row_of: dict[str, int] = {}
        images = []
        for it in items:
            if it["isic_id"] not in row_of:
                row_of[it["isic_id"]] = len(images)
                images.append(it["image"])
        batch = self.prefixes(list(row_of), images)
        # One tokenizer call for the batch's suffix + answer texts; the suffix tokens (the
        # label boundary) must prefix each row's tokens.
        suffixes = [self.suffix(it["question"]) for it in items]
        seqs = self.tokenizer([q + it["answer"] + EOS_TOKEN for (q, _), it in
                               zip(suffixes, items, strict=True)],
                              add_special_tokens=False)["input_ids"]
        starts = []
        for (q, prompt), seq, it in zip(suffixes, seqs, items, strict=True):
            if seq[: len(prompt)] != prompt or len(seq) <= len(prompt):
                raise TrainError(f"the prompt's tokens are not a prefix of the prompt + "
                                 f"answer's tokens (answer {it['answer']!r} after {q[-60:]!r})")
            starts.append(len(prompt))
        suffix_ids, suffix_mask = P.pad_rows(seqs, self.pad_id)
        column = torch.arange(suffix_ids.shape[1])[None, :]
        answer = (column >= torch.tensor(starts)[:, None]) & suffix_mask.bool()
        labels = torch.where(answer, suffix_ids, IGNORE_INDEX)
        out = {key: batch[key] for key in PREFIX_KEYS}
        out.update(suffix_ids=suffix_ids, suffix_mask=suffix_mask, labels=labels,
                   suffix_rows=torch.tensor([row_of[it["isic_id"]] for it in items]))
        return out


def collator(layout: str, processor, *, cache_prefixes: bool = False):
    """The collator of ``train.layout`` (``cache_prefixes``: see :class:`ImageOnceCollator`)."""
    if layout == "per_tuple":
        return PerTupleCollator(processor)
    if layout == "per_image":
        return ImageOnceCollator(processor, cache_prefixes=cache_prefixes)
    raise TrainError(f"train.layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


# --------------------------------------------------------------------------- the loss


def image_once_loss(model, inputs: Mapping[str, torch.Tensor], *,
                    num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """The per-image layout's loss: the model's own causal-LM loss over the suffixes' labels
    (logits only where a label is predicted).

    ``model`` is called as the Trainer calls it (DeepSpeed engine, peft model or plain
    ``Qwen2VLForConditionalGeneration``): once over the prefixes, keeping the KV cache, and
    over all suffixes, each attending to its gathered prefix cache, with explicit 3-D M-RoPE
    positions continuing the prefix. The suffixes go in one pass, or in two by length
    (:func:`skinground.model.prefix.length_buckets`: less padding). ``num_items_in_batch``: the
    answer tokens of the whole accumulated batch (sum / n, as the Trainer scales the
    per-tuple loss), else the mean.
    """
    core = _unwrap(model)
    backbone = P.backbone_of(core)
    prefix = {k: inputs[k] for k in PREFIX_KEYS}
    positions, next_position = P.rope_positions(backbone, prefix)
    cache = P.new_cache(backbone)
    model(**prefix, position_ids=positions, use_cache=True, logits_to_keep=1,
          **{P.cache_kwarg(backbone): cache})
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    rows, suffix_mask = inputs["suffix_rows"], inputs["suffix_mask"]
    # Only the positions that predict a label (an answer token or the closing <|im_end|>)
    # go through the LM head and the loss: the same loss, without the logits of the
    # question and padding positions (most of a suffix).
    targets = torch.nn.functional.pad(inputs["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
    lengths = suffix_mask.sum(1)
    logits, labels = [], []
    for part in P.length_buckets(lengths):
        width = int(lengths[part].max())
        mask = suffix_mask[part, :width]
        part_cache = P.new_cache(backbone)  # the part's rows' prefixes, gathered
        for i, (keys, values) in enumerate(layers):
            part_cache.update(keys[rows[part]], values[rows[part]], i)
        predicts = targets[part, :width] != IGNORE_INDEX
        out = model(input_ids=inputs["suffix_ids"][part, :width],
                    attention_mask=torch.cat([prefix["attention_mask"][rows[part]], mask], 1),
                    position_ids=P.suffix_positions(next_position[rows[part]], width),
                    use_cache=True, logits_to_keep=predicts if MASKED_LOGITS else 0,
                    **{P.cache_kwarg(backbone): part_cache})
        logits.append(out.logits if MASKED_LOGITS else out.logits[predicts])
        labels.append(targets[part, :width][predicts])
    return core.loss_function(logits=torch.cat(logits, dim=-2), labels=None,
                              shift_labels=torch.cat(labels),
                              vocab_size=core.config.get_text_config().vocab_size,
                              num_items_in_batch=num_items_in_batch)


def _unwrap(model):
    """The peft model or ``Qwen2VLForConditionalGeneration`` inside a DeepSpeed/DDP wrapper."""
    while hasattr(model, "module") and not hasattr(model, "get_base_model"):
        model = model.module
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model
