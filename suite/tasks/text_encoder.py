"""The text stem shared by the classifier and the masked-LM pretrainer."""

from __future__ import annotations

import dataclasses

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from suite.backbone import BackboneConfig, TransformerBackbone
from suite.config import from_dict


@keras.saving.register_keras_serializable(package="suite")
class TextEncoder(keras.Model):
    """Token embedding + `TransformerBackbone`.

    Inputs: `{"token_ids": (batch, seq_len) int32, "padding_mask": (batch, seq_len) bool}`.
    Output: `(batch, seq_len, d_model)`. The embedding is a `ReversibleEmbedding`, so an LM head
    can project states back onto the vocabulary with tied weights.
    """

    def __init__(self, vocabulary_size: int, backbone: BackboneConfig | dict, dtype=None, **kwargs):
        config = backbone if isinstance(backbone, BackboneConfig) else from_dict(BackboneConfig, backbone)
        token_embedding = keras_hub.layers.ReversibleEmbedding(
            vocabulary_size,
            config.d_model,
            embeddings_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            dtype=dtype,
            name="token_embedding",
        )
        stack = TransformerBackbone(config, dtype=dtype, name="backbone")
        inputs = {
            "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
            "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
        }
        states = stack({"embeddings": token_embedding(inputs["token_ids"]), "padding_mask": inputs["padding_mask"]})
        super().__init__(inputs=inputs, outputs=states, dtype=dtype, **kwargs)
        self.vocabulary_size = vocabulary_size
        self.backbone_config = config
        self.token_embedding = token_embedding

    def get_config(self):
        return {
            "vocabulary_size": self.vocabulary_size,
            "backbone": dataclasses.asdict(self.backbone_config),
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def text_inputs() -> dict:
    """Fresh symbolic inputs in the `TextEncoder` layout."""
    return {
        "token_ids": keras.Input((None,), dtype="int32", name="token_ids"),
        "padding_mask": keras.Input((None,), dtype="bool", name="padding_mask"),
    }


def embed_texts(preprocessor, embedding_model: keras.Model, texts, batch_size: int = 64) -> np.ndarray:
    """L2-normalised sentence vectors `(n, d_model)` from `embedding_model`'s pooled output."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        return np.zeros((0, embedding_model.output.shape[-1]), np.float32)
    pooled = embedding_model.predict(preprocessor.dataset(texts, batch_size), verbose=0)
    return tf.math.l2_normalize(tf.convert_to_tensor(pooled, tf.float32), axis=-1).numpy()
