"""One shard of embeddings for a contiguous slice of one split's images: h_im and every
h_im,a (tuned model), h_im (untuned model), an image encoder's features (MONET, MedSigLIP,
...: ``params.encoder_format`` set), or the composed h_im,G of every group (tuned model,
``params.image_space`` false)."""

import logging

import numpy as np

from skinground.core import provenance, script
from skinground.core.io import read_lines
from skinground.core.outputs import IMAGE_SPACE
from skinground.data.images import open_images
from skinground.data.shards import shard_ids, write_shard

log = logging.getLogger("skinground")


def qwen_spaces(snakemake, ids, store) -> dict:
    from skinground.model.embed import extract
    from skinground.model.loading import load_qwen

    model, processor = load_qwen(snakemake.input.base, snakemake.params.preprocessing,
                                 snakemake.input.get("adapter"))
    spaces = snakemake.params.questions  # space -> question; empty for the untuned model
    _, h_im, h_ima = extract(model, processor, store, ids, list(spaces.values()),
                             batch_images=snakemake.params.batch_images,
                             token=snakemake.params.h_ima_token)
    out = {name: h_ima[:, j] for j, name in enumerate(spaces)}
    return {IMAGE_SPACE: h_im, **out} if snakemake.params.image_space else out


def encoder_space(snakemake, ids, store) -> dict:
    from skinground.model.loading import (
        device_and_dtype,
        encoder_image_size,
        image_features,
        load_encoder,
    )

    device, dtype = device_and_dtype()
    model, processor = load_encoder(snakemake.input.encoder, snakemake.params.encoder_format,
                                    preprocessing=snakemake.params.preprocessing, dtype=dtype,
                                    device=device)
    size, native = snakemake.params.preprocessing["size"], encoder_image_size(model)
    if size != native:
        log.warning("%s: images of %d px, the model's position embeddings are for %d px: "
                    "interpolated", snakemake.wildcards.model, size, native)
    batch = snakemake.params.batch_images
    feats = [image_features(model, processor, [store.read(i) for i in ids[s:s + batch]])
             .cpu().numpy() for s in range(0, len(ids), batch)]
    return {IMAGE_SPACE: np.concatenate(feats) if feats else np.empty((0, 0), np.float16)}


def main(snakemake) -> None:
    script.torch_threads(snakemake.threads)
    # embed_groups has no model wildcard: the composed embeddings are the tuned model's
    kind, shard, shards = (snakemake.wildcards.get("model", "tuned"),
                           int(snakemake.wildcards.shard), snakemake.params.shards)
    ids = shard_ids(read_lines(snakemake.input.ids), shards, shard)
    log.info("%s: shard %d/%d, %d images", kind, shard + 1, shards, len(ids))
    with open_images(snakemake.input.images) as store:
        encoder = snakemake.params.get("encoder_format")
        spaces = (encoder_space if encoder else qwen_spaces)(snakemake, ids, store)
    record = None if encoder else provenance.embedding_record(
        snakemake.params.preprocessing, snakemake.params.h_ima_token,
        snakemake.input.get("adapter"))
    write_shard(snakemake.output[0], ids, spaces, record)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
