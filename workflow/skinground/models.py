"""Model building and loading: Qwen2-VL (the MLLM) and CLIP (the MONET stand-in).

One loading path serves both scales: ``build_tiny_qwen2vl`` writes a randomly initialised
``Qwen2VLForConditionalGeneration`` in the same on-disk format as ``Qwen/Qwen2-VL-7B-Instruct``,
and ``load_mllm`` reads either through ``from_pretrained``. Likewise ``build_tiny_clip`` /
``load_clip`` for MONET (``suinleelab/monet``, CLIP ViT-L/14 in transformers format).
Nothing is downloaded: tokenizers are trained locally, weights are random.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
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
    AutoImageProcessor,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)
from transformers.image_utils import SizeDict, make_flat_list_of_images
from transformers.processing_utils import ProcessorMixin

from skinground.errors import InputError
from skinground.io import atomic_path

#: Qwen2's pre-tokenizer split; ``\p{N}`` alone makes every digit its own token.
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

#: Qwen2-VL's added tokens, in the order of their ids (151643...) in the real tokenizer.
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
IMAGE_TOKEN = "<|image_pad|>"

#: Qwen2-VL-7B-Instruct's chat template (chat_template.json), verbatim.
QWEN2VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ASSISTANT_HEADER = "<|im_start|>assistant\n"

#: Text the tokenizer always sees besides the corpus (the chat scaffolding).
_BASE_CORPUS = (
    "system\nYou are a helpful assistant.", "user\n", "assistant\n",
    "".join(chr(c) for c in range(32, 127)), "0123456789 ² ³ ° ± µ mm mm² %",
)

#: ImageNet statistics, MONET's normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

MLLM_MODEL_TYPE = "qwen2_vl"
CLIP_MODEL_TYPE = "clip"
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


class ModelLoadError(InputError):
    """A model directory is missing, incomplete, or holds the wrong kind of model."""


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


# --------------------------------------------------------------------------- processor


def _square(image: Any, size: int) -> Image.Image:
    """An RGB PIL image resized (bicubic) to ``size`` x ``size``."""
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    return image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without the video processor (which needs torchvision).

    ``image_size``: when set, every image is first resized to that square (a multiple of
    ``patch_size * merge_size``), so each image gives ``(image_size / 28)**2`` image tokens.
    Saved in ``processor_config.json``; reloads with ``from_pretrained``.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None,
                 image_size: int | None = None, **kwargs):
        self.image_size = image_size
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def _process_images(self, images, **kwargs):
        if self.image_size:
            images = [_square(im, self.image_size) for im in make_flat_list_of_images(images)]
        return super()._process_images(images, **kwargs)


def configure_pixels(processor: ImageOnlyQwen2VLProcessor, *, min_pixels: int | None = None,
                     max_pixels: int | None = None, image_size: int | None = None) -> None:
    """Set the processor's pixel budget in place: a fixed square, or min/max pixels."""
    ip = processor.image_processor
    if image_size is not None:
        if min_pixels is not None or max_pixels is not None:
            raise ValueError("give either image_size or min_pixels/max_pixels, not both")
        factor = ip.patch_size * ip.merge_size
        if image_size <= 0 or image_size % factor:
            raise ValueError(f"image_size {image_size} must be a positive multiple of {factor}")
        processor.image_size = image_size
        min_pixels = max_pixels = image_size * image_size
    elif min_pixels is None and max_pixels is None:
        return
    else:
        processor.image_size = None
    ip.size = SizeDict(
        shortest_edge=min_pixels if min_pixels is not None else ip.size["shortest_edge"],
        longest_edge=max_pixels if max_pixels is not None else ip.size["longest_edge"],
    )


def image_token_count(processor: ImageOnlyQwen2VLProcessor, height: int, width: int) -> int:
    """How many ``<|image_pad|>`` tokens one image of this size becomes."""
    if processor.image_size:
        height = width = processor.image_size
    ip = processor.image_processor
    return ip.get_number_of_image_patches(height, width, {}) // ip.merge_size**2


def chat_prompt(processor, question: str) -> str:
    """The chat text for one image + ``question``, ending with the assistant header."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


# --------------------------------------------------------------------------- building


def _tiny_qwen2vl_config(ids: dict[str, int], vocab_size: int, *, text_hidden: int,
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


def build_tiny_qwen2vl(out_dir: str | os.PathLike, *, corpus: Iterable[str],
                       image_size: int = 112, seed: int = 0, vocab_size: int = 512,
                       text_hidden: int = 64, intermediate: int = 128, layers: int = 2,
                       heads: int = 4, kv_heads: int = 2,
                       mrope_section: Sequence[int] = (2, 3, 3), vision_depth: int = 2,
                       vision_embed: int = 32, vision_heads: int = 2, patch_size: int = 14,
                       spatial_merge: int = 2) -> Path:
    """Write a random tiny Qwen2-VL (model, tokenizer, processor) to ``out_dir``, atomically.

    Same classes and file layout as Qwen2-VL-7B-Instruct; images are resized to a fixed
    ``image_size`` square ((image_size / (patch_size * spatial_merge)))**2 image tokens).
    """
    tokenizer = build_tokenizer(corpus, vocab_size)
    ids = special_token_ids(tokenizer)
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=patch_size, merge_size=spatial_merge, temporal_patch_size=2,
        min_pixels=image_size * image_size, max_pixels=image_size * image_size,
    )
    processor = ImageOnlyQwen2VLProcessor(image_processor, tokenizer,
                                          chat_template=QWEN2VL_CHAT_TEMPLATE)
    configure_pixels(processor, image_size=image_size)
    config = _tiny_qwen2vl_config(
        ids, len(tokenizer), text_hidden=text_hidden, intermediate=intermediate, layers=layers,
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
    tower = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                 num_attention_heads=heads)
    config = CLIPConfig(
        text_config={**tower, "vocab_size": text_vocab, "max_position_embeddings": 77,
                     "pad_token_id": 0, "bos_token_id": text_vocab - 2,
                     "eos_token_id": text_vocab - 1},
        vision_config={**tower, "image_size": image_size, "patch_size": patch_size},
        projection_dim=projection_dim,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD),
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    with atomic_path(out_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        image_processor.save_pretrained(tmp)
    return Path(out_dir)


# --------------------------------------------------------------------------- loading


def _check_model_dir(path: str | os.PathLike, model_type: str) -> Path:
    """Raise ``ModelLoadError`` unless ``path`` holds a ``model_type`` config and weights."""
    root = Path(path)
    if not root.is_dir():
        raise ModelLoadError(f"model directory does not exist: {root}")
    config_file = root / "config.json"
    if not config_file.is_file():
        raise ModelLoadError(f"no config.json in model directory {root}")
    try:
        found = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ModelLoadError(f"unreadable config.json in {root}: {err}") from err
    if found != model_type:
        raise ModelLoadError(f"{root} holds a {found!r} model, expected {model_type!r}")
    if not any(root.glob("*.safetensors")) and not any(root.glob("*.safetensors.index.json")):
        raise ModelLoadError(f"no *.safetensors weights in model directory {root}")
    if not any((root / name).is_file() for name in _IMAGE_PROCESSOR_FILES):
        raise ModelLoadError(f"no image processor config ({' or '.join(_IMAGE_PROCESSOR_FILES)}) "
                             f"in model directory {root}")
    return root


def _check_tokenizer_files(root: Path) -> None:
    if not any(all((root / f).is_file() for f in group) for group in _TOKENIZER_FILES):
        raise ModelLoadError(f"no tokenizer files (tokenizer.json or vocab.json + merges.txt) "
                             f"in model directory {root}")


def load_mllm(path: str | os.PathLike, *, min_pixels: int | None = None,
              max_pixels: int | None = None, image_size: int | None = None,
              dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
              attn_implementation: str | None = None,
              ) -> tuple[Qwen2VLForConditionalGeneration, ImageOnlyQwen2VLProcessor]:
    """Load a Qwen2-VL model and its image-only processor from a local directory.

    The pixel budget: ``image_size`` (fixed square) or ``min_pixels``/``max_pixels``; when
    none is given the directory's saved setting is kept. Raises ``ModelLoadError``.
    """
    root = _check_model_dir(path, MLLM_MODEL_TYPE)
    _check_tokenizer_files(root)
    try:
        processor = ImageOnlyQwen2VLProcessor.from_pretrained(root, local_files_only=True)
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = Qwen2VLForConditionalGeneration.from_pretrained(
            root, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"could not load Qwen2-VL from {root}: {err}") from err
    if processor.chat_template is None:
        processor.chat_template = QWEN2VL_CHAT_TEMPLATE
    configure_pixels(processor, min_pixels=min_pixels, max_pixels=max_pixels,
                     image_size=image_size)
    return model.to(device).eval(), processor


def load_clip(path: str | os.PathLike, *, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu") -> tuple[CLIPModel, Any]:
    """Load a ``CLIPModel`` (e.g. MONET) and its image processor from a local directory."""
    root = _check_model_dir(path, CLIP_MODEL_TYPE)
    try:
        image_processor = AutoImageProcessor.from_pretrained(root, local_files_only=True)
        model = CLIPModel.from_pretrained(root, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"could not load CLIP from {root}: {err}") from err
    return model.to(device).eval(), image_processor


@torch.no_grad()
def clip_image_features(model: CLIPModel, processor, images: list[Image.Image]) -> torch.Tensor:
    """L2-normalised CLIP image embeddings, shape ``(len(images), projection_dim)``, float32."""
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    pixel_values = pixels["pixel_values"].to(model.device, model.dtype)
    out = model.get_image_features(pixel_values=pixel_values)
    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(feats.float(), dim=-1)
