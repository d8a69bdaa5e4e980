"""The image prefix computed once: one mechanism for extraction, training and generation.

Every (image, question) sequence of the study shares its image prefix, the chat template up
to and including ``<|vision_end|>``::

    <|im_start|>system\\n...<|im_end|>\\n<|im_start|>user\\n<|vision_start|><|image_pad|>xn<|vision_end|>
    '----------------------------------- prefix -----------------------------------------'
    {question}<|im_end|>\\n<|im_start|>assistant\\n[{answer}<|im_end|>]
    '------------------------------ suffix ----------------------------'

:func:`run_prefix` runs the vision encoder and the decoder over a batch of left-padded
prefixes once (with gradients when training), keeping the KV cache. The suffixes then run
as right-padded batches over that cache, each attending to its own image's prefix and to
itself only, with explicit 3-D M-RoPE positions continuing at the prefix's largest
position + 1, which is where Qwen2-VL's own ``get_rope_index`` puts text after an image. So
every suffix token's state equals that of one full forward of prefix + suffix (tested to
~1e-6 in float32), and the vision encoder and the prefix run once per image instead of once
per question.

- Embeddings and generation (:func:`run_shared_suffixes`): every image's question suffixes
  over a :class:`SharedPrefixCache`, which holds each image's prefix keys and values once
  (not one copy per row) and each row's own ones in a buffer written in place, so greedy
  decoding goes on from the same cache. The attention (:func:`shared_prefix_attention`,
  registered with transformers' attention interface) is the attention over prefix + row
  keys, computed in two parts joined by their log-sum-exps (on CPU each part is PyTorch's
  own SDPA kernel).
- Training (``layout.image_once_loss``) gathers each suffix row's prefix keys from the cache
  (gradients flow back into the prefix through them) and runs the suffixes through the
  model's own attention.

Suffixes of different lengths go in one pass, or two by length (:func:`length_buckets`).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, DynamicCache

from skinground.models import EOS_TOKEN, chat_prompt

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


# --------------------------------------------------------------------------- length buckets

#: Suffixes go in two passes by length when that pads at least this share fewer tokens than
#: one pass (a pass costs a fixed overhead besides its tokens).
BUCKET_MIN_SAVING = 0.1


def length_buckets(lengths: torch.Tensor, *, min_saving: float | None = None,
                   ) -> list[torch.Tensor]:
    """The rows (indices into ``lengths``, ascending) in one group, or in two by length
    (shorter, longer) where padding each group to its own longest row saves at least
    ``min_saving`` (default ``BUCKET_MIN_SAVING``) of the tokens of padding all rows to the
    longest."""
    if min_saving is None:
        min_saving = BUCKET_MIN_SAVING
    order = torch.argsort(lengths, stable=True)
    ordered = lengths[order].tolist()
    n = len(ordered)
    single = n * ordered[-1] if n else 0
    best, cut = single, n
    for k in range(1, n):
        if ordered[k] != ordered[k - 1]:
            cost = k * ordered[k - 1] + (n - k) * ordered[-1]
            if cost < best:
                best, cut = cost, k
    if best > (1.0 - min_saving) * single:
        return [torch.arange(n, device=lengths.device)]
    return [order[:cut].sort().values, order[cut:].sort().values]


# --------------------------------------------------------------------------- shared prefix

#: The attention function (registered with transformers) of :class:`SharedPrefixCache`.
SHARED_PREFIX_ATTENTION = "skinground_shared_prefix"


@dataclass
class SharedKV:
    """One layer's keys and values for a forward from :class:`SharedPrefixCache`, as its
    ``update`` returns them: each image's prefix once (``prefix_*`` [n, kv_heads, Lp, d],
    additive mask ``prefix_bias`` [n, 1, 1, Lp], 0 or -inf) and the rows' own keys and values
    (``rows_*`` [R, kv_heads, Lr, d]): in a suffix pass the pass's own (causal,
    ``rows_bias`` None), when decoding each row's suffix and generated ones
    (``rows_bias`` [R, 1, 1, Lr])."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    prefix_bias: torch.Tensor
    rows_k: torch.Tensor
    rows_v: torch.Tensor
    rows_bias: torch.Tensor | None


@dataclass
class _SharedLayer:
    """One layer of :class:`SharedPrefixCache`: the prefix keys/values per image, the rows'
    buffers, and how many of the buffers' positions are written."""

    prefix_k: torch.Tensor
    prefix_v: torch.Tensor
    rows_k: torch.Tensor
    rows_v: torch.Tensor
    length: int


class SharedPrefixCache:
    """The KV cache of R = n x ``group`` suffix rows over n image prefixes, row
    ``i * group + j`` continuing image ``i``: per layer the prefix keys and values once per
    image (those :func:`run_prefix` left, never repeated per row), and each row's suffix and
    generated keys and values in a buffer written in place (W suffix positions, W the longest
    of ``lengths`` [R], then ``room`` generated ones; no per-step concatenation).

    Use inside :func:`shared_prefix_attention_for`: first the suffix passes, each inside
    :meth:`suffixes` (rows of whole image groups; :func:`run_shared_suffixes`), then decoding,
    one new token per row and step.
    """

    def __init__(self, prefix: Prefix, lengths: torch.Tensor, *, room: int = 0):
        n, lp = prefix.mask.shape
        rows = lengths.numel()
        if not rows or rows % n:
            raise ValueError(f"{rows} suffix rows are not whole groups over {n} images")
        self.group = rows // n
        self.width = int(lengths.max())
        like = prefix.cache.layers[0].keys
        self.prefix_bias = torch.zeros(n, 1, 1, lp, dtype=like.dtype, device=like.device
                                       ).masked_fill_(~prefix.mask.bool()[:, None, None, :],
                                                      float("-inf"))
        column = torch.arange(self.width + room, device=like.device)
        pads = (column >= lengths.to(like.device)[:, None]) & (column < self.width)
        self.rows_bias = torch.zeros(rows, 1, 1, self.width + room, dtype=like.dtype,
                                     device=like.device).masked_fill_(pads[:, None, None, :],
                                                                      float("-inf"))
        self.layers = [
            _SharedLayer(layer.keys, layer.values,
                         *(full.new_zeros(rows, full.shape[1], self.width + room, full.shape[3])
                           for full in (layer.keys, layer.values)),
                         length=self.width)
            for layer in prefix.cache.layers]
        self._pass_rows: torch.Tensor | None = None

    @contextmanager
    def suffixes(self, rows: torch.Tensor):
        """Inside the block, a forward runs the suffixes of ``rows`` (ascending, the same
        questions of every image, image by image): their keys are written at the start of the
        rows' buffers, and they attend to their prefix and causally to themselves."""
        if rows.numel() % (self.rows_bias.shape[0] // self.group):
            raise ValueError(f"{rows.numel()} rows are not the same questions of every image")
        self._pass_rows = rows.to(self.rows_bias.device)
        try:
            yield
        finally:
            self._pass_rows = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[SharedKV, None]:
        """Store the forward's keys and values; the layer's view for its attention."""
        layer = self.layers[layer_idx]
        if self._pass_rows is not None:  # a suffix pass: at the start of its rows' buffers
            width = key_states.shape[2]
            layer.rows_k[:, :, :width].index_copy_(0, self._pass_rows, key_states)
            layer.rows_v[:, :, :width].index_copy_(0, self._pass_rows, value_states)
            return SharedKV(layer.prefix_k, layer.prefix_v, self.prefix_bias,
                            key_states, value_states, None), None
        start, end = layer.length, layer.length + key_states.shape[2]
        if end > layer.rows_k.shape[2]:
            raise ValueError(f"decoding past the cache's room "
                             f"({layer.rows_k.shape[2] - self.width})")
        layer.rows_k[:, :, start:end] = key_states
        layer.rows_v[:, :, start:end] = value_states
        layer.length = end
        return SharedKV(layer.prefix_k, layer.prefix_v, self.prefix_bias,
                        layer.rows_k[:, :, :end], layer.rows_v[:, :, :end],
                        self.rows_bias[..., :end]), None


@dataclass
class SharedSuffixes:
    """What :func:`run_shared_suffixes` gives: ``last`` [R, d], each row's last-layer state at
    its last suffix token (the first answer token's logits come from it); ``read`` [R, d], the
    state at the position asked for (h_im,a: :func:`h_ima_positions`); the ``cache`` to decode
    from; ``position`` [R], where each row's next token goes."""

    last: torch.Tensor
    cache: SharedPrefixCache
    position: torch.Tensor
    read: torch.Tensor


#: Where h_im,a is read in the prompt for Q(a): "question", the final token of the question
#: (the paper's Eq. 3: the last row of f([g(I), psi(Q(a))]); the conclusion's "final question
#: token"), or "prompt_end", the last token of the prompt (the ``\n`` closing the assistant
#: header, five tokens later: the position trained to emit the answer's first token).
H_IMA_TOKENS = ("question", "prompt_end")


def h_ima_positions(tokenizer, suffix_ids: torch.Tensor, suffix_mask: torch.Tensor,
                    token: str) -> torch.Tensor:
    """Per suffix (``{question}<|im_end|>\n<|im_start|>assistant\n``, right-padded [A, Ls]),
    the index h_im,a is read at: its last token ("prompt_end") or the token before its
    ``<|im_end|>`` ("question")."""
    if token == "prompt_end":
        return suffix_mask.sum(1) - 1
    if token != "question":
        raise ValueError(f"h_im,a token must be one of {H_IMA_TOKENS}, got {token!r}")
    end = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    is_end = (suffix_ids == end) & suffix_mask.bool()
    if not is_end.any(1).all():
        raise ValueError(f"a question suffix has no {EOS_TOKEN}")
    first = is_end.int().argmax(1)
    if (first < 1).any():
        raise ValueError("a question suffix starts with its end of turn: empty question")
    return first - 1


def run_shared_suffixes(model, prefix: Prefix, suffix_ids: torch.Tensor,
                        suffix_mask: torch.Tensor, *, room: int = 0,
                        read_at: torch.Tensor | None = None) -> SharedSuffixes:
    """Every question's suffix (``suffix_ids``/``suffix_mask`` [A, Ls], right-padded) after
    every image's prefix, row ``i * A + a``, each image's prefix keys held once.

    The suffixes run in one pass, or in two by length (:func:`length_buckets`), each with
    explicit 3-D M-RoPE positions continuing its prefix; a suffix token attends to its image's
    prefix and causally to its own suffix (:func:`shared_prefix_attention`), so its state is
    that of one forward of prefix + suffix. ``room``: tokens to decode afterwards.
    ``read_at`` [A]: the suffix index whose state ``read`` holds, per question (default: the
    last token, as ``last``).
    """
    backbone = backbone_of(model)
    decoder, kwarg = backbone.language_model, cache_kwarg(backbone)
    n, n_q = prefix.mask.shape[0], suffix_ids.shape[0]
    device = prefix.mask.device
    lengths = suffix_mask.sum(1).to(device)
    row_lengths = lengths.repeat(n)
    start = prefix.next_position.repeat_interleave(n_q)
    cache = SharedPrefixCache(prefix, row_lengths, room=room)
    read_rows = row_lengths - 1 if read_at is None else read_at.to(device).repeat(n)
    last = read = None
    with shared_prefix_attention_for(decoder) as masks:
        for part in length_buckets(lengths):
            rows = (torch.arange(n, device=device)[:, None] * n_q + part[None, :]).reshape(-1)
            width = int(lengths[part].max())
            with cache.suffixes(rows):
                states = decoder(input_ids=suffix_ids[part, :width].to(device).repeat(n, 1),
                                 attention_mask=masks,
                                 position_ids=suffix_positions(start[rows], width),
                                 use_cache=True, **{kwarg: cache}).last_hidden_state
            index = torch.arange(len(rows), device=device)
            at = states[index, row_lengths[rows] - 1]
            if last is None:
                last = at.new_empty(n * n_q, at.shape[-1])
                read = at.new_empty(n * n_q, at.shape[-1])
            last[rows] = at
            read[rows] = states[index, read_rows[rows]]
    return SharedSuffixes(last, cache, start + row_lengths, read)


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


def _causal_bias(q_len: int, repeats: int, *, dtype, device) -> torch.Tensor:
    """[1, 1, repeats * q_len, q_len]: query ``(r, t)`` sees keys ``<= t`` (0, else -inf)."""
    future = torch.ones(q_len, q_len, dtype=torch.bool, device=device).triu(1)
    bias = torch.zeros(q_len, q_len, dtype=dtype, device=device).masked_fill_(future,
                                                                               float("-inf"))
    return bias.repeat(repeats, 1)[None, None]


def shared_prefix_attention(module, query: torch.Tensor, key: SharedKV, value, attention_mask,
                            scaling: float, dropout: float = 0.0, **kwargs):
    """Attention of the rows' new tokens over their image's shared prefix and their own keys
    (transformers' attention interface; ``value`` and ``attention_mask`` are unused: the
    values and masks travel in ``key``, a :class:`SharedKV`).

    Attention over the concatenated keys, in two parts joined by their log-sum-exps: the
    prefix part per image, all of its rows' queries at once (grouped-query heads without
    repeating keys), and each row's own part (causal in a suffix pass; one new token per row
    when decoding).
    """
    rows, heads, q_len, dim = query.shape
    n, kv_heads = key.prefix_k.shape[:2]
    group, per_kv = rows // n, heads // kv_heads
    rows_bias = key.rows_bias
    if rows_bias is None:  # a suffix pass: causal over the pass's own tokens
        rows_bias = _causal_bias(q_len, per_kv, dtype=query.dtype, device=query.device)
    elif q_len != 1:
        raise ValueError(f"shared-prefix attention decodes one token per row, got {q_len}")
    width = per_kv * q_len  # each kv head's queries of a row: its heads x positions
    # [R, H, q, d] -> per row [R, kv, per_kv * q, d] and per image [n, kv, group * ..., d]
    q_rows = query.reshape(rows, kv_heads, width, dim)
    q_img = q_rows.reshape(n, group, kv_heads, width, dim).transpose(1, 2).reshape(
        n, kv_heads, group * width, dim)
    o_img, l_img = attention_lse(q_img, key.prefix_k, key.prefix_v, key.prefix_bias, scaling)
    o_rows, l_rows = attention_lse(q_rows, key.rows_k, key.rows_v, rows_bias, scaling)
    # per image [n, kv, group * width, ...] -> per row [R, kv, width, ...]
    o_pre = o_img.reshape(n, kv_heads, group, width, dim).transpose(1, 2).reshape(
        rows, kv_heads, width, dim)
    l_pre = l_img.reshape(n, kv_heads, group, width).transpose(1, 2).reshape(
        rows, kv_heads, width)
    total = torch.logaddexp(l_pre, l_rows)
    out = (o_pre * torch.exp(l_pre - total)[..., None].to(o_pre.dtype)
           + o_rows * torch.exp(l_rows - total)[..., None].to(o_rows.dtype))
    return out.reshape(rows, heads, q_len, dim).transpose(1, 2).contiguous(), None


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
