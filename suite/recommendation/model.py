"""SASRec (Kang & McAuley, 2018): a causal Transformer over item sequences with tied item scores."""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from suite.backbone import BackboneConfig, TransformerBackbone, as_backbone_config
from suite.core.model import DomainModel
from suite.recommendation import losses

FIRST_ITEM = 2


@keras.saving.register_keras_serializable(package="suite")
class SASRec(DomainModel, keras.Model):
    """Item embedding (scaled by sqrt(d_model)) + learned positions + causal backbone.

    Input: `{"item_ids": (batch, seq_len) int32}`, left-padded with 0 (index 1 is OOV).
    Output: states `(batch, seq_len, d_model)`; the state at position t scores the item at
    t + 1 by its dot product with that item's embedding (`item_scores`).

    Training targets `y` are the next items `(batch, seq_len)` (0 at padding) for
    `item_loss="softmax"`, else `{"next_items", "negatives" (n,)}` plus, for `"sampled_softmax"`,
    `"next_probability"` and `"negative_probability"` (see `suite.recommendation.losses`).
    `gbce_calibration` is gSASRec's t.
    """

    config_arguments = ("vocabulary_size", "item_loss", "gbce_calibration")

    def __init__(self, vocabulary_size: int, backbone: BackboneConfig | dict, item_loss: str = "softmax",
                 gbce_calibration: float = 0.75, **kwargs):
        config = as_backbone_config(backbone)
        if item_loss not in losses.ITEM_LOSSES:
            raise ValueError(f"item_loss must be one of {losses.ITEM_LOSSES}, got {item_loss!r}.")
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
        self.item_loss = item_loss
        self.gbce_calibration = float(gbce_calibration)
        self.backbone_config = config
        self.item_embedding = item_embedding

    def user_states(self, item_ids) -> tf.Tensor:
        """The last state `(batch, d_model)` of each sequence `(batch, seq_len)`: the query whose dot
        product with an item's embedding scores it."""
        return ops.cast(self({"item_ids": item_ids}, training=False)[:, -1], "float32")

    def item_scores(self, item_ids) -> tf.Tensor:
        """Scores `(batch, vocabulary_size)` of the item following each sequence `(batch, seq_len)`."""
        table = ops.cast(self.item_embedding.embeddings, "float32")
        return ops.matmul(self.user_states(item_ids), ops.transpose(table))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        next_items = y["next_items"] if isinstance(y, dict) else y
        states = ops.cast(y_pred, "float32")
        table = ops.cast(self.item_embedding.embeddings, "float32")
        if self.item_loss == "softmax":
            per_position = losses.full_softmax(states, table, next_items)
        elif self.item_loss == "sampled_softmax":
            per_position = losses.sampled_softmax(states, table, next_items, y["negatives"], y["next_probability"],
                                                  y["negative_probability"])
        else:
            beta = losses.gbce_beta(y["negatives"].shape[0], self.vocabulary_size - FIRST_ITEM, self.gbce_calibration)
            per_position = losses.gbce(states, table, next_items, y["negatives"], beta)
        weights = ops.cast(ops.not_equal(next_items, 0), "float32")
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
