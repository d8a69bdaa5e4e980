"""Retrieval for a new query image, with the hierarchical method computed on the fly.

The paper's hierarchical method needs only the image-only database B^(im) of the train
images: the top b candidates by h_im are embedded with the question Q(a) by forward passes of
the tuned model, on the fly, and re-ranked by h_im,a — no stored per-attribute database.
:func:`on_the_fly` is that candidate function; with the same model it returns what the stored
h_im,a database holds (the forward pass is deterministic), so both paths give the same top-k.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from skinground.embed import prefix_shared_embeddings
from skinground.retrieve import CandidateFn, TopK, hierarchical


def on_the_fly(model, processor, store, train_ids: Sequence[str], question: str, *,
               batch_images: int = 8) -> CandidateFn:
    """``candidate_ima`` for :func:`skinground.retrieve.rerank`: h_im,a of the given train
    rows, computed by prefix-shared forward passes on their images."""
    train_ids = list(train_ids)

    def embed_rows(rows: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(rows), batch_images):
            images = [store.read(train_ids[r]) for r in rows[start:start + batch_images]]
            _, h_ima = prefix_shared_embeddings(model, processor, images, [question],
                                                batch_images=batch_images)
            out.append(h_ima[:, 0].float().numpy())
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)

    return embed_rows


def query_image(model, processor, image: Image.Image, question: str, *, im_index, store,
                train_ids: Sequence[str], b: int, k: int, batch_images: int = 8) -> TopK:
    """Top ``k`` train rows for one new image and one attribute's question (method b)."""
    h_im, h_ima = prefix_shared_embeddings(model, processor, [image], [question],
                                           batch_images=1)
    return hierarchical(im_index, h_im.float().numpy(), h_ima[:, 0].float().numpy(), b=b, k=k,
                        candidate_ima=on_the_fly(model, processor, store, train_ids, question,
                                                 batch_images=batch_images))
