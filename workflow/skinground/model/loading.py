"""Qwen2-VL (the MLLM) and the image encoders (MONET, MedSigLIP, ...): the image-only
processor, the chat prompt, and the one loading path of every rule.

``load_mllm`` reads any local Qwen2-VL directory through ``from_pretrained`` (Qwen2-VL-7B-
Instruct on the cluster, the demo's tiny model built by :mod:`skinground.demo.tiny` in the same
on-disk format); :func:`load_qwen` is what train, predict, embed and the benchmarks call: the
config's pixel budget, the device and dtype, and the LoRA adapter merged for the tuned model.
:func:`load_encoder` reads an image encoder of ``model.encoders`` in transformers' CLIP or
SigLIP format (MONET: ``chanwkim/monet``, CLIP ViT-L/14; MedSigLIP: ``google/medsiglip-448``)
with its PIL image processor, the config's preprocessing over the folder's;
:func:`image_features` gives its L2-normalised image embeddings. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    CLIPImageProcessorPil,
    CLIPModel,
    PreTrainedModel,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
    SiglipImageProcessorPil,
    SiglipModel,
)
from transformers.image_utils import SizeDict, make_flat_list_of_images
from transformers.processing_utils import ProcessorMixin

from skinground.core import names
from skinground.core.errors import ModelLoadError
from skinground.core.sections import pixel_params

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

#: ImageNet statistics, MONET's normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: SigLIP's normalisation (MedSigLIP's): [0, 1] mapped to [-1, 1].
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)

MLLM_MODEL_TYPE = "qwen2_vl"
#: The image encoders' formats (config ``model.encoders.<name>.format``): transformers' model
#: class, the ``model_type`` its folder's config.json must name, and its PIL image processor.
ENCODER_FORMATS: dict[str, tuple[type[PreTrainedModel], str, type]] = dict(zip(
    names.ENCODER_FORMATS, [(CLIPModel, "clip", CLIPImageProcessorPil),
                            (SiglipModel, "siglip", SiglipImageProcessorPil)], strict=True))
#: The resampling filters a preprocessing may name.
RESAMPLE = dict(zip(names.RESAMPLE_FILTERS, [Image.Resampling.BICUBIC,
                                             Image.Resampling.BILINEAR], strict=True))
_TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


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




def chat_prompt(processor, question: str) -> str:
    """The chat text for one image + ``question``, ending with the assistant header."""
    content = [{"type": "image"}, {"type": "text", "text": question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


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


def configure_encoder_preprocessing(image_processor, preprocessing: Mapping) -> None:
    """Set an encoder's image processor in place to config ``preprocessing`` (size, crop,
    resample, mean, std): with ``crop`` the short side resized to ``size`` then a centre crop
    of ``size`` x ``size`` (CLIP's way), else a resize to ``size`` x ``size`` (SigLIP's);
    then pixel values / 255, normalised by ``mean`` and ``std``."""
    size = int(preprocessing["size"])
    if preprocessing["crop"]:
        image_processor.size = SizeDict(shortest_edge=size)
        image_processor.crop_size = SizeDict(height=size, width=size)
    else:
        image_processor.size = SizeDict(height=size, width=size)
    image_processor.do_center_crop = bool(preprocessing["crop"])
    image_processor.do_resize = image_processor.do_rescale = image_processor.do_normalize = True
    image_processor.rescale_factor = 1 / 255
    image_processor.resample = RESAMPLE[preprocessing["resample"]]
    image_processor.image_mean = list(preprocessing["mean"])
    image_processor.image_std = list(preprocessing["std"])


def load_encoder(path: str | os.PathLike, fmt: str, *, preprocessing: Mapping | None = None,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 ) -> tuple[PreTrainedModel, Any]:
    """Load an image encoder (``fmt`` "clip": ``CLIPModel``, e.g. MONET; "siglip":
    ``SiglipModel``, e.g. MedSigLIP) and its PIL image processor from a local directory, whose
    config.json must name that format's model_type. ``preprocessing`` (config
    ``model.encoders.<name>.preprocessing``) replaces the folder's
    (:func:`configure_encoder_preprocessing`). Raises ``ModelLoadError``."""
    if fmt not in ENCODER_FORMATS:
        raise ModelLoadError(f"unknown encoder format {fmt!r} (known: "
                             f"{', '.join(ENCODER_FORMATS)})")
    model_class, model_type, processor_class = ENCODER_FORMATS[fmt]
    root = _check_model_dir(path, model_type)
    try:
        # the PIL processor always: the torchvision one needs torchvision and resizes
        # differently, so the same config would give other features where it is installed
        # (named: transformers 5.17's AutoImageProcessor needs torchvision whatever the backend)
        image_processor = processor_class.from_pretrained(root, local_files_only=True)
        model = model_class.from_pretrained(root, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"could not load {model_class.__name__} from {root}: {err}") from err
    if preprocessing is not None:
        configure_encoder_preprocessing(image_processor, preprocessing)
    return model.to(device).eval(), image_processor


def encoder_image_size(model: PreTrainedModel) -> int:
    """The image side (px) the encoder's position embeddings were made for."""
    return int(model.config.vision_config.image_size)


@torch.no_grad()
def image_features(model: PreTrainedModel, processor, images: list[Image.Image]) -> torch.Tensor:
    """An encoder's L2-normalised image embeddings (``get_image_features``: CLIP's projected
    [CLS], SigLIP's attention-pooled head), shape ``(len(images), width)``, float32. An image
    size other than the model's interpolates its position embeddings (at its own size they are
    used as they are)."""
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
    pixel_values = pixels["pixel_values"].to(model.device, model.dtype)
    out = model.get_image_features(pixel_values=pixel_values, interpolate_pos_encoding=True)
    feats = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(feats.float(), dim=-1)


def device_and_dtype() -> tuple[str, torch.dtype]:
    """The GPU in bf16 (fp16 where bf16 is missing) when there is one, else the CPU in fp32."""
    if torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return "cpu", torch.float32


def load_qwen(base: str | os.PathLike, model_cfg: Mapping,
              adapter: str | os.PathLike | None = None, *, dtype: torch.dtype | None = None,
              device: str | None = None):
    """``(model, processor)`` with the config's pixel budget: the untuned base, or the tuned
    model (the adapter merged). ``dtype``/``device``: default ``device_and_dtype()``."""
    default_device, default_dtype = device_and_dtype()
    model, processor = load_mllm(base, dtype=dtype or default_dtype,
                                 device=device or default_device, **pixel_params(model_cfg))
    if adapter:
        from skinground.model.lora import attach_adapter

        model = attach_adapter(model, adapter, merge=True).eval()
    return model, processor
