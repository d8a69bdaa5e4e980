"""Fig. 2's answers: every configured attribute's question for every test image, generated
greedily by Qwen2-VL in left-padded batches of (image, question) sequences."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import polars as pl
import torch

from skinground.attributes import ID_COLUMN
from skinground.metrics import parse_number
from skinground.models import EOS_TOKEN, PAD_TOKEN, chat_prompt

log = logging.getLogger(__name__)

PREDICTION_SCHEMA = {ID_COLUMN: pl.String, "attribute": pl.String, "answer": pl.String,
                     "value": pl.Float64}


@torch.inference_mode()
def generate_batch(model, processor, images: list, questions: list[str], *,
                   max_new_tokens: int) -> list[str]:
    """Greedy answers for (image, question) pairs in one left-padded ``generate`` call.

    Plain greedy decoding: the sampling settings and the repetition penalty that
    Qwen2-VL-7B-Instruct's ``generation_config.json`` carries are overridden (a penalty on
    repeated tokens would bias numbers with repeated digits). Stops at ``<|im_end|>`` (or
    ``<|endoftext|>``); returns only the new tokens, decoded without special tokens.
    """
    tok = processor.tokenizer
    prompts = [chat_prompt(processor, q) for q in questions]
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        batch = processor(images=images, text=prompts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = old_side
    batch = batch.to(model.device)
    if "pixel_values" in batch:
        batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    eos = [tok.convert_tokens_to_ids(EOS_TOKEN), tok.convert_tokens_to_ids(PAD_TOKEN)]
    out = model.generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
        eos_token_id=eos, pad_token_id=eos[1], repetition_penalty=1.0,
        temperature=None, top_p=None, top_k=None,
    )
    new = out[:, batch["input_ids"].shape[1]:]
    return tok.batch_decode(new, skip_special_tokens=True)


def generate_answers(model, processor, store, ids: Sequence[str],
                     attributes: Mapping[str, Mapping], *, batch_size: int,
                     max_new_tokens: int) -> pl.DataFrame:
    """All configured attributes' answers for every image in ``ids``.

    ``attributes``: the config section (column -> {"question": ...}). Sequences are ordered
    image by image, attribute by attribute, and cut into batches of ``batch_size`` (a batch
    may mix images). Returns columns isic_id, attribute, answer (the generated text, special
    tokens stripped), value (``parse_number(answer)``, null when unparsable); one row per
    (image, attribute), in that order.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    pairs = [(i, a) for i in ids for a in attributes]
    n_batches = -(-len(pairs) // batch_size)
    step = max(1, n_batches // 10)
    answers: list[str] = []
    cache: dict[str, object] = {}  # decoded images of the current and next batch
    for b in range(n_batches):
        chunk = pairs[b * batch_size:(b + 1) * batch_size]
        needed = {i for i, _ in chunk}
        cache = {i: im for i, im in cache.items() if i in needed}
        for i in needed:
            if i not in cache:
                cache[i] = store.read(i)
        answers += generate_batch(
            model, processor, [cache[i] for i, _ in chunk],
            [attributes[a]["question"] for _, a in chunk], max_new_tokens=max_new_tokens,
        )
        if (b + 1) % step == 0 or b + 1 == n_batches:
            log.info("generated %d/%d answers (batch %d/%d)", len(answers), len(pairs),
                     b + 1, n_batches)
    return pl.DataFrame(
        {ID_COLUMN: [i for i, _ in pairs], "attribute": [a for _, a in pairs],
         "answer": answers, "value": [parse_number(t) for t in answers]},
        schema=PREDICTION_SCHEMA,
    )
