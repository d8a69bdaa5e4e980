"""The retrieval embeddings from Qwen2-VL's decoder: h_im(I) and h_im,a(I).

Both come from the decoder's last layer *after* its final RMSNorm: ``hidden_states[-1]`` as the
model returns it with ``output_hidden_states=True``, which transformers ties to
``last_hidden_state`` of the decoder (``Qwen2VLModel``). The chat text of (image, question) is
``loading.chat_prompt``'s, with the processor's ``<|image_pad|>`` expansion::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n
    <|vision_start|><|image_pad|>xn<|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n
    '------------------------ prefix ------------------------''----------- suffix ------------'

- h_im(I): the mean of the last-layer states over the ``<|image_pad|>`` positions of the prefix
  (the template up to and including ``<|vision_end|>``; image only).
- h_im,a(I): the last-layer state of one token of the full prompt for Q(a), one per attribute
  a: by default the final token of the question (the paper's Eq. 3), or the prompt's last
  token (the ``\\n`` closing the assistant header): ``token``, config ``embed.h_ima_token``
  (:data:`skinground.core.names.H_IMA_TOKENS`).

The tests hold it to the plain reference: one forward per (image, question), plus one per
prefix. :func:`prefix_shared_embeddings`
computes the same numbers with two forwards per
batch of images: the left-padded image prefixes once (h_im from that pass, its KV cache kept),
then every image's cache repeated once per question and all suffixes as one batch, with
explicit 3-D M-RoPE positions continuing each prefix. :func:`extract` runs it over an image
store and returns float16 arrays (the shard storage format).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from skinground.core.progress import Progress
from skinground.model import prefix as P

log = logging.getLogger(__name__)


def _hidden_size(model) -> int:
    return model.config.get_text_config(decoder=True).hidden_size


# --------------------------------------------------------------------------- prefix sharing


@torch.inference_mode()
def prefix_shared_embeddings(model, processor, images: Sequence[Image.Image],
                             questions: Sequence[str], *, batch_images: int,
                             token: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Same as :func:`naive_embeddings`, two decoder passes per batch of ``batch_images``.

    1. The image prefixes of the batch in one forward, left-padded (images of different sizes
       give different numbers of image tokens), with the M-RoPE positions of the model's own
       ``get_rope_index``; h_im is the mean over each row's ``<|image_pad|>`` positions.
    2. All suffixes of every image (row ``i * A + a``), right-padded, as one batch of
       N x A sequences (or two by length) over that cache, each image's prefix keys held once
       (:func:`skinground.model.prefix.run_shared_suffixes`). The prefix pads are masked; the
       explicit 3-D positions continue at the prefix's last position + 1 (Qwen2-VL's rope
       delta: text after an image resumes at the image's largest position + 1, in all three
       sections). h_im,a is the state of each row's ``token`` (:func:`P.h_ima_positions`;
       config ``embed.h_ima_token``; None only with no questions).

    With no questions only step 1 runs (``h_ima`` has shape ``[N, 0, d]``). Returns float32
    CPU tensors; the model's dtype and device are used for the passes (means in float32).
    """
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
    _, suffixes = P.split_template(processor, questions)
    tok = processor.tokenizer
    n_q = len(questions)
    d = _hidden_size(model)
    if n_q:  # the suffixes once, right-padded: [A, Ls]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        s_ids, s_mask = P.pad_rows(
            [tok(s, add_special_tokens=False)["input_ids"] for s in suffixes], pad_id)
        s_ids, s_mask = s_ids.to(model.device), s_mask.to(model.device)
        read_at = P.h_ima_positions(tok, s_ids, s_mask, token)

    h_im_all, h_ima_all = [], []
    for start in range(0, len(images), batch_images):
        chunk = list(images[start:start + batch_images])
        n = len(chunk)
        prefix = P.run_prefix(model, P.to_model(P.encode_prefixes(processor, chunk), model))
        h_im_all.append(P.image_states_mean(model, prefix).cpu())
        if not n_q:
            h_ima_all.append(torch.empty(n, 0, d))
            continue
        h_ima = P.run_shared_suffixes(model, prefix, s_ids, s_mask, read_at=read_at).read.float()
        h_ima_all.append(h_ima.view(n, n_q, d).cpu())
        del prefix, h_ima

    if not h_im_all:
        return torch.empty(0, d), torch.empty(0, n_q, d)
    return torch.cat(h_im_all), torch.cat(h_ima_all)


# --------------------------------------------------------------------------- extraction


def extract(model, processor, store, ids: Sequence[str], questions: Sequence[str], *,
            batch_images: int, token: str | None, progress: bool = True,
            ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """h_im and h_im,a (read at ``token``: config ``embed.h_ima_token``; None only with no
    questions) for every id of ``store`` (``store.read(id)`` -> PIL RGB), in order.

    Returns ``(ids, h_im float16 [N, d], h_ima float16 [N, A, d])``, row k belonging to
    ``ids[k]``. Logs progress about every 10% of the batches when ``progress``. Raises
    ``ValueError`` if a value does not fit in float16.
    """
    if batch_images < 1:
        raise ValueError(f"batch_images must be >= 1, got {batch_images}")
    ids = list(ids)
    d = _hidden_size(model)
    n, n_q = len(ids), len(questions)
    h_im = np.empty((n, d), dtype=np.float16)
    h_ima = np.empty((n, n_q, d), dtype=np.float16)
    n_batches = -(-n // batch_images)
    done = Progress(n, "embedded images", log=log)
    for b in range(n_batches):
        lo, hi = b * batch_images, min(n, (b + 1) * batch_images)
        images = [store.read(i) for i in ids[lo:hi]]
        e_im, e_ima = prefix_shared_embeddings(model, processor, images, questions,
                                               batch_images=batch_images, token=token)
        h_im[lo:hi] = e_im.numpy()
        h_ima[lo:hi] = e_ima.numpy()
        if not (np.isfinite(h_im[lo:hi]).all() and np.isfinite(h_ima[lo:hi]).all()):
            raise ValueError(f"non-finite embedding (float16 overflow?) in images "
                             f"{ids[lo]}..{ids[hi - 1]}")
        if progress:
            done.update(hi)
    return ids, h_im, h_ima
