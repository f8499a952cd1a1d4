"""Tests of suite.backbone: masks, causality, cached decoding, drop path, saving, XLA training,
mixed precision and the JAX backend."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from suite import BackboneConfig, Seq2SeqBackbone, TransformerBackbone
from suite.backbone import as_backbone_config

BATCH, S, T, D = 2, 7, 6, 16


def _config(**overrides) -> BackboneConfig:
    values = dict(num_layers=2, d_model=D, num_heads=2, ff_dim=32, dropout=0.0, max_length=16)
    return BackboneConfig(**{**values, **overrides})


def _random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _lengths_mask(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def _np(x):
    return ops.convert_to_numpy(x)


def _change_where(x, where, seed=5):
    """A copy of `x` with new random values at the `(batch, seq)` positions in `where`."""
    changed = np.array(x)
    changed[where] = 10.0 * _random(*x.shape, seed=seed)[where]
    return changed


SOURCE_MASK = _lengths_mask([4, S], S)
TARGET_MASK = _lengths_mask([T, 3], T)


def _encoder_inputs(embeddings=None):
    return {"embeddings": _random(BATCH, S, D) if embeddings is None else embeddings, "padding_mask": SOURCE_MASK}


def _seq2seq_inputs(**changes):
    inputs = {
        "encoder_embeddings": _random(BATCH, S, D),
        "encoder_padding_mask": SOURCE_MASK,
        "decoder_embeddings": _random(BATCH, T, D, seed=1),
        "decoder_padding_mask": TARGET_MASK,
    }
    return {**inputs, **changes}


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary", "none"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_backbone_ignores_padded_positions(position, norm_first):
    backbone = TransformerBackbone(_config(position=position, norm_first=norm_first))
    inputs = _encoder_inputs()
    expected = _np(backbone(inputs))
    output = _np(backbone(_encoder_inputs(_change_where(inputs["embeddings"], ~SOURCE_MASK))))
    assert output.shape == (BATCH, S, D)
    np.testing.assert_allclose(output[SOURCE_MASK], expected[SOURCE_MASK], atol=1e-5)


@pytest.mark.parametrize("position", ["learned", "rotary"])
def test_causal_backbone_hides_the_future(position):
    backbone = TransformerBackbone(_config(position=position, causal=True))
    embeddings = _random(BATCH, S, D)
    every = np.ones((BATCH, S), bool)
    expected = _np(backbone({"embeddings": embeddings, "padding_mask": every}))
    for t in range(S - 1):
        future = np.zeros((BATCH, S), bool)
        future[:, t + 1 :] = True
        output = _np(backbone({"embeddings": _change_where(embeddings, future, seed=t), "padding_mask": every}))
        np.testing.assert_allclose(output[:, : t + 1], expected[:, : t + 1], atol=1e-5)
        assert not np.allclose(output[:, t + 1 :], expected[:, t + 1 :], atol=1e-3)


def test_seq2seq_ignores_padding_and_is_causal():
    backbone = Seq2SeqBackbone(_config())
    inputs = _seq2seq_inputs()
    expected = _np(backbone(inputs))
    assert expected.shape == (BATCH, T, D)
    padded_source = _change_where(inputs["encoder_embeddings"], ~SOURCE_MASK)
    np.testing.assert_allclose(_np(backbone(_seq2seq_inputs(encoder_embeddings=padded_source))), expected, atol=1e-5)
    padded_target = _change_where(inputs["decoder_embeddings"], ~TARGET_MASK, seed=6)
    output = _np(backbone(_seq2seq_inputs(decoder_embeddings=padded_target)))
    np.testing.assert_allclose(output[TARGET_MASK], expected[TARGET_MASK], atol=1e-5)
    t = 2
    future = np.zeros((BATCH, T), bool)
    future[:, t + 1 :] = True
    output = _np(backbone(_seq2seq_inputs(decoder_embeddings=_change_where(inputs["decoder_embeddings"], future))))
    np.testing.assert_allclose(output[:, : t + 1], expected[:, : t + 1], atol=1e-5)
    assert not np.allclose(output[:, t + 1 :], expected[:, t + 1 :], atol=1e-3)


def _cached_decode(backbone, inputs, chunks, max_length, step=None):
    step = step or backbone.decode_step
    encoded = backbone.encode(inputs["encoder_embeddings"], inputs["encoder_padding_mask"])
    cache = backbone.init_cache(encoded, max_length)
    outputs, start = [], 0
    for size in chunks:
        states, cache = step(
            inputs["decoder_embeddings"][:, start : start + size],
            cache,
            ops.convert_to_tensor(start, "int32"),
            inputs["encoder_padding_mask"],
        )
        outputs.append(_np(states))
        start += size
    return np.concatenate(outputs, axis=1), cache


@pytest.mark.parametrize("position", ["sinusoidal", "learned", "rotary"])
@pytest.mark.parametrize("chunks", [(1,) * T, (2, 3, 1)])
def test_decode_step_equals_full_causal_pass(position, chunks):
    """Decoding one step (or several) at a time with the cache equals `decode` over the whole
    target, for a cache longer than the target."""
    backbone = Seq2SeqBackbone(_config(position=position))
    inputs = _seq2seq_inputs(decoder_padding_mask=np.ones((BATCH, T), bool))
    expected = _np(backbone(inputs))
    decoded, cache = _cached_decode(backbone, inputs, chunks, max_length=T + 3)
    np.testing.assert_allclose(decoded, expected, atol=1e-5)
    head_dim = D // 2
    assert tuple(cache["self"].shape) == (BATCH, 2, 2, T + 3, 2, head_dim)
    assert tuple(cache["cross"].shape) == (BATCH, 2, 2, S, 2, head_dim)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="uses tf.function")
def test_decode_step_compiles_with_xla():
    """One XLA program (static cache shape, tensor `cache_index`) serves every step."""
    import tensorflow as tf

    backbone = Seq2SeqBackbone(_config(position="learned", num_layers=1))
    inputs = _seq2seq_inputs(decoder_padding_mask=np.ones((BATCH, T), bool))
    step = tf.function(backbone.decode_step, jit_compile=True, reduce_retracing=True)
    decoded, _ = _cached_decode(backbone, inputs, (1,) * T, max_length=T, step=step)
    np.testing.assert_allclose(decoded, _np(backbone(inputs)), atol=1e-5)
    assert step.experimental_get_tracing_count() == 1


def _save_and_load(model, tmp_path, name="model.keras"):
    path = tmp_path / name
    model.save(path)
    return keras.saving.load_model(path)


def test_backbones_survive_keras_save_and_load(tmp_path):
    encoder = TransformerBackbone(_config(position="learned", activation="swiglu"))
    loaded = _save_and_load(encoder, tmp_path, "encoder.keras")
    assert isinstance(loaded, TransformerBackbone) and loaded.config == encoder.config
    np.testing.assert_allclose(_np(loaded(_encoder_inputs())), _np(encoder(_encoder_inputs())), atol=1e-6)

    seq2seq = Seq2SeqBackbone(_config(position="rotary", norm_first=False))
    loaded = _save_and_load(seq2seq, tmp_path, "seq2seq.keras")
    assert isinstance(loaded, Seq2SeqBackbone) and loaded.config == seq2seq.config
    inputs = _seq2seq_inputs()
    np.testing.assert_allclose(_np(loaded(inputs)), _np(seq2seq(inputs)), atol=1e-6)
    full = _seq2seq_inputs(decoder_padding_mask=np.ones((BATCH, T), bool))
    np.testing.assert_allclose(_cached_decode(loaded, full, (T,), T)[0], _np(seq2seq(full)), atol=1e-5)


def test_drop_path_rises_linearly_over_the_blocks_and_adds_no_weights():
    config = _config(num_layers=3, drop_path=0.2)
    for stack in (TransformerBackbone(config), Seq2SeqBackbone(config)):
        blocks = stack.blocks if isinstance(stack, TransformerBackbone) else stack.encoder_blocks + stack.decoder_blocks
        assert [block.drop_path for block in blocks] == pytest.approx([0.0, 0.1, 0.2] * (len(blocks) // 3))
        assert blocks[0].drop_path_layer is None and blocks[-1].drop_path_layer.rate == 0.2
    assert [b.drop_path for b in TransformerBackbone(_config(num_layers=1, drop_path=0.2)).blocks] == [0.0]
    plain = TransformerBackbone(_config(num_layers=3), name="stack")
    dropping = TransformerBackbone(config, name="stack")
    assert all(block.drop_path_layer is None for block in plain.blocks)
    assert [(w.path, w.shape) for w in dropping.weights] == [(w.path, w.shape) for w in plain.weights]
    dropping.set_weights(plain.get_weights())
    inputs = _encoder_inputs()
    np.testing.assert_array_equal(_np(dropping(inputs)), _np(plain(inputs)))
    assert not np.allclose(_np(dropping(inputs, training=True)), _np(plain(inputs)), atol=1e-4)
    old_config = {k: v for k, v in plain.get_config()["config"].items() if k != "drop_path"}
    assert TransformerBackbone(old_config).config == plain.config


def _token_classifier(config: BackboneConfig, vocabulary: int = 8, classes: int = 2) -> keras.Model:
    """Token ids `(batch, seq_len)` (0 = padding) -> class logits, through a backbone."""
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    embeddings = keras.layers.Embedding(vocabulary, config.d_model)(tokens)
    padding_mask = ops.not_equal(tokens, 0)
    states = TransformerBackbone(config, name="backbone")({"embeddings": embeddings, "padding_mask": padding_mask})
    pooled = keras.layers.GlobalAveragePooling1D()(states, mask=padding_mask)
    return keras.Model(tokens, keras.layers.Dense(classes)(pooled))


def test_backbone_inside_a_functional_model_survives_save_and_load(tmp_path):
    model = _token_classifier(_config(position="sinusoidal"))
    tokens = np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 1]], "int32")
    loaded = _save_and_load(model, tmp_path)
    assert isinstance(loaded.get_layer("backbone"), TransformerBackbone)
    np.testing.assert_allclose(_np(loaded(tokens)), _np(model(tokens)), atol=1e-6)


@pytest.mark.parametrize("backbone_class", [TransformerBackbone, Seq2SeqBackbone])
def test_backbone_config_round_trip(backbone_class):
    config = _config(num_layers=1, position="learned", causal=True, activation="relu")
    backbone = backbone_class(config, name="stack")
    clone = backbone_class.from_config(json.loads(json.dumps(backbone.get_config())))
    assert clone.config == config and clone.name == "stack"
    assert backbone_class(dict(config.__dict__)).config == config


def test_training_step_compiles_with_xla_and_learns():
    """Classify token sequences (random lengths, padded) by whether token 7 occurs."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 7, size=(256, 8)).astype("int32")
    has_seven = rng.random(256) < 0.5
    tokens[has_seven, rng.integers(0, 4, size=has_seven.sum())] = 7
    lengths = rng.integers(4, 9, size=256)
    tokens[np.arange(8)[None, :] >= lengths[:, None]] = 0
    labels = has_seven.astype("int32")
    model = _token_classifier(_config(num_layers=1))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss, metrics=["accuracy"], jit_compile=True)
    assert model.jit_compile is True
    initial_loss = float(loss(labels, model(tokens)))
    history = model.fit(tokens, labels, batch_size=32, epochs=5, verbose=0)
    assert history.history["loss"][-1] < 0.2 * initial_loss
    assert history.history["accuracy"][-1] > 0.9


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_backbones_run_under_mixed_precision(policy, restore_dtype_policy):
    keras.config.set_dtype_policy(policy)
    compute_dtype = keras.config.dtype_policy().compute_dtype
    encoder = TransformerBackbone(_config(num_layers=1, position="learned"))
    output = encoder(_encoder_inputs())
    assert keras.backend.standardize_dtype(output.dtype) == compute_dtype
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in encoder.weights)
    seq2seq = Seq2SeqBackbone(_config(num_layers=1, position="rotary"))
    inputs = _seq2seq_inputs(decoder_padding_mask=np.ones((BATCH, T), bool))
    decoded = seq2seq(inputs)
    assert keras.backend.standardize_dtype(decoded.dtype) == compute_dtype
    cached, cache = _cached_decode(seq2seq, inputs, (2, 4), T)
    assert keras.backend.standardize_dtype(cache["self"].dtype) == compute_dtype
    np.testing.assert_allclose(cached.astype("float32"), _np(ops.cast(decoded, "float32")), atol=0.1)
    assert np.isfinite(cached.astype("float32")).all()


_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import numpy as np
    import suite  # registers the suite classes before loading
    import keras

    assert keras.backend.backend() == "jax", keras.backend.backend()
    folder = sys.argv[1]
    inputs = dict(np.load(f"{folder}/inputs.npz"))
    encoder = keras.saving.load_model(f"{folder}/encoder.keras")
    seq2seq = keras.saving.load_model(f"{folder}/seq2seq.keras")
    encoder_inputs = {"embeddings": inputs.pop("embeddings"), "padding_mask": inputs.pop("padding_mask")}
    np.save(f"{folder}/encoder_jax.npy", np.asarray(jax.jit(encoder)(encoder_inputs)))
    np.save(f"{folder}/seq2seq_jax.npy", np.asarray(jax.jit(seq2seq)(inputs)))

    source_mask, target = inputs["encoder_padding_mask"], inputs["decoder_embeddings"]
    encoded = seq2seq.encode(inputs["encoder_embeddings"], source_mask)
    cache = seq2seq.init_cache(encoded, target.shape[1])
    step = jax.jit(seq2seq.decode_step)
    half = target.shape[1] // 2
    first, cache = step(target[:, :half], cache, jax.numpy.int32(0), source_mask)
    second, cache = step(target[:, half:], cache, jax.numpy.int32(half), source_mask)
    np.save(f"{folder}/decode_steps_jax.npy", np.concatenate([first, second], axis=1))

    from suite import BackboneConfig, TransformerBackbone
    from suite.layers import DropPath

    # A training-mode call under jax.jit, the seed state passed in and out as the JAX trainer does.
    def training_call(layer):
        step = jax.jit(lambda weights, state, x: layer.stateless_call(weights, state, x, training=True))
        return lambda state, x: step([v.value for v in layer.trainable_variables], state, x)

    keras.utils.set_random_seed(0)
    for layer, x in (
        (DropPath(0.5), np.ones((256, 3, 4), "float32")),
        (TransformerBackbone(BackboneConfig(num_layers=2, d_model=16, num_heads=2, ff_dim=32, dropout=0.0,
                                            position="none", drop_path=0.5)),
         {"embeddings": np.random.default_rng(0).normal(size=(64, 5, 16)).astype("float32"),
          "padding_mask": np.ones((64, 5), bool)}),
    ):
        inference = np.asarray(jax.jit(layer)(x))
        step = training_call(layer)
        first, state = step([v.value for v in layer.non_trainable_variables], x)
        second, _ = step(state, x)
        first, second = np.asarray(first), np.asarray(second)
        assert np.isfinite(first).all() and not np.allclose(first, second) and not np.allclose(first, inference)
        if isinstance(layer, DropPath):
            rows = np.concatenate([first, second]).reshape(512, -1)
            assert (rows.min(axis=1) == rows.max(axis=1)).all() and set(np.unique(rows)) == {0.0, 2.0}
    """
)


def test_backbones_give_the_same_outputs_under_jax(tmp_path, repo_root):
    """Weights travel in `.keras` files from this (TensorFlow) process to a JAX subprocess,
    which runs both backbones and the cached decode (two chunks of steps) under `jax.jit`; there
    drop path also runs in training, its seed state passed through stateless calls."""
    encoder = TransformerBackbone(_config(num_layers=1, position="learned"))
    seq2seq = Seq2SeqBackbone(_config(num_layers=1, position="rotary", activation="swiglu"))
    encoder.save(tmp_path / "encoder.keras")
    seq2seq.save(tmp_path / "seq2seq.keras")
    encoder_inputs = _encoder_inputs()
    seq2seq_inputs = _seq2seq_inputs(decoder_padding_mask=np.ones((BATCH, T), bool))
    np.savez(tmp_path / "inputs.npz", **encoder_inputs, **seq2seq_inputs)
    environment = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(repo_root),
        # Tiny programs: skip XLA's CPU optimisation passes, which dominate compile time here.
        "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip(),
    }
    result = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(tmp_path)],
        env=environment,
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected_seq2seq = _np(seq2seq(seq2seq_inputs))
    np.testing.assert_allclose(np.load(tmp_path / "encoder_jax.npy"), _np(encoder(encoder_inputs)), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "seq2seq_jax.npy"), expected_seq2seq, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "decode_steps_jax.npy"), expected_seq2seq, atol=1e-5)


def test_backbone_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"d_model \(30\) must be divisible by num_heads \(4\)"):
        BackboneConfig(d_model=30, num_heads=4)
    with pytest.raises(ValueError, match=r"activation must be one of .*'tanh'"):
        BackboneConfig(activation="tanh")
    with pytest.raises(ValueError, match=r"position must be one of .*'alibi'"):
        BackboneConfig(position="alibi")
    with pytest.raises(ValueError, match=r"num_layers must be a positive int, got 0"):
        BackboneConfig(num_layers=0)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        BackboneConfig(dropout=1.0)
    for rate in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"BackboneConfig.drop_path must be in \[0, 1\)"):
            BackboneConfig(drop_path=rate)
    with pytest.raises(ValueError, match=r"Unknown config key num_layer for BackboneConfig"):
        as_backbone_config({"num_layer": 2})
    with pytest.raises(ValueError, match=r"Unknown config key heads for BackboneConfig"):
        TransformerBackbone({"heads": 2})
