"""Multi-head scaled dot-product attention (Vaswani et al., 2017)."""

from __future__ import annotations

import keras
from keras import ops
from keras.src.backend import get_keras_mask

from suite.layers.position import RotaryEmbedding

_MASKED_SCORE = -1e9


def combine_masks(
    query_mask=None,
    context_mask=None,
    attention_mask=None,
    causal_offset=None,
    query_length: int | None = None,
    key_length: int | None = None,
):
    """Merges padding, explicit and causal masks into one boolean `(batch|1, T, S)` mask.

    `causal_offset` (an int or scalar tensor) turns on causal masking: query `i` may see
    key `j` only when `j <= i + causal_offset`. Returns `None` when nothing is masked.
    """
    mask = None
    if query_mask is not None:
        mask = ops.cast(query_mask, "bool")[:, :, None]
    if context_mask is not None:
        keys = ops.cast(context_mask, "bool")[:, None, :]
        mask = keys if mask is None else ops.logical_and(mask, keys)
    if attention_mask is not None:
        explicit = ops.cast(attention_mask, "bool")
        mask = explicit if mask is None else ops.logical_and(mask, explicit)
    if causal_offset is not None:
        rows = ops.arange(query_length)[:, None] + causal_offset
        causal = (ops.arange(key_length)[None, :] <= rows)[None, :, :]
        mask = causal if mask is None else ops.logical_and(mask, causal)
    return mask


def write_cache(cache, new_key_value, cache_index):
    """`cache (batch, 2, max_length, heads, head_dim)` with positions `cache_index ..
    cache_index + t` replaced by `new_key_value (batch, 2, t, heads, head_dim)`.

    A select over the whole cache rather than `ops.slice_update`, which the TF backend lowers
    to `XlaDynamicUpdateSlice`: an op with no regular TF kernel, which stock TF Serving cannot
    run. Here a TF graph gets `GatherV2` + `SelectV2`; XLA-compiled greedy and beam decoding
    measured as fast with either write.
    """
    steps = ops.shape(new_key_value)[2]
    offsets = ops.arange(ops.shape(cache)[2], dtype="int32") - ops.cast(cache_index, "int32")
    written = ops.logical_and(offsets >= 0, offsets < steps)
    spread = ops.take(new_key_value, ops.clip(offsets, 0, steps - 1), axis=2)
    return ops.where(written[None, None, :, None, None], spread, cache)


@keras.saving.register_keras_serializable(package="suite")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention with a fused QKV projection and a fixed-size decode cache.

    Self-attention when called with `query` alone (one fused `(d_model, 3, heads, head_dim)`
    projection); cross-attention when a `context` is given (queries from `query`, keys and
    values from `context` through one fused `(d_model, 2, heads, head_dim)` projection). The
    kind is fixed by the first call.

    Call arguments:
        query: `(batch, T, d_model)`.
        context: optional `(batch, S, d_model)`; makes this a cross-attention layer.
        query_mask: optional `(batch, T)`, True at real tokens. Defaults to the Keras mask
            of `query`.
        context_mask: optional `(batch, S)`, True at real tokens. Defaults to the Keras mask
            of `context` (or of `query` for self-attention).
        attention_mask: optional boolean `(batch, T, S)`; False blocks a query/key pair.
        use_causal_mask: self-attention only; query `t` sees keys `<= t`.
        cache: self-attention: `(batch, 2, max_length, heads, head_dim)` keys/values of the
            previous steps; the new keys/values are written at `cache_index` and the layer
            attends causally over the whole cache. Cross-attention: the projected context
            from `context_cache(context)`, reused at every step.
        cache_index: scalar position of `query`'s first step in the cache.
        return_attention_scores: also return the `(batch, heads, T, S)` probabilities.

    Returns `(batch, T, d_model)`; with a cache, `(output, cache)`; with scores,
    `(output, scores)` or `(output, cache, scores)`.
    """

    def __init__(
        self,
        num_heads: int,
        dropout: float = 0.0,
        use_bias: bool = True,
        use_rotary: bool = False,
        rotary_max_wavelength: int = 10000,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.dropout = dropout
        self.use_bias = use_bias
        self.use_rotary = use_rotary
        self.rotary_max_wavelength = rotary_max_wavelength
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True
        self.is_cross_attention = None
        self.rotary = (
            RotaryEmbedding(max_wavelength=rotary_max_wavelength, dtype=self.dtype_policy, name="rotary")
            if use_rotary
            else None
        )
        self.attention_dropout = keras.layers.Dropout(dropout, dtype=self.dtype_policy, name="attention_dropout")

    def _dense(self, equation, output_shape, bias_axes, name):
        return keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, query_shape, context_shape=None):
        d_model = query_shape[-1]
        if d_model % self.num_heads:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by num_heads ({self.num_heads})."
            )
        self.head_dim = d_model // self.num_heads
        heads = (self.num_heads, self.head_dim)
        self.is_cross_attention = context_shape is not None
        if self.is_cross_attention:
            self.query_dense = self._dense("btd,dhe->bthe", (None, *heads), "he", "query")
            self.query_dense.build(query_shape)
            self.key_value_dense = self._dense("bsd,dnhe->bsnhe", (None, 2, *heads), "nhe", "key_value")
            self.key_value_dense.build(context_shape)
        else:
            self.qkv_dense = self._dense("btd,dnhe->btnhe", (None, 3, *heads), "nhe", "qkv")
            self.qkv_dense.build(query_shape)
        self.output_dense = self._dense("bthe,hed->btd", (None, d_model), "d", "output")
        self.output_dense.build((*query_shape[:-1], *heads))
        self.built = True

    def context_cache(self, context):
        """Projects a `(batch, S, d_model)` context to keys/values `(batch, 2, S, heads, head_dim)`."""
        return ops.transpose(self.key_value_dense(context), (0, 2, 1, 3, 4))

    def call(
        self,
        query,
        context=None,
        query_mask=None,
        context_mask=None,
        attention_mask=None,
        use_causal_mask: bool = False,
        cache=None,
        cache_index=None,
        return_attention_scores: bool = False,
        training=None,
    ):
        if query_mask is None:
            query_mask = get_keras_mask(query)
        if context is not None and not self.is_cross_attention:
            raise ValueError(f"{self.name} was built for self-attention but got a `context`.")
        if self.is_cross_attention and use_causal_mask:
            raise ValueError(f"{self.name}: `use_causal_mask` applies to self-attention only.")
        start = 0 if cache_index is None else cache_index
        causal_offset = None

        if self.is_cross_attention:
            if context_mask is None and context is not None:
                context_mask = get_keras_mask(context)
            query_heads = self.query_dense(query)
            key_value = cache if cache is not None else self.context_cache(context)
            keys, values = key_value[:, 0], key_value[:, 1]
        else:
            qkv = self.qkv_dense(query)
            query_heads, keys, values = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
            if self.rotary is not None:
                query_heads = self.rotary(query_heads, start_index=start)
                keys = self.rotary(keys, start_index=start)
            if cache is not None:
                if cache_index is None:
                    raise ValueError(f"{self.name}: a self-attention `cache` needs `cache_index`.")
                cache = write_cache(cache, ops.stack([keys, values], axis=1), cache_index)
                keys, values = cache[:, 0], cache[:, 1]
                causal_offset = cache_index
                query_mask = context_mask = None
            else:
                if context_mask is None:
                    context_mask = query_mask
                if use_causal_mask:
                    causal_offset = 0

        mask = combine_masks(
            query_mask,
            context_mask,
            attention_mask,
            causal_offset,
            ops.shape(query_heads)[1],
            ops.shape(keys)[1],
        )
        output, scores = self._attend(query_heads, keys, values, mask, training)
        outputs = (output,) + ((cache,) if cache is not None else ())
        if return_attention_scores:
            outputs += (scores,)
        return outputs[0] if len(outputs) == 1 else outputs

    def _attend(self, query_heads, keys, values, mask, training):
        scale = ops.cast(1.0 / (self.head_dim**0.5), query_heads.dtype)
        scores = ops.einsum("bthe,bshe->bhts", query_heads * scale, keys)
        scores = ops.cast(scores, "float32")
        if mask is not None:
            scores = ops.where(mask[:, None, :, :], scores, _MASKED_SCORE)
        probabilities = ops.softmax(scores, axis=-1)
        dropped = self.attention_dropout(ops.cast(probabilities, values.dtype), training=training)
        context = ops.einsum("bhts,bshe->bthe", dropped, values)
        return self.output_dense(context), probabilities

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            dropout=self.dropout,
            use_bias=self.use_bias,
            use_rotary=self.use_rotary,
            rotary_max_wavelength=self.rotary_max_wavelength,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
