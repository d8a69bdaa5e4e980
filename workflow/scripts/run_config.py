"""The run's resolved config (every file and --config merged) less its bookkeeping keys
(``core.sections.BOOKKEEPING``: they change no result), for ``skinground query``."""

import yaml

from skinground.core import script
from skinground.core.io import write_text


def main(snakemake) -> None:
    write_text(snakemake.output[0], yaml.safe_dump(snakemake.params.config, sort_keys=False,
                                                   allow_unicode=True))


if __name__ == "__main__":
    script.run(main, snakemake)  # noqa: F821 - set by Snakemake's script: directive
