"""Fig. 2's answers: every configured attribute's question for every test image, generated
greedily by Qwen2-VL.

Two paths compute the same tokens:

- :func:`generate_answers` (image-once, the workflow's): for a batch of images the image
  prefixes run once (:func:`skinground.model.prefix.run_prefix`), then every image's 16 question
  suffixes as one batch (or two by length) over that cache
  (:func:`skinground.model.prefix.run_shared_suffixes`), then one greedy decoding loop over all
  (image, question) rows, each row at its own explicit M-RoPE position, stopping at
  ``<|im_end|>``/``<|endoftext|>`` or ``max_new_tokens``. Suffix tokens and decoding steps
  attend to each image's prefix keys once for all of its rows and to each row's own keys,
  written in place (:class:`skinground.model.prefix.SharedPrefixCache`). The logits at the last
  prompt token are those of the h_im,a position.
- :func:`generate_per_question` (the reference): one left-padded ``generate`` call over
  (image, question) sequences, each re-encoding its image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import polars as pl
import torch

from skinground.core.progress import Progress
from skinground.data.answers import parse_number
from skinground.data.attributes import ID_COLUMN
from skinground.data.shards import PREDICTION_SCHEMA
from skinground.model import prefix as P
from skinground.model.loading import EOS_TOKEN, PAD_TOKEN
from skinground.model.shared_cache import shared_prefix_attention_for

log = logging.getLogger(__name__)









def answers_frame(pairs: Sequence[tuple[str, str]], answers: Sequence[str]) -> pl.DataFrame:
    """One row per (image, attribute): the generated text and its parsed value."""
    return pl.DataFrame(
        {ID_COLUMN: [i for i, _ in pairs], "attribute": [a for _, a in pairs],
         "answer": list(answers), "value": [parse_number(t) for t in answers]},
        schema=PREDICTION_SCHEMA,
    )


def stop_ids(tokenizer) -> list[int]:
    """The tokens that end an answer: ``<|im_end|>`` and ``<|endoftext|>``."""
    return [tokenizer.convert_tokens_to_ids(EOS_TOKEN), tokenizer.convert_tokens_to_ids(PAD_TOKEN)]


class ImageOnce(NamedTuple):
    """One image-once pass: h_im [n, d] and h_im,a [n, A, d] (float32, CPU), and the greedy
    answer tokens of every (image, question), row ``i * A + a``, without the stop token."""

    h_im: torch.Tensor
    h_ima: torch.Tensor
    tokens: list[list[int]]


@torch.inference_mode()
def image_once(model, processor, images: Sequence, questions: Sequence[str], *,
               max_new_tokens: int, token: str | None) -> ImageOnce:
    """The images' prefixes once, their questions as one batch of suffixes (h_im and h_im,a
    from those states, h_im,a at ``token``: :data:`skinground.core.names.H_IMA_TOKENS`,
    config ``embed.h_ima_token``), then one greedy decoding loop from the same cache. With
    ``token`` None only the answers are wanted: ``h_ima`` then holds each prompt's last state."""
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    tok = processor.tokenizer
    device = model.device
    _, suffixes = P.split_template(processor, questions)
    stops = torch.tensor(stop_ids(tok), device=device)
    s_ids, s_mask = P.pad_rows([tok(s, add_special_tokens=False)["input_ids"] for s in suffixes],
                               stops[1].item())
    n, n_q = len(images), len(questions)
    prefix = P.run_prefix(model, P.to_model(P.encode_prefixes(processor, images), model))
    h_im = P.image_states_mean(model, prefix).cpu()
    read_at = None if token is None else P.h_ima_positions(tok, s_ids, s_mask, token)
    run = P.run_shared_suffixes(model, prefix, s_ids, s_mask, room=max_new_tokens - 1,
                                read_at=read_at)
    h_ima = run.read.float().view(n, n_q, -1).cpu()
    head, backbone = P.lm_head_of(model), P.backbone_of(model)
    token = head(run.last).argmax(-1)
    out = [token]
    done = torch.isin(token, stops)
    # Decoding is text only: the decoder alone (no vision wrapper), from the same cache
    # (each image's prefix keys once for its rows, each row's own keys written in place),
    # one new token per row and step.
    decoder = backbone.language_model
    position = run.position
    with shared_prefix_attention_for(decoder) as masks:
        for _ in range(1, max_new_tokens):
            if bool(done.all()):
                break
            step = decoder(input_ids=token[:, None], attention_mask=masks,
                           position_ids=P.suffix_positions(position, 1), use_cache=True,
                           **{P.cache_kwarg(backbone): run.cache})
            token = head(step.last_hidden_state[:, -1]).argmax(-1)
            token = torch.where(done, stops[1], token)  # finished rows: padding, ignored
            out.append(token)
            done |= torch.isin(token, stops)
            position = position + 1
    tokens = torch.stack(out, dim=1).tolist()
    stop_set = set(stops.tolist())
    return ImageOnce(h_im, h_ima, [
        row[: next((k for k, t in enumerate(row) if t in stop_set), len(row))]
        for row in tokens])


def image_once_tokens(model, processor, images: Sequence, questions: Sequence[str], *,
                      max_new_tokens: int) -> list[list[int]]:
    """Greedy answer tokens for every (image, question), image by image (row ``i * A + a``),
    without the stop token (:func:`image_once`)."""
    return image_once(model, processor, images, questions, max_new_tokens=max_new_tokens,
                      token=None).tokens


def generate_answers(model, processor, store, ids: Sequence[str],
                     questions: Mapping[str, str], *, batch_images: int,
                     max_new_tokens: int) -> pl.DataFrame:
    """Every question's answer for every image in ``ids``, image-once.

    ``questions``: name (an attribute column, or ``group:<name>``) -> question. Images go in
    batches of ``batch_images`` (each with all its questions). Returns columns isic_id,
    attribute (the name), answer (the generated text, special tokens stripped), value
    (``parse_number(answer)``, null when unparsable); one row per (image, question), image by
    image.
    """
    if batch_images < 1:
        raise ValueError("batch_images must be >= 1")
    names = list(questions)
    texts = [questions[a] for a in names]
    tok = processor.tokenizer
    answers: list[str] = []
    done = Progress(len(ids), "answered images", log=log)
    for lo in range(0, len(ids), batch_images):
        chunk = ids[lo:lo + batch_images]
        tokens = image_once_tokens(model, processor, [store.read(i) for i in chunk], texts,
                                   max_new_tokens=max_new_tokens)
        answers += tok.batch_decode(tokens, skip_special_tokens=True)
        done.update(lo + len(chunk))
    return answers_frame([(i, a) for i in ids for a in names], answers)

