"""Tests of suite.layers: attention against Keras's reference, masks, positions, caches, configs."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from suite.layers import (
    AttentionPooling,
    DropPath,
    FeedForward,
    LearnedPositionEmbedding,
    MultiHeadAttention,
    RotaryEmbedding,
    SinusoidalPositionEncoding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
)

BATCH, T, S, D, HEADS = 2, 5, 7, 16, 4
HEAD_DIM = D // HEADS


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _lengths_mask(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def _np(x):
    return ops.convert_to_numpy(x)


QUERY_MASK = _lengths_mask([3, T], T)
CONTEXT_MASK = _lengths_mask([4, S], S)


def _paired_attention(cross: bool):
    """Keras's MultiHeadAttention and ours, built on the same inputs and sharing weights."""
    query, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    reference = keras.layers.MultiHeadAttention(HEADS, HEAD_DIM, bias_initializer="random_normal")
    reference(query, context if cross else query)
    ours = MultiHeadAttention(HEADS)
    if cross:
        ours(query, context)
    else:
        ours(query)

    def kernel_and_bias(dense):
        return _np(dense.kernel), _np(dense.bias)

    (qk, qb), (kk, kb), (vk, vb) = (
        kernel_and_bias(d) for d in (reference._query_dense, reference._key_dense, reference._value_dense)
    )
    if cross:
        ours.query_dense.kernel.assign(qk)
        ours.query_dense.bias.assign(qb)
        ours.key_value_dense.kernel.assign(np.stack([kk, vk], axis=1))
        ours.key_value_dense.bias.assign(np.stack([kb, vb], axis=0))
    else:
        ours.qkv_dense.kernel.assign(np.stack([qk, kk, vk], axis=1))
        ours.qkv_dense.bias.assign(np.stack([qb, kb, vb], axis=0))
    ok, ob = kernel_and_bias(reference._output_dense)
    ours.output_dense.kernel.assign(ok)
    ours.output_dense.bias.assign(ob)
    return reference, ours, query, context


def _random_attention_mask(t, s, seed=2):
    mask = np.random.default_rng(seed).random((BATCH, t, s)) < 0.6
    mask[:, :, 0] = True  # every query keeps at least one key
    return mask


SELF_CASES = {
    "no_mask": ({}, {}),
    "padding": ({"query_mask": QUERY_MASK}, {"value_mask": QUERY_MASK, "attention_mask": QUERY_MASK[:, :, None]}),
    "attention_mask": (
        {"attention_mask": _random_attention_mask(T, T)},
        {"attention_mask": _random_attention_mask(T, T)},
    ),
    "causal": ({"use_causal_mask": True}, {"use_causal_mask": True}),
    "padding_causal": (
        {"query_mask": QUERY_MASK, "use_causal_mask": True},
        {"value_mask": QUERY_MASK, "attention_mask": QUERY_MASK[:, :, None], "use_causal_mask": True},
    ),
}


@pytest.mark.parametrize("case", SELF_CASES)
def test_self_attention_matches_keras(case):
    """Same weights, same masks: outputs and probabilities equal Keras's to 1e-5.

    Keras's explicit `query_mask` argument is ignored by its layer, so query padding is given
    to it as an `attention_mask` column. Keras zeroes the probabilities of fully masked
    (padded) query rows where ours spreads them uniformly, so padded rows are compared out.
    """
    ours_kwargs, keras_kwargs = SELF_CASES[case]
    reference, ours, query, _ = _paired_attention(cross=False)
    expected, expected_scores = reference(query, query, return_attention_scores=True, **keras_kwargs)
    output, scores = ours(query, return_attention_scores=True, **ours_kwargs)
    rows = QUERY_MASK if "query_mask" in ours_kwargs else np.ones((BATCH, T), bool)
    np.testing.assert_allclose(_np(output)[rows], _np(expected)[rows], atol=1e-5)
    np.testing.assert_allclose(
        _np(scores).transpose(0, 2, 1, 3)[rows], _np(expected_scores).transpose(0, 2, 1, 3)[rows], atol=1e-5
    )


CROSS_CASES = {
    "no_mask": ({}, {}),
    "context_mask": ({"context_mask": CONTEXT_MASK}, {"value_mask": CONTEXT_MASK}),
    "both_masks": (
        {"query_mask": QUERY_MASK, "context_mask": CONTEXT_MASK},
        {"value_mask": CONTEXT_MASK, "attention_mask": np.broadcast_to(QUERY_MASK[:, :, None], (BATCH, T, S))},
    ),
    "attention_mask": (
        {"attention_mask": _random_attention_mask(T, S)},
        {"attention_mask": _random_attention_mask(T, S)},
    ),
}


@pytest.mark.parametrize("case", CROSS_CASES)
def test_cross_attention_matches_keras(case):
    """Cross-attention (query `(d,h,e)`, fused key/value `(d,2,h,e)`) equals Keras to 1e-5
    at real query positions."""
    ours_kwargs, keras_kwargs = CROSS_CASES[case]
    reference, ours, query, context = _paired_attention(cross=True)
    expected = reference(query, context, **keras_kwargs)
    output = ours(query, context, **ours_kwargs)
    rows = QUERY_MASK if "query_mask" in ours_kwargs else np.ones((BATCH, T), bool)
    np.testing.assert_allclose(_np(output)[rows], _np(expected)[rows], atol=1e-5)


def test_keras_mask_propagation_equals_explicit_masks():
    """Masks carried by Keras mask propagation act as the explicit `query_mask`/`context_mask`."""
    masking = keras.layers.Masking(mask_value=0.0)
    query = _random(BATCH, T, D) * QUERY_MASK[:, :, None]
    context = _random(BATCH, S, D, seed=1) * CONTEXT_MASK[:, :, None]
    self_attention, cross_attention = MultiHeadAttention(HEADS), MultiHeadAttention(HEADS)
    np.testing.assert_allclose(
        _np(self_attention(masking(query))), _np(self_attention(query, query_mask=QUERY_MASK)), atol=1e-6
    )
    np.testing.assert_allclose(
        _np(cross_attention(masking(query), masking(context))),
        _np(cross_attention(query, context, query_mask=QUERY_MASK, context_mask=CONTEXT_MASK)),
        atol=1e-6,
    )


def test_attention_dropout_only_in_training():
    attention = MultiHeadAttention(HEADS, dropout=0.5)
    query = _random(BATCH, T, D)
    inference = _np(attention(query, training=False))
    np.testing.assert_allclose(_np(attention(query)), inference, atol=1e-6)
    assert not np.allclose(_np(attention(query, training=True)), inference, atol=1e-3)


@pytest.mark.parametrize("use_rotary", [False, True])
@pytest.mark.parametrize("chunks", [(1, 1, 1, 1, 1, 1), (2, 3, 1)])
def test_self_attention_cache_equals_causal_forward(use_rotary, chunks):
    """Feeding the sequence step by step (or several steps at once) through a fixed-size
    cache longer than the sequence gives the full causal pass."""
    length, max_length = sum(chunks), 9
    attention = MultiHeadAttention(HEADS, use_rotary=use_rotary)
    query = _random(BATCH, length, D)
    expected = _np(attention(query, use_causal_mask=True))
    cache = ops.zeros((BATCH, 2, max_length, HEADS, HEAD_DIM))
    outputs, start = [], 0
    for size in chunks:
        output, cache = attention(
            query[:, start : start + size], cache=cache, cache_index=ops.convert_to_tensor(start)
        )
        outputs.append(_np(output))
        start += size
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)
    assert tuple(cache.shape) == (BATCH, 2, max_length, HEADS, HEAD_DIM)
    np.testing.assert_array_equal(_np(cache)[:, :, length:], 0.0)


def test_cross_attention_context_cache_equals_plain_call():
    attention = MultiHeadAttention(HEADS)
    query, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    expected = attention(query, context, context_mask=CONTEXT_MASK)
    context_cache = attention.context_cache(context)
    assert tuple(context_cache.shape) == (BATCH, 2, S, HEADS, HEAD_DIM)
    cached, returned_cache = attention(query, cache=context_cache, context_mask=CONTEXT_MASK)
    np.testing.assert_allclose(_np(cached), _np(expected), atol=1e-6)
    np.testing.assert_array_equal(_np(returned_cache), _np(context_cache))


def _change_where(x, where, seed=5):
    """A copy of `x` with new random values at the `(batch, seq)` positions in `where`."""
    changed = np.array(x)
    changed[where] = 10.0 * _random(*x.shape, seed=seed)[where]
    return changed


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("use_rotary", [False, True])
def test_encoder_block_ignores_padded_positions(norm_first, use_rotary):
    block = TransformerEncoderBlock(HEADS, 32, dropout=0.0, norm_first=norm_first, use_rotary=use_rotary)
    inputs = _random(BATCH, T, D)
    expected = _np(block(inputs, padding_mask=QUERY_MASK))
    output = _np(block(_change_where(inputs, ~QUERY_MASK), padding_mask=QUERY_MASK))
    np.testing.assert_allclose(output[QUERY_MASK], expected[QUERY_MASK], atol=1e-5)


@pytest.mark.parametrize("use_rotary", [False, True])
def test_encoder_block_causal_mask_hides_the_future(use_rotary):
    block = TransformerEncoderBlock(HEADS, 32, dropout=0.0, use_rotary=use_rotary)
    inputs = _random(BATCH, T, D)
    expected = _np(block(inputs, use_causal_mask=True))
    for t in range(T - 1):
        future = np.zeros((BATCH, T), bool)
        future[:, t + 1 :] = True
        output = _np(block(_change_where(inputs, future, seed=t), use_causal_mask=True))
        np.testing.assert_allclose(output[:, : t + 1], expected[:, : t + 1], atol=1e-5)
        assert not np.allclose(output[:, t + 1 :], expected[:, t + 1 :], atol=1e-3)


def test_decoder_block_is_causal_and_ignores_padded_context():
    block = TransformerDecoderBlock(HEADS, 32, dropout=0.0)
    inputs, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    expected = _np(block(inputs, context, context_mask=CONTEXT_MASK))
    padded_context = _change_where(context, ~CONTEXT_MASK)
    np.testing.assert_allclose(_np(block(inputs, padded_context, context_mask=CONTEXT_MASK)), expected, atol=1e-5)
    t = 2
    future = np.zeros((BATCH, T), bool)
    future[:, t + 1 :] = True
    output = _np(block(_change_where(inputs, future), context, context_mask=CONTEXT_MASK))
    np.testing.assert_allclose(output[:, : t + 1], expected[:, : t + 1], atol=1e-5)


def test_decoder_block_self_cache_equals_full_pass():
    block = TransformerDecoderBlock(HEADS, 32, dropout=0.0, use_rotary=True)
    inputs, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    expected = _np(block(inputs, context, context_mask=CONTEXT_MASK))
    self_cache = ops.zeros((BATCH, 2, T + 2, HEADS, HEAD_DIM))
    cross_cache = block.cross_attention.context_cache(context)
    outputs = []
    for start, size in ((0, 2), (2, 1), (3, 2)):
        output, self_cache = block(
            inputs[:, start : start + size],
            None,
            context_mask=CONTEXT_MASK,
            self_cache=self_cache,
            cross_cache=cross_cache,
            cache_index=start,
        )
        outputs.append(_np(output))
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)


def test_drop_path_is_the_identity_at_inference_and_at_rate_zero():
    inputs = _random(BATCH, T, D)
    np.testing.assert_array_equal(_np(DropPath(0.5)(inputs)), inputs)
    np.testing.assert_array_equal(_np(DropPath(0.5)(inputs, training=False)), inputs)
    np.testing.assert_array_equal(_np(DropPath(0.0)(inputs, training=True)), inputs)
    with pytest.raises(ValueError, match=r"DropPath rate must be in \[0, 1\), got 1.0"):
        DropPath(1.0)


def test_drop_path_drops_whole_examples_with_the_right_expectation():
    """Each example is all zeros (probability `rate`) or all `1 / (1 - rate)`: the mean is kept."""
    rate, examples = 0.25, 4000
    output = _np(DropPath(rate, seed=1)(np.ones((examples, 3, 2), "float32"), training=True))
    per_example = output.reshape(examples, -1)
    dropped = (per_example == 0).all(axis=1)
    np.testing.assert_allclose(per_example[~dropped], 1 / (1 - rate), rtol=1e-6)
    assert abs(dropped.mean() - rate) < 4 * math.sqrt(rate * (1 - rate) / examples)
    assert abs(output.mean() - 1.0) < 0.05


def test_block_drop_path_drops_each_residual_branch_in_training_only():
    """Pre-LN: an example whose attention and feed-forward branches are both dropped (probability
    rate ** 2) leaves the block unchanged. The rate adds no weights; a config from before it loads."""
    inputs = _random(512, 3, D)
    block = TransformerEncoderBlock(HEADS, 32, dropout=0.0, drop_path=0.5)
    plain = TransformerEncoderBlock(HEADS, 32, dropout=0.0)
    expected = _np(plain(inputs))
    block(inputs)
    assert [w.shape for w in block.weights] == [w.shape for w in plain.weights] and plain.drop_path_layer is None
    block.set_weights(plain.get_weights())
    np.testing.assert_array_equal(_np(block(inputs)), expected)
    output = _np(block(inputs, training=True))
    unchanged = np.all(output == inputs, axis=(1, 2))
    assert abs(unchanged.mean() - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 512)
    assert not np.isclose(output, expected, atol=1e-4).all(axis=(1, 2)).all()
    old_config = {k: v for k, v in plain.get_config().items() if k != "drop_path"}
    assert TransformerEncoderBlock.from_config(old_config).drop_path == 0.0


def test_attention_pooling_weights_sum_to_one_and_skip_padding():
    layer = AttentionPooling()
    states = _random(BATCH, T, D)
    pooled, weights = (_np(x) for x in layer(states, padding_mask=QUERY_MASK, return_attention_scores=True))
    assert pooled.shape == (BATCH, D) and weights.shape == (BATCH, T)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[~QUERY_MASK], 0.0)
    scores = (states @ _np(layer.score.kernel) + _np(layer.score.bias))[..., 0]
    scores = np.where(QUERY_MASK, scores, -np.inf)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(weights, expected, atol=1e-6)
    np.testing.assert_allclose(pooled, np.einsum("bs,bsd->bd", expected, states), atol=1e-5)
    padded = _np(layer(_change_where(states, ~QUERY_MASK), padding_mask=QUERY_MASK))
    np.testing.assert_allclose(padded, pooled, atol=1e-6)
    np.testing.assert_array_equal(_np(layer(states, padding_mask=np.zeros((BATCH, T), bool))), 0.0)
    np.testing.assert_allclose(_np(layer(states)), _np(layer(states, padding_mask=np.ones((BATCH, T), bool))))


def test_sinusoidal_encoding_equals_formula():
    seq_len, d_model, start = 6, 10, 3
    expected = np.zeros((seq_len, d_model))
    for pos in range(seq_len):
        for i in range(d_model // 2):
            angle = (start + pos) / 10000 ** (2 * i / d_model)
            expected[pos, 2 * i] = math.sin(angle)
            expected[pos, 2 * i + 1] = math.cos(angle)
    inputs = np.zeros((BATCH, seq_len, d_model), "float32")
    encoding = _np(SinusoidalPositionEncoding()(inputs, start_index=start))
    assert encoding.shape == inputs.shape
    np.testing.assert_allclose(encoding[0], expected, atol=1e-5)
    np.testing.assert_array_equal(encoding[0], encoding[1])
    np.testing.assert_allclose(_np(SinusoidalPositionEncoding()(inputs))[0, 3:], expected[:3], atol=1e-5)


def test_rotary_embedding_equals_formula_and_is_relative():
    seq_len, head_dim, start = 6, 8, 2
    half = head_dim // 2
    inputs = _random(BATCH, seq_len, 2, head_dim)
    expected = np.zeros_like(inputs)
    for pos in range(seq_len):
        for i in range(half):
            angle = (start + pos) / 10000 ** (2 * i / head_dim)
            a, b = inputs[:, pos, :, i], inputs[:, pos, :, i + half]
            expected[:, pos, :, i] = a * math.cos(angle) - b * math.sin(angle)
            expected[:, pos, :, i + half] = b * math.cos(angle) + a * math.sin(angle)
    rotary = RotaryEmbedding()
    np.testing.assert_allclose(_np(rotary(inputs, start_index=start)), expected, atol=1e-5)

    # Position 0 is the identity, norms are kept, and a query/key dot product depends only
    # on the distance between their positions.
    np.testing.assert_allclose(_np(rotary(inputs[:, :1])), inputs[:, :1], atol=1e-6)
    np.testing.assert_allclose(
        np.linalg.norm(expected, axis=-1), np.linalg.norm(inputs, axis=-1), rtol=1e-5
    )
    query, key = (np.broadcast_to(_random(1, 1, 1, head_dim, seed=s), (1, 12, 1, head_dim)) for s in (3, 4))
    rotated_query, rotated_key = _np(rotary(query))[0, :, 0], _np(rotary(key))[0, :, 0]
    np.testing.assert_allclose(
        rotated_query[5] @ rotated_key[2], rotated_query[10] @ rotated_key[7], rtol=1e-4
    )


def _resize_linear(table, new_length, axis):
    """Half-pixel-centre linear resize (as `tf.image.resize(..., "bilinear")`) along `axis`."""
    old_length = table.shape[axis]
    source = np.clip((np.arange(new_length) + 0.5) * old_length / new_length - 0.5, 0, old_length - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, old_length - 1)
    weight = (source - low).reshape([-1 if a == axis else 1 for a in range(table.ndim)])
    return np.take(table, low, axis) * (1 - weight) + np.take(table, high, axis) * weight


def test_learned_position_embedding_slices_and_interpolates():
    layer = LearnedPositionEmbedding(6)
    layer(np.zeros((1, 6, 4), "float32"))
    table = _np(layer.embeddings)
    np.testing.assert_allclose(_np(layer(np.zeros((BATCH, 6, 4))))[1], table)
    np.testing.assert_allclose(_np(layer(np.zeros((BATCH, 3, 4)), start_index=2))[0], table[2:5])
    longer = _np(layer(np.zeros((BATCH, 10, 4))))
    assert longer.shape == (BATCH, 10, 4)
    np.testing.assert_allclose(longer[0], _resize_linear(table, 10, axis=0), atol=1e-5)


def test_learned_position_embedding_interpolates_a_new_grid():
    layer = LearnedPositionEmbedding(6, grid_shape=(2, 3))
    layer(np.zeros((1, 6, 4), "float32"))
    table = _np(layer.embeddings)
    np.testing.assert_allclose(_np(layer(np.zeros((1, 6, 4)), grid_shape=(2, 3)))[0], table)
    resized = _np(layer(np.zeros((BATCH, 20, 4)), grid_shape=(4, 5)))
    grid = table.reshape(2, 3, 4)
    expected = _resize_linear(_resize_linear(grid, 4, axis=0), 5, axis=1).reshape(20, 4)
    np.testing.assert_allclose(resized[1], expected, atol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
def test_feed_forward_equals_formula(activation):
    layer = FeedForward(8, activation=activation)
    inputs = _random(BATCH, T, D)
    output = _np(layer(inputs))
    hidden = inputs @ _np(layer.hidden_dense.kernel) + _np(layer.hidden_dense.bias)
    if activation == "relu":
        hidden = np.maximum(hidden, 0)
    elif activation == "gelu":
        hidden = hidden * 0.5 * (1 + np.vectorize(math.erf)(hidden / math.sqrt(2)))
    else:
        gate, value = np.split(hidden, 2, axis=-1)
        hidden = gate / (1 + np.exp(-gate)) * value
    expected = hidden @ _np(layer.output_dense.kernel) + _np(layer.output_dense.bias)
    np.testing.assert_allclose(output, expected, atol=1e-5)


def _layer_cases():
    query, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    return {
        "self_attention": (MultiHeadAttention(HEADS, dropout=0.1, use_rotary=True, name="mha"), (query,)),
        "cross_attention": (MultiHeadAttention(HEADS, use_bias=False), (query, context)),
        "feed_forward": (FeedForward(8, activation="swiglu", dropout=0.1), (query,)),
        "sinusoidal": (SinusoidalPositionEncoding(max_wavelength=500.0), (query,)),
        "learned": (LearnedPositionEmbedding(6, grid_shape=(2, 3)), (_random(BATCH, 6, D),)),
        "rotary": (RotaryEmbedding(max_wavelength=100.0), (_random(BATCH, T, HEADS, HEAD_DIM),)),
        "encoder_block": (TransformerEncoderBlock(HEADS, 32, activation="relu", norm_first=False), (query,)),
        "decoder_block": (TransformerDecoderBlock(HEADS, 32, use_rotary=True, drop_path=0.1), (query, context)),
        "drop_path": (DropPath(0.2, seed=3), (query,)),
        "attention_pooling": (AttentionPooling(), (query,)),
    }


@pytest.mark.parametrize("name", list(_layer_cases()))
def test_get_config_round_trip(name):
    """`from_config(get_config())` (and Keras (de)serialisation by registered name) rebuilds
    a layer with the same config that, given the same weights, computes the same outputs."""
    layer, inputs = _layer_cases()[name]
    expected = _np(layer(*inputs))
    config = layer.get_config()
    for clone in (
        type(layer).from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer)),
    ):
        assert type(clone) is type(layer)
        assert clone.get_config() == config
        clone(*inputs)
        clone.set_weights(layer.get_weights())
        np.testing.assert_allclose(_np(clone(*inputs)), expected, atol=1e-6)


def test_clear_errors_for_bad_arguments():
    query, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    with pytest.raises(ValueError, match=r"d_model \(16\) must be divisible by num_heads \(3\)"):
        MultiHeadAttention(3)(query)
    with pytest.raises(ValueError, match=r"activation must be one of .*'tanh'"):
        FeedForward(8, activation="tanh")
    with pytest.raises(ValueError, match=r"activation must be one of"):
        TransformerEncoderBlock(HEADS, 32, activation="tanh")(query)
    self_attention = MultiHeadAttention(HEADS, name="self_mha")
    self_attention(query)
    with pytest.raises(ValueError, match="self_mha was built for self-attention but got a `context`"):
        self_attention(query, context)
    with pytest.raises(ValueError, match="needs `cache_index`"):
        self_attention(query, cache=ops.zeros((BATCH, 2, T, HEADS, HEAD_DIM)))
    cross_attention = MultiHeadAttention(HEADS)
    cross_attention(query, context)
    with pytest.raises(ValueError, match="`use_causal_mask` applies to self-attention only"):
        cross_attention(query, context, use_causal_mask=True)
    with pytest.raises(ValueError, match=r"grid_shape \(2, 4\) holds 8 positions, but sequence_length is 6"):
        LearnedPositionEmbedding(6, grid_shape=(2, 4))
    one_d = LearnedPositionEmbedding(6)
    one_d(np.zeros((1, 6, 4), "float32"))
    with pytest.raises(ValueError, match="is 1-D; it has no grid"):
        one_d(np.zeros((1, 6, 4), "float32"), grid_shape=(2, 3))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_softmax_in_float32(policy, restore_dtype_policy):
    """Outputs come in the compute dtype; attention probabilities are float32, carry more
    precision than the compute dtype holds, and sum to one."""
    keras.config.set_dtype_policy(policy)
    compute_dtype = keras.config.dtype_policy().compute_dtype
    query, context = _random(BATCH, T, D), _random(BATCH, S, D, seed=1)
    for attention, args in ((MultiHeadAttention(HEADS), (query,)), (MultiHeadAttention(HEADS), (query, context))):
        output, scores = attention(*args, context_mask=CONTEXT_MASK if len(args) == 2 else None,
                                   return_attention_scores=True)
        assert keras.backend.standardize_dtype(output.dtype) == compute_dtype
        assert keras.backend.standardize_dtype(scores.dtype) == "float32"
        rounded = ops.cast(ops.cast(scores, compute_dtype), "float32")
        assert not np.array_equal(_np(rounded), _np(scores))
        np.testing.assert_allclose(_np(scores).sum(-1), 1.0, atol=1e-5)
    block_output = TransformerDecoderBlock(HEADS, 32)(query, context)
    assert keras.backend.standardize_dtype(block_output.dtype) == compute_dtype
    assert np.isfinite(_np(ops.cast(block_output, "float32"))).all()
