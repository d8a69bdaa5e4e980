"""What every entry point in workflow/scripts/ shares: argument parsing and logging.

Rules hand a script the config sections it depends on as JSON strings (``--params``), the
same values Snakemake records as the rule's ``params`` (so a change reruns the rule).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def parser(description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description)


def json_arg(text: str):
    """argparse type for a JSON value given on the command line."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc


def setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def main(run) -> None:
    """Run ``run()``; a known input error ends the process with its message, not a trace."""
    from .errors import InputError

    setup_logging()
    try:
        run()
    except InputError as exc:
        logging.getLogger("skinground").error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
