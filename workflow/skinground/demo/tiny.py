"""The embedded demo's models, built locally: a tiny Qwen2-VL, a tiny CLIP and a tiny SigLIP.

:func:`build_tiny_qwen2vl` writes a randomly initialised ``Qwen2VLForConditionalGeneration``
(the 7B's classes, a small config) with a locally trained Qwen2-style byte-level BPE that
splits digits and has Qwen2-VL's special tokens and chat template, in the same on-disk format
as ``Qwen/Qwen2-VL-7B-Instruct``, so :func:`skinground.model.loading.load_mllm` reads it through the
same ``from_pretrained`` path. :func:`build_tiny_clip` and :func:`build_tiny_siglip` stand in
for the image encoders (MONET's CLIP format, MedSigLIP's SigLIP format;
:func:`skinground.model.loading.load_encoder` reads both). Nothing is downloaded: the weights are
random.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from tokenizers.models import BPE
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
)

from skinground.core.io import atomic_path
from skinground.model.loading import (
    EOS_TOKEN,
    IMAGE_TOKEN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_TOKEN,
    QWEN2VL_CHAT_TEMPLATE,
    SIGLIP_MEAN,
    SIGLIP_STD,
    SPECIAL_TOKENS,
    ImageOnlyQwen2VLProcessor,
    configure_pixels,
)

#: Qwen2's pre-tokenizer split; ``\p{N}`` alone makes every digit its own token.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
#: Text the tokenizer always sees besides the corpus (the chat scaffolding).
_BASE_CORPUS = (
    "system\nYou are a helpful assistant.", "user\n", "assistant\n",
    "".join(chr(c) for c in range(32, 127)), "0123456789 ² ³ ° ± µ mm mm² %",
)


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Train a Qwen2-style byte-level BPE on ``corpus``; Qwen2-VL's special tokens and template.

    The special tokens are appended after the learned vocabulary, as in Qwen2-VL; the total
    size is at most ``vocab_size`` (less if the corpus has too few merges to learn).
    """
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    n_learned = vocab_size - len(SPECIAL_TOKENS)
    if n_learned < len(pre_tokenizers.ByteLevel.alphabet()):
        raise ValueError(f"vocab_size {vocab_size} is too small for a byte-level BPE (>= 270)")
    tok = Tokenizer(BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated"), byte_level]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=n_learned, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*_BASE_CORPUS, *corpus], trainer)
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        model_max_length=32768, clean_up_tokenization_spaces=False,
        chat_template=QWEN2VL_CHAT_TEMPLATE,
    )








def special_token_ids(tokenizer) -> dict[str, int]:
    """The ids of Qwen2-VL's special tokens in ``tokenizer``; all must exist."""
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    missing = [tok for tok, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"tokenizer lacks Qwen2-VL special tokens: {missing}")
    return ids


# --------------------------------------------------------------------------- building


def qwen2vl_config(ids: dict[str, int], vocab_size: int, *, text_hidden: int,
                         intermediate: int, layers: int, heads: int, kv_heads: int,
                         mrope_section: Sequence[int], vision_depth: int, vision_embed: int,
                         vision_heads: int, patch_size: int, spatial_merge: int) -> Qwen2VLConfig:
    head_dim = text_hidden // heads
    if head_dim * heads != text_hidden or 2 * sum(mrope_section) != head_dim:
        raise ValueError(
            f"need text_hidden % heads == 0 and 2*sum(mrope_section) == head_dim ({head_dim})"
        )
    if vision_embed % vision_heads or (vision_embed // vision_heads) % 4:
        raise ValueError("vision_embed / vision_heads must be a multiple of 4")
    text = dict(
        vocab_size=vocab_size, hidden_size=text_hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=32768, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6,
                         "mrope_section": list(mrope_section)},
        bos_token_id=ids[PAD_TOKEN], eos_token_id=ids[EOS_TOKEN], pad_token_id=ids[PAD_TOKEN],
    )
    vision = dict(
        depth=vision_depth, embed_dim=vision_embed, hidden_size=text_hidden,
        num_heads=vision_heads, mlp_ratio=4, patch_size=patch_size,
        spatial_merge_size=spatial_merge, temporal_patch_size=2,
    )
    return Qwen2VLConfig(
        text_config=text, vision_config=vision, tie_word_embeddings=False,
        image_token_id=ids[IMAGE_TOKEN], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )


def build_tiny_qwen2vl(out_dir: str | os.PathLike, *, corpus: Iterable[str] = (),
                       image_size: int | None = 112, seed: int = 0, vocab_size: int = 512,
                       text_hidden: int = 64, intermediate: int = 128, layers: int = 2,
                       heads: int = 4, kv_heads: int = 2,
                       mrope_section: Sequence[int] = (2, 3, 3), vision_depth: int = 2,
                       vision_embed: int = 32, vision_heads: int = 2, patch_size: int = 14,
                       spatial_merge: int = 2, tokenizer: PreTrainedTokenizerFast | None = None,
                       vocab_rows: int | None = None, min_pixels: int | None = None,
                       max_pixels: int | None = None) -> Path:
    """Write a random tiny Qwen2-VL (model, tokenizer, processor) to ``out_dir``, atomically.

    Same classes and file layout as Qwen2-VL-7B-Instruct. The tokenizer: a small BPE trained on
    ``corpus`` (``vocab_size``), or ``tokenizer`` as given (e.g. :func:`qwen2_tokenizer`); the
    embedding and LM head have ``vocab_rows`` rows (default: the tokenizer's size; the 7B pads
    to 151,936). Images: a fixed ``image_size`` square ((image_size / (patch_size x
    spatial_merge))**2 image tokens), or with ``image_size=None`` native resolution within
    ``min_pixels``/``max_pixels`` (the 7B's: 3,136 and 12,845,056).
    """
    if tokenizer is None:
        tokenizer = build_tokenizer(corpus, vocab_size)
    ids = special_token_ids(tokenizer)
    rows = vocab_rows or len(tokenizer)
    if rows < len(tokenizer):
        raise ValueError(f"vocab_rows {rows} < the tokenizer's {len(tokenizer)} tokens")
    if image_size is not None:
        min_pixels = max_pixels = image_size * image_size
    elif min_pixels is None or max_pixels is None:
        raise ValueError("without image_size, give min_pixels and max_pixels")
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size, merge_size=spatial_merge, temporal_patch_size=2,
        min_pixels=min_pixels, max_pixels=max_pixels,
    )
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer,
                                          chat_template=QWEN2VL_CHAT_TEMPLATE)
    if image_size is not None:
        configure_pixels(processor, image_size=image_size)
    else:
        configure_pixels(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    config = qwen2vl_config(
        ids, rows, text_hidden=text_hidden, intermediate=intermediate, layers=layers,
        heads=heads, kv_heads=kv_heads, mrope_section=mrope_section, vision_depth=vision_depth,
        vision_embed=vision_embed, vision_heads=vision_heads, patch_size=patch_size,
        spatial_merge=spatial_merge,
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids[PAD_TOKEN], pad_token_id=ids[PAD_TOKEN],
        eos_token_id=[ids[EOS_TOKEN], ids[PAD_TOKEN]], do_sample=False,
    )
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out_dir)


def build_tiny_clip(out_dir: str | os.PathLike, *, seed: int = 0, image_size: int = 224,
                    patch_size: int = 14, hidden: int = 32, layers: int = 2, heads: int = 2,
                    projection_dim: int = 16, text_vocab: int = 64) -> Path:
    """Write a random tiny ``CLIPModel`` + ``CLIPImageProcessor`` (MONET stand-in), atomically.

    Only the image processor is saved (no tokenizer): the workflow uses image features only.
    """
    config = CLIPConfig(
        **_towers(hidden, layers, heads, text_vocab, text_positions=77, image_size=image_size,
                  patch_size=patch_size),
        projection_dim=projection_dim,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
    )
    return _save_random(CLIPModel, config, image_processor, out_dir, seed)


def build_tiny_siglip(out_dir: str | os.PathLike, *, seed: int = 0, image_size: int = 64,
                      patch_size: int = 8, hidden: int = 32, layers: int = 2, heads: int = 2,
                      text_vocab: int = 64) -> Path:
    """Write a random tiny ``SiglipModel`` + ``SiglipImageProcessor`` (the stand-in for a
    SigLIP-format encoder such as MedSigLIP), atomically: ``image_size`` px in
    ``patch_size`` patches, the attention-pooling head, a resize without crop, mean/std 0.5.

    Only the image processor is saved (no tokenizer): the workflow uses image features only.
    """
    config = SiglipConfig(**_towers(hidden, layers, heads, text_vocab, text_positions=16,
                                    image_size=image_size, patch_size=patch_size))
    image_processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size}, resample=2,  # bilinear
        image_mean=list(SIGLIP_MEAN), image_std=list(SIGLIP_STD),
    )
    return _save_random(SiglipModel, config, image_processor, out_dir, seed)


def _towers(hidden: int, layers: int, heads: int, text_vocab: int, *, text_positions: int,
            image_size: int, patch_size: int) -> dict:
    """A tiny dual encoder's text_config and vision_config (the same tower width and depth)."""
    tower = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                 num_attention_heads=heads)
    return {"text_config": {**tower, "vocab_size": text_vocab,
                            "max_position_embeddings": text_positions, "pad_token_id": 0,
                            "bos_token_id": text_vocab - 2, "eos_token_id": text_vocab - 1},
            "vision_config": {**tower, "image_size": image_size, "patch_size": patch_size}}


def _save_random(model_class, config, image_processor, out_dir: str | os.PathLike,
                 seed: int) -> Path:
    """A random ``model_class(config)`` (seeded) and its image processor, saved atomically."""
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
    return Path(out_dir)


#: The tiny stand-in of each encoder format (``model.encoders.<name>.format``).
TINY_ENCODERS = {"clip": build_tiny_clip, "siglip": build_tiny_siglip}


def demo_corpus(attributes: Mapping[str, Mapping]) -> list[str]:
    """The tokenizer's corpus for the demo: the questions, and numbers as the answers write
    them (so the BPE sees digits, signs and decimal points)."""
    return [*(a["question"] for a in attributes.values()),
            *(f"{v / 100:.2f}" for v in range(-5000, 5000, 7))]


def build_demo_models(tiny: Mapping, attributes: Mapping[str, Mapping], *,
                      base: str | os.PathLike,
                      encoders: Mapping[str, tuple[str, str | os.PathLike]]) -> None:
    """The demo's tiny Qwen2-VL (config ``model.tiny``) at ``base``, and for every encoder
    (name -> (format, folder)) the tiny model of its format (:data:`TINY_ENCODERS`). The
    stand-ins have a fixed image size (the demo's preprocessing matches it; another size
    interpolates their position embeddings), so an encoder's preprocessing is not theirs."""
    dims = dict(tiny)
    seed = dims.pop("seed")
    build_tiny_qwen2vl(base, corpus=demo_corpus(attributes), seed=seed, **dims)
    for name, (fmt, folder) in encoders.items():
        if fmt not in TINY_ENCODERS:
            raise ValueError(f"encoder {name}: no tiny model of format {fmt!r} (known: "
                             f"{', '.join(TINY_ENCODERS)})")
        TINY_ENCODERS[fmt](folder, seed=seed)
