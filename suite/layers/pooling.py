"""Pooling a sequence of states into one vector per example."""

from __future__ import annotations

import keras
from keras import ops

POOLINGS = ("first", "mean")


@keras.saving.register_keras_serializable(package="suite")
class SequencePooling(keras.layers.Layer):
    """`first`: the state at position 0 (a `[CLS]` token); `mean`: the mean over real tokens.

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
        if padding_mask is None:
            return ops.mean(inputs, axis=1)
        weights = ops.cast(padding_mask, inputs.dtype)[:, :, None]
        total = ops.sum(inputs * weights, axis=1)
        return total / ops.maximum(ops.sum(weights, axis=1), ops.cast(1.0, inputs.dtype))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
