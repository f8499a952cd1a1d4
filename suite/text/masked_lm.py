"""Masked-language-model pretraining of the text encoder (the BERT recipe), from scratch or continued
from a pretrained checkpoint, on tables of texts or on corpus files read as a stream."""

from __future__ import annotations

import dataclasses
import math

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from keras import ops

from suite.core.inference import inference_function
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.core.training import batch_seeds
from suite.layers import SequencePooling
from suite.text.corpus import TextCorpus, is_corpus_file, packed_length, packed_sequences
from suite.text.data import PretrainingText, TextDataConfig, pretraining_text, read_texts
from suite.text.encoder import (
    TextEncoder,
    TextModelConfig,
    embed_texts,
    encoder_config,
    pretrained_encoder,
    readable_bucket_lengths,
    text_inputs,
)
from suite.text.preprocessor import TextPreprocessor, mask_tokens
from suite.text.pretrained import BertCheckpoint

_PACKED_ROW_BUFFER = 4096


@dataclasses.dataclass
class MaskedLMConfig(TextModelConfig):
    """What to pretrain on and how.

    `data.train` is a table of texts (as `TextClassifier` reads) or a corpus: `.txt` files, one
    document a line, optionally `.gz` (`suite.text.corpus.TextCorpus`), read as a stream; the
    vocabulary is then learned from `vocabulary_documents` documents spread over it.
    `packing` packs consecutive documents into full rows of the longest bucket's length (no padding,
    RoBERTa's FULL-SENTENCES); a corpus needs it. Masks are drawn afresh every epoch;
    `whole_word_masking` selects all pieces of a word together. `held_out_documents`: the first that
    many documents are kept out of training to report MLM accuracy and perplexity each epoch.
    `pretrained`: a BERT-family checkpoint (see `suite.text.pretrained.resolve_checkpoint`) to continue
    pretraining; its tokenizer, vocabulary and encoder replace `vocabulary_size`, `lower_case` and
    `backbone`, and its MLM head is used when it has one (else a new head tied to the embeddings).
    `sentences_only`: the vocabulary is fitted on every row, but MLM reads only the rows that are
    not a word span of another (`maximal_phrases`): SST-2's 64,000 phrases hold ~7,000 sentences.
    """

    data: TextDataConfig = dataclasses.field(
        default_factory=lambda: TextDataConfig(validation=None, test=None)
    )
    pretrained: str | None = None
    mask_rate: float = 0.15
    whole_word_masking: bool = False
    packing: bool = False
    held_out_documents: int = 0
    vocabulary_documents: int = 20_000
    shuffle_documents: int = 10_000
    sentences_only: bool = False
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=5, batch_size=64, learning_rate=1e-3)
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.mask_rate < 0.5:
            raise ValueError(f"mask_rate must be in (0, 0.5), got {self.mask_rate}.")
        for name in ("held_out_documents", "vocabulary_documents", "shuffle_documents"):
            if getattr(self, name) < (0 if name == "held_out_documents" else 1):
                raise ValueError(f"{name} must be a {'non-negative' if name == 'held_out_documents' else 'positive'} "
                                 f"integer, got {getattr(self, name)}.")
        if self.packing and self.sentences_only:
            raise ValueError("packing joins documents into full rows; sentences_only (one row per sentence) "
                             "cannot be combined with it.")


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
        self.transform_norm = keras.layers.LayerNormalization(
            epsilon=encoder.backbone_config.layer_norm_epsilon, dtype=self.dtype_policy, name="transform_norm")
        self.output_bias = self.add_weight(shape=(encoder.vocabulary_size,), initializer="zeros", name="output_bias")

    def call(self, inputs, training=None):
        states = self.encoder(
            {"token_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]}, training=training
        )
        gathered = ops.take_along_axis(states, ops.cast(inputs["mask_positions"], "int32")[..., None], axis=1)
        hidden = self.transform_norm(self.transform(gathered))
        logits = self.encoder.token_embedding(hidden, reverse=True)
        return ops.cast(logits, "float32") + ops.cast(self.output_bias, "float32")

    def load_head(self, head: dict[str, np.ndarray]) -> None:
        """Loads a checkpoint's MLM head (`BertCheckpoint.masked_lm_head`): transform, its norm, output bias."""
        self.transform.set_weights([head["transform_kernel"], head["transform_bias"]])
        self.transform_norm.set_weights([head["norm_gamma"], head["norm_beta"]])
        self.output_bias.assign(head["output_bias"])

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        return cls(encoder, **config)


def first_regular_id(vocabulary: tuple[str, ...]) -> int:
    """The first id after the vocabulary's leading run of bracketed tokens (`[PAD]`, `[unused0]`, `[UNK]`,
    ...): 5 in vocabularies fitted here, 999 in BERT's. Masking selects and draws only from there on."""
    return next((i for i, token in enumerate(vocabulary) if not (len(token) > 2 and token[0] + token[-1] == "[]")),
                len(vocabulary))


def word_start_tokens(vocabulary: tuple[str, ...]) -> np.ndarray:
    """`(vocabulary_size,)` bool: whether a token starts a word (is not a `##` continuation piece)."""
    return np.array([not token.startswith("##") for token in vocabulary])


def _full_rows(token_ids: tf.Tensor) -> dict:
    """Packed rows `(b, L)` as encoder inputs: no padding."""
    return {"token_ids": token_ids, "padding_mask": tf.ones_like(token_ids, tf.bool)}


def masked_positions(weights: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """The first `count` selected positions of each row of `weights (batch, L)` (selected first,
    then unselected, each in position order): `(batch, count)` int32."""
    return tf.math.top_k(weights, k=count, sorted=True).indices


class MaskedLMPretrainer(Task):
    """Pretrains `TextEncoder` on unlabeled text: 15% of tokens chosen, 80/10/10 mask/random/keep.

    `TextClassifier.train(..., init_from=pretrainer)` fine-tunes from it; `embed(texts)` gives
    mean-pooled, L2-normalised sentence vectors. With `packing`, the progress bar shows tokens/s.
    """

    domain = "masked_lm"
    config_class = MaskedLMConfig
    preprocessor_class = TextPreprocessor

    def __init__(self, model, preprocessor, config):
        super().__init__(model, preprocessor, config)
        if preprocessor.mask_id is None:
            raise ValueError("MaskedLMPretrainer: the vocabulary has no [MASK] token to mask with.")

    @classmethod
    def read(cls, data, config):
        if isinstance(data, (PretrainingText, TextCorpus)):
            return data
        if is_corpus_file(data) or (isinstance(data, (list, tuple)) and data and all(map(is_corpus_file, data))):
            if not config.packing:
                raise ValueError(f"{data!r} is a corpus, read as a stream: pretraining on it needs packing: true.")
            return TextCorpus.read(data)
        if isinstance(data, (list, tuple)):
            data = pd.DataFrame({"text": list(data)})
        return read_texts(data, config.data, labeled=False)

    @classmethod
    def split(cls, data, config) -> dict:
        """The training text (`sentences_only`: the maximal phrases of a table) and, with
        `held_out_documents`, the first that many documents as validation."""
        held_out = config.held_out_documents
        if isinstance(data, TextCorpus):
            return dict(zip(("validation", "train"), data.split(held_out))) if held_out else {"train": data}
        if not isinstance(data, PretrainingText):
            data = pretraining_text(data, config.sentences_only)
        if not held_out:
            return {"train": data}
        if held_out >= len(data):
            raise ValueError(f"held_out_documents ({held_out}) must leave training text: there are {len(data)}.")
        return {"train": PretrainingText(data.vocabulary_rows, data.rows.iloc[held_out:]),
                "validation": PretrainingText(data.vocabulary_rows, data.rows.iloc[:held_out])}

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        if isinstance(train_data, TextCorpus):
            rows = train_data.sample(config.vocabulary_documents)
        else:
            rows = (train_data.vocabulary_rows if isinstance(train_data, PretrainingText) else train_data)[["text"]]
        return TextPreprocessor.fit(
            rows,
            vocabulary_size=config.vocabulary_size,
            lower_case=config.lower_case,
            bucket_lengths=config.bucket_lengths,
        )

    @classmethod
    def create(cls, train_data, config, init_from: Task | None = None) -> "MaskedLMPretrainer":
        """A fresh model, or with `config.pretrained` the checkpoint's encoder, tokenizer and MLM head."""
        if config.pretrained is None:
            return super().create(train_data, config, init_from)
        if init_from is not None:
            raise ValueError("pass either init_from or pretrained (a checkpoint), not both.")
        checkpoint = BertCheckpoint.read(config.pretrained)
        buckets = readable_bucket_lengths(config.bucket_lengths, dataclasses.replace(
            checkpoint.backbone, max_length=checkpoint.max_length))
        preprocessor = TextPreprocessor.from_config({**checkpoint.preprocessor().get_config(), "bucket_lengths": buckets})
        config = encoder_config(config, preprocessor, checkpoint.backbone, checkpoint.type_vocabulary_size)
        model = cls._language_model(pretrained_encoder(checkpoint))
        head = checkpoint.masked_lm_head()
        if head is not None:
            model.load_head(head)
        return cls(model, preprocessor, config)

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        return cls._language_model(TextEncoder(preprocessor.vocabulary_size, config.backbone, name="text_encoder"))

    @staticmethod
    def _language_model(encoder: TextEncoder) -> MaskedLanguageModel:
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
        """Batches `(inputs with mask_positions, target_ids, weights)`: `(b, P)` targets at the `P`
        masked positions. Masks are new every epoch when `training`, fixed otherwise."""
        training_config = self.config.training
        if self.config.packing:
            length = self.preprocessor.sequence_length
            rows = packed_sequences(self._documents(data, training), self.preprocessor, length)
            if training:
                rows = rows.shuffle(_PACKED_ROW_BUFFER, seed=training_config.seed)
            batches = rows.batch(training_config.batch_size, drop_remainder=training).map(_full_rows)
        else:
            batches = self.preprocessor.unlabeled_dataset(
                data.rows if isinstance(data, PretrainingText) else data, training_config.batch_size,
                shuffle=training, training=training, seed=training_config.seed)
        seeds = batch_seeds(training_config.seed, training)
        return (tf.data.Dataset.zip(batches, seeds).map(self._masked, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))

    def _documents(self, data, training: bool) -> tf.data.Dataset:
        if isinstance(data, TextCorpus):
            documents, buffer = data.lines(), self.config.shuffle_documents
        else:
            texts = (data.rows if isinstance(data, PretrainingText) else data)["text"].tolist()
            documents, buffer = tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string)), max(len(texts), 1)
        return documents.shuffle(buffer, seed=self.config.training.seed) if training else documents

    def _masked(self, inputs: dict, seed: tf.Tensor) -> tuple:
        token_ids, padding_mask = inputs["token_ids"], inputs["padding_mask"]
        word_starts = None
        if self.config.whole_word_masking:
            word_starts = tf.gather(tf.constant(word_start_tokens(self.preprocessor.vocabulary)), token_ids)
        masked, targets, weights = mask_tokens(
            token_ids, padding_mask, seed,
            vocab_size=self.preprocessor.vocabulary_size, rate=self.config.mask_rate, mask_id=self.preprocessor.mask_id,
            first_regular_id=first_regular_id(self.preprocessor.vocabulary), word_starts=word_starts)
        count = tf.cast(tf.math.ceil(tf.cast(tf.shape(weights)[1], tf.float32) * self.config.mask_rate * 5 / 3), tf.int32)
        positions = masked_positions(weights, count)
        inputs = {"token_ids": masked, "padding_mask": padding_mask, "mask_positions": positions}
        return inputs, tf.gather(targets, positions, batch_dims=1), tf.gather(weights, positions, batch_dims=1)

    def steps_per_epoch(self, data) -> int:
        if not self.config.packing:
            return super().steps_per_epoch(data)
        rows = packed_length(self._documents(data, False), self.preprocessor, self.preprocessor.sequence_length)
        return max(rows // self.config.training.batch_size, 1)

    def throughput_unit(self) -> tuple[str, int]:
        if not self.config.packing:
            return super().throughput_unit()
        return "tokens", self.config.training.batch_size * self.preprocessor.sequence_length

    def compile(self, total_steps: int) -> None:
        self.model.compile(
            optimizer=self.optimizer(total_steps),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="mean_with_sample_weight"),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=True,
        )

    def metrics(self, data, **options) -> dict:
        """MLM loss (mean cross-entropy over masked tokens), accuracy and perplexity (`exp(loss)`)."""
        results = super().metrics(data, **options)
        return {**results, "perplexity": math.exp(results["loss"])}

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
