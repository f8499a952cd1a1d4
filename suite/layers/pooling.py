"""Pooling a sequence of states into one vector per example: fixed rules or learned attention."""

from __future__ import annotations

import keras
from keras import ops

POOLINGS = ("first", "mean", "max")


@keras.saving.register_keras_serializable(package="suite")
class SequencePooling(keras.layers.Layer):
    """`first`: the state at position 0 (a `[CLS]` token); `mean` / `max`: the mean / the
    element-wise maximum over real tokens.

    Call with states `(batch, seq_len, d_model)` and `padding_mask (batch, seq_len)` (True at
    real tokens); returns `(batch, d_model)`. An all-padding row pools to zeros.
    """

    def __init__(self, mode: str = "first", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"mode must be one of {POOLINGS}, got {mode!r}.")
        self.mode = mode

    def call(self, inputs, padding_mask=None):
        if self.mode == "first":
            return inputs[:, 0, :]
        if self.mode == "max":
            if padding_mask is None:
                return ops.max(inputs, axis=1)
            real = ops.cast(padding_mask, "bool")[:, :, None]
            pooled = ops.max(ops.where(real, inputs, float("-inf")), axis=1)
            return ops.where(ops.any(real, axis=1), pooled, ops.zeros_like(pooled))
        if padding_mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(padding_mask, inputs.dtype)[:, :, None]
        total = ops.sum(inputs * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@keras.saving.register_keras_serializable(package="suite")
class AttentionPooling(keras.layers.Layer):
    """Sequence pooling of the Compact Transformers (Hassani et al., 2021): a learned `Dense(1)`
    scores every state, a softmax over the real tokens turns the scores into weights, and the
    output is the weighted sum of the states.

    Call with states `(batch, seq_len, d_model)` and `padding_mask (batch, seq_len)` (True at real
    tokens); returns `(batch, d_model)`, and with `return_attention_scores` also the float32 weights
    `(batch, seq_len)` (zero at padding). An all-padding row pools to zeros.
    """

    def build(self, inputs_shape):
        self.score = keras.layers.Dense(1, dtype=self.dtype_policy, name="score")
        self.score.build(inputs_shape)

    def call(self, inputs, padding_mask=None, return_attention_scores: bool = False):
        scores = ops.cast(self.score(inputs)[..., 0], "float32")
        if padding_mask is not None:
            real = ops.cast(padding_mask, "bool")
            scores = ops.where(real, scores, -1e9)
        weights = ops.softmax(scores, axis=-1)
        if padding_mask is not None:
            weights = ops.where(real, weights, 0.0)
        pooled = ops.einsum("bs,bsd->bd", ops.cast(weights, inputs.dtype), inputs)
        return (pooled, weights) if return_attention_scores else pooled
