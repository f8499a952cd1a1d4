"""Train-time image augmentation for tf.data: Keras geometric layers, keras-cv RandAugment, Keras
RandomErasing, keras-cv MixUp/CutMix.

Works on batches of raw pixels, `images (batch, H, W, C)` float32 in [0, 255], before the model's own
Resizing/Rescaling stem. keras-cv 0.9 runs under Keras 3.15 here (TensorFlow backend, inside tf.data);
its `RandAugment` only accepts RGB (its colour-degeneration op calls `tf.image.rgb_to_grayscale`), so
grayscale batches go through it as three equal channels and are averaged back to one.
"""

from __future__ import annotations

from typing import Any

import keras
import keras_cv
import tensorflow as tf

FILL_MODES = ("constant", "reflect", "wrap", "nearest")


class ImageAugmentation:
    """`(images (b, H, W, C) float32 in [0, 255], labels) -> (images, labels)` with the same shapes.

    Applied in order: RandomTranslation / RandomRotation / RandomZoom (and RandomFlip("horizontal")
    when `horizontal_flip`; keep it off for digits), keras-cv RandAugment, Keras RandomErasing
    (Zhong et al. 2020: with probability `random_erasing` per image, one rectangle of 2-33 % of the
    area is filled with noise), then keras-cv MixUp or
    CutMix (one of them per batch, chosen at random, when both are on). MixUp/CutMix mix labels, so
    they need one-hot labels `(b, num_classes)` float32: `soft_labels` is True when either is on and
    `ImagePreprocessor.dataset` then one-hot encodes the labels. Otherwise labels pass through.

    `translation` and `zoom` are fractions of the image height/width, `rotation` a fraction of a full
    turn (0.05 = ±18°); 0 disables a layer. `magnitude` is RandAugment's strength in [0, 1].
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        *,
        translation: float = 0.1,
        rotation: float = 0.05,
        zoom: float = 0.1,
        horizontal_flip: bool = False,
        rand_augment: bool = True,
        augmentations_per_image: int = 2,
        magnitude: float = 0.2,
        random_erasing: float = 0.0,
        mixup: bool = False,
        cutmix: bool = False,
        fill_mode: str = "constant",
        seed: int = 0,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}.")
        for name, value in (("translation", translation), ("rotation", rotation), ("zoom", zoom)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        for name, value in (("magnitude", magnitude), ("random_erasing", random_erasing)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}.")
        if augmentations_per_image < 1:
            raise ValueError(f"augmentations_per_image must be at least 1, got {augmentations_per_image!r}.")
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}.")
        self._config = dict(
            channels=channels, num_classes=num_classes, translation=translation, rotation=rotation,
            zoom=zoom, horizontal_flip=horizontal_flip, rand_augment=rand_augment,
            augmentations_per_image=augmentations_per_image, magnitude=magnitude,
            random_erasing=random_erasing, mixup=mixup,
            cutmix=cutmix, fill_mode=fill_mode, seed=seed,
        )
        self.channels = channels
        self.num_classes = num_classes
        self._geometric = self._geometric_layers(translation, rotation, zoom, horizontal_flip, fill_mode, seed)
        self._rand_augment = (
            keras_cv.layers.RandAugment(
                value_range=(0, 255),
                augmentations_per_image=augmentations_per_image,
                magnitude=magnitude,
                seed=seed + 10,
            )
            if rand_augment
            else None
        )
        self._erasing = (
            keras.layers.RandomErasing(factor=(random_erasing, random_erasing), value_range=(0, 255), seed=seed + 30)
            if random_erasing
            else None
        )
        mixers = []
        if mixup:
            mixers.append(keras_cv.layers.MixUp(seed=seed + 20))
        if cutmix:
            mixers.append(keras_cv.layers.CutMix(seed=seed + 21))
        self._mixer = keras_cv.layers.RandomChoice(mixers, batchwise=True, seed=seed + 22) if mixers else None

    @staticmethod
    def _geometric_layers(translation, rotation, zoom, horizontal_flip, fill_mode, seed) -> list:
        layers = []
        if horizontal_flip:
            layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
        if translation:
            layers.append(
                keras.layers.RandomTranslation(translation, translation, fill_mode=fill_mode, seed=seed + 1)
            )
        if rotation:
            layers.append(keras.layers.RandomRotation(rotation, fill_mode=fill_mode, seed=seed + 2))
        if zoom:
            layers.append(keras.layers.RandomZoom(zoom, zoom, fill_mode=fill_mode, seed=seed + 3))
        return layers

    @property
    def soft_labels(self) -> bool:
        """True when MixUp or CutMix is on: labels must be one-hot `(b, num_classes)` float32."""
        return self._mixer is not None

    def __call__(self, images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        for layer in self._geometric:
            images = layer(images, training=True)
        if self._rand_augment is not None:
            images = self._apply_rand_augment(images)
        if self._erasing is not None:
            images = self._erasing(images, training=True)
        if self._mixer is not None:
            mixed = self._mixer({"images": images, "labels": tf.cast(labels, tf.float32)}, training=True)
            images, labels = mixed["images"], mixed["labels"]
        return images, labels

    def _apply_rand_augment(self, images: tf.Tensor) -> tf.Tensor:
        if self.channels == 3:
            return self._rand_augment(images, training=True)
        rgb = tf.repeat(images, 3, axis=-1)
        return tf.reduce_mean(self._rand_augment(rgb, training=True), axis=-1, keepdims=True)

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImageAugmentation:
        config = dict(config)
        return cls(config.pop("channels"), config.pop("num_classes"), **config)


def augmentation(preprocessor, **options) -> ImageAugmentation:
    """Builds an `ImageAugmentation` for a fitted `ImagePreprocessor` (its channels and class count).

    `options` are `ImageAugmentation`'s keyword arguments (translation, rotation, zoom, ...).
    """
    return ImageAugmentation(preprocessor.channels, preprocessor.num_classes, **options)
