"""Demo: build a tiny Qwen2-VL (the 7B's classes, a small config) and a tiny CLIP (MONET's
stand-in) locally, saved with save_pretrained so they load like the real checkpoints."""

import logging

from skinground import script
from skinground.demo import tiny


def main(snakemake) -> None:
    out = snakemake.output
    tiny.build_demo_models(snakemake.params.tiny, snakemake.params.attributes,
                           base=out.base, monet=out.monet)
    logging.getLogger("skinground").info("built %s and %s", out.base, out.monet)


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
