"""Fig. 2's answers for one shard of the test images: every configured attribute's question,
generated greedily (image-once) by the base Qwen2-VL (untuned) or the base with a merged
LoRA adapter (tuned)."""

import logging

import polars as pl

from skinground.core import script
from skinground.core.io import atomic_path, read_lines
from skinground.data.images import open_images
from skinground.data.shards import shard_ids
from skinground.model.loading import load_qwen
from skinground.model.predict import generate_answers

log = logging.getLogger("skinground")


def main(snakemake) -> None:
    script.torch_threads(snakemake.threads)
    cfg, name = snakemake.params.predict, snakemake.wildcards.model
    shard = int(snakemake.wildcards.shard)
    model, processor = load_qwen(snakemake.input.base, snakemake.params.pixels,
                                 snakemake.input.adapter or None)
    ids = sorted(set(read_lines(snakemake.input.test)))
    if cfg["max_test_images"] is not None:
        ids = ids[:cfg["max_test_images"]]
    ids = shard_ids(ids, cfg["shards"], shard)
    questions = snakemake.params.questions
    log.info("%s model on %s (%s): shard %d/%d, %d test images x %d questions", name,
             model.device, model.dtype, shard + 1, cfg["shards"], len(ids), len(questions))
    with open_images(snakemake.input.images) as store:
        answers = generate_answers(model, processor, store, ids, questions,
                                   batch_images=snakemake.params.batch_images,
                                   max_new_tokens=cfg["max_new_tokens"])
    answers = answers.select(pl.lit(name).alias("model"), pl.all())
    log.info("%d answers, %d unparsable", answers.height, answers["value"].null_count())
    with atomic_path(snakemake.output[0]) as tmp:
        answers.write_parquet(tmp)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
