"""Images: reading (class-per-folder PNG/JPEG, IDX files, NumPy arrays and `.npz` files, scikit-learn
digits), splits, tf.data.

Every source is normalised to one pixel convention, `ImageData.images (n, H, W, C)` float32 in
[0, 255] like decoded PNG/JPEG, so training data and encoded images at serving time agree:
- digits (`load_digits`, 8x8 grayscale, values 0..16) become `round(v * 255 / 16)`;
- IDX files (the MNIST / Fashion-MNIST format) hold uint8 pixels, taken as they are;
- arrays, in memory or in a `.npz` file, are mapped linearly from `value_range` (default (0, 255)) to [0, 255].
Resizing to the model's size and rescaling to [0, 1] happen inside the model
(`preprocessing_layers`), never in the pipeline.

Channel rule: with `channels=None` every image must have the same colour channels, all grayscale
(1) or all RGB (3); a mix, or any alpha channel (2 or 4), is an error naming the files/indices.
With `channels=1` or `channels=3` every image is converted: alpha is dropped (not composited),
gray -> RGB repeats the channel, RGB -> gray is the ITU-R 601 luma `tf.image.rgb_to_grayscale` uses.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pathlib
import struct
from collections import defaultdict
from typing import Sequence

import numpy as np
import tensorflow as tf

from suite.vision.decoding import read_folder, tf_convert_channels


@dataclasses.dataclass(frozen=True)
class ImageData:
    """`images (n, H, W, C)` float32 in [0, 255]; `labels (n,)` int32 ids into `class_names`."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.float32 or self.images.shape[-1] not in (1, 3):
            raise ValueError(
                "ImageData.images must be float32 (n, H, W, C) with C in (1, 3); "
                f"got {self.images.dtype} {self.images.shape}."
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(f"ImageData.labels must have shape ({len(self.images)},), got {self.labels.shape}.")
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.class_names):
            raise ValueError(f"ImageData.labels must be ids in [0, {len(self.class_names)}).")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageData:
        indices = np.asarray(indices, dtype=np.int64)
        return ImageData(self.images[indices], self.labels[indices], self.class_names)


def read_images(
    source: str | pathlib.Path | np.ndarray | Sequence[np.ndarray] | ImageData = "digits",
    labels: Sequence | np.ndarray | None = None,
    *,
    class_names: Sequence[str] | None = None,
    channels: int | None = None,
    image_size: tuple[int, int] | None = None,
    value_range: tuple[float, float] = (0.0, 255.0),
) -> ImageData:
    """Reads and validates images from one of:

    - `"digits"` (default): scikit-learn's bundled `load_digits`, 1797 8x8 grayscale images, classes "0".."9";
    - an IDX images file, named `...idx3-ubyte[.gz]` (see `read_idx`), with its labels file beside it;
      classes are "0".."9" (more if a label is higher) unless `class_names` is given;
    - a `.npz` file holding arrays `images (n, H, W[, C])` and `labels (n,)`, read like the arrays below;
    - a directory (any other str than "digits", or a Path) laid out `root/<class name>/<image>.png|.jpg|.jpeg`:
      classes are the sorted sub-folder names, other files are ignored, unreadable or corrupt files are
      reported together by path;
    - an array `(n, H, W)` / `(n, H, W, C)` or a list of `(H, W)` / `(H, W, C)` arrays, with `labels`
      (integer ids, or class-name strings whose sorted unique values become the classes unless
      `class_names` is given), or an `(images, labels)` tuple; values are mapped from `value_range`
      to [0, 255].

    Images of different sizes need `image_size=(H, W)`: they are resized (bilinear) to it so they stack;
    the model still resizes to its own size. See the module docstring for the `channels` rule.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}.")
    if image_size is not None:
        image_size = check_image_size(image_size)
    if labels is None and isinstance(source, tuple) and len(source) == 2:
        source, labels = source
    kind = _file_kind(source)
    if isinstance(source, (ImageData, str, pathlib.Path)):
        what = "an ImageData" if isinstance(source, ImageData) else repr(str(source))
        if labels is not None:
            raise ValueError(f"labels must be None when source is {what}: it holds its own labels.")
        same_names = isinstance(source, ImageData) and list(source.class_names) == list(class_names or ())
        if class_names is not None and kind is None and not same_names:
            raise ValueError(f"class_names is for IDX, .npz and array data; source {what} names its own classes.")
    if isinstance(source, ImageData):
        items, names = list(source.images), _indexed("images", len(source))
        ids, classes = source.labels, source.class_names
    elif isinstance(source, str) and source == "digits":
        items, names, ids, classes = _digits()
    elif kind == "idx":
        images, idx_labels = read_idx(source)
        if class_names is None:
            class_names = tuple(str(c) for c in range(max(10, int(idx_labels.max(initial=0)) + 1)))
        items, names, ids, classes = _file_arrays(source, images, idx_labels, class_names)
    elif kind == "npz":
        items, names, ids, classes = _file_arrays(source, *_read_npz(source), class_names, value_range)
    elif isinstance(source, (str, pathlib.Path)):
        items, names, ids, classes = read_folder(pathlib.Path(source))
    else:
        if labels is None:
            raise ValueError("labels is required when source is an array of images.")
        items = _array_items(source, value_range)
        names = _indexed("images", len(items))
        ids, classes = _label_ids(labels, len(items), class_names)
    if not items:
        raise ValueError(f"no images found in {source!r}.")
    images = _harmonise(items, names, channels, image_size)
    return ImageData(images, np.asarray(ids, dtype=np.int32), tuple(classes))


def check_image_size(image_size) -> tuple[int, int]:
    size = tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise ValueError(f"image_size must be two positive integers (H, W), got {image_size!r}.")
    return int(size[0]), int(size[1])


def _indexed(prefix: str, count: int) -> list[str]:
    return [f"{prefix}[{i}]" for i in range(count)]


def _file_kind(source) -> str | None:
    """"idx" or "npz" when `source` is a path whose name says so (`...idx3-ubyte[.gz]`, `.npz`), else None."""
    name = pathlib.Path(source).name if isinstance(source, (str, pathlib.Path)) else ""
    if "idx3-ubyte" in name or "idx1-ubyte" in name:
        return "idx"
    return "npz" if name.lower().endswith(".npz") else None


def read_idx(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
    """IDX images file `...-images-idx3-ubyte[.gz]` and its labels file `...-labels-idx1-ubyte[.gz]` beside it
    (the MNIST / Fashion-MNIST format, gzipped or not) -> images uint8 `(n, H, W, 1)`, labels uint8 `(n,)`."""
    path = pathlib.Path(path)
    if "idx3-ubyte" not in path.name:
        raise ValueError(
            f"IDX source {str(path)!r} must be the images file (named ...-images-idx3-ubyte[.gz]); "
            "its labels file is found beside it."
        )
    if not path.is_file():
        raise FileNotFoundError(f"IDX images file {str(path)!r} does not exist.")
    labels_path = path.with_name(path.name.replace("images", "labels").replace("idx3-ubyte", "idx1-ubyte"))
    if not labels_path.is_file():
        raise FileNotFoundError(f"labels file {str(labels_path)!r} for the IDX images {str(path)!r} does not exist.")
    images, labels = _idx_array(path, ndim=3), _idx_array(labels_path, ndim=1)
    if len(images) != len(labels):
        raise ValueError(f"{str(path)!r} has {len(images)} images but {str(labels_path)!r} has {len(labels)} labels.")
    return images[..., None], labels


def _idx_array(path: pathlib.Path, ndim: int) -> np.ndarray:
    """One IDX file of unsigned bytes (header: 0x00 0x00 0x08 ndim, then ndim big-endian uint32 sizes)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[:2] != b"\x00\x00":
        raise ValueError(
            f"{str(path)!r} is not an IDX file: it must start with 0x00 0x00 <dtype code> <ndim>, "
            f"got {data[:4].hex(' ') or 'nothing'}."
        )
    if data[2] != 0x08:
        raise ValueError(f"{str(path)!r} has IDX dtype code 0x{data[2]:02x}; only 0x08 (unsigned byte) is supported.")
    if data[3] != ndim:
        expected = "(n, H, W) images" if ndim == 3 else "(n,) labels"
        raise ValueError(f"{str(path)!r} has {data[3]} dimension(s); expected {ndim}: {expected}.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{str(path)!r} is truncated: its header needs {header} bytes, the file has {len(data)}.")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape):
        raise ValueError(
            f"{str(path)!r} holds {len(data) - header} values after its header; its shape {shape} needs "
            f"{math.prod(shape)}."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _read_npz(path) -> tuple[np.ndarray, np.ndarray]:
    """`.npz` file -> its `images` and `labels` arrays."""
    with np.load(path) as arrays:
        missing = [key for key in ("images", "labels") if key not in arrays.files]
        if missing:
            raise ValueError(
                f"{str(path)!r} must hold arrays 'images' (n, H, W[, C]) and 'labels' (n,); "
                f"it lacks {missing} (it has {sorted(arrays.files)})."
            )
        return arrays["images"], arrays["labels"]


def _file_arrays(path, images, labels, class_names, value_range=(0.0, 255.0)):
    """Images and labels read from the file `path` -> (items, names, ids, classes); errors name the file."""
    try:
        items = _array_items(images, value_range)
        ids, classes = _label_ids(labels, len(items), class_names)
    except (TypeError, ValueError) as error:
        raise type(error)(f"{str(path)!r}: {error}") from None
    return items, _indexed(f"{str(path)!r}: images", len(items)), ids, classes


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.float32)[..., None]
    return list(images), _indexed("digits", len(images)), digits.target, tuple(str(c) for c in digits.target_names)


def _array_items(source, value_range) -> list[np.ndarray]:
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}.")
    if isinstance(source, np.ndarray) and source.dtype != object:
        if source.dtype.kind not in "iuf":
            raise TypeError(f"images must be numeric (integer or float), got dtype {source.dtype}.")
        if source.ndim not in (3, 4):
            raise ValueError(f"images must have shape (n, H, W) or (n, H, W, C), got {source.shape}.")
        arrays = list(source)
    elif isinstance(source, (np.ndarray, list, tuple)):
        arrays = [np.asarray(item) for item in source]
    else:
        raise TypeError(
            "source must be 'digits', a directory, an IDX or .npz file, an image array or ImageData, "
            f"got {type(source).__name__}."
        )
    items = []
    for i, array in enumerate(arrays):
        if array.dtype.kind not in "iuf":
            raise TypeError(f"images[{i}] must be numeric (integer or float), got dtype {array.dtype}.")
        if array.ndim not in (2, 3):
            raise ValueError(f"images[{i}] has shape {array.shape}; expected (H, W) or (H, W, C).")
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"images[{i}] has NaN or infinite values.")
        if array.size and (array.min() < low or array.max() > high):
            raise ValueError(
                f"images[{i}] has values in [{array.min()}, {array.max()}], outside value_range ({low}, {high})."
            )
        items.append((array - low) * np.float32(255.0 / (high - low)))
    return items


def _label_ids(labels, count: int, class_names: Sequence[str] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D (class ids or names), got shape {labels.shape}.")
    if len(labels) != count:
        raise ValueError(f"labels has {len(labels)} entries but there are {count} images.")
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
        if len(set(class_names)) != len(class_names) or len(class_names) < 1:
            raise ValueError(f"class_names must be unique and non-empty, got {list(class_names)}.")
    if labels.dtype.kind in "iu":
        limit = len(class_names) if class_names is not None else None
        bad = np.flatnonzero((labels < 0) | (labels >= limit if limit is not None else False))
        if bad.size:
            i = bad[0]
            raise ValueError(f"labels[{i}] = {labels[i]} is not a class id in [0, {limit or 'inf'}).")
        return labels.astype(np.int32), class_names or tuple(str(c) for c in range(labels.max(initial=-1) + 1))
    if labels.dtype.kind in "USO":
        labels = [str(label) for label in labels.tolist()]
        class_names = class_names or tuple(sorted(set(labels)))
        index = {name: i for i, name in enumerate(class_names)}
        for i, label in enumerate(labels):
            if label not in index:
                raise ValueError(f"labels[{i}] = {label!r} is not one of class_names {list(class_names)}.")
        return np.array([index[label] for label in labels], dtype=np.int32), class_names
    raise TypeError(f"labels must be integer class ids or class-name strings, got dtype {labels.dtype}.")


def _harmonise(items, names, channels, image_size) -> np.ndarray:
    """List of `(H_i, W_i, c_i)` or `(H_i, W_i)` arrays -> float32 `(n, H, W, channels)`."""
    items = [item[..., None] if item.ndim == 2 else item for item in items]
    by_channels = defaultdict(list)
    for i, item in enumerate(items):
        by_channels[item.shape[-1]].append(i)
    odd = [c for c in by_channels if c not in (1, 2, 3, 4)]
    if odd:
        i = by_channels[odd[0]][0]
        raise ValueError(f"{names[i]} has {odd[0]} channels; expected 1 (gray), 3 (RGB), or 2/4 (with alpha).")
    if channels is None:
        if len(by_channels) > 1 or not set(by_channels) <= {1, 3}:
            found = ", ".join(
                f"{len(idx)} with {c} channel(s) (e.g. {names[idx[0]]})" for c, idx in sorted(by_channels.items())
            )
            raise ValueError(
                f"images must all be grayscale (1 channel) or all RGB (3) without alpha; found {found}. "
                "Pass channels=1 or channels=3 to convert every image (alpha is dropped)."
            )
        channels = next(iter(by_channels))
    by_size = defaultdict(list)
    for i, item in enumerate(items):
        by_size[item.shape[:2]].append(i)
    if image_size is None:
        if len(by_size) > 1:
            (size_a, idx_a), (size_b, idx_b) = list(by_size.items())[:2]
            raise ValueError(
                f"images have different sizes ({names[idx_a[0]]} is {size_a}, {names[idx_b[0]]} is {size_b}); "
                "pass image_size=(H, W) to resize them when reading."
            )
        image_size = next(iter(by_size))
    out = np.empty((len(items), *image_size, channels), dtype=np.float32)
    groups = defaultdict(list)
    for i, item in enumerate(items):
        groups[item.shape].append(i)
    for shape, indices in groups.items():
        batch = np.stack([items[i] for i in indices]).astype(np.float32)
        if shape[-1] != channels:
            batch = tf_convert_channels(batch, channels).numpy()
        if shape[:2] != tuple(image_size):
            batch = tf.image.resize(batch, image_size).numpy()
        out[indices] = batch
    return out


@dataclasses.dataclass
class ImageDataConfig:
    """Where the images are. `train`: `"digits"` (scikit-learn's 8x8 digits), a folder laid out
    `root/<class>/<image>.png|.jpg`, an IDX images file `...-images-idx3-ubyte[.gz]` (its labels file
    beside it) or a `.npz` file with `images` and `labels` (see `read_images`). Without a `validation` /
    `test` source (e.g. the `t10k-images-idx3-ubyte.gz` test split), a seeded stratified split of `train`
    is held out (`test_fraction` first, then `validation_fraction` of the rest; 0 disables).
    `channels`: convert every image to 1 (gray) or 3 (RGB); None requires them all alike.
    `class_names`: the names of label ids 0, 1, ... of IDX and `.npz` data (default "0", "1", ...)."""

    train: str = "digits"
    validation: str | None = None
    test: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.2
    split_seed: int = 0
    channels: int | None = None
    class_names: list[str] | None = None


def split_images(data: ImageData, config: ImageDataConfig) -> dict:
    """`{"train", "test", "validation"}`: seeded stratified splits of `data`, `test_fraction` first,
    then `validation_fraction` of the rest; a part that `config` names a source for (or whose
    fraction is 0) is not held out, and its key is absent."""
    parts = {}
    for name, fraction, seed in (("test", config.test_fraction, config.split_seed),
                                 ("validation", config.validation_fraction, config.split_seed + 1)):
        if getattr(config, name) is None and fraction > 0:
            data, parts[name] = train_validation_split(data, fraction, seed)
    return {"train": data, **parts}


def train_validation_split(
    data: ImageData, validation_fraction: float = 0.1, seed: int = 0
) -> tuple[ImageData, ImageData]:
    """Stratified, seeded split into (train, validation); the same seed gives the same split."""
    from sklearn.model_selection import train_test_split

    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}.")
    counts = np.bincount(data.labels, minlength=len(data.class_names))
    rare = [data.class_names[c] for c in np.flatnonzero((counts > 0) & (counts < 2))]
    if rare:
        raise ValueError(f"a stratified split needs at least 2 images per class; classes {rare} have 1.")
    present = int((counts > 0).sum())
    if not present <= round(validation_fraction * len(data)) <= len(data) - present:
        raise ValueError(
            f"validation_fraction={validation_fraction} of {len(data)} images cannot hold every one of "
            f"{present} classes in both parts."
        )
    train, validation = train_test_split(
        np.arange(len(data)), test_size=validation_fraction, stratify=data.labels, random_state=seed
    )
    return data.subset(np.sort(train)), data.subset(np.sort(validation))
