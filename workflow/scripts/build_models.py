"""Demo: build a tiny Qwen2-VL (the 7B's classes, a small config) and, for every image
encoder of the config, a tiny CLIP or SigLIP (by its format) locally, saved with
save_pretrained so they load like the real checkpoints."""

import logging

from skinground.core import script
from skinground.demo import tiny


def main(snakemake) -> None:
    out, formats = snakemake.output, snakemake.params.formats
    # output.encoders is in params.formats' order (model.encoders')
    encoders = {name: (fmt, folder)
                for (name, fmt), folder in zip(formats.items(), out.encoders, strict=True)}
    tiny.build_demo_models(snakemake.params.tiny, snakemake.params.attributes,
                           base=out.base, encoders=encoders)
    logging.getLogger("skinground").info("built %s and %s", out.base,
                                         ", ".join(f"{n} ({f}): {d}"
                                                   for n, (f, d) in encoders.items()))


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
