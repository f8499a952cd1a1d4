"""LazyAdamW: sparse gradients update only the rows they touch, under XLA as in eager."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from suite.core.optim import LazyAdamW


def _steps(optimizer, gradients, jit_compile):
    table = keras.Variable(np.arange(15, dtype="float32").reshape(5, 3), name="table")
    optimizer.build([table])
    apply = tf.function(lambda g: optimizer.apply([g], [table]), jit_compile=jit_compile)
    for gradient in gradients:
        apply(gradient)
    return keras.ops.convert_to_numpy(table)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_lazy_adamw_touches_only_the_gathered_rows(jit_compile):
    shape = tf.constant([5, 3], tf.int64)
    rows_1_and_3 = tf.IndexedSlices(tf.constant([[1.0, 2, 3], [4, 5, 6], [0.5, 0.5, 0.5]]), tf.constant([1, 3, 1]), shape)
    row_3 = tf.IndexedSlices(tf.constant([[1.0, -1, 1]]), tf.constant([3]), shape)
    options = {"learning_rate": 0.1, "weight_decay": 0.0}
    lazy = _steps(LazyAdamW(**options), [rows_1_and_3, row_3], jit_compile)
    dense_first = _steps(keras.optimizers.AdamW(**options), [tf.convert_to_tensor(rows_1_and_3)], jit_compile)
    dense = _steps(keras.optimizers.AdamW(**options), [tf.convert_to_tensor(g) for g in (rows_1_and_3, row_3)], jit_compile)
    original = np.arange(15, dtype="float32").reshape(5, 3)
    np.testing.assert_array_equal(lazy[[0, 2, 4]], original[[0, 2, 4]])
    np.testing.assert_allclose(lazy[1], dense_first[1], rtol=1e-6)  # row 1 keeps its first update only
    assert not np.allclose(dense[1], dense_first[1])  # where dense Adam's momentum moves it again
    np.testing.assert_allclose(lazy[3], dense[3], rtol=1e-6)  # a row in every step: the same as AdamW
    np.testing.assert_allclose(_steps(LazyAdamW(**options), [tf.convert_to_tensor(row_3)], jit_compile),
                               _steps(keras.optimizers.AdamW(**options), [tf.convert_to_tensor(row_3)], jit_compile))
