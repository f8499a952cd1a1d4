"""Pooling a sequence of states into one vector per example."""

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
