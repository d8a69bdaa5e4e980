"""The answers: y_a(I) as the tuples write it and the model is trained to say, a group's
answer y_G(I), and reading a generated answer back as a number (the one place of the answer
format and its parse).

- :func:`format_answer`: the value with the attribute's fixed decimals ("1.23").
- :func:`group_answer`: a group's values in order, joined by :data:`SEPARATOR`;
  :func:`parse_group_answer` reads one back.
- :func:`parse_number`: the strict rule every R² of the tuned model uses;
  :func:`parse_number_lenient`: the first number anywhere (the untuned model's own table).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def format_answer(value: float, decimals: int) -> str:
    """y_a(I): the attribute value as text with a fixed number of decimals ("1.23")."""
    if value is None or not math.isfinite(value):
        raise ValueError(f"cannot write a missing or non-finite value as an answer: {value!r}")
    text = f"{value:.{decimals}f}"
    # "-0.00" carries no information beyond "0.00"; keep answers canonical.
    if float(text) == 0.0:
        text = text.lstrip("-")
    return text


#: Trailing special tokens a decoded answer may still carry.
_TRAILING_TOKENS = ("<|im_end|>", "<|endoftext|>")


#: A number at the start of the answer, followed by the end or by whitespace.
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?=\s|$)")


def parse_number(text: str | None) -> float | None:
    """The answer ``text`` as a number, or None when it is unparsable.

    Rule: strip surrounding whitespace and any trailing ``<|im_end|>`` / ``<|endoftext|>``
    tokens (then whitespace again); the text must then START with a decimal number
    ``[-+]?\\d+(\\.\\d+)?([eE][-+]?\\d+)?`` that is followed by the end of the text or by
    whitespace; anything after that whitespace (a unit, words) is ignored. So ``"12.5 mm²"``
    -> 12.5, ``"1e3"`` -> 1000.0, but ``"1.2.3"``, ``"12.5abc"``, ``".5"``, ``"7."``,
    ``"abc"``, ``""``, ``"nan"``, ``"inf"`` and numbers that overflow to ±inf -> None.
    """
    if text is None:
        return None
    text = text.strip()
    stripped = True
    while stripped:
        stripped = False
        for token in _TRAILING_TOKENS:
            if text.endswith(token):
                text = text[: -len(token)].rstrip()
                stripped = True
    match = _NUMBER.match(text)
    if match is None:
        return None
    value = float(match.group())
    return value if math.isfinite(value) else None


_ANY_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.]*\d)")


def parse_number_lenient(text: str | None) -> float | None:
    """The first number anywhere in ``text`` ("The area is approximately 12.5 mm²." -> 12.5),
    or None. For the untuned model's own table only, reported as such: the tuned model's
    answers keep :func:`parse_number`'s strict rule. A number glued to letters or to another
    number ("abc12", "1.2.3") does not count."""
    if text is None:
        return None
    strict = parse_number(text)
    if strict is not None:
        return strict
    for match in _ANY_NUMBER.finditer(text):
        value = float(match.group())
        if math.isfinite(value):
            return value
    return None


#: Between the values of a group answer.
SEPARATOR = "; "


def group_answer(values: Sequence[float], decimals: Sequence[int]) -> str:
    """y_G(I): the group's values in order, each as its attribute's answer, "; "-joined."""
    return SEPARATOR.join(format_answer(v, d) for v, d in zip(values, decimals, strict=True))


def parse_group_answer(text: str | None, n: int) -> list[float | None]:
    """The ``n`` values of a group answer (None where a part is missing or no number)."""
    parts = (text or "").split(SEPARATOR.strip())
    values = [parse_number(p) for p in parts[:n]]
    return values + [None] * (n - len(values))
