"""One shard of embeddings: h_im and every h_im,a (tuned model), h_im (untuned model), or
MONET's image features, for a contiguous slice of one split's images."""

import logging

import numpy as np
import torch

from skinground import cli
from skinground.data import open_images
from skinground.io import read_lines
from skinground.shards import IMAGE_SPACE, shard_ids, write_shard

log = logging.getLogger("skinground")


def qwen_spaces(a, ids, store) -> dict:
    from skinground.embed import extract
    from skinground.inference import load_qwen

    model, processor = load_qwen(a.base, a.model, a.adapter)
    attributes = list(a.questions) if a.kind == "tuned" else []
    questions = [a.questions[name]["question"] for name in attributes]
    _, h_im, h_ima = extract(model, processor, store, ids, questions,
                             batch_images=a.embed["batch_images"])
    return {IMAGE_SPACE: h_im, **{name: h_ima[:, j] for j, name in enumerate(attributes)}}


def monet_space(a, ids, store) -> dict:
    from skinground.inference import device_and_dtype
    from skinground.models import clip_image_features, load_clip

    device, dtype = device_and_dtype()
    model, processor = load_clip(a.monet, dtype=dtype, device=device)
    batch = a.embed["batch_images"]
    feats = [clip_image_features(model, processor, [store.read(i) for i in ids[s:s + batch]])
             .cpu().numpy() for s in range(0, len(ids), batch)]
    return {IMAGE_SPACE: np.concatenate(feats) if feats else np.empty((0, 0), np.float16)}


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--kind", choices=["tuned", "untuned", "monet"], required=True)
    p.add_argument("--base", help="base Qwen2-VL directory (tuned, untuned)")
    p.add_argument("--adapter", help="LoRA adapter directory (tuned)")
    p.add_argument("--monet", help="MONET (CLIP) directory (monet)")
    p.add_argument("--images", required=True)
    p.add_argument("--ids", required=True, help="the split's isic_ids, one per line")
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--model", type=cli.json_arg, help="config model (the pixel budget)")
    p.add_argument("--questions", type=cli.json_arg, help="config attributes (questions)")
    p.add_argument("--embed", type=cli.json_arg, required=True, help="config section embed")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: default)")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ids = shard_ids(read_lines(a.ids), a.shards, a.shard)
    log.info("%s: shard %d/%d, %d images", a.kind, a.shard + 1, a.shards, len(ids))
    with open_images(a.images) as store:
        spaces = (monet_space if a.kind == "monet" else qwen_spaces)(a, ids, store)
    write_shard(a.out, ids, spaces)


if __name__ == "__main__":
    cli.main(run)
