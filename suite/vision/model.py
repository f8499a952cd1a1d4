"""The Vision Transformer (Dosovitskiy et al., 2021) on the shared `TransformerBackbone`.

Raw pixels `(batch, h, w, C)` in [0, 255] -> Resizing + Rescaling (`preprocessing_layers`) ->
non-overlapping `patch_size` patches embedded by a strided Conv2D -> learned 2-D position
vectors for the patch grid -> a learned class token in front -> `TransformerBackbone` ->
the class token's state -> logits.
"""

from __future__ import annotations

import keras
from keras import ops

from suite.backbone import BackboneConfig, TransformerBackbone
from suite.layers import LearnedPositionEmbedding, SequencePooling
from suite.vision.preprocessor import ImagePreprocessor, preprocessing_layers


@keras.saving.register_keras_serializable(package="suite")
class ClassToken(keras.layers.Layer):
    """Prepends one learned vector to every sequence: `(batch, n, d)` -> `(batch, n + 1, d)`.

    The token has no position vector of its own: its learned value already marks its place.
    """

    def build(self, inputs_shape):
        self.token = self.add_weight(name="class_token", shape=(1, 1, inputs_shape[-1]), initializer="zeros")

    def call(self, inputs):
        batch, _, d_model = ops.shape(inputs)
        token = ops.broadcast_to(ops.cast(self.token, inputs.dtype), (batch, 1, d_model))
        return ops.concatenate([token, inputs], axis=1)

    def compute_output_shape(self, inputs_shape):
        length = None if inputs_shape[1] is None else inputs_shape[1] + 1
        return (inputs_shape[0], length, inputs_shape[2])


def patch_grid(image_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """`(rows, cols)` of patches in an `image_size` image; the sides must be multiples of `patch_size`."""
    height, width = image_size
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(
            f"image_size {tuple(image_size)} must be a multiple of patch_size ({patch_size}) on both sides."
        )
    return height // patch_size, width // patch_size


def build_vit(
    preprocessor: ImagePreprocessor,
    patch_size: int,
    backbone: BackboneConfig,
    head_dropout: float = 0.0,
    position_grid: tuple[int, int] | None = None,
) -> keras.Model:
    """ViT classifier: images `(batch, h, w, C)` float32 in [0, 255], any h, w -> logits `(batch, classes)`.

    Images are resized to `preprocessor.image_size`, giving `rows * cols` patches plus the class token.
    `position_grid`: the grid the position table is stored at (default: this model's grid); when it
    differs, the table is bilinearly interpolated to the model's grid on every call.
    """
    if backbone.position != "none":
        raise ValueError(
            f"the ViT adds its own 2-D positions: backbone.position must be 'none', got {backbone.position!r}."
        )
    grid = patch_grid(preprocessor.image_size, patch_size)
    position_grid = tuple(position_grid or grid)
    d_model = backbone.d_model

    images = keras.Input((None, None, preprocessor.channels), name="images")
    pixels = preprocessing_layers(preprocessor)(images)
    patches = keras.layers.Conv2D(d_model, patch_size, strides=patch_size, name="patch_embedding")(pixels)
    tokens = keras.layers.Reshape((grid[0] * grid[1], d_model), name="patch_tokens")(patches)
    positions = LearnedPositionEmbedding(
        position_grid[0] * position_grid[1],
        grid_shape=position_grid,
        initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="patch_positions",
    )
    tokens = ClassToken(name="class_token")(tokens + positions(tokens, grid_shape=grid))
    states = TransformerBackbone(backbone, name="backbone")(
        {"embeddings": tokens, "padding_mask": ops.ones_like(tokens[..., 0], dtype="bool")}
    )
    pooled = SequencePooling("first", name="pooling")(states)
    hidden = keras.layers.Dropout(head_dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(preprocessor.num_classes, dtype="float32", name="logits")(hidden)
    return keras.Model(images, logits, name="vision_transformer")
