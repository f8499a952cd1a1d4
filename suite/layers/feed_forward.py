"""Position-wise feed-forward network."""

from __future__ import annotations

import keras
from keras import ops

ACTIVATIONS = ("relu", "gelu", "swiglu")


@keras.saving.register_keras_serializable(package="suite")
class FeedForward(keras.layers.Layer):
    """Dense(hidden_dim) -> activation -> dropout -> Dense(d_model).

    `activation="swiglu"` uses a gated unit: `silu(x W) * (x V)` (Shazeer, 2020), with both
    projections fused into one `(d_model, 2 * hidden_dim)` matrix.

    Call with `(batch, seq_len, d_model)`; returns the same shape.
    """

    def __init__(
        self,
        hidden_dim: int,
        activation: str = "gelu",
        dropout: float = 0.0,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        width = 2 * self.hidden_dim if self.activation == "swiglu" else self.hidden_dim
        dense = dict(kernel_initializer=self.kernel_initializer, dtype=self.dtype_policy)
        self.hidden_dense = keras.layers.Dense(width, name="hidden", **dense)
        self.hidden_dense.build(inputs_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name="dropout")
        self.output_dense = keras.layers.Dense(inputs_shape[-1], name="output", **dense)
        self.output_dense.build((*inputs_shape[:-1], self.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        hidden = self.hidden_dense(inputs)
        if self.activation == "swiglu":
            gate, value = ops.split(hidden, 2, axis=-1)
            hidden = ops.silu(gate) * value
        elif self.activation == "gelu":
            hidden = ops.gelu(hidden, approximate=False)
        else:
            hidden = ops.relu(hidden)
        return self.output_dense(self.dropout_layer(hidden, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_dim": self.hidden_dim,
            "activation": self.activation,
            "dropout": self.dropout,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
