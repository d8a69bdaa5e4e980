"""The image prefix computed once: one mechanism for extraction, training and generation.

Every (image, question) sequence of the study shares its image prefix, the chat template up
to and including ``<|vision_end|>``::

    <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|image_pad|>xn<|vision_end|>
    '----------------------------------- prefix -----------------------------------------'
    {question}<|im_end|>\\n<|im_start|>assistant\\n[{answer}<|im_end|>]
    '------------------------------ suffix ----------------------------'

:func:`run_prefix` runs the vision encoder and the decoder over a batch of left-padded
prefixes once (with gradients when training), keeping the KV cache. :func:`run_suffixes`
then gathers each suffix row's image from that cache (``rows[r]`` = the prefix row it
continues; a row may repeat any number of times) and runs all suffixes as one right-padded
batch. Each suffix attends to its own prefix and to itself only, and its explicit 3-D M-RoPE
positions continue at the prefix's largest position + 1, which is where Qwen2-VL's own
``get_rope_index`` puts text after an image. So every suffix token's state equals that of
one full forward of prefix + suffix (tested to ~1e-6 in float32), and the vision encoder and
the prefix run once per image instead of once per question.

Greedy decoding then goes on from :class:`SharedPrefixCache`: each image's prefix keys and
values once (not one copy per row) and each row's own ones in a buffer written in place; a
step's attention (:func:`shared_prefix_attention`, registered with transformers' attention
interface) is the attention over prefix + row keys, computed in two parts joined by their
log-sum-exps (on CPU each part is PyTorch's own SDPA kernel).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache

from skinground.models import chat_prompt

VISION_END = "<|vision_end|>"


def backbone_of(model):
    """The ``Qwen2VLModel`` (vision encoder + decoder, no LM head) inside ``model``: a
    ``Qwen2VLForConditionalGeneration`` (base or merged), or a peft wrapper around one."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    backbone = getattr(model, "model", None)
    if backbone is None or not hasattr(backbone, "get_rope_index"):
        raise TypeError(f"expected a Qwen2-VL model, got {type(model).__name__}")
    return backbone


def lm_head_of(model) -> torch.nn.Module:
    """The output projection of ``model`` (peft's trained copy when it is a saved module)."""
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model.lm_head


def cache_kwarg(backbone) -> str:
    """The name of the KV-cache argument (``cache`` from transformers 5.2x, else
    ``past_key_values``)."""
    params = inspect.signature(type(backbone).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(backbone) -> DynamicCache:
    return DynamicCache(config=backbone.config)


def rope_positions(backbone, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3-D M-RoPE positions [3, n, Lp] of left-padded prefixes (the model's own
    ``get_rope_index``) and ``next_position`` [n]: where text after each prefix continues,
    its largest position + 1 (pads sit at 0)."""
    positions, _ = backbone.get_rope_index(
        batch["input_ids"], batch["mm_token_type_ids"], image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    return positions, positions.amax(dim=(0, 2)) + 1


#: split_template's results per processor (weakly held) and tuple of questions.
_TEMPLATES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def split_template(processor, questions: Sequence[str]) -> tuple[str, list[str]]:
    """The chat text cut after ``<|vision_end|>``: the shared image prefix and each question's
    suffix (``{question}<|im_end|>\\n<|im_start|>assistant\\n``).

    Checks that the prefix is the same for every question and that tokenizing prefix and
    suffix separately gives exactly the tokens of the whole prompt (the cut is at a special
    token, so it does for Qwen2's tokenizer). Computed once per processor and questions (the
    checks tokenize every prompt three times; generation asks for every batch).
    """
    known = _TEMPLATES.setdefault(processor, {})
    key = tuple(questions)
    if key not in known:
        known[key] = _split_template(processor, key)
    prefix, suffixes = known[key]
    return prefix, list(suffixes)


def _split_template(processor, questions: Sequence[str]) -> tuple[str, list[str]]:
    tok = processor.tokenizer
    prefix: str | None = None
    suffixes: list[str] = []
    for q in questions:
        full = chat_prompt(processor, q)
        cut = full.find(VISION_END)
        if cut < 0:
            raise ValueError(f"chat template has no {VISION_END}: {full!r}")
        cut += len(VISION_END)
        if prefix is None:
            prefix = full[:cut]
        elif full[:cut] != prefix:
            raise ValueError(f"the image prefix depends on the question: {q!r}")
        suffixes.append(full[cut:])
        whole = tok(full)["input_ids"]
        parts = tok(prefix)["input_ids"] + tok(full[cut:], add_special_tokens=False)["input_ids"]
        if whole != parts:
            raise ValueError(f"prefix + suffix tokens differ from the whole prompt for {q!r}")
    if prefix is None:  # no questions: the prefix alone
        full = chat_prompt(processor, "")
        prefix = full[: full.index(VISION_END) + len(VISION_END)]
    return prefix, suffixes


def encode(processor, images: Sequence, texts: Sequence[str], *,
           padding_side: str = "left") -> dict[str, torch.Tensor]:
    """``processor(images, texts)`` padded on ``padding_side`` (the tokenizer's own setting
    is restored afterwards): input_ids, attention_mask, mm_token_type_ids, pixel_values,
    image_grid_thw."""
    tok = processor.tokenizer
    old = tok.padding_side
    tok.padding_side = padding_side
    try:
        batch = processor(images=list(images), text=list(texts), padding=True,
                          return_tensors="pt")
    finally:
        tok.padding_side = old
    return dict(batch)


def stack_prefixes(encoded: Sequence[dict[str, torch.Tensor]], pad_id: int,
                   ) -> dict[str, torch.Tensor]:
    """One batch from single-image encodings (``encode`` of one image each): the token rows
    left-padded to the longest (``pad_id``, attention and token type 0), pixel values and
    grids concatenated in order, as ``encode`` of all the images gives them."""
    width = max(e["input_ids"].shape[1] for e in encoded)
    fill = {"input_ids": pad_id, "attention_mask": 0, "mm_token_type_ids": 0}
    out = {}
    for key, value in fill.items():
        rows = [torch.nn.functional.pad(e[key], (width - e[key].shape[1], 0), value=value)
                for e in encoded]
        out[key] = torch.cat(rows)
    for key in ("pixel_values", "image_grid_thw"):
        out[key] = torch.cat([e[key] for e in encoded])
    return out


def to_model(batch: dict[str, torch.Tensor], model) -> dict[str, torch.Tensor]:
    """The batch's tensors on the model's device; pixel values in the model's dtype."""
    out = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(model.dtype)
    return out


def encode_prefixes(processor, images: Sequence) -> dict[str, torch.Tensor]:
    """The image prefixes of ``images``, left-padded (images of different sizes give
    different numbers of image tokens)."""
    prefix, _ = split_template(processor, [])
    return encode(processor, images, [prefix] * len(images), padding_side="left")


def pad_rows(rows: Sequence[Sequence[int]], pad_id: int, *, fill: int | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[len(rows), longest]`` ids (``fill`` or ``pad_id`` after each row's end)
    and the matching 0/1 attention mask."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = int(lengths.max()) if len(rows) else 0
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.full((len(rows), width), pad_id if fill is None else fill, dtype=torch.long)
    ids[mask.bool()] = torch.tensor([t for r in rows for t in r], dtype=torch.long)
    return ids, mask


@dataclass
class Prefix:
    """One pass over a batch of image prefixes: the last-layer states ``hidden`` [n, Lp, d],
    the ``mask`` [n, Lp], the ``input_ids``, the KV ``cache``, and ``next_position`` [n]
    (where text after each prefix continues)."""

    hidden: torch.Tensor
    mask: torch.Tensor
    input_ids: torch.Tensor
    cache: DynamicCache
    next_position: torch.Tensor


def run_prefix(model, batch: dict[str, torch.Tensor]) -> Prefix:
    """The decoder (and vision encoder) over left-padded image prefixes, cache kept.

    ``batch``: input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids on
    the model's device. Positions come from the model's own ``get_rope_index``.
    """
    backbone = backbone_of(model)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions, next_position = rope_positions(backbone, batch)
    cache = new_cache(backbone)
    out = backbone(
        input_ids=ids, attention_mask=mask, position_ids=positions,
        pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
        mm_token_type_ids=batch["mm_token_type_ids"], use_cache=True,
        **{cache_kwarg(backbone): cache},
    )
    return Prefix(hidden=out.last_hidden_state, mask=mask, input_ids=ids, cache=cache,
                  next_position=next_position)


def image_states_mean(model, prefix: Prefix) -> torch.Tensor:
    """h_im: the mean of the last-layer states over each prefix's image tokens, float32."""
    is_image = (prefix.input_ids == model.config.image_token_id).unsqueeze(-1)
    states = prefix.hidden.float().masked_fill(~is_image, 0.0)  # pads: never NaN
    return states.sum(1) / is_image.sum(1)


def suffix_positions(next_position: torch.Tensor, width: int) -> torch.Tensor:
    """Explicit 3-D M-RoPE positions [3, rows, width] of suffix rows starting at
    ``next_position`` [rows]."""
    steps = torch.arange(width, device=next_position.device)
    pos = next_position[:, None] + steps[None, :]
    return pos.unsqueeze(0).expand(3, *pos.shape)


def run_suffixes(model, prefix: Prefix, rows: torch.Tensor, suffix_ids: torch.Tensor,
                 suffix_mask: torch.Tensor, *, start: torch.Tensor | None = None,
                 ) -> torch.Tensor:
    """The last-layer states [R, Ls, d] of right-padded suffixes, row ``r`` continuing prefix
    row ``rows[r]`` (``start``: each row's first position, default the prefix's next one).

    ``prefix.cache`` is replaced by the gathered cache extended with the suffixes (so a
    decoding loop can go on from it); ``prefix.mask`` becomes the rows' combined mask.
    """
    backbone = backbone_of(model)
    rows = rows.to(prefix.mask.device)
    if start is None:
        start = prefix.next_position[rows]
    mask = torch.cat([prefix.mask[rows], suffix_mask], dim=1)
    prefix.cache.batch_select_indices(rows)
    out = backbone(
        input_ids=suffix_ids, attention_mask=mask,
        position_ids=suffix_positions(start, suffix_ids.shape[1]), use_cache=True,
        **{cache_kwarg(backbone): prefix.cache},
    )
    prefix.mask = mask
    return out.last_hidden_state


# --------------------------------------------------------------------------- decoding

#: The attention function (registered with transformers) of :class:`SharedPrefixCache`.
SHARED_PREFIX_ATTENTION = "skinground_shared_prefix"


@dataclass
class SharedKV:
    """One layer's keys and values for a decoding step, as :meth:`SharedPrefixCache.update`
    returns them: each image's prefix once (``prefix_*`` [n, kv_heads, Lp, d]) and each row's
    own suffix and generated tokens (``rows_*`` [R, kv_heads, Lr, d]), with additive masks
    ``prefix_bias`` [n, 1, 1, Lp] and ``rows_bias`` [R, 1, 1, Lr] (0 or -inf)."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    prefix_bias: torch.Tensor
    rows_k: torch.Tensor
    rows_v: torch.Tensor
    rows_bias: torch.Tensor


class SharedPrefixCache:
    """The decoding cache of R = n x ``group`` rows, row ``i * group + j`` continuing image
    ``i``'s prefix: per layer, the prefix keys and values once per image (not repeated per
    row), and each row's suffix and generated keys and values in a buffer with ``room`` free
    positions, written in place (no per-step concatenation of the cache).

    Built from the cache :func:`run_suffixes` left (rows gathered, prefix + suffix) and its
    combined ``mask`` [R, Lp + Ls]; ``prefix_width`` is Lp. Decode with it inside
    :func:`shared_prefix_attention_for` (one new token per row and step).
    """

    def __init__(self, cache: DynamicCache, mask: torch.Tensor, *, prefix_width: int,
                 group: int, room: int):
        rows, width = mask.shape
        if rows % group:
            raise ValueError(f"{rows} rows are not whole groups of {group}")
        lp, self.filled = prefix_width, width - prefix_width
        like = cache.layers[0].keys
        keep = mask.bool()
        self.rows_bias = torch.zeros(rows, 1, 1, self.filled + room, dtype=like.dtype,
                                     device=like.device)
        self.rows_bias[:, 0, 0, : self.filled].masked_fill_(~keep[:, lp:], float("-inf"))
        self.prefix_bias = torch.zeros(rows // group, 1, 1, lp, dtype=like.dtype,
                                       device=like.device).masked_fill_(
            ~keep[::group, None, None, :lp], float("-inf"))
        self.layers: list[_SharedLayer] = []
        for layer in cache.layers:
            prefix_kv, rows_kv = [], []
            for full in (layer.keys, layer.values):
                buffer = full.new_empty(rows, full.shape[1], self.filled + room, full.shape[3])
                buffer[:, :, : self.filled] = full[:, :, lp:]
                prefix_kv.append(full[::group, :, :lp].contiguous())
                rows_kv.append(buffer)
            self.layers.append(_SharedLayer(*prefix_kv, *rows_kv, length=self.filled))

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[SharedKV, None]:
        """Write the step's keys and values after the row's last ones; the layer's view."""
        layer = self.layers[layer_idx]
        start, end = layer.length, layer.length + key_states.shape[2]
        if end > layer.rows_k.shape[2]:
            raise ValueError(f"decoding past the cache's room "
                             f"({layer.rows_k.shape[2] - self.filled})")
        layer.rows_k[:, :, start:end] = key_states
        layer.rows_v[:, :, start:end] = value_states
        layer.length = end
        return SharedKV(layer.prefix_k, layer.prefix_v, self.prefix_bias,
                        layer.rows_k[:, :, :end], layer.rows_v[:, :, :end],
                        self.rows_bias[..., :end]), None


@dataclass
class _SharedLayer:
    """One layer of :class:`SharedPrefixCache`: the prefix keys/values per image, the rows'
    buffers, and how many of the buffers' positions are written."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    rows_k: torch.Tensor
    rows_v: torch.Tensor
    length: int


def attention_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  bias: torch.Tensor, scale: float, *, kernel: bool | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T scale + bias) v and each query's log-sum-exp of its scores.

    ``kernel`` (default: on CPU): PyTorch's own SDPA kernel (flash attention for CPU, which
    returns the log-sum-exp), so each part's arithmetic is the decoder's usual one; else
    matrix products with a float32 softmax (GPUs: small parts, bandwidth-bound).
    """
    if kernel is None:
        kernel = query.device.type == "cpu"
    if kernel:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, attn_mask=bias, scale=scale)
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale + bias
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse[..., None]).to(value.dtype)
    return torch.matmul(weights, value), lse


def shared_prefix_attention(module, query: torch.Tensor, key: SharedKV, value, attention_mask,
                            scaling: float, dropout: float = 0.0, **kwargs):
    """Attention of one new token per row over its image's shared prefix and its own tokens
    (transformers' attention interface; ``value`` and ``attention_mask`` are unused: the
    values and masks travel in ``key``, a :class:`SharedKV`).

    Attention over the concatenated keys, in two parts joined by their log-sum-exps: the
    prefix part per image, all of its rows' queries at once (grouped-query heads without
    repeating keys), and each row's own part.
    """
    rows, heads, q_len, dim = query.shape
    if q_len != 1:
        raise ValueError(f"shared-prefix attention decodes one token per row, got {q_len}")
    n, kv_heads = key.prefix_k.shape[:2]
    group, per_kv = rows // n, heads // kv_heads
    # [R, H, 1, d] -> per row [R, kv, per_kv, d] and per image [n, kv, group * per_kv, d]
    q_rows = query.reshape(rows, kv_heads, per_kv, dim)
    q_img = q_rows.view(n, group, kv_heads, per_kv, dim).transpose(1, 2).reshape(
        n, kv_heads, group * per_kv, dim)
    o_img, l_img = attention_lse(q_img, key.prefix_k, key.prefix_v, key.prefix_bias, scaling)
    o_rows, l_rows = attention_lse(q_rows, key.rows_k, key.rows_v, key.rows_bias, scaling)
    # per image [n, kv, group * per_kv, ...] -> per row [R, kv, per_kv, ...]
    o_pre = o_img.view(n, kv_heads, group, per_kv, dim).transpose(1, 2).reshape(
        rows, kv_heads, per_kv, dim)
    l_pre = l_img.view(n, kv_heads, group, per_kv).transpose(1, 2).reshape(
        rows, kv_heads, per_kv)
    total = torch.logaddexp(l_pre, l_rows)
    out = (o_pre * torch.exp(l_pre - total)[..., None].to(o_pre.dtype)
           + o_rows * torch.exp(l_rows - total)[..., None].to(o_rows.dtype))
    return out.reshape(rows, 1, heads, dim), None


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)


@contextmanager
def shared_prefix_attention_for(decoder):
    """``decoder`` (the text model) attends with :func:`shared_prefix_attention` inside the
    block; its attention implementation is restored afterwards."""
    config = decoder.config
    old = config._attn_implementation
    config._attn_implementation = SHARED_PREFIX_ATTENTION
    try:
        yield {kind: None for kind in set(config.layer_types)}  # the decoder's masks: unused
    finally:
        config._attn_implementation = old
