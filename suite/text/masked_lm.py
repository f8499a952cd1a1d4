"""Masked-language-model pretraining of the text encoder (the BERT recipe)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from suite.core.inference import inference_function
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.layers import SequencePooling
from suite.text.data import PretrainingText, TextDataConfig, pretraining_text, read_texts
from suite.text.encoder import TextEncoder, TextModelConfig, embed_texts, text_inputs
from suite.text.preprocessor import TextPreprocessor


@dataclasses.dataclass
class MaskedLMConfig(TextModelConfig):
    """`sentences_only`: the vocabulary is fitted on every row, but MLM reads only the rows that are
    not a word span of another (`maximal_phrases`): SST-2's 64,000 phrases hold ~7,000 sentences."""

    data: TextDataConfig = dataclasses.field(
        default_factory=lambda: TextDataConfig(validation=None, test=None)
    )
    mask_rate: float = 0.15
    sentences_only: bool = False
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=5, batch_size=64, learning_rate=1e-3)
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.mask_rate < 0.5:
            raise ValueError(f"mask_rate must be in (0, 0.5), got {self.mask_rate}.")


@keras.saving.register_keras_serializable(package="suite")
class MaskedLanguageModel(keras.Model):
    """`TextEncoder` + an LM head tied to the token embedding, read at masked positions only.

    Inputs: `token_ids`, `padding_mask` `(batch, seq_len)` and `mask_positions (batch, P)`.
    Output: vocabulary logits `(batch, P, vocabulary_size)` in float32.
    """

    def __init__(self, encoder: TextEncoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        d_model = encoder.backbone_config.d_model
        self.transform = keras.layers.Dense(d_model, activation="gelu", dtype=self.dtype_policy, name="transform")
        self.transform_norm = keras.layers.LayerNormalization(epsilon=1e-6, dtype=self.dtype_policy, name="transform_norm")
        self.output_bias = self.add_weight(shape=(encoder.vocabulary_size,), initializer="zeros", name="output_bias")

    def call(self, inputs, training=None):
        states = self.encoder(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}, training=training
        )
        gathered = ops.take_along_axis(states, ops.cast(inputs["mask_positions"], "int32")[..., None], axis=1)
        hidden = self.transform_norm(self.transform(gathered))
        logits = self.encoder.token_embedding(hidden, reverse=True)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, **config)


def masked_positions(weights: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The first `count` selected positions of each row of `weights (batch, L)` (selected first,
    then unselected, each in position order): `(batch, count)` int32."""
    return tf.math.top_k(weights, k=count, sorted=True).indices


class MaskedLMPretrainer(Task):
    """Pretrains `TextEncoder` on unlabeled text: 15% of tokens chosen, 80/10/10 mask/random/keep.

    `TextClassifier.train(..., init_from=pretrainer)` fine-tunes from it; `embed(texts)` gives
    mean-pooled, L2-normalised sentence vectors.
    """

    domain = "masked_lm"
    config_class = MaskedLMConfig
    preprocessor_class = TextPreprocessor

    @classmethod
    def read(cls, data, config):
        if isinstance(data, PretrainingText):
            return data
        if isinstance(data, (list, tuple)):
            data = pd.DataFrame({"text": list(data)})
        return read_texts(data, config.data, labeled=False)

    @classmethod
    def split(cls, data, config) -> dict:
        """The training text, with the rows MLM reads (`sentences_only`: the maximal phrases)."""
        return {"train": pretraining_text(data, config.sentences_only)}

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        rows = train_data.vocabulary_rows if isinstance(train_data, PretrainingText) else train_data
        return TextPreprocessor.fit(
            rows[["text"]],
            vocabulary_size=config.vocabulary_size,
            lower_case=config.lower_case,
            bucket_lengths=config.bucket_lengths,
        )

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        encoder = TextEncoder(preprocessor.vocabulary_size, config.backbone, name="text_encoder")
        model = MaskedLanguageModel(encoder, name="masked_language_model")
        model({**text_inputs(), "mask_positions": keras.Input((None,), dtype="int32")})
        return model

    @property
    def encoder(self) -> TextEncoder:
        return self.model.encoder

    @property
    def embedding_model(self) -> keras.Model:
        """Inputs -> mean of the encoder states over real tokens `(batch, d_model)`."""
        inputs = text_inputs()
        pooled = SequencePooling("mean", name="pooling")(self.encoder(inputs), padding_mask=inputs["padding_mask"])
        return keras.Model(inputs, pooled)

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        training_config = self.config.training
        rate = self.config.mask_rate
        batches = self.preprocessor.unlabeled_dataset(
            data.rows if isinstance(data, PretrainingText) else data, training_config.batch_size, shuffle=training, training=training,
            seed=training_config.seed, mask_rate=rate,
        )

        def gather(inputs, targets, weights):
            count = tf.cast(tf.math.ceil(tf.cast(tf.shape(weights)[1], tf.float32) * rate * 5 / 3), tf.int32)
            positions = masked_positions(weights, count)
            inputs = {**inputs, "mask_positions": positions}
            return inputs, tf.gather(targets, positions, batch_dims=1), tf.gather(weights, positions, batch_dims=1)

        return batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)

    def compile(self, total_steps: int) -> None:
        self.model.compile(
            optimizer=self.optimizer(total_steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=True,
        )

    def predict(self, texts) -> np.ndarray:
        """Same as `embed`: pretraining has no labels to predict."""
        return self.embed(texts)

    def embed(self, texts, batch_size: int = 64) -> np.ndarray:
        """L2-normalised mean-pooled encoder states `(n, d_model)`."""
        return embed_texts(self.preprocessor, self.embedding_model, texts, batch_size)

    def cli_predict(self, values: list[str]):
        return [{"text": t, "embedding": v.tolist()} for t, v in zip(values, self.embed(values))]

    def export_resources(self) -> list:
        return [self.preprocessor]

    def example_inputs(self) -> dict:
        return {"text": ["a gripping, funny film"]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        pool = inference_function(self.embedding_model, jit_compile)
        preprocessor = self.preprocessor

        def embed(text):
            pooled = pool(preprocessor.serving_inputs(text))
            return {"embedding": tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)}

        signature = [tf.TensorSpec([None], tf.string, name="text")]
        return {"serving_default": (embed, signature), "embed": (embed, signature)}
