"""SASRec (Kang & McAuley, 2018): a causal Transformer over item sequences with tied item scores."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from suite.backbone import BackboneConfig, TransformerBackbone, as_backbone_config
from suite.core.model import DomainModel

FIRST_ITEM = 2


@keras.saving.register_keras_serializable(package="suite")
class SASRec(DomainModel, keras.Model):
    """Item embedding (scaled by sqrt(d_model)) + learned positions + causal backbone.

    Input: `{"item_ids": (batch, seq_len) int32}`, left-padded with 0 (index 1 is OOV).
    Output: states `(batch, seq_len, d_model)`; the state at position t scores the item at
    t + 1 by its dot product with that item's embedding (`item_scores`).

    Training targets `y` are the next items `(batch, seq_len)` (0 at padding): full softmax
    cross-entropy over the vocabulary, or, when `y` is `(next_items, negative_items)` with
    negatives `(batch, seq_len, num_negatives)`, binary cross-entropy of the next item
    against the negatives (the SASRec paper's loss).
    """

    config_arguments = ("vocabulary_size",)

    def __init__(self, vocabulary_size: int, backbone: BackboneConfig | dict, **kwargs):
        config = as_backbone_config(backbone)
        if not config.causal or config.position != "learned":
            raise ValueError(f"SASRec needs backbone.causal=True and position='learned'; got causal={config.causal}, "
                             f"position={config.position!r}.")
        if vocabulary_size < FIRST_ITEM + 1:
            raise ValueError(f"vocabulary_size must count padding, OOV and at least one item; got {vocabulary_size}.")
        item_embedding = keras.layers.Embedding(vocabulary_size, config.d_model, name="item_embedding")
        stack = TransformerBackbone(config, name="backbone")
        item_ids = keras.Input((None,), dtype="int32", name="item_ids")
        embeddings = item_embedding(item_ids) * math.sqrt(config.d_model)
        states = stack({"embeddings": embeddings, "padding_mask": ops.not_equal(item_ids, 0)})
        super().__init__(inputs={"item_ids": item_ids}, outputs=states, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.backbone_config = config
        self.item_embedding = item_embedding

    def item_scores(self, item_ids) -> tf.Tensor:
        """Scores `(batch, vocabulary_size)` of the item following each sequence `(batch, seq_len)`."""
        states = self({"item_ids": item_ids}, training=False)[:, -1]
        table = ops.cast(self.item_embedding.embeddings, "float32")
        return ops.matmul(ops.cast(states, "float32"), ops.transpose(table))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets, negatives = y if isinstance(y, (tuple, list)) else (y, None)
        states = ops.cast(y_pred, "float32")
        table = ops.cast(self.item_embedding.embeddings, "float32")
        weights = ops.cast(ops.not_equal(targets, 0), "float32")
        if negatives is None:
            logits = ops.einsum("bld,vd->blv", states, table)
            logits = ops.where(ops.arange(self.vocabulary_size) == 0, -1e9, logits)
            per_position = keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True)
        else:
            positive = ops.sum(states * ops.take(table, targets, axis=0), axis=-1)
            negative = ops.einsum("bld,blnd->bln", states, ops.take(table, negatives, axis=0))
            per_position = ops.softplus(-positive) + ops.sum(ops.softplus(negative), axis=-1)
        loss = ops.sum(per_position * weights) / ops.maximum(ops.sum(weights), 1.0)
        return loss + ops.sum(self.losses) if self.losses else loss


def top_items(scores, seen, k, exclude_seen: bool):
    """Top-k of `scores` `(batch, vocabulary_size)` among the items (never padding or OOV),
    without the indices in `seen` `(batch, n)` when `exclude_seen`.

    Returns `(values (batch, k), indices (batch, k) int32)`, all finite; `k` is capped at the item
    count. A row with fewer than `k` items left holds index 0 (padding) and value 0 past them.
    """
    vocabulary_size = scores.shape[-1] or tf.shape(scores)[-1]
    scores = tf.where(tf.range(vocabulary_size) < FIRST_ITEM, -math.inf, tf.cast(scores, tf.float32))
    if exclude_seen:
        seen = tf.cast(seen, tf.int32)
        rows = tf.broadcast_to(tf.range(tf.shape(seen)[0])[:, None], tf.shape(seen))
        positions = tf.reshape(tf.stack([rows, seen], axis=-1), [-1, 2])
        scores = tf.tensor_scatter_nd_update(scores, positions, tf.fill(tf.shape(positions)[:1], -math.inf))
    k = tf.minimum(tf.cast(k, tf.int32), vocabulary_size - FIRST_ITEM) if isinstance(k, tf.Tensor) else k
    values, indices = tf.math.top_k(scores, k)
    left = tf.math.is_finite(values)
    return tf.where(left, values, 0.0), tf.where(left, indices, 0)
