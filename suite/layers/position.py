"""Position information: sinusoidal, learned (interpolable) and rotary."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="suite")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Fixed encodings PE(pos, 2i) = sin(pos / w^(2i/d)), PE(pos, 2i+1) = cos(pos / w^(2i/d)).

    Call with embeddings `(batch, seq_len, d_model)`; returns the encodings for positions
    `start_index .. start_index + seq_len - 1`, broadcast to the input shape.
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, inputs, start_index=0):
        seq_len, d_model = ops.shape(inputs)[-2], ops.shape(inputs)[-1]
        positions = ops.cast(ops.arange(seq_len) + start_index, "float32")
        pair_index = ops.cast(ops.arange(d_model) // 2, "float32")
        inverse_frequency = ops.power(self.max_wavelength, -2.0 * pair_index / ops.cast(d_model, "float32"))
        angles = positions[:, None] * inverse_frequency[None, :]
        is_even = (ops.arange(d_model) % 2 == 0)[None, :]
        encoding = ops.where(is_even, ops.sin(angles), ops.cos(angles))
        return ops.broadcast_to(ops.cast(encoding, self.compute_dtype), ops.shape(inputs))

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


@keras.saving.register_keras_serializable(package="suite")
class LearnedPositionEmbedding(keras.layers.Layer):
    """A trained `(sequence_length, d_model)` table of position vectors.

    With `grid_shape=(rows, cols)` the table is a 2-D grid of patch positions
    (`sequence_length = rows * cols`, row-major), as in ViT.

    Call with embeddings `(batch, seq_len, d_model)`; returns position vectors broadcast to
    that shape. A shorter sequence takes rows `start_index ..`; a longer one (or, for a grid,
    a different `grid_shape` argument) gets the table resized by bilinear interpolation.
    """

    def __init__(
        self,
        sequence_length: int,
        grid_shape: tuple[int, int] | None = None,
        initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if grid_shape is not None:
            grid_shape = tuple(int(n) for n in grid_shape)
            if grid_shape[0] * grid_shape[1] != sequence_length:
                raise ValueError(
                    f"grid_shape {grid_shape} holds {grid_shape[0] * grid_shape[1]} positions, "
                    f"but sequence_length is {sequence_length}."
                )
        self.sequence_length = sequence_length
        self.grid_shape = grid_shape
        self.initializer = keras.initializers.get(initializer)

    def build(self, inputs_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.sequence_length, inputs_shape[-1]),
            initializer=self.initializer,
        )

    def interpolated(self, length: int | None = None, grid_shape: tuple[int, int] | None = None):
        """The table resized to `length` positions, or to `grid_shape` for a 2-D table."""
        table = ops.convert_to_tensor(self.embeddings)
        d_model = table.shape[-1]
        if grid_shape is not None:
            if self.grid_shape is None:
                raise ValueError(f"{self.name} is 1-D; it has no grid to resize to {grid_shape}.")
            image = ops.reshape(table, (1, *self.grid_shape, d_model))
            resized = ops.image.resize(image, grid_shape, interpolation="bilinear")
            return ops.reshape(resized, (grid_shape[0] * grid_shape[1], d_model))
        image = ops.reshape(table, (1, self.sequence_length, 1, d_model))
        resized = ops.image.resize(image, (length, 1), interpolation="bilinear")
        return ops.reshape(resized, (length, d_model))

    def call(self, inputs, start_index=0, grid_shape=None):
        seq_len = inputs.shape[-2]
        if grid_shape is not None and tuple(grid_shape) != self.grid_shape:
            table = self.interpolated(grid_shape=tuple(grid_shape))
        elif seq_len is not None and seq_len > self.sequence_length:
            table = self.interpolated(length=seq_len)
        else:
            table = ops.slice(
                ops.convert_to_tensor(self.embeddings), (start_index, 0), (ops.shape(inputs)[-2], ops.shape(inputs)[-1])
            )
        return ops.broadcast_to(ops.cast(table, self.compute_dtype), ops.shape(inputs))

    def compute_output_shape(self, inputs_shape):
        return inputs_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "grid_shape": self.grid_shape,
            "initializer": keras.initializers.serialize(self.initializer),
        }


@keras.saving.register_keras_serializable(package="suite")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (Su et al., 2021), applied to queries and keys.

    Call with `(batch, seq_len, heads, head_dim)`; rotates the two halves of each head
    by angles `position / max_wavelength^(2i/head_dim)`, positions starting at `start_index`.
    """

    def __init__(self, max_wavelength: float = 10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = max_wavelength

    def call(self, inputs, start_index=0):
        seq_len, head_dim = ops.shape(inputs)[1], inputs.shape[-1]
        half = head_dim // 2
        positions = ops.cast(ops.arange(seq_len) + start_index, "float32")
        inverse_frequency = ops.power(
            self.max_wavelength, -ops.arange(half, dtype="float32") * (2.0 / head_dim)
        )
        angles = positions[:, None] * inverse_frequency[None, :]
        cos = ops.cast(ops.cos(angles), inputs.dtype)[None, :, None, :]
        sin = ops.cast(ops.sin(angles), inputs.dtype)[None, :, None, :]
        first, second = inputs[..., :half], inputs[..., half:]
        return ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}
