"""Decoding PNG/JPEG files and bytes with tf.io, shared by `read_images` and the export graph."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import tensorflow as tf

from suite.export import require

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)
MAX_NAMED = 5


def read_folder(root: pathlib.Path) -> tuple[list[np.ndarray], list[str], list[int], tuple[str, ...]]:
    """`root/<class>/<image>` -> (images `(H_i, W_i, c_i)` uint8 as stored, paths, class ids, class names).

    Classes are the sorted sub-folder names (hidden ones skipped); files without a PNG/JPEG extension are
    ignored; every unreadable or undecodable file is collected and reported by path in one ValueError.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"source {str(root)!r} is not a directory (expected root/<class>/<image>.png).")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"source {str(root)!r} has no class sub-folders (expected root/<class>/<image>.png).")
    items, names, ids, failures = [], [], [], []
    for class_id, class_dir in enumerate(class_dirs):
        files = sorted(f for f in class_dir.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"class folder {str(class_dir)!r} has no {'/'.join(IMAGE_EXTENSIONS)} files.")
        for path in files:
            try:
                image = tf.io.decode_image(path.read_bytes(), channels=0, expand_animations=False)
            except OSError as error:
                failures.append(f"{str(path)!r}: {error.strerror or error}")
                continue
            except tf.errors.OpError as error:
                failures.append(f"{str(path)!r}: {_clean_tf_message(error.message)}")
                continue
            items.append(image.numpy())
            names.append(str(path))
            ids.append(class_id)
    if failures:
        more = f"; and {len(failures) - MAX_NAMED} more" if len(failures) > MAX_NAMED else ""
        listed = "; ".join(failures[:MAX_NAMED])
        raise ValueError(f"could not read {len(failures)} image file(s): {listed}{more}")
    return items, names, ids, tuple(d.name for d in class_dirs)


def _clean_tf_message(message: str) -> str:
    return re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\]", "", message).strip()


def tf_convert_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """`(..., H, W, c)` with c in 1..4 -> float32 `(..., H, W, channels)` for channels 1 or 3.

    Alpha (c = 2 or 4) is dropped, not composited; gray -> RGB repeats the channel; RGB -> gray is the
    ITU-R 601 luma that `tf.image.rgb_to_grayscale` uses. The channel dimension is static, so
    the model's convolutions trace as plain TF ops (with an unknown one Keras's TF backend would
    XLA-compile them, which stock TF Serving cannot run).
    """
    image = tf.cast(image, tf.float32)
    has_color = tf.shape(image)[-1] >= 3
    if channels == 1:
        converted = tf.cond(
            has_color,
            lambda: tf.reduce_sum(image[..., :3] * tf.constant(LUMA_WEIGHTS), axis=-1, keepdims=True),
            lambda: image[..., :1],
        )
    else:
        converted = tf.cond(has_color, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, axis=-1))
    return tf.ensure_shape(converted, (*converted.shape[:-1], channels))


# The first bytes of each format `tf.io.decode_image` reads, and the last bytes of a complete file
# (BMP has no trailer).
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"), (b"\xff\xd8\xff", b"\xff\xd9"), (b"GIF8", b";"),
                    (b"BM", b""))
INCOMPLETE_IMAGES = "input `{name}`: these items are not complete PNG, JPEG, GIF or BMP images (undecodable or truncated):"
IMAGE_SIZES = "input `images` must have height and width >= 1 and 1 to 4 channels; got shape"


def require_complete_images(encoded: tf.Tensor):
    """The check (see `suite.export.require`) that every item of `encoded` `(batch,)` starts and ends
    as a PNG, JPEG, GIF or BMP file does: undecodable or truncated bytes fail the request with a
    message naming the input and the items, before a decoder fails with its own."""
    complete = tf.zeros_like(encoded, tf.bool)
    longest_end = max(len(end) for _, end in IMAGE_SIGNATURES)
    padded = tf.strings.join([b"\0" * longest_end, encoded])  # a negative substr position needs that many bytes
    for start, end in IMAGE_SIGNATURES:
        starts = tf.equal(tf.strings.substr(encoded, 0, len(start)), start)
        ends = tf.equal(tf.strings.substr(padded, -len(end), len(end)), end) if end else True
        long_enough = tf.strings.length(encoded) >= len(start) + len(end)
        complete = tf.logical_or(complete, tf.logical_and(long_enough, tf.logical_and(starts, ends)))
    return require(tf.reduce_all(complete), INCOMPLETE_IMAGES.format(name="image_bytes"),
                   tf.reshape(tf.where(tf.logical_not(complete)), [-1]))


def is_complete_image(encoded: bytes) -> bool:
    """Python-side `require_complete_images` for one item."""
    return any(len(encoded) >= len(start) + len(end) and encoded.startswith(start) and encoded.endswith(end)
               for start, end in IMAGE_SIGNATURES)


def tf_decode_image(encoded: tf.Tensor, channels: int, size: tuple[int, int]) -> tf.Tensor:
    """Scalar tf.string of JPEG/PNG bytes (any size) -> float32 `(H, W, channels)` in [0, 255].

    Same conversion and bilinear resize as `read_images`, so a file and its bytes give the same pixels.
    """
    image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    image = tf.image.resize(tf_convert_channels(image, channels), size)
    return tf.ensure_shape(image, (*size, channels))
