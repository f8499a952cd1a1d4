"""The Vision Transformer (Dosovitskiy et al., 2021) on the shared `TransformerBackbone`, with the
options of the Compact Transformers (CCT, Hassani et al., 2021) for small images and little data.

Raw pixels `(batch, h, w, C)` in [0, 255] -> Resizing + Rescaling (`preprocessing_layers`) -> tokens:
`patch_size` patches (every `patch_stride` pixels) embedded by a strided Conv2D (`stem="patch"`), or
CCT's convolutional tokeniser, `conv_layers` x (Conv2D + ReLU, MaxPool stride 2) (`stem="conv"`) ->
learned 2-D position vectors for the token grid -> a learned class token in front (`pooling="cls"`)
-> `TransformerBackbone` -> the class token's state, the mean state, or CCT's attention-weighted
sum (`pooling="sequence"`) -> logits.
"""

from __future__ import annotations

import keras
from keras import ops

from suite.backbone import BackboneConfig, TransformerBackbone
from suite.layers import AttentionPooling, LearnedPositionEmbedding, SequencePooling
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


@keras.saving.register_keras_serializable(package="suite")
class StridedMaxPooling2D(keras.layers.Layer):
    """`keras.layers.MaxPooling2D(pool_size, strides, padding="same")` whose training pass is the
    running maximum of `pool_size` strided slices along the rows, then along the columns.

    The outputs are the same, and so is the gradient wherever a window's maximum is unique; it is one
    element-wise select per slice instead of `MaxPooling2D`'s select-and-scatter, which XLA:CPU runs
    slowly: the small ViT trains about 11 % faster with it. Outside training (inference, serving
    graphs traced without XLA, where the slices are slower) it is `ops.max_pool`.
    `(batch, h, w, C)` -> `(batch, ceil(h / strides), ceil(w / strides), C)`; `h` and `w` must be static.
    """

    def __init__(self, pool_size: int = 3, strides: int = 2, **kwargs):
        super().__init__(**kwargs)
        if pool_size < 1 or strides < 1:
            raise ValueError(f"pool_size and strides must be >= 1, got {pool_size} and {strides}.")
        self.pool_size = pool_size
        self.strides = strides

    def call(self, inputs, training=None):
        if not training:
            return ops.max_pool(inputs, self.pool_size, self.strides, padding="same")
        self._output_sides(inputs.shape)
        return self._pool(self._pool(inputs, axis=1), axis=2)

    def _output_sides(self, inputs_shape) -> tuple[int, int]:
        sides = inputs_shape[1:3]
        if None in sides:
            raise ValueError(f"{self.name} needs a static height and width, got inputs of shape {inputs_shape}.")
        return tuple(-(-side // self.strides) for side in sides)

    def _pool(self, inputs, axis: int):
        size = inputs.shape[axis]
        out_size = -(-size // self.strides)
        pad = max((out_size - 1) * self.strides + self.pool_size - size, 0)
        widths = [[0, 0]] * 4
        widths[axis] = [pad // 2, pad - pad // 2]
        padded = ops.pad(inputs, widths, constant_values=float("-inf"))
        pooled = None
        for offset in range(self.pool_size):
            index = [slice(None)] * 4
            index[axis] = slice(offset, offset + self.strides * (out_size - 1) + 1, self.strides)
            window = padded[tuple(index)]
            pooled = window if pooled is None else ops.maximum(pooled, window)
        return pooled

    def compute_output_shape(self, inputs_shape):
        return (inputs_shape[0], *self._output_sides(inputs_shape), inputs_shape[3])

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}


STEMS = ("patch", "conv")
POOLINGS = ("cls", "mean", "sequence")


def check_options(
    stem: str, pooling: str, patch_size: int, patch_stride: int | None, conv_layers: int,
    conv_filters: int | None, kernel_size: int,
) -> None:
    """Raises a ValueError naming the first bad option of `build_vit`."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS}, got {stem!r}.")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}.")
    if patch_stride is not None and not 1 <= patch_stride <= patch_size:
        raise ValueError(f"patch_stride must be in 1..patch_size ({patch_size}) or null, got {patch_stride}.")
    for name, value in (("conv_layers", conv_layers), ("conv_filters", conv_filters), ("kernel_size", kernel_size)):
        if value is not None and value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}.")


def patch_grid(image_size: tuple[int, int], patch_size: int, patch_stride: int | None = None) -> tuple[int, int]:
    """`(rows, cols)` of `patch_size` patches taken every `patch_stride` pixels (default `patch_size`:
    no overlap) of an `image_size` image; the patches must cover the image exactly."""
    height, width = image_size
    stride = patch_size if patch_stride is None else patch_stride
    if patch_size < 1 or min(height, width) < patch_size or any((side - patch_size) % stride for side in image_size):
        need = (f"a multiple of patch_size ({patch_size})" if stride == patch_size
                else f"patch_size ({patch_size}) plus a multiple of patch_stride ({stride})")
        raise ValueError(f"image_size {tuple(image_size)} must be {need} on both sides.")
    return (height - patch_size) // stride + 1, (width - patch_size) // stride + 1


def conv_grid(image_size: tuple[int, int], conv_layers: int) -> tuple[int, int]:
    """`(rows, cols)` of the conv stem's feature map: each layer's stride-2 max-pool halves both sides,
    rounding up (8x8 -> 2x2 and 28x28 -> 7x7 with 2 layers)."""
    rows, cols = image_size
    for _ in range(conv_layers):
        rows, cols = -(-rows // 2), -(-cols // 2)
    return rows, cols


def _conv_tokeniser(pixels, d_model: int, conv_layers: int, conv_filters: int, kernel_size: int):
    """CCT's tokeniser: `(batch, H, W, C)` -> `(batch, rows, cols, d_model)`; bias-free convolutions as in CCT."""
    x = pixels
    for i in range(conv_layers):
        filters = d_model if i == conv_layers - 1 else conv_filters
        x = keras.layers.Conv2D(
            filters, kernel_size, padding="same", activation="relu", use_bias=False, name=f"stem_conv_{i}"
        )(x)
        x = StridedMaxPooling2D(3, strides=2, name=f"stem_pool_{i}")(x)
    return x


def build_vit(
    preprocessor: ImagePreprocessor,
    patch_size: int,
    backbone: BackboneConfig,
    head_dropout: float = 0.0,
    position_grid: tuple[int, int] | None = None,
    *,
    stem: str = "patch",
    patch_stride: int | None = None,
    conv_layers: int = 2,
    conv_filters: int | None = None,
    kernel_size: int = 3,
    pooling: str = "cls",
) -> keras.Model:
    """ViT classifier: images `(batch, h, w, C)` float32 in [0, 255], any h, w -> logits `(batch, classes)`.

    Images are resized to `preprocessor.image_size`, giving `rows * cols` tokens (`patch_grid` or
    `conv_grid`), plus the class token with `pooling="cls"`. `conv_filters`: the channels of the conv
    stem's inner layers (None: `d_model // 2`; its last layer has `d_model`). `position_grid`: the
    grid the position table is stored at (default: this model's grid); when it differs, the table is
    bilinearly interpolated to the model's grid on every call.
    """
    if backbone.position != "none":
        raise ValueError(
            f"the ViT adds its own 2-D positions: backbone.position must be 'none', got {backbone.position!r}."
        )
    check_options(stem, pooling, patch_size, patch_stride, conv_layers, conv_filters, kernel_size)
    d_model = backbone.d_model

    images = keras.Input((None, None, preprocessor.channels), name="images")
    pixels = preprocessing_layers(preprocessor)(images)
    if stem == "patch":
        grid = patch_grid(preprocessor.image_size, patch_size, patch_stride)
        stride = patch_stride or patch_size
        features = keras.layers.Conv2D(d_model, patch_size, strides=stride, name="patch_embedding")(pixels)
    else:
        grid = conv_grid(preprocessor.image_size, conv_layers)
        filters = conv_filters or max(d_model // 2, 1)
        features = _conv_tokeniser(pixels, d_model, conv_layers, filters, kernel_size)
    position_grid = tuple(position_grid or grid)
    tokens = keras.layers.Reshape((grid[0] * grid[1], d_model), name="patch_tokens")(features)
    positions = LearnedPositionEmbedding(
        position_grid[0] * position_grid[1],
        grid_shape=position_grid,
        initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="patch_positions",
    )
    tokens = tokens + positions(tokens, grid_shape=grid)
    if pooling == "cls":
        tokens = ClassToken(name="class_token")(tokens)
    states = TransformerBackbone(backbone, name="backbone")(
        {"embeddings": tokens, "padding_mask": ops.ones_like(tokens[..., 0], dtype="bool")}
    )
    if pooling == "sequence":
        pooled = AttentionPooling(name="pooling")(states)
    else:
        pooled = SequencePooling("first" if pooling == "cls" else "mean", name="pooling")(states)
    hidden = keras.layers.Dropout(head_dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(preprocessor.num_classes, dtype="float32", name="logits")(hidden)
    return keras.Model(images, logits, name="vision_transformer")
