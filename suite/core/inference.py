"""Inference outside `fit`: compiled model calls and fixed-size batches for them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

INFERENCE_BATCH = 256


def inference_function(model: keras.Model, jit_compile: bool = True):
    """`model(inputs, training=False)` as a `tf.function`, XLA-compiled when `jit_compile`."""
    return tf.function(lambda inputs: model(inputs, training=False), jit_compile=jit_compile)


def padded_batches(array: np.ndarray, batch: int = INFERENCE_BATCH, fixed: bool = False
                   ) -> Iterator[tuple[np.ndarray, int]]:
    """`(chunk, real_rows)` for chunks of at most `batch` rows of `array`, each zero-padded to a power
    of two rows (`fixed`: to `batch` rows): an XLA-compiled function then sees a few shapes (one),
    not one per request size."""
    for start in range(0, len(array), batch):
        chunk = array[start:start + batch]
        size = batch if fixed else 1 << max(len(chunk) - 1, 0).bit_length()
        yield np.concatenate([chunk, np.zeros((size - len(chunk), *array.shape[1:]), array.dtype)]), len(chunk)


def run_in_batches(function: Callable, array: np.ndarray, batch: int = INFERENCE_BATCH, fixed: bool = False
                   ) -> dict[str, np.ndarray]:
    """`function` (inputs -> a tensor or a dict of tensors) over `array` in `padded_batches`, padding
    rows dropped and the pieces joined; a single tensor comes back under the key `"output"`."""
    pieces: dict[str, list[np.ndarray]] = {}
    for chunk, rows in padded_batches(array, batch, fixed):
        outputs = function(chunk)
        for name, value in (outputs if isinstance(outputs, dict) else {"output": outputs}).items():
            pieces.setdefault(name, []).append(np.asarray(value)[:rows])
    return {name: np.concatenate(values) for name, values in pieces.items()}
