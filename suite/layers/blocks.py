"""Transformer encoder and decoder blocks: attention and feed-forward with residuals."""

from __future__ import annotations

import keras
from keras.src.backend import get_keras_mask

from suite.layers.attention import MultiHeadAttention
from suite.layers.feed_forward import FeedForward


@keras.saving.register_keras_serializable(package="suite")
class DropPath(keras.layers.Layer):
    """Stochastic depth (Huang et al., 2016) on a residual branch: in training, each example's whole
    input is zeroed with probability `rate` and the kept ones are scaled by `1 / (1 - rate)`; the
    identity at inference. Call with `(batch, ...)`; returns the same shape. No weights."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"DropPath rate must be in [0, 1), got {rate!r}.")
        self.rate = rate
        self.seed = seed
        if rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training or self.rate == 0:
            return inputs
        noise_shape = (None,) + (1,) * (len(inputs.shape) - 1)
        return keras.random.dropout(inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator)

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


class _ResidualBlock(keras.layers.Layer):
    """Shared wiring: each sublayer is wrapped as `x + drop_path(dropout(f(norm(x))))` (pre-LN) or
    `norm(x + drop_path(dropout(f(x))))` (post-LN, Vaswani et al.). `attention_dropout` (on the
    attention probabilities) and `inner_dropout` (between the feed-forward's two layers) default to
    `dropout`; `drop_path` is the `DropPath` rate of every residual branch (0: none, no layer)."""

    def __init__(
        self,
        num_heads: int,
        ff_dim: int,
        dropout: float = 0.1,
        attention_dropout: float | None = None,
        inner_dropout: float | None = None,
        activation: str = "gelu",
        norm_first: bool = True,
        use_rotary: bool = False,
        layer_norm_epsilon: float = 1e-6,
        drop_path: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.ff_dim = ff_dim
        self.dropout = dropout
        self.attention_dropout = dropout if attention_dropout is None else attention_dropout
        self.inner_dropout = dropout if inner_dropout is None else inner_dropout
        self.activation = activation
        self.norm_first = norm_first
        self.use_rotary = use_rotary
        self.layer_norm_epsilon = layer_norm_epsilon
        self.drop_path = drop_path
        self.drop_path_layer = (
            DropPath(drop_path, dtype=self.dtype_policy, name="drop_path") if drop_path > 0 else None
        )
        self.supports_masking = True

    def _attention(self, name, use_rotary):
        return MultiHeadAttention(
            self.num_heads,
            dropout=self.attention_dropout,
            use_rotary=use_rotary,
            dtype=self.dtype_policy,
            name=name,
        )

    def _sublayer_parts(self, name):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=f"{name}_norm"
        )
        dropout = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"{name}_dropout")
        return norm, dropout

    def _feed_forward(self):
        return FeedForward(
            self.ff_dim,
            activation=self.activation,
            dropout=self.inner_dropout,
            dtype=self.dtype_policy,
            name="feed_forward",
        )

    def _residual(self, x, norm, dropout, sublayer, training):
        """Applies `sublayer` (a callable on normalised or raw `x`) with the residual wiring.

        `sublayer` may return `(output, *extras)`; extras are passed through.
        """
        result = sublayer(norm(x) if self.norm_first else x)
        output, extras = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
        branch = dropout(output, training=training)
        if self.drop_path_layer is not None:
            branch = self.drop_path_layer(branch, training=training)
        x = x + branch
        if not self.norm_first:
            x = norm(x)
        return (x, *extras)

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "ff_dim": self.ff_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "inner_dropout": self.inner_dropout,
            "activation": self.activation,
            "norm_first": self.norm_first,
            "use_rotary": self.use_rotary,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "drop_path": self.drop_path,
        }


@keras.saving.register_keras_serializable(package="suite")
class TransformerEncoderBlock(_ResidualBlock):
    """Self-attention then feed-forward, each with a residual connection and LayerNorm.

    Call arguments:
        inputs: `(batch, seq_len, d_model)`.
        padding_mask: optional `(batch, seq_len)`, True at real tokens; defaults to the
            Keras mask of `inputs`.
        attention_mask: optional boolean `(batch, seq_len, seq_len)`.
        use_causal_mask: position `t` attends to positions `<= t` only.

    Returns `(batch, seq_len, d_model)`.
    """

    def build(self, inputs_shape):
        self.self_attention = self._attention("self_attention", self.use_rotary)
        self.self_attention.build(inputs_shape)
        self.attention_norm, self.attention_dropout_layer = self._sublayer_parts("self_attention")
        self.feed_forward = self._feed_forward()
        self.feed_forward.build(inputs_shape)
        self.feed_forward_norm, self.feed_forward_dropout = self._sublayer_parts("feed_forward")
        for norm in (self.attention_norm, self.feed_forward_norm):
            norm.build(inputs_shape)
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, use_causal_mask=False, training=None):
        if padding_mask is None:
            padding_mask = get_keras_mask(inputs)
        (x,) = self._residual(
            inputs,
            self.attention_norm,
            self.attention_dropout_layer,
            lambda h: self.self_attention(
                h,
                query_mask=padding_mask,
                attention_mask=attention_mask,
                use_causal_mask=use_causal_mask,
                training=training,
            ),
            training,
        )
        (x,) = self._residual(
            x,
            self.feed_forward_norm,
            self.feed_forward_dropout,
            lambda h: self.feed_forward(h, training=training),
            training,
        )
        return x


@keras.saving.register_keras_serializable(package="suite")
class TransformerDecoderBlock(_ResidualBlock):
    """Causal self-attention, cross-attention over an encoded context, then feed-forward.

    Call arguments:
        inputs: `(batch, T, d_model)` decoder states.
        context: `(batch, S, d_model)` encoder outputs (may be `None` when `cross_cache` holds
            its projection).
        padding_mask: optional `(batch, T)`; context_mask: optional `(batch, S)`.
        self_cache: optional `(batch, 2, max_length, heads, head_dim)` for incremental decoding;
            `inputs` then holds the steps starting at `cache_index`.
        cross_cache: optional projected context from `self.cross_attention.context_cache`.

    Returns `(batch, T, d_model)`, or `(output, self_cache)` when `self_cache` is given.
    """

    def build(self, inputs_shape, context_shape=None):
        context_shape = inputs_shape if context_shape is None else context_shape
        self.self_attention = self._attention("self_attention", self.use_rotary)
        self.self_attention.build(inputs_shape)
        self.cross_attention = self._attention("cross_attention", False)
        self.cross_attention.build(inputs_shape, context_shape)
        self.feed_forward = self._feed_forward()
        self.feed_forward.build(inputs_shape)
        self.attention_norm, self.attention_dropout_layer = self._sublayer_parts("self_attention")
        self.cross_norm, self.cross_dropout = self._sublayer_parts("cross_attention")
        self.feed_forward_norm, self.feed_forward_dropout = self._sublayer_parts("feed_forward")
        for norm in (self.attention_norm, self.cross_norm, self.feed_forward_norm):
            norm.build(inputs_shape)
        self.built = True

    def call(
        self,
        inputs,
        context=None,
        padding_mask=None,
        context_mask=None,
        self_cache=None,
        cross_cache=None,
        cache_index=None,
        training=None,
    ):
        if padding_mask is None:
            padding_mask = get_keras_mask(inputs)
        x, *new_cache = self._residual(
            inputs,
            self.attention_norm,
            self.attention_dropout_layer,
            lambda h: self.self_attention(
                h,
                query_mask=padding_mask,
                use_causal_mask=self_cache is None,
                cache=self_cache,
                cache_index=cache_index,
                training=training,
            ),
            training,
        )
        x, *_ = self._residual(
            x,
            self.cross_norm,
            self.cross_dropout,
            lambda h: self.cross_attention(
                h,
                context,
                query_mask=padding_mask,
                context_mask=context_mask,
                cache=cross_cache,
                training=training,
            ),
            training,
        )
        (x,) = self._residual(
            x,
            self.feed_forward_norm,
            self.feed_forward_dropout,
            lambda h: self.feed_forward(h, training=training),
            training,
        )
        return (x, new_cache[0]) if self_cache is not None else x
