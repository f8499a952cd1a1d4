"""Fitted image size and channels, batching with augmentation, and the decoding and resizing the export graph runs."""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from suite.vision.augmentation import ImageAugmentation
from suite.vision.data import ImageData, check_image_size
from suite.vision.decoding import tf_decode_image


class ImagePreprocessor:
    """Class names, the model's `image_size (H, W)` and `channels`, and pixel rescaling `x * scale + offset`.

    Fitted on the training data; the model stem applies `preprocessing_layers(self)`.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        image_size: tuple[int, int],
        channels: int,
        scale: float = 1.0 / 255.0,
        offset: float = 0.0,
    ):
        self.class_names = tuple(str(c) for c in class_names)
        if len(self.class_names) < 2 or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"class_names must be at least 2 unique names, got {list(self.class_names)}.")
        self.image_size = check_image_size(image_size)
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
        self.channels = int(channels)
        self.scale = float(scale)
        self.offset = float(offset)

    @classmethod
    def fit(
        cls,
        train: ImageData,
        *,
        image_size: tuple[int, int] | None = None,
        scale: float = 1.0 / 255.0,
        offset: float = 0.0,
    ) -> ImagePreprocessor:
        """`image_size=None` keeps the training images' size."""
        return cls(train.class_names, image_size or train.image_size, train.channels, scale, offset)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def get_config(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "image_size": list(self.image_size),
            "channels": self.channels,
            "scale": self.scale,
            "offset": self.offset,
        }

    @classmethod
    def from_config(cls, config: dict) -> ImagePreprocessor:
        return cls(**config)

    def label_ids(self, data: ImageData) -> np.ndarray:
        """`(n,)` int32 ids into this preprocessor's `class_names` (data may order its classes differently)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        unknown = sorted(set(data.class_names[c] for c in np.unique(data.labels)) - set(index))
        if unknown:
            raise ValueError(f"classes {unknown} are not among the fitted class_names {list(self.class_names)}.")
        mapping = np.array([index.get(name, -1) for name in data.class_names], dtype=np.int32)
        return mapping[data.labels]

    def dataset(
        self,
        data: ImageData,
        batch_size: int = 32,
        shuffle: bool = False,
        training: bool = False,
        seed: int = 0,
        augmentation: ImageAugmentation | None = None,
        one_hot: bool | None = None,
    ) -> tf.data.Dataset:
        """Yields `(images (b, H, W, C) float32 in [0, 255], labels)`; labels `(b,)` int32 or one-hot
        `(b, num_classes)` float32.

        `training=True` drops the last partial batch (static batch size) and applies `augmentation`;
        without it the augmentation is never applied. `one_hot=None` means one-hot exactly when the
        augmentation mixes labels (MixUp/CutMix); pass the same augmentation for validation data to get
        matching labels. H, W are the data's size; the model resizes to `image_size`.
        """
        if data.channels != self.channels:
            raise ValueError(
                f"images have {data.channels} channel(s) but the preprocessor expects {self.channels}; "
                f"read them with channels={self.channels}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size!r}.")
        if training and len(data) < batch_size:
            raise ValueError(f"training needs at least batch_size={batch_size} images, got {len(data)}.")
        soft = augmentation is not None and augmentation.soft_labels
        one_hot = soft if one_hot is None else one_hot
        if soft and not one_hot:
            raise ValueError(
                "the augmentation uses MixUp/CutMix, which need one_hot labels; pass one_hot=None or True."
            )
        labels = self.label_ids(data)
        ds = tf.data.Dataset.from_tensor_slices((data.images, labels))
        if shuffle:
            ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=training)
        if one_hot:
            ds = ds.map(lambda x, y: (x, tf.one_hot(y, self.num_classes)))
        if training and augmentation is not None:
            ds = ds.map(augmentation, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    def tf_decode(self, encoded: tf.Tensor) -> tf.Tensor:
        """`(batch,)` tf.string of JPEG/PNG bytes -> float32 `(batch, H, W, C)` in [0, 255] at `image_size`."""
        return tf.map_fn(
            lambda item: tf_decode_image(item, self.channels, self.image_size),
            encoded,
            fn_output_signature=tf.TensorSpec((*self.image_size, self.channels), tf.float32),
        )


def preprocessing_layers(preprocessor: ImagePreprocessor) -> keras.Sequential:
    """Model stem: raw `(b, h, w, C)` pixels in [0, 255] -> `(b, H, W, C)` resized (bilinear) and rescaled."""
    height, width = preprocessor.image_size
    return keras.Sequential(
        [
            keras.layers.Resizing(height, width),
            keras.layers.Rescaling(preprocessor.scale, preprocessor.offset),
        ],
        name="preprocessing",
    )
