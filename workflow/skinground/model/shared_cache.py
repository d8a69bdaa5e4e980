"""The KV cache and the attention of image-once suffix passes (:mod:`skinground.model.prefix`).

:class:`SharedPrefixCache` holds each image's prefix keys and values once (not one copy per
suffix row) and each row's own ones in a buffer written in place, so greedy decoding goes on
from the cache the suffix pass filled. :func:`shared_prefix_attention` (registered with
transformers' attention interface while :func:`shared_prefix_attention_for` is active) is
the attention over prefix + row keys, computed in two parts joined by their log-sum-exps
(:func:`attention_lse`; on CPU each part is PyTorch's own SDPA kernel).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import AttentionInterface

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

    def __init__(self, prefix, lengths: torch.Tensor, *, room: int = 0):
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


AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
