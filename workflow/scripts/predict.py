"""Fig. 2's answers for one shard of the test images: every configured attribute's question,
generated greedily (image-once) by the base Qwen2-VL (untuned) or the base with a merged
LoRA adapter (tuned)."""

import logging

import polars as pl

from skinground import cli
from skinground.data import open_images
from skinground.inference import load_qwen
from skinground.io import atomic_path, read_lines
from skinground.predict import generate_answers
from skinground.shards import shard_ids

log = logging.getLogger("skinground")


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--base", required=True, help="base Qwen2-VL directory")
    p.add_argument("--adapter", help="LoRA adapter directory (omit: the untuned model)")
    p.add_argument("--images", required=True, help="train-image.hdf5 or a folder of JPEGs")
    p.add_argument("--test-ids", required=True, help="test isic_ids, one per line")
    p.add_argument("--model", type=cli.json_arg, required=True, help="config section model")
    p.add_argument("--attributes", type=cli.json_arg, required=True, help="config attributes")
    p.add_argument("--predict", type=cli.json_arg, required=True, help="config section predict")
    p.add_argument("--shard", type=int, default=0, help="which of predict.shards (0-based)")
    p.add_argument("--out", required=True, help="predictions parquet")
    a = p.parse_args()

    model, processor = load_qwen(a.base, a.model, a.adapter)
    name = "tuned" if a.adapter else "untuned"

    ids = sorted(set(read_lines(a.test_ids)))
    limit = a.predict["max_test_images"]
    if limit is not None:
        ids = ids[:limit]
    ids = shard_ids(ids, a.predict["shards"], a.shard)
    log.info("%s model on %s (%s): shard %d/%d, %d test images x %d attributes", name,
             model.device, model.dtype, a.shard + 1, a.predict["shards"], len(ids),
             len(a.attributes))
    with open_images(a.images) as store:
        answers = generate_answers(model, processor, store, ids, a.attributes,
                                   batch_images=a.predict["batch_images"],
                                   max_new_tokens=a.predict["max_new_tokens"])
    answers = answers.select(pl.lit(name).alias("model"), pl.all())
    n_bad = answers["value"].null_count()
    log.info("%d answers, %d unparsable", answers.height, n_bad)
    with atomic_path(a.out) as tmp:
        answers.write_parquet(tmp)


if __name__ == "__main__":
    cli.main(run)
