"""The paper's statements about Fig. 4, as pairs of methods: which pairs the evaluation tests
(``evaluation.significance``, ``evaluate/paired_tests.csv``) and an expectation file may name
(``evaluation.expected``). Standard library only: the Snakefile checks the expectation files
with it when the workflow is planned."""

from __future__ import annotations

from collections.abc import Sequence

from skinground.core.plan import QWEN_METHODS

#: The kinds of a claim about two methods: the first retrieves closer values ("better"), or
#: not farther ones ("no_worse").
CLAIM_KINDS = ("better", "no_worse")


def claim_pairs(present: Sequence[str]) -> list[tuple[str, str, str]]:
    """The paper's statements about Fig. 4 as (first, second, kind) among the methods
    ``present`` (a pair needs both), in this order: (a) beats (c), (d) and each encoder ((e),
    (e2), ...: "most effective"); (b) is no worse than (a); (c) beats (d) and each encoder
    ("more effective than the prior approaches"); each encoder beats (d) ("MONET ... performs
    better"). Any method not of ``plan.QWEN_METHODS`` is an encoder."""
    names = list(present)
    encoders = [m for m in names if m not in QWEN_METHODS]
    pairs = [("image_text", "image_only", "better"), ("image_text", "image_untuned", "better"),
             *(("image_text", e, "better") for e in encoders),
             ("hierarchical", "image_text", "no_worse"),
             ("image_only", "image_untuned", "better"),
             *(("image_only", e, "better") for e in encoders),
             *((e, "image_untuned", "better") for e in encoders)]
    return [p for p in pairs if p[0] in names and p[1] in names]
