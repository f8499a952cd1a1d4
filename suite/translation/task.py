"""Machine translation: source tokens -> encoder-decoder Transformer -> target tokens."""

from __future__ import annotations

import dataclasses
from typing import Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from suite.backbone import BackboneConfig
from suite.core.optim import TrainingConfig, warmup_schedule
from suite.core.task import Task
from suite.export import checked_input, string_batch
from suite.translation.data import TranslationDataConfig, read_translation_pairs
from suite.translation.decoding import CompiledDecoder, decode
from suite.translation.model import (
    InverseSquareRootSchedule,
    SmoothedSequenceCrossEntropy,
    TokenAccuracy,
    TranslationModel,
)
from suite.translation.preprocessor import PAD_ID, TranslationPreprocessor


@dataclasses.dataclass
class DecodingConfig:
    """Decoding used by `translate`, `evaluate` and the export. `beam_width: 1` is greedy;
    `max_length` (decode steps, `[END]` included) defaults to `max_target_length`."""

    beam_width: int = 4
    length_penalty: float = 0.6
    max_length: int | None = None
    batch_size: int = 64

    def __post_init__(self):
        for name in ("beam_width", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoding.{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"decoding.max_length must be >= 1, got {self.max_length}.")


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=3, d_model=256, num_heads=4, ff_dim=1024, dropout=0.1, activation="relu",
                          position="sinusoidal", max_length=64)


@dataclasses.dataclass
class TranslationConfig:
    data: TranslationDataConfig = dataclasses.field(default_factory=TranslationDataConfig)
    vocabulary_size: int = 8000
    shared_vocabulary: bool = False
    lower_case: bool = False
    max_source_length: int = 64
    max_target_length: int = 64
    num_buckets: int = 4
    tie_embeddings: bool = True
    label_smoothing: float = 0.1
    schedule: Literal["inverse_sqrt", "cosine"] = "inverse_sqrt"
    warmup_steps: int | None = None
    backbone: BackboneConfig = dataclasses.field(default_factory=_default_backbone)
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=10, batch_size=64, learning_rate=1e-3, weight_decay=0.0)
    )

    def __post_init__(self):
        longest = max(self.max_source_length, self.max_target_length, self.decoding.max_length or 0)
        if self.backbone.position == "learned" and self.backbone.max_length < longest:
            raise ValueError(f"backbone.max_length ({self.backbone.max_length}) must cover the longest sequence ({longest}).")
        if self.warmup_steps is not None and self.warmup_steps < 1:
            raise ValueError(f"warmup_steps must be >= 1 or null, got {self.warmup_steps}.")


class Translator(Task):
    """Translates sentences with a Transformer encoder-decoder (Vaswani et al., 2017).

    `Translator.train(pairs, validation_data=...)` then `translator.translate(["A man is
    riding a bike."], beam_width=4)`; `evaluate` adds sacrebleu BLEU and chrF.
    """

    domain = "translation"
    config_class = TranslationConfig
    preprocessor_class = TranslationPreprocessor
    optimizer_options = {"beta_1": 0.9, "beta_2": 0.98, "epsilon": 1e-9}  # Vaswani et al.

    def __init__(self, model: keras.Model, preprocessor, config):
        super().__init__(model, preprocessor, config)
        self._decoder = CompiledDecoder(model)

    @classmethod
    def read(cls, data, config) -> pd.DataFrame:
        return read_translation_pairs(data, config.data)

    @classmethod
    def fit_preprocessor(cls, train_data, config) -> TranslationPreprocessor:
        return TranslationPreprocessor.fit(
            train_data, vocabulary_size=config.vocabulary_size, shared_vocabulary=config.shared_vocabulary,
            lower_case=config.lower_case, max_source_length=config.max_source_length,
            max_target_length=config.max_target_length, num_buckets=config.num_buckets,
        )

    @classmethod
    def build_model(cls, preprocessor, config) -> TranslationModel:
        return TranslationModel(
            preprocessor.source_vocabulary_size, preprocessor.target_vocabulary_size, config.backbone,
            tie_embeddings=config.tie_embeddings, name="translator",
        )

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        training_config = self.config.training
        return self.preprocessor.dataset(
            data, training_config.batch_size, shuffle=training, training=training, seed=training_config.seed
        )

    def learning_rate(self, total_steps: int) -> keras.optimizers.schedules.LearningRateSchedule:
        training = self.config.training
        if self.config.schedule == "cosine":
            if self.config.warmup_steps is not None:
                training = dataclasses.replace(training, warmup_fraction=min(self.config.warmup_steps / total_steps, 0.99))
            return warmup_schedule(training, total_steps)
        warmup = self.config.warmup_steps or max(int(training.warmup_fraction * total_steps), 1)
        return InverseSquareRootSchedule(training.learning_rate, warmup)

    def compile(self, total_steps: int) -> None:
        self.model.compile(
            optimizer=self.optimizer(total_steps), loss=SmoothedSequenceCrossEntropy(self.config.label_smoothing),
            metrics=[TokenAccuracy()], jit_compile=True,
        )

    # Decoding ----------------------------------------------------------------------------

    def _decoding(self, beam_width, max_length, length_penalty, batch_size) -> tuple[int, int, float, int]:
        options = self.config.decoding
        max_length = max_length or options.max_length or self.preprocessor.max_target_length
        if self.config.backbone.position == "learned" and max_length > self.config.backbone.max_length:
            raise ValueError(f"max_length ({max_length}) exceeds backbone.max_length ({self.config.backbone.max_length}).")
        return (beam_width or options.beam_width, max_length,
                options.length_penalty if length_penalty is None else length_penalty, batch_size or options.batch_size)

    def source_ids(self, texts) -> tf.Tensor:
        """Texts `(batch,)` -> int32 source ids `(batch, S)`, truncated to `max_source_length` and
        padded to `S`, the smallest bucket length that fits (TF ops: also used in the export)."""
        preprocessor = self.preprocessor
        ids = preprocessor.tf_tokenize(tf.convert_to_tensor(texts, tf.string), "source")
        ids = ids[:, : preprocessor.max_source_length].to_tensor(PAD_ID)
        bounds = tf.constant([s for s, _ in preprocessor.bucket_shapes], tf.int32)
        width = tf.gather(bounds, tf.argmax(tf.cast(bounds >= tf.shape(ids)[1], tf.int32), output_type=tf.int32))
        return tf.pad(ids, [[0, 0], [0, width - tf.shape(ids)[1]]])

    def translate_ids(self, texts, *, beam_width: int | None = None, max_length: int | None = None,
                      length_penalty: float | None = None, batch_size: int | None = None) -> dict[str, np.ndarray]:
        """`{"token_ids": (n, max_length) int32, "scores": (n,) float32}` for `n` texts, decoded
        with XLA in batches padded to a power of two (at most `batch_size`) rows."""
        texts = string_batch(texts, "source")
        beam_width, max_length, length_penalty, batch_size = self._decoding(beam_width, max_length, length_penalty, batch_size)
        token_ids, scores = [np.zeros((0, max_length), np.int32)], [np.zeros((0,), np.float32)]
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            rows = min(batch_size, 1 << (len(chunk) - 1).bit_length())
            ids = self.source_ids(tf.constant(chunk + [""] * (rows - len(chunk)), tf.string))
            result = self._decoder(ids, max_length, beam_width, length_penalty)
            token_ids.append(result["token_ids"].numpy()[: len(chunk)])
            scores.append(result["scores"].numpy()[: len(chunk)])
        return {"token_ids": np.concatenate(token_ids), "scores": np.concatenate(scores)}

    def translate(self, texts, **options) -> list[str]:
        """Translations of `texts` (a string or a list); `options` as in `translate_ids`."""
        token_ids = self.translate_ids(texts, **options)["token_ids"]
        if not len(token_ids):
            return []
        return [text.decode("utf-8") for text in self.preprocessor.tf_detokenize(token_ids, "target").numpy()]

    def predict(self, inputs) -> list[str]:
        return self.translate(inputs)

    def cli_predict(self, values: list[str]):
        return [{"source": source, "translation": target} for source, target in zip(values, self.translate(values))]

    def metrics(self, frame: pd.DataFrame, **decoding) -> dict:
        """Loss and token accuracy (teacher forcing), plus corpus BLEU and chrF (sacrebleu) of the
        decoded translations against the references; `decoding` as in `translate_ids`
        (`evaluate(data, beam_width=1)`)."""
        import sacrebleu

        metrics = super().metrics(frame)
        hypotheses = self.translate(frame["source"].tolist(), **decoding)
        references = [frame["target"].tolist()]
        lower_case = self.preprocessor.lower_case
        metrics["bleu"] = float(sacrebleu.corpus_bleu(hypotheses, references, lowercase=lower_case).score)
        if lower_case:
            references = [[text.lower() for text in references[0]]]
        metrics["chrf"] = float(sacrebleu.corpus_chrf(hypotheses, references).score)
        return metrics

    # Export ------------------------------------------------------------------------------

    def export_resources(self) -> list:
        return [self.preprocessor]

    def example_inputs(self) -> dict:
        return {"source": ["A young man is riding a bike ."]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        """`serving_default`: greedy; `beam_search`: `decoding.beam_width` beams (when > 1).
        Both take `source` strings `(batch,)` and return `translation (batch,)`, `token_ids
        (batch, max_length)` and `scores (batch,)` (log-probability of the output).

        Without `jit_compile` the decode loops are plain TF graphs with no `Xla*` op (the cache
        write is `write_cache`'s select, not `XlaDynamicUpdateSlice`), so stock TF Serving runs
        them. With `jit_compile=True` they are XLA-compiled functions, which serve only where
        XLA is enabled (TF Serving's experimental XLA flag on CPU)."""
        preprocessor, model = self.preprocessor, self.model
        beam_width, max_length, length_penalty, _ = self._decoding(None, None, None, None)

        def endpoint(width: int):
            run = tf.function(lambda ids: decode(model, ids, max_length, width, length_penalty), jit_compile=jit_compile)

            def serve(source):
                result = run(self.source_ids(checked_input(source, "source", (None,))))
                return {"translation": preprocessor.tf_detokenize(result["token_ids"], "target"), **result}

            return serve

        signature = [tf.TensorSpec([None], tf.string, name="source")]
        endpoints = {"serving_default": (endpoint(1), signature)}
        if beam_width > 1:
            endpoints["beam_search"] = (endpoint(beam_width), signature)
        return endpoints
