"""Text classification: WordPiece tokens -> TextEncoder -> pooling -> softmax/sigmoid head."""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np
import tensorflow as tf

from suite.core.inference import inference_function
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.export import string_batch
from suite.layers import SequencePooling
from suite.text.data import TextDataConfig, read_texts
from suite.text.encoder import (
    TextEncoder,
    TextModelConfig,
    embed_texts,
    encoder_config,
    pretrained_encoder,
    readable_bucket_lengths,
    text_inputs,
)
from suite.text.preprocessor import TextPreprocessor
from suite.text.pretrained import BertCheckpoint


@dataclasses.dataclass
class TextClassificationConfig(TextModelConfig):
    """`pretrained`: a BERT-family checkpoint (folder or name, see `suite.text.pretrained.resolve_checkpoint`)
    whose tokenizer and encoder the classifier starts from; its vocabulary, casing and backbone then
    replace `vocabulary_size`, `lower_case` and `backbone`, and `bucket_lengths` end at its maximum
    length. Fine-tuning wants a small learning rate (2e-5 to 1e-4) and `training.decay: linear`."""

    pretrained: str | None = None
    data: TextDataConfig = dataclasses.field(default_factory=TextDataConfig)
    pooling: str = "first"
    head_dropout: float = 0.1
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=3, batch_size=64, learning_rate=1e-3)
    )


class TextClassifier(Task):
    """Classifies texts (single- or multi-label) with a Transformer encoder.

    `TextClassifier.train(df_or_path, validation_data=..., init_from=pretrainer)` fine-tunes
    from a `MaskedLMPretrainer` (its vocabulary and backbone are then used);
    `TextClassifier.train(df_or_path, config, pretrained="all-MiniLM-L6-v2")` fine-tunes a
    Hugging Face BERT-family checkpoint (its tokenizer and encoder).
    """

    domain = "text_classification"
    config_class = TextClassificationConfig
    preprocessor_class = TextPreprocessor

    @classmethod
    def read(cls, data, config):
        return read_texts(data, config.data)

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        return TextPreprocessor.fit(
            train_data,
            vocabulary_size=config.vocabulary_size,
            lower_case=config.lower_case,
            bucket_lengths=config.bucket_lengths,
            truncation=config.truncation,
        )

    @classmethod
    def create(cls, train_data, config, init_from: Task | None = None) -> "TextClassifier":
        if config.pretrained is not None:
            if init_from is not None:
                raise ValueError("pass either init_from (a trained task) or pretrained (a checkpoint), not both.")
            return cls._from_checkpoint(train_data, config)
        if init_from is None:
            return super().create(train_data, config)
        if not hasattr(init_from, "encoder"):
            raise ValueError(f"init_from must be a trained text task with an encoder (MaskedLMPretrainer or "
                             f"TextClassifier), got {type(init_from).__name__}.")
        # The vocabulary and casing are the encoder's; the lengths texts are padded and cut to are this
        # config's choice, as far as the encoder's positions reach.
        buckets = readable_bucket_lengths(config.bucket_lengths, init_from.config.backbone)
        preprocessor = TextPreprocessor.from_config(
            {**init_from.preprocessor.get_config(), "truncation": config.truncation, "bucket_lengths": buckets}
        ).with_labels(train_data)
        config = encoder_config(config, preprocessor, init_from.config.backbone, init_from.config.type_vocabulary_size)
        task = cls(cls.build_model(preprocessor, config), preprocessor, config)
        task.encoder.set_weights(init_from.encoder.get_weights())
        return task

    @classmethod
    def _from_checkpoint(cls, train_data, config) -> "TextClassifier":
        checkpoint = BertCheckpoint.read(config.pretrained)
        if config.training.learning_rate > 1e-4:
            warnings.warn(f"training.learning_rate {config.training.learning_rate} is high for fine-tuning a "
                          "pretrained checkpoint; BERT recipes use 2e-5 to 1e-4.", stacklevel=3)
        preprocessor = checkpoint.preprocessor(config.bucket_lengths, config.truncation).with_labels(train_data)
        config = encoder_config(config, preprocessor, checkpoint.backbone, checkpoint.type_vocabulary_size)
        return cls(cls.build_model(preprocessor, config, pretrained_encoder(checkpoint)), preprocessor, config)

    @classmethod
    def build_model(cls, preprocessor, config, encoder: TextEncoder | None = None) -> keras.Model:
        """Encoder -> pooling -> dropout -> logits; `encoder` defaults to a fresh `TextEncoder`."""
        inputs = text_inputs()
        if encoder is None:
            encoder = TextEncoder(
                preprocessor.vocabulary_size, config.backbone, config.type_vocabulary_size, name="text_encoder"
            )
        states = encoder(inputs)
        pooled = SequencePooling(config.pooling, name="pooling")(states, padding_mask=inputs["padding_mask"])
        hidden = keras.layers.Dropout(config.head_dropout, name="head_dropout")(pooled)
        logits = keras.layers.Dense(preprocessor.num_labels, dtype="float32", name="logits")(hidden)
        return keras.Model(inputs, logits, name="text_classifier")

    @property
    def encoder(self) -> TextEncoder:
        return self.model.get_layer("text_encoder")

    @property
    def embedding_model(self) -> keras.Model:
        """Inputs -> pooled sentence states `(batch, d_model)` (before normalisation)."""
        return keras.Model(self.model.inputs, self.model.get_layer("pooling").output)

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        training_config = self.config.training
        return self.preprocessor.dataset(
            data, training_config.batch_size, shuffle=training, training=training, seed=training_config.seed
        )

    def compile(self, total_steps: int) -> None:
        if self.preprocessor.multi_label:
            loss = keras.losses.BinaryCrossentropy(from_logits=True)
            metrics = [keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0)]
        else:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        self.model.compile(optimizer=self.optimizer(total_steps), loss=loss, metrics=metrics, jit_compile=True)

    def _probabilities(self, logits):
        return tf.sigmoid(logits) if self.preprocessor.multi_label else tf.nn.softmax(logits, axis=-1)

    def predict(self, texts) -> dict:
        """Labels of `texts` (a string or a list): `{"label": (n,) str, "class_id": (n,) int,
        "probabilities": (n, num_labels)}`; multi-label models give `label` as lists of names
        with probability >= 0.5 and `class_id` as multi-hot."""
        texts = string_batch(texts, "text")
        names = np.array(self.preprocessor.label_names, dtype=object)
        if not texts:
            probabilities = np.zeros((0, len(names)), np.float32)
        else:
            logits = self.model.predict(self.preprocessor.dataset(texts, self.config.training.batch_size), verbose=0)
            probabilities = self._probabilities(logits).numpy()
        if self.preprocessor.multi_label:
            chosen = probabilities >= 0.5
            return {"label": [list(names[row]) for row in chosen], "class_id": chosen.astype(np.int32),
                    "probabilities": probabilities}
        class_id = probabilities.argmax(axis=-1).astype(np.int32)
        return {"label": names[class_id].astype(str), "class_id": class_id, "probabilities": probabilities}

    def embed(self, texts, batch_size: int = 64) -> np.ndarray:
        """L2-normalised sentence vectors `(n, d_model)`: the pooled states the head reads."""
        return embed_texts(self.preprocessor, self.embedding_model, texts, batch_size)

    def cli_predict(self, values: list[str]):
        result = self.predict(values)
        return [
            {"text": text, "label": label, "probabilities": dict(zip(self.preprocessor.label_names, map(float, p)))}
            for text, label, p in zip(values, result["label"], result["probabilities"])
        ]

    def export_resources(self) -> list:
        return [self.preprocessor]

    def example_inputs(self) -> dict:
        return {"text": ["a gripping, funny film", "flat and tedious"]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        classify = inference_function(self.model, jit_compile)
        pool = inference_function(self.embedding_model, jit_compile)
        preprocessor = self.preprocessor
        label_names = tf.constant(preprocessor.label_names)
        multi_label = preprocessor.multi_label

        def serve(text):
            probabilities = self._probabilities(classify(preprocessor.serving_inputs(text)))
            if multi_label:
                class_id = tf.cast(probabilities >= 0.5, tf.int32)
                label = tf.strings.reduce_join(
                    tf.where(class_id > 0, label_names[None, :], ""), axis=-1, separator="|"
                )
                label = tf.strings.regex_replace(tf.strings.regex_replace(label, r"\|+", "|"), r"^\||\|$", "")
            else:
                class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
                label = tf.gather(label_names, class_id)
            return {"label": label, "class_id": class_id, "probabilities": probabilities}

        def embed(text):
            pooled = pool(preprocessor.serving_inputs(text))
            return {"embedding": tf.math.l2_normalize(tf.cast(pooled, tf.float32), axis=-1)}

        signature = [tf.TensorSpec([None], tf.string, name="text")]
        return {"serving_default": (serve, signature), "embed": (embed, signature)}
