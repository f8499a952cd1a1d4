"""Greedy and beam-search decoding over a `TranslationModel`'s key/value cache.

Both loops are one `tf.while_loop` with static shapes (cache and token buffer sized
`max_length`), so they compile whole with XLA and also run in a plain TF graph (export).
They stop early once every sentence (every beam) has produced `[END]`.
"""

from __future__ import annotations

import tensorflow as tf

from suite.translation.preprocessor import END_ID, PAD_ID, START_ID

_NEG_INF = float("-inf")


def allowed_log_probs(logits: tf.Tensor) -> tf.Tensor:
    """Logits `(..., vocab)` -> log-probabilities with `[PAD]` and `[START]` made impossible."""
    log_probs = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    vocab = tf.shape(log_probs)[-1]
    banned = tf.logical_or(tf.range(vocab) == PAD_ID, tf.range(vocab) == START_ID)
    return tf.where(banned, _NEG_INF, log_probs)


def _write_column(tokens: tf.Tensor, step: tf.Tensor, values: tf.Tensor) -> tf.Tensor:
    """`tokens (rows, max_length)` with column `step` set to `values (rows,)`."""
    at_step = tf.range(tf.shape(tokens)[1]) == step
    return tf.where(at_step[None, :], values[:, None], tokens)


def _follow(values: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """`values[rows]` with `values`' static shape kept (the loop needs fixed shapes)."""
    return tf.ensure_shape(tf.gather(values, rows), values.shape)


def _check(max_length: int, beam_width: int = 1) -> None:
    if not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}.")
    if not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be a positive int, got {beam_width!r}.")


def greedy_search(model, source_ids, max_length: int) -> dict[str, tf.Tensor]:
    """Most likely next token at every step.

    `source_ids (batch, S)` int32 padded with `[PAD]` -> `{"token_ids": (batch, max_length)
    int32` (the target, its `[END]`, then `[PAD]`s), `"scores": (batch,)` float32 log-probability
    of the tokens up to `[END]`}.
    """
    _check(max_length)
    source_ids = tf.convert_to_tensor(source_ids, tf.int32)
    batch = tf.shape(source_ids)[0]
    encoded, encoder_mask = model.encode(source_ids)
    cache = model.init_cache(encoded, max_length)

    def body(step, previous, tokens, scores, finished, cache):
        logits, cache = model.decode_step(previous[:, None], cache, step, encoder_mask)
        log_probs = allowed_log_probs(logits[:, 0])
        token = tf.where(finished, PAD_ID, tf.argmax(log_probs, axis=-1, output_type=tf.int32))
        gain = tf.gather(log_probs, token, batch_dims=1)
        scores = scores + tf.where(finished, 0.0, gain)
        finished = tf.logical_or(finished, token == END_ID)
        return step + 1, token, _write_column(tokens, step, token), scores, finished, cache

    def cond(step, previous, tokens, scores, finished, cache):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    loop_vars = (
        tf.constant(0, tf.int32),
        tf.fill([batch], START_ID),
        tf.zeros([batch, max_length], tf.int32),
        tf.zeros([batch], tf.float32),
        tf.zeros([batch], tf.bool),
        cache,
    )
    _, _, tokens, scores, _, _ = tf.while_loop(cond, body, loop_vars)
    return {"token_ids": tokens, "scores": scores}


def length_normalized(scores: tf.Tensor, lengths: tf.Tensor, length_penalty: float) -> tf.Tensor:
    """GNMT ranking score: `scores / ((5 + length) / 6) ** length_penalty` (Wu et al., 2016)."""
    penalty = tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, length_penalty)
    return scores / penalty


def beam_search(model, source_ids, max_length: int, beam_width: int = 4, length_penalty: float = 0.6) -> dict:
    """Keeps the `beam_width` best partial translations per sentence, ranked by
    `length_normalized` log-probability; ended beams carry over unchanged.

    Same inputs and outputs as `greedy_search` (the best beam of each sentence). The flat
    `(batch * beam_width, ...)` cache rows follow their beams at every step; the encoder's
    projected keys/values are shared by a sentence's beams and never move.
    """
    _check(max_length, beam_width)
    source_ids = tf.convert_to_tensor(source_ids, tf.int32)
    batch, k = tf.shape(source_ids)[0], beam_width
    encoded, encoder_mask = model.encode(source_ids)
    encoded, encoder_mask = tf.repeat(encoded, k, axis=0), tf.repeat(encoder_mask, k, axis=0)
    cache = model.init_cache(encoded, max_length)
    vocab = model.target_vocabulary_size
    if vocab < k + 2:
        raise ValueError(f"beam_width ({k}) must be at most the target vocabulary size minus 2 ({vocab - 2}).")
    pad_only = tf.where(tf.range(vocab) == PAD_ID, 0.0, _NEG_INF)

    def body(step, previous, tokens, scores, lengths, finished, cache):
        logits, new_cache = model.decode_step(previous[:, None], cache, step, encoder_mask)
        log_probs = tf.reshape(allowed_log_probs(logits[:, 0]), [batch, k, vocab])
        log_probs = tf.where(finished[:, :, None], pad_only, log_probs)
        candidates = scores[:, :, None] + log_probs
        candidate_lengths = tf.where(finished, lengths, step + 1)
        ranking = length_normalized(candidates, candidate_lengths[:, :, None], length_penalty)
        _, top = tf.math.top_k(tf.reshape(ranking, [batch, k * vocab]), k=k)
        candidates = tf.reshape(candidates, [batch, k * vocab])
        beam, token = top // vocab, top % vocab
        scores = tf.gather(candidates, top, batch_dims=1)
        lengths = tf.gather(candidate_lengths, beam, batch_dims=1)
        finished = tf.logical_or(tf.gather(finished, beam, batch_dims=1), token == END_ID)
        rows = tf.reshape(tf.range(batch)[:, None] * k + beam, [-1])
        token = tf.reshape(token, [-1])
        tokens = _write_column(_follow(tokens, rows), step, token)
        cache = {"self": _follow(new_cache["self"], rows), "cross": new_cache["cross"]}
        return step + 1, token, tokens, scores, lengths, finished, cache

    def cond(step, previous, tokens, scores, lengths, finished, cache):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    first_beam_only = tf.where(tf.range(k) == 0, 0.0, _NEG_INF)
    loop_vars = (
        tf.constant(0, tf.int32),
        tf.fill([batch * k], START_ID),
        tf.zeros([batch * k, max_length], tf.int32),
        tf.tile(first_beam_only[None, :], [batch, 1]),
        tf.zeros([batch, k], tf.int32),
        tf.zeros([batch, k], tf.bool),
        cache,
    )
    _, _, tokens, scores, _, _, _ = tf.while_loop(cond, body, loop_vars)
    # top_k sorts, so beam 0 is each sentence's best by the last step's ranking.
    best = tf.range(batch) * k
    return {"token_ids": tf.gather(tokens, best), "scores": scores[:, 0]}


def decode(model, source_ids, max_length: int, beam_width: int = 1, length_penalty: float = 0.6) -> dict:
    """`greedy_search` when `beam_width == 1`, else `beam_search`."""
    if beam_width == 1:
        return greedy_search(model, source_ids, max_length)
    return beam_search(model, source_ids, max_length, beam_width, length_penalty)


class CompiledDecoder:
    """`decode` as a `tf.function` (XLA by default): one program per input shape and setting."""

    def __init__(self, model, jit_compile: bool = True):
        self.model = model
        self._decode = tf.function(
            lambda ids, max_length, beam_width, length_penalty: decode(model, ids, max_length, beam_width, length_penalty),
            jit_compile=jit_compile,
            autograph=False,
        )

    def __call__(self, source_ids, max_length: int, beam_width: int = 1, length_penalty: float = 0.6) -> dict:
        _check(max_length, beam_width)
        return self._decode(tf.convert_to_tensor(source_ids, tf.int32), max_length, beam_width, float(length_penalty))
