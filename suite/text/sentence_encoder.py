"""Sentence vectors from a pretrained BERT-family checkpoint (the bert-as-service job)."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from suite.core.inference import inference_function
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.distribute import make_strategy
from suite.export import string_batch
from suite.layers import SequencePooling
from suite.layers.pooling import POOLINGS
from suite.text.data import SentencePairsDataConfig, read_sentence_pairs
from suite.text.encoder import pretrained_encoder, text_inputs
from suite.text.preprocessor import TextPreprocessor
from suite.text.pretrained import BertCheckpoint


@dataclasses.dataclass
class SentenceEncoderConfig:
    """`pretrained`: the checkpoint (folder or name, see `suite.text.pretrained.resolve_checkpoint`).
    `pooling` (`first`, `mean`, `max`) and `normalize` default to the checkpoint's sentence-transformers
    modules; `bucket_lengths` to 16, 32, ... up to its maximum length. `training.batch_size` is the
    batch `embed` runs at. `data.test`: scored pairs for `evaluate`."""

    pretrained: str = "all-MiniLM-L6-v2"
    data: SentencePairsDataConfig = dataclasses.field(default_factory=SentencePairsDataConfig)
    pooling: str | None = None
    normalize: bool | None = None
    bucket_lengths: tuple[int, ...] | None = None
    training: TrainingConfig = dataclasses.field(default_factory=lambda: TrainingConfig(batch_size=64))

    def __post_init__(self):
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)} or None (the checkpoint's), got {self.pooling!r}.")


class SentenceEncoder(Task):
    """Texts -> sentence vectors `(n, hidden)` with a pretrained checkpoint's tokenizer, encoder,
    pooling and normalisation; nothing is trained.

        encoder = SentenceEncoder.from_pretrained("all-MiniLM-L6-v2")
        vectors = encoder.embed(["A man is eating food."])          # (1, 384) float32
        encoder.similarity("A man is eating food.", "A man is eating a piece of bread.")
        encoder.export("saved_models")                               # `embed` / `serving_default`
    """

    domain = "sentence_encoder"
    config_class = SentenceEncoderConfig
    preprocessor_class = TextPreprocessor

    @classmethod
    def from_pretrained(cls, source: str | None = None, config=None, **overrides) -> "SentenceEncoder":
        """The encoder of checkpoint `source` (default: `config.pretrained`); `config` and `overrides`
        as for `Task.train` (`pooling="cls"`, `batch_size=32`)."""
        if source is not None:
            overrides["pretrained"] = source
        config = cls.resolve_config(config, overrides)
        checkpoint = BertCheckpoint.read(config.pretrained)
        preprocessor = checkpoint.preprocessor(config.bucket_lengths)
        config = dataclasses.replace(
            config,
            pooling=config.pooling or checkpoint.pooling,
            normalize=checkpoint.normalize if config.normalize is None else config.normalize,
            bucket_lengths=preprocessor.bucket_lengths,
        )
        inputs = text_inputs()
        with make_strategy(config.training.strategy).scope():
            states = pretrained_encoder(checkpoint)(inputs)
            pooled = SequencePooling(config.pooling, name="pooling")(states, padding_mask=inputs["padding_mask"])
            if config.normalize:
                pooled = keras.layers.UnitNormalization(name="normalize")(pooled)
            task = cls(keras.Model(inputs, pooled, name="sentence_encoder"), preprocessor, config)
        task.compile_in_scope(total_steps=1)
        return task

    @classmethod
    def create(cls, train_data, config, init_from=None) -> "SentenceEncoder":
        raise ValueError("a SentenceEncoder is not trained: build it with SentenceEncoder.from_pretrained(source).")

    @classmethod
    def read(cls, data, config):
        return read_sentence_pairs(data)

    def compile(self, total_steps: int) -> None:
        self.model.compile(jit_compile=True)

    @property
    def dimension(self) -> int:
        """The length of a sentence vector."""
        return int(self.model.output.shape[-1])

    def embed(self, texts, batch_size: int | None = None) -> np.ndarray:
        """Sentence vectors `(n, dimension)` float32 of `texts` (a string or a sequence of strings)."""
        texts = string_batch(texts, "text")
        if not texts:
            return np.zeros((0, self.dimension), np.float32)
        batches = self.preprocessor.dataset(texts, batch_size or self.config.training.batch_size)
        return self.model.predict(batches, verbose=0).astype(np.float32)

    def similarity(self, a, b) -> float | np.ndarray:
        """Cosine similarity: a float for two strings, else the `(len(a), len(b))` matrix."""
        left, right = (self._unit(self.embed(texts)) for texts in (a, b))
        scores = left @ right.T
        return float(scores[0, 0]) if isinstance(a, str) and isinstance(b, str) else scores

    @staticmethod
    def _unit(vectors: np.ndarray) -> np.ndarray:
        return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)

    def metrics(self, pairs) -> dict:
        """Semantic textual similarity (the STS-B protocol): Spearman and Pearson correlation between
        the cosine of each pair's vectors and its gold score. `evaluate(data)` reads `data`, a table
        (path or DataFrame) with columns `sentence1`, `sentence2`, `score`; by default `data.test`."""
        if len(pairs) < 2:
            raise ValueError(f"evaluate: correlation needs at least 2 scored pairs, got {len(pairs)}.")
        left, right = (self._unit(self.embed(pairs[column].tolist())) for column in ("sentence1", "sentence2"))
        cosine = pd.Series((left * right).sum(axis=-1))
        gold = pairs["score"]
        return {"spearman": float(cosine.corr(gold, method="spearman")),
                "pearson": float(cosine.corr(gold, method="pearson")), "pairs": len(pairs)}

    def predict(self, texts) -> np.ndarray:
        """Same as `embed`."""
        return self.embed(texts)

    def cli_predict(self, values: list[str]):
        return [{"text": text, "embedding": vector.tolist()} for text, vector in zip(values, self.embed(values))]

    def export_resources(self) -> list:
        return [self.preprocessor]

    def example_inputs(self) -> dict:
        return {"text": ["A man is eating food.", "A man is eating a piece of bread."]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        encode = inference_function(self.model, jit_compile)
        preprocessor = self.preprocessor

        def embed(text):
            return {"embedding": tf.cast(encode(preprocessor.serving_inputs(text)), tf.float32)}

        signature = [tf.TensorSpec([None], tf.string, name="text")]
        return {"serving_default": (embed, signature), "embed": (embed, signature)}
