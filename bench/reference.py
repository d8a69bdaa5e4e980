"""The plain paths the workflow's fast ones are checked against, and builders that tests
and benchmarks share; not production code (no rule imports this file).

- :func:`naive_embeddings`: h_im and h_im,a by one full forward per (image, question), the
  reference of :func:`skinground.model.embed.prefix_shared_embeddings`.
- :func:`generate_per_question`: one ``generate`` per (image, question), the reference of
  :func:`skinground.model.predict.generate_answers` (image-once).
- :func:`brute_force_percentile_ranks`: the O(N)-per-item count of the percentile, the
  reference of :class:`skinground.evaluation.percentile.PercentileRanker`.
- :func:`cumsum_bootstrap_median`: every replicate's median by the cumulative counts of
  every sorted item, the reference of :func:`skinground.evaluation.stats.bootstrap_median` (bins).
- :func:`image_token_count`, :func:`write_space`, :func:`paper_shaped_cohort`: what a test or
  a benchmark builds its inputs with.

The tests import it from here (pyproject.toml's pytest ``pythonpath``); a benchmark measures
the fast path against the same plain one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import polars as pl
import torch
from PIL import Image

from skinground.core.io import atomic_path
from skinground.core.progress import Progress
from skinground.data.attributes import ID_COLUMN, PATIENT_COLUMN, TARGET_COLUMN
from skinground.demo.synthetic import (
    SLICE3D_IMAGES,
    SLICE3D_MALIGNANT,
    SLICE3D_PATIENTS,
    _distinct_ids,
    _images_per_patient,
    _malignant_images,
)
from skinground.evaluation.percentile import _pair, _percent, _require_members, _train_values
from skinground.model import prefix as P
from skinground.model.embed import _hidden_size
from skinground.model.loading import ImageOnlyQwen2VLProcessor, chat_prompt
from skinground.model.predict import answers_frame, stop_ids
from skinground.retrieval.spaces import STORED

log = logging.getLogger(__name__)


@torch.inference_mode()
def naive_embeddings(model, processor, images: Sequence[Image.Image], questions: Sequence[str],
                     *, token: str = "question") -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: one unpadded forward of the prefix per image (h_im) and one full forward
    per (image, question) (h_im,a), reading ``hidden_states[-1]`` of the model's own output.

    Returns float32 CPU tensors ``h_im [N, d]`` and ``h_ima [N, A, d]``.
    """
    prefix, _ = P.split_template(processor, questions)
    prompts = [chat_prompt(processor, q) for q in questions]
    image_id = model.config.image_token_id
    end_id = processor.tokenizer.convert_tokens_to_ids(P.EOS_TOKEN)
    if token not in P.H_IMA_TOKENS:
        raise ValueError(f"h_im,a token must be one of {P.H_IMA_TOKENS}, got {token!r}")
    d = _hidden_size(model)
    h_im = torch.empty(len(images), d)
    h_ima = torch.empty(len(images), len(questions), d)

    def last_layer(image, text):
        batch = P.to_model(P.encode(processor, [image], [text]), model)
        out = model(**batch, output_hidden_states=True, logits_to_keep=1)
        return batch["input_ids"][0], out.hidden_states[-1][0].float()

    for i, image in enumerate(images):
        ids, states = last_layer(image, prefix)
        h_im[i] = states[ids == image_id].mean(0).cpu()
        for a, text in enumerate(prompts):
            ids, states = last_layer(image, text)
            # "question": the token before the question's <|im_end|> (the last one)
            at = -1 if token == "prompt_end" else int((ids == end_id).nonzero()[-1]) - 1
            h_ima[i, a] = states[at].cpu()
    return h_im, h_ima


@torch.inference_mode()
def generate_batch(model, processor, images: list, questions: list[str], *,
                   max_new_tokens: int, tokens: bool = False) -> list[str] | list[list[int]]:
    """Greedy answers for (image, question) pairs in one left-padded ``generate`` call.

    Plain greedy decoding: the sampling settings and the repetition penalty that
    Qwen2-VL-7B-Instruct's ``generation_config.json`` carries are overridden (a penalty on
    repeated tokens would bias numbers with repeated digits). Stops at ``<|im_end|>`` (or
    ``<|endoftext|>``); returns only the new tokens, decoded without special tokens (or, with
    ``tokens``, their ids, padding after the stop included).
    """
    tok = processor.tokenizer
    prompts = [chat_prompt(processor, q) for q in questions]
    batch = P.to_model(P.encode(processor, images, prompts, padding_side="left"), model)
    eos = stop_ids(tok)
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=eos, pad_token_id=eos[1], repetition_penalty=1.0,
        temperature=None, top_p=None, top_k=None,
    )
    new = out[:, batch["input_ids"].shape[1]:]
    return new.tolist() if tokens else tok.batch_decode(new, skip_special_tokens=True)


def generate_per_question(model, processor, store, ids: Sequence[str],
                          questions: Mapping[str, str], *, batch_size: int,
                          max_new_tokens: int) -> pl.DataFrame:
    """All configured attributes' answers for every image in ``ids``, one sequence per
    (image, question) (the reference for :func:`generate_answers`).

    ``questions``: name (an attribute column, or ``group:<name>``) -> question. Sequences are
    ordered image by image, question by question, and cut into batches of ``batch_size`` (a
    batch may mix images). Returns columns isic_id, attribute, answer (the generated text, special
    tokens stripped), value (``parse_number(answer)``, null when unparsable); one row per
    (image, attribute), in that order.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    pairs = [(i, a) for i in ids for a in questions]
    answers: list[str] = []
    cache: dict[str, object] = {}  # decoded images of the current batch
    done = Progress(len(pairs), "answers", log=log)
    for lo in range(0, len(pairs), batch_size):
        chunk = pairs[lo:lo + batch_size]
        needed = {i for i, _ in chunk}
        cache = {i: im for i, im in cache.items() if i in needed}
        for i in needed:
            if i not in cache:
                cache[i] = store.read(i)
        answers += generate_batch(
            model, processor, [cache[i] for i, _ in chunk],
            [questions[a] for _, a in chunk], max_new_tokens=max_new_tokens,
        )
        done.update(lo + len(chunk))
    return answers_frame(pairs, answers)


def brute_force_percentile_ranks(train_values, query_values, retrieved_values) -> np.ndarray:
    """The O(N)-per-item reference: counts ``np.abs(v - q) < d`` and ``<= d`` directly."""
    v = _train_values(train_values)
    q, r = _pair(query_values, retrieved_values)
    out = np.full(r.shape, np.nan)
    if r.size == 0:
        return out
    r_valid = r[np.isfinite(q) & np.isfinite(r)]
    _require_members(~np.isin(r_valid, v), r_valid)
    width = r.shape[-1] if r.ndim else 1
    q2, r2, o2 = q.reshape(-1, width), r.reshape(-1, width), out.reshape(-1, width)
    for i in range(q2.shape[0]):
        valid = np.isfinite(q2[i]) & np.isfinite(r2[i])
        for qi in np.unique(q2[i][valid]):  # q is usually constant along the row
            cols = np.flatnonzero(valid & (q2[i] == qi))
            diffs = np.abs(v - qi)
            d = np.abs(qi - r2[i, cols])
            less = (diffs[None, :] < d[:, None]).sum(axis=1)
            less_or_equal = (diffs[None, :] <= d[:, None]).sum(axis=1)
            o2[i, cols] = _percent(less, less_or_equal, v.size)
    return o2.reshape(r.shape)


def cumsum_bootstrap_median(boot, codes, values) -> np.ndarray:
    """The median of every replicate of ``boot`` (``skinground.evaluation.stats.Bootstrap``) by the
    cumulative counts of all n sorted items per replicate, O(B n): the middle positions of
    the repeated, sorted items found item by item (NaN where a replicate drew none)."""
    from skinground.evaluation.stats import _values

    codes, values = _values(codes, values)
    order = np.argsort(values, kind="stable")
    v, g = values[order], codes[order]
    out = np.full(boot.replicates, np.nan)
    if v.size == 0:
        return out
    for block in boot.blocks(v.size):
        cum = np.cumsum(boot.counts[block][:, g], axis=1, dtype=np.int64)
        total = cum[:, -1]
        i_lo = (cum <= ((total - 1) // 2)[:, None]).sum(axis=1)
        i_hi = (cum <= (total // 2)[:, None]).sum(axis=1)
        med = (v[np.minimum(i_lo, v.size - 1)] + v[np.minimum(i_hi, v.size - 1)]) / 2
        out[block] = np.where(total > 0, med, np.nan)
    return out


def image_token_count(processor: ImageOnlyQwen2VLProcessor, height: int, width: int) -> int:
    """How many ``<|image_pad|>`` tokens one image of this size becomes."""
    if processor.image_size:
        height = width = processor.image_size
    ip = processor.image_processor
    return ip.get_number_of_image_patches(height, width, {}) // ip.merge_size**2


def write_space(path: str | os.PathLike, ids: Sequence[str], vectors: np.ndarray) -> None:
    """A merged space from arrays in memory (tests, small spaces): ``ids`` and ``vectors``
    stored as float16, in the layout :class:`Space` reads."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids):
        raise ValueError(f"vectors {vectors.shape} must be [{len(ids)}, d]")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, ids=np.array(list(ids), dtype=str), vectors=vectors.astype(STORED))


def paper_shaped_cohort(seed: int = 0, *, n_patients: int = SLICE3D_PATIENTS,
                        n_images: int = SLICE3D_IMAGES,
                        n_malignant: int = SLICE3D_MALIGNANT) -> pl.DataFrame:
    """``isic_id, patient_id, target`` for a cohort of SLICE-3D's shape, without images: its
    patient and image counts, heavy-tailed images per patient (:func:`_images_per_patient`:
    total-body photography gives some patients far more lesions than others; ~385 on
    average), its malignant images spread as the demo's. For rehearsing the data stages and
    the split at paper scale (``bench/scale.py``, ``tests/test_split.py``)."""
    rng = np.random.default_rng(seed)
    counts = _images_per_patient(rng, n_patients, n_images)
    patient_of = rng.permutation(np.repeat(np.arange(n_patients), counts))
    malignant = _malignant_images(rng, patient_of, n_patients, n_malignant / n_images)
    patients = np.array(_distinct_ids(rng, "IP_", n_patients))
    return pl.DataFrame({ID_COLUMN: _distinct_ids(rng, "ISIC_", n_images),
                         PATIENT_COLUMN: patients[patient_of],
                         TARGET_COLUMN: malignant.astype(np.int64)})
