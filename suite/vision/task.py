"""Image classification: a Vision Transformer (or a Compact Transformer) on the shared backbone,
keras-cv augmentation in training."""

from __future__ import annotations

import base64
import dataclasses
import functools
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from suite.backbone import BackboneConfig
from suite.config import to_dict
from suite.core.inference import inference_function
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.export import checked_input, require
from suite.vision import augmentation as augmentations
from suite.vision.augmentation import ImageAugmentation
from suite.vision.decoding import (
    IMAGE_SIZES,
    INCOMPLETE_IMAGES,
    is_complete_image,
    require_complete_images,
    tf_convert_channels,
)
from suite.vision.data import ImageData, ImageDataConfig, read_images, split_images
from suite.vision.preprocessor import ImagePreprocessor
from suite.vision.model import build_vit, check_options, patch_grid

OUTPUT_KEYS = ("label", "class_id", "probabilities", "top_k_class_id", "top_k_label", "top_k_probabilities")


@dataclasses.dataclass
class AugmentationConfig:
    """Train-time augmentation (`suite.vision.data.ImageAugmentation`'s options); never at evaluation.

    The defaults are mild, for tiny images such as the 8x8 digits; for photos turn on `rand_augment`
    (keras-cv RandAugment), `horizontal_flip` and `mixup` / `cutmix`."""

    enabled: bool = True
    translation: float = 0.05
    rotation: float = 0.03
    zoom: float = 0.05
    horizontal_flip: bool = False
    rand_augment: bool = False
    augmentations_per_image: int = 2
    magnitude: float = 0.2
    random_erasing: float = 0.0
    mixup: bool = False
    cutmix: bool = False
    fill_mode: str = "constant"


def _default_vit_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=4, d_model=64, num_heads=4, ff_dim=128, dropout=0.1, position="none")


@dataclasses.dataclass
class ImageClassificationConfig:
    """`image_size (H, W)`: what the model resizes every image to (None: the training images' size).
    `top_k`: size of the top-k outputs and metric.

    The tokens (`suite.vision.model`): `stem="patch"` embeds `patch_size` patches taken every
    `patch_stride` pixels (None: `patch_size`, no overlap; smaller strides overlap them), and both
    sides of `image_size` must be `patch_size` plus a multiple of the stride. `stem="conv"` is the
    Compact Transformers' tokeniser (CCT, Hassani et al. 2021): `conv_layers` x (Conv2D `kernel_size`,
    stride 1, ReLU; MaxPool 3, stride 2), `conv_filters` channels inside (None: `d_model // 2`) and
    `d_model` at the end; every layer halves the sides (rounding up), so any size works (28x28 -> 7x7
    tokens with 2 layers). `pooling`: the image vector the head reads: `cls` (a class token), `mean`
    (of all tokens) or `sequence` (CCT's attention-weighted sum); only `cls` adds a class token.

    For small images and little data, the CCT recipe: `stem: conv`, `pooling: sequence`,
    `backbone.drop_path: 0.1` (stochastic depth) and the default augmentation.
    """

    data: ImageDataConfig = dataclasses.field(default_factory=ImageDataConfig)
    image_size: tuple[int, int] | None = None
    stem: str = "patch"
    patch_size: int = 2
    patch_stride: int | None = None
    conv_layers: int = 2
    conv_filters: int | None = None
    kernel_size: int = 3
    pooling: str = "cls"
    backbone: BackboneConfig = dataclasses.field(default_factory=_default_vit_backbone)
    head_dropout: float = 0.1
    label_smoothing: float = 0.1
    top_k: int = 3
    augmentation: AugmentationConfig = dataclasses.field(default_factory=AugmentationConfig)
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=100, batch_size=32, learning_rate=2e-3, weight_decay=0.05)
    )

    def __post_init__(self):
        check_options(self.stem, self.pooling, self.patch_size, self.patch_stride, self.conv_layers,
                      self.conv_filters, self.kernel_size)
        if self.image_size is not None:
            if len(self.image_size) != 2 or min(self.image_size) < 1:
                raise ValueError(f"image_size must be two positive integers (H, W), got {list(self.image_size)}.")
            if self.stem == "patch":
                patch_grid(self.image_size, self.patch_size, self.patch_stride)
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")
        if self.backbone.position != "none":
            raise ValueError(
                f"backbone.position must be 'none' (the ViT adds 2-D patch positions), got {self.backbone.position!r}."
            )


class ImageClassifier(Task):
    """Classifies images with a Vision Transformer (patches or CCT's conv tokens -> Transformer ->
    class token, mean or attention pooling -> head).

    `ImageClassifier.train("digits")`, or a class-per-folder directory, an `ImageData`, or an
    `(images, labels)` pair; `.predict(images)` gives labels, probabilities and the top k.
    """

    domain = "image_classification"
    config_class = ImageClassificationConfig
    preprocessor_class = ImagePreprocessor
    no_decay = (*Task.no_decay, "class_token")
    optimizer_options = {"clipnorm": 1.0}

    @classmethod
    def read(cls, data, config) -> ImageData:
        """Reads "digits", a folder, an IDX or `.npz` file, an `ImageData` or an `(images, labels)`
        pair, resized to `config.image_size` when set (see `read_images`)."""
        return read_images(data, channels=config.data.channels, image_size=config.image_size,
                           class_names=config.data.class_names)

    @classmethod
    def split(cls, data: ImageData, config) -> dict:
        return split_images(data, config.data)

    @classmethod
    def fit_preprocessor(cls, train_data, config) -> ImagePreprocessor:
        return ImagePreprocessor.fit(train_data, image_size=config.image_size)

    @classmethod
    def create(cls, train_data, config, init_from: Task | None = None) -> "ImageClassifier":
        """Fixes the fitted image size and channels in the config, so later data is read to match."""
        if init_from is not None:
            raise ValueError(f"{cls.__name__} cannot start from another task's weights (init_from).")
        preprocessor = cls.fit_preprocessor(train_data, config)
        config = dataclasses.replace(
            config,
            image_size=preprocessor.image_size,
            data=dataclasses.replace(config.data, channels=preprocessor.channels),
        )
        return cls(cls.build_model(preprocessor, config), preprocessor, config)

    @classmethod
    def build_model(cls, preprocessor, config, position_grid: tuple[int, int] | None = None) -> keras.Model:
        return build_vit(
            preprocessor, config.patch_size, config.backbone, config.head_dropout, position_grid,
            stem=config.stem, patch_stride=config.patch_stride, conv_layers=config.conv_layers,
            conv_filters=config.conv_filters, kernel_size=config.kernel_size, pooling=config.pooling,
        )

    # Training ----------------------------------------------------------------------------

    @property
    def top_k(self) -> int:
        return min(self.config.top_k, self.preprocessor.num_classes)

    @functools.cached_property
    def augmentation(self) -> ImageAugmentation | None:
        """The train-time augmentation, or None when `config.augmentation.enabled` is off."""
        options = to_dict(self.config.augmentation)
        if not options.pop("enabled"):
            return None
        return augmentations.augmentation(self.preprocessor, seed=self.config.training.seed, **options)

    @property
    def one_hot(self) -> bool:
        """Labels are one-hot when smoothed or mixed (MixUp/CutMix), class ids otherwise."""
        mixing = self.augmentation is not None and self.augmentation.soft_labels
        return self.config.label_smoothing > 0 or mixing

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """Batches of `(images (b, H, W, C) float32 in [0, 255], labels)`, augmented only when `training`."""
        training_config = self.config.training
        return self.preprocessor.dataset(
            data,
            training_config.batch_size,
            shuffle=training,
            training=training,
            seed=training_config.seed,
            augmentation=self.augmentation,
            one_hot=self.one_hot,
        )

    def compile(self, total_steps: int) -> None:
        k = self.top_k
        if self.one_hot:
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=self.config.label_smoothing)
            metrics = [keras.metrics.CategoricalAccuracy(name="accuracy"),
                       keras.metrics.TopKCategoricalAccuracy(k, name="top_k_accuracy")]
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                       keras.metrics.SparseTopKCategoricalAccuracy(k, name="top_k_accuracy")]
        self.model.compile(optimizer=self.optimizer(total_steps), loss=loss, metrics=metrics, jit_compile=True)

    def with_image_size(self, image_size: tuple[int, int]) -> "ImageClassifier":
        """This classifier at another input resolution, sharing no state with it: the patch grid
        follows the new size and the trained position table is bilinearly interpolated to it."""
        preprocessor = ImagePreprocessor.from_config({**self.preprocessor.get_config(), "image_size": image_size})
        config = dataclasses.replace(self.config, image_size=preprocessor.image_size)
        stored_grid = self.model.get_layer("patch_positions").grid_shape
        task = type(self)(self.build_model(preprocessor, config, stored_grid), preprocessor, config)
        task.model.set_weights(self.model.get_weights())
        task.compile(total_steps=1)
        return task

    # Inference ---------------------------------------------------------------------------

    def outputs(self, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        """Logits `(b, classes)` -> label `(b,)`, class_id `(b,)`, probabilities `(b, classes)`, and
        top_k_class_id / top_k_label / top_k_probabilities `(b, k)`, best first."""
        names = tf.constant(self.preprocessor.class_names)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        top = tf.math.top_k(probabilities, k=self.top_k)
        return {
            "label": tf.gather(names, class_id),
            "class_id": class_id,
            "probabilities": probabilities,
            "top_k_class_id": top.indices,
            "top_k_label": tf.gather(names, top.indices),
            "top_k_probabilities": top.values,
        }

    def predict(self, images, value_range: tuple[float, float] = (0.0, 255.0)) -> dict[str, np.ndarray]:
        """Classifies `images`: an array `(n, H, W)` / `(n, H, W, C)`, an `ImageData`, a PNG/JPEG path
        or bytes, or a list of any of these (and `(H, W[, C])` arrays). Sizes and channels may differ:
        each image is converted and resized as in serving. Array values are mapped from `value_range`.

        Returns numpy arrays under `OUTPUT_KEYS` (see `outputs`); labels are str.
        """
        data = self._unlabeled(images, value_range)
        if len(data):
            logits = self.model.predict(data.images, batch_size=self.config.training.batch_size, verbose=0)
        else:
            logits = np.zeros((0, self.preprocessor.num_classes), np.float32)
        result = {key: value.numpy() for key, value in self.outputs(logits).items()}
        for key in ("label", "top_k_label"):
            result[key] = result[key].astype(str)
        return result

    def _unlabeled(self, images, value_range) -> ImageData:
        pre = self.preprocessor
        options = dict(channels=pre.channels, image_size=pre.image_size)
        if isinstance(images, ImageData):
            return read_images(images, **options)
        if isinstance(images, (str, Path, bytes)):
            images = [images]
        elif isinstance(images, tf.Tensor):
            images = images.numpy()
        if isinstance(images, np.ndarray) and images.dtype != object:
            if images.ndim == 2:
                raise ValueError(
                    f"images: got one {images.shape} array; pass a batch (n, H, W[, C]), e.g. images[None]."
                )
        elif isinstance(images, (list, tuple, np.ndarray)):
            images = [_decoded(item, i, value_range) for i, item in enumerate(images)]
            if not images:
                return ImageData(np.zeros((0, *pre.image_size, pre.channels), np.float32), np.zeros(0, np.int32),
                                 pre.class_names)
        else:
            raise TypeError(
                f"images must be an array, ImageData, file path, bytes or a list of them, got {type(images).__name__}."
            )
        unused_labels = np.zeros(len(images), np.int32)
        return read_images(images, unused_labels, class_names=pre.class_names, value_range=value_range, **options)

    def cli_predict(self, values: list[str]):
        result = self.predict(values)
        return [
            {
                "image": value,
                "label": result["label"][i],
                "probability": float(result["probabilities"][i, result["class_id"][i]]),
                "top_k": [{"label": label, "probability": float(p)}
                          for label, p in zip(result["top_k_label"][i], result["top_k_probabilities"][i])],
            }
            for i, value in enumerate(values)
        ]

    def example_inputs(self) -> dict:
        blank = np.zeros((*self.preprocessor.image_size, self.preprocessor.channels), np.uint8)
        return {"image_bytes": [{"b64": base64.b64encode(tf.io.encode_png(blank).numpy()).decode("ascii")}]}

    def example_requests(self) -> dict[str, dict]:
        """A blank PNG, and the same blank image as pixels for `predict_images(_uint8)`."""
        pixels = np.zeros((1, *self.preprocessor.image_size, self.preprocessor.channels), np.uint8).tolist()
        return {"serving_default": self.example_inputs(), "predict_images": {"images": pixels},
                "predict_images_uint8": {"images": pixels}}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        """`serving_default`: `image_bytes` tf.string `(batch,)` of PNG/JPEG, any size; `predict_images` /
        `predict_images_uint8`: `images (batch, H, W, C)` float32 in [0, 255] / uint8, any H, W, C in 1..4."""
        classify = inference_function(self.model, jit_compile)
        preprocessor = self.preprocessor

        def from_bytes(image_bytes):
            image_bytes = checked_input(image_bytes, "image_bytes", (None,))
            with tf.control_dependencies([require_complete_images(image_bytes)]):
                return self.outputs(classify(preprocessor.tf_decode(image_bytes)))

        def from_pixels(images):
            images = checked_input(images, "images", (None, None, None, None), finite=images.dtype.is_floating)
            height, width, channels = tf.unstack(tf.shape(images)[1:])
            sizes_ok = tf.logical_and(tf.logical_and(height > 0, width > 0), tf.logical_and(channels >= 1, channels <= 4))
            with tf.control_dependencies([require(sizes_ok, IMAGE_SIZES, tf.shape(images))]):
                return self.outputs(classify(tf_convert_channels(images, preprocessor.channels)))

        pixels = [None, None, None, None]
        return {
            "serving_default": (from_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")]),
            "predict_images": (from_pixels, [tf.TensorSpec(pixels, tf.float32, name="images")]),
            "predict_images_uint8": (from_pixels, [tf.TensorSpec(pixels, tf.uint8, name="images")]),
        }


def _decoded(item, index: int, value_range) -> np.ndarray:
    """One list entry of `predict`'s images: a PNG/JPEG path or bytes is decoded (to `value_range`)."""
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"images[{index}]: {str(path)!r} is not a file.")
        item, where = path.read_bytes(), f" ({str(path)!r})"
    elif isinstance(item, bytes):
        where = ""
    else:
        return np.asarray(item)
    if not is_complete_image(item):
        raise ValueError(f"{INCOMPLETE_IMAGES.format(name='images')} [{index}]{where}.")
    try:
        pixels = tf.io.decode_image(item, channels=0, expand_animations=False).numpy().astype(np.float32)
    except tf.errors.OpError as error:
        raise ValueError(f"images[{index}]{where} is not a readable PNG/JPEG image: "
                         f"{error.message.splitlines()[0]}") from None
    low, high = value_range
    return low + pixels * np.float32((high - low) / 255.0)
