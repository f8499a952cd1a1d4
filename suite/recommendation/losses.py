"""Next-item losses over the item embedding table: full softmax, and two sampled losses whose cost
per step does not depend on the number of items.

Every function takes the sequence states `(batch, seq_len, d_model)`, the item embedding table
`(vocabulary_size, d_model)` and the next items `(batch, seq_len)` (0 at padding), and returns the
loss at each position `(batch, seq_len)`; the caller averages it over the non-padded positions.
"""

from __future__ import annotations

import keras_rs
from keras import ops

ITEM_LOSSES = ("softmax", "sampled_softmax", "gbce")
LOSSES = ("auto", *ITEM_LOSSES)
SMALL_CATALOGUE = 10_000
MASKED = -1e9


def resolve_loss(loss: str, items: int) -> str:
    """`loss`, with `"auto"` chosen by catalogue size: the full softmax up to `SMALL_CATALOGUE` items
    (its cost grows with the items, but it learns most per step), the sampled softmax above."""
    if loss != "auto":
        return loss
    return "softmax" if items <= SMALL_CATALOGUE else "sampled_softmax"


def full_softmax(states, table, next_items):
    """Cross-entropy over every item (padding excluded): `(batch, seq_len, vocabulary_size)` logits."""
    logits = ops.einsum("bld,vd->blv", states, table)
    logits = ops.where(ops.arange(ops.shape(table)[0]) == 0, MASKED, logits)
    return ops.sparse_categorical_crossentropy(next_items, logits, from_logits=True)


def sampled_softmax(states, table, next_items, negatives, next_probability, negative_probability):
    """Cross-entropy of each next item against `negatives` `(n,)` shared by the batch: some of the
    batch's own next items (popularity-distributed, "in-batch") and some uniform items (mixed
    negative sampling, Yang et al. 2020). Each logit is corrected by the probability that a draw
    is its candidate (log-Q correction, Yi et al. 2019): `next_probability` `(batch, seq_len)`,
    `negative_probability` `(n,)`. Negatives with the position's own next item (accidental hits)
    or padding (0) are masked. (keras-rs' `RemoveAccidentalHits` would need one candidate list for
    the whole batch; here each position's positive leads its own row.)
    """
    flat_states = ops.reshape(states, (-1, ops.shape(states)[-1]))
    positives = ops.reshape(next_items, (-1, 1))
    negatives = ops.cast(negatives, positives.dtype)[None, :]
    negative_logits = ops.matmul(flat_states, ops.transpose(ops.take(table, negatives[0], axis=0)))
    logits = ops.concatenate([
        ops.sum(flat_states * ops.take(table, positives[:, 0], axis=0), axis=-1, keepdims=True), negative_logits,
    ], axis=1)
    probability = ops.concatenate([ops.reshape(next_probability, (-1, 1)),
                                   ops.broadcast_to(negative_probability[None, :], ops.shape(negative_logits))], axis=1)
    logits = keras_rs.layers.SamplingProbabilityCorrection()(logits, probability)
    hits = (negatives == positives) | (negatives == 0)
    logits = ops.concatenate([logits[:, :1], ops.where(hits, MASKED, logits[:, 1:])], axis=1)
    per_position = ops.sparse_categorical_crossentropy(ops.zeros_like(positives[:, 0]), logits, from_logits=True)
    return ops.reshape(per_position, ops.shape(next_items))


def gbce_beta(negatives: int, items: int, calibration: float) -> float:
    """gSASRec's positive-term exponent: with sampling rate a = negatives / (items - 1),
    beta = a * (t * (1 - 1/a) + 1/a); t = 0 gives beta 1 (plain binary cross-entropy)."""
    rate = negatives / max(items - 1, 1)
    return rate * (calibration * (1.0 - 1.0 / rate) + 1.0 / rate)


def gbce(states, table, next_items, negatives, beta: float):
    """gSASRec's generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023) against
    `negatives` `(m,)` drawn uniformly and shared by the batch: `beta * softplus(-s+)
    + sum softplus(s-)`, a negative equal to the position's next item left out."""
    positive = ops.sum(states * ops.take(table, next_items, axis=0), axis=-1)
    negative = ops.einsum("bld,md->blm", states, ops.take(table, negatives, axis=0))
    hits = ops.cast(ops.equal(next_items[..., None], ops.cast(negatives, next_items.dtype)[None, None, :]),
                    negative.dtype)
    return beta * ops.softplus(-positive) + ops.sum(ops.softplus(negative) * (1.0 - hits), axis=-1)
