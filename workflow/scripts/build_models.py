"""Demo: build a tiny Qwen2-VL (the 7B's classes, a small config) and a tiny CLIP (MONET's
stand-in) locally, saved with save_pretrained so they load like the real checkpoints."""

import logging

from skinground import cli, models


def run() -> None:
    p = cli.parser(__doc__)
    p.add_argument("--tiny", type=cli.json_arg, required=True, help="config model.tiny")
    p.add_argument("--questions", type=cli.json_arg, required=True,
                   help="the attribute questions (the tokenizer's corpus)")
    p.add_argument("--base", required=True, help="output directory of the tiny Qwen2-VL")
    p.add_argument("--monet", required=True, help="output directory of the tiny CLIP")
    a = p.parse_args()
    t = dict(a.tiny)
    seed = t.pop("seed")
    # Numbers as the answers write them, so the BPE sees digits, signs and decimal points.
    corpus = [*a.questions, *(f"{v / 100:.2f}" for v in range(-5000, 5000, 7))]
    models.build_tiny_qwen2vl(a.base, corpus=corpus, seed=seed, **t)
    models.build_tiny_clip(a.monet, seed=seed)
    logging.getLogger("skinground").info("built %s and %s", a.base, a.monet)


if __name__ == "__main__":
    cli.main(run)
