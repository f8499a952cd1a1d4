"""The text stem shared by the classifier and the masked-LM pretrainer."""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import numpy as np
import tensorflow as tf
from keras import ops

from suite.backbone import BackboneConfig, TransformerBackbone, as_backbone_config
from suite.core.model import DomainModel
from suite.export import string_batch
from suite.text.preprocessor import TRUNCATIONS
from suite.text.pretrained import BertCheckpoint


def _default_text_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=2, d_model=128, num_heads=4, ff_dim=512, dropout=0.1, position="learned", max_length=128)


@dataclasses.dataclass
class TextModelConfig:
    """Vocabulary, sequence buckets and backbone shared by the classifier and the pretrainer.

    `truncation`: which word pieces a text longer than the longest bucket keeps, `head` (the first
    ones) or `head_tail` (the first quarter of them from the start, the rest from the end; for long
    texts such as reviews, see `suite.text.preprocessor`).
    """

    vocabulary_size: int = 8000
    lower_case: bool = True
    bucket_lengths: tuple[int, ...] = (32, 64, 128)
    backbone: BackboneConfig = dataclasses.field(default_factory=_default_text_backbone)
    type_vocabulary_size: int = 0
    truncation: str = "head"

    def __post_init__(self):
        if self.truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {list(TRUNCATIONS)}, got {self.truncation!r}.")
        if self.backbone.position == "learned" and self.backbone.max_length < max(self.bucket_lengths):
            raise ValueError(
                f"backbone.max_length ({self.backbone.max_length}) must cover the longest bucket "
                f"({max(self.bucket_lengths)})."
            )


@keras.saving.register_keras_serializable(package="suite")
class TextEncoder(DomainModel, keras.Model):
    """Token embedding (+ token-type embedding) + `TransformerBackbone`.

    Inputs: `{"token_ids": (batch, seq_len) int32, "padding_mask": (batch, seq_len) bool}` and, with
    `type_vocabulary_size > 0`, optional `"segment_ids": (batch, seq_len) int32` (default all 0,
    one segment). Output: `(batch, seq_len, d_model)`. The embedding is a `ReversibleEmbedding`, so
    an LM head can project states back onto the vocabulary with tied weights.
    """

    config_arguments = ("vocabulary_size", "type_vocabulary_size")

    def __init__(
        self,
        vocabulary_size: int,
        backbone: BackboneConfig | dict,
        type_vocabulary_size: int = 0,
        dtype=None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, **kwargs)
        config = as_backbone_config(backbone)
        initializer = keras.initializers.TruncatedNormal(stddev=0.02)
        self.token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size, config.d_model, embeddings_initializer=initializer, dtype=dtype, name="token_embedding"
        )
        self.segment_embedding = (
            keras.layers.Embedding(
                type_vocabulary_size, config.d_model, embeddings_initializer=initializer, dtype=dtype,
                name="segment_embedding",
            )
            if type_vocabulary_size
            else None
        )
        self.backbone = TransformerBackbone(config, dtype=dtype, name="backbone")
        self.vocabulary_size = vocabulary_size
        self.type_vocabulary_size = type_vocabulary_size
        self.backbone_config = config
        self.build({"token_ids": (None, None), "padding_mask": (None, None)})

    def build(self, input_shape):
        self.token_embedding.build(input_shape["token_ids"])
        if self.segment_embedding is not None:
            self.segment_embedding.build(input_shape["token_ids"])
        self.built = True

    def call(self, inputs, training=None):
        embeddings = self.token_embedding(inputs["token_ids"])
        if self.segment_embedding is not None:
            segment_ids = inputs.get("segment_ids")
            if segment_ids is None:
                segment_ids = ops.zeros_like(inputs["token_ids"])
            embeddings = embeddings + self.segment_embedding(segment_ids)
        return self.backbone({"embeddings": embeddings, "padding_mask": inputs["padding_mask"]}, training=training)


def readable_bucket_lengths(requested, backbone: BackboneConfig) -> tuple[int, ...]:
    """`requested` bucket lengths cut at what `backbone` can read: with learned positions none past its
    `max_length`, which then ends the list; rotary and sinusoidal positions read any length."""
    requested = tuple(requested)
    if backbone.position != "learned" or max(requested) <= backbone.max_length:
        return requested
    return (*[n for n in requested if n < backbone.max_length], backbone.max_length)


def encoder_config(config, preprocessor, backbone: BackboneConfig, type_vocabulary_size: int):
    """`config` (a `TextModelConfig`) with the vocabulary, casing, buckets and backbone of the encoder a
    task starts from (a checkpoint's or another task's)."""
    return dataclasses.replace(
        config, vocabulary_size=preprocessor.vocabulary_size, lower_case=preprocessor.lower_case,
        bucket_lengths=preprocessor.bucket_lengths, backbone=backbone, type_vocabulary_size=type_vocabulary_size,
    )


def pretrained_encoder(checkpoint: BertCheckpoint, name: str = "text_encoder") -> TextEncoder:
    """A `TextEncoder` with the architecture and every weight of `checkpoint`."""
    encoder = TextEncoder(len(checkpoint.vocabulary), checkpoint.backbone, checkpoint.type_vocabulary_size, name=name)
    checkpoint.load_into(encoder)
    return encoder


def text_inputs() -> dict:
    """Fresh symbolic inputs in the `TextEncoder` layout."""
    return {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
    }


def embed_texts(preprocessor, embedding_model: keras.Model, texts, batch_size: int = 64) -> np.ndarray:
    """L2-normalised sentence vectors `(n, d_model)` from `embedding_model`'s pooled output."""
    texts = string_batch(texts, "text")
    if not texts:
        return np.zeros((0, embedding_model.output.shape[-1]), np.float32)
    pooled = embedding_model.predict(preprocessor.dataset(texts, batch_size), verbose=0)
    return tf.math.l2_normalize(tf.convert_to_tensor(pooled, tf.float32), axis=-1).numpy()
