"""The translation network and its training pieces: loss, token accuracy, learning-rate schedule."""

from __future__ import annotations

import math

import keras
import keras_hub
from keras import ops

from suite.backbone import BackboneConfig, Seq2SeqBackbone, as_backbone_config
from suite.core.model import DomainModel
from suite.translation.preprocessor import PAD_ID


@keras.saving.register_keras_serializable(package="suite")
class TranslationModel(DomainModel, keras.Model):
    """Source/target token embeddings (scaled by sqrt(d_model)) + `Seq2SeqBackbone` + projection.

    Inputs: `{"encoder_token_ids": (batch, S) int32, "decoder_token_ids": (batch, T) int32}`,
    padded with `[PAD]` (0). Output: next-token logits `(batch, T, target_vocabulary_size)`.
    The projection reuses the target embedding matrix when `tie_embeddings` (a keras-hub
    `ReversibleEmbedding`), otherwise it has its own kernel.
    """

    config_arguments = ("source_vocabulary_size", "target_vocabulary_size", "tie_embeddings")

    def __init__(
        self,
        source_vocabulary_size: int,
        target_vocabulary_size: int,
        backbone: BackboneConfig | dict,
        tie_embeddings: bool = True,
        dtype=None,
        **kwargs,
    ):
        config = as_backbone_config(backbone)
        initializer = keras.initializers.RandomNormal(stddev=config.d_model**-0.5)
        source_embedding = keras.layers.Embedding(
            source_vocabulary_size, config.d_model, embeddings_initializer=initializer, dtype=dtype,
            name="source_embedding",
        )
        target_embedding = keras_hub.layers.ReversibleEmbedding(
            target_vocabulary_size, config.d_model, tie_weights=tie_embeddings, embeddings_initializer=initializer,
            dtype=dtype, name="target_embedding",
        )
        stack = Seq2SeqBackbone(config, dtype=dtype, name="backbone")
        scale = math.sqrt(config.d_model)
        inputs = {
            "encoder_token_ids": keras.Input((None,), dtype="int32", name="encoder_token_ids"),
            "decoder_token_ids": keras.Input((None,), dtype="int32", name="decoder_token_ids"),
        }
        states = stack({
            "encoder_embeddings": source_embedding(inputs["encoder_token_ids"]) * scale,
            "encoder_padding_mask": ops.not_equal(inputs["encoder_token_ids"], PAD_ID),
            "decoder_embeddings": target_embedding(inputs["decoder_token_ids"]) * scale,
            "decoder_padding_mask": ops.not_equal(inputs["decoder_token_ids"], PAD_ID),
        })
        logits = ops.cast(target_embedding(states, reverse=True), "float32")
        super().__init__(inputs=inputs, outputs=logits, dtype=dtype, **kwargs)
        self.source_vocabulary_size = source_vocabulary_size
        self.target_vocabulary_size = target_vocabulary_size
        self.backbone_config = config
        self.tie_embeddings = tie_embeddings
        self.source_embedding = source_embedding
        self.target_embedding = target_embedding
        self.stack = stack
        self.scale = scale

    def encode(self, source_ids):
        """Source ids `(batch, S)` -> `(encoder states (batch, S, d_model), padding mask (batch, S))`."""
        mask = ops.not_equal(source_ids, PAD_ID)
        return self.stack.encode(self.source_embedding(source_ids) * self.scale, mask), mask

    def init_cache(self, encoder_outputs, max_length: int) -> dict:
        """Key/value caches for `max_length` decode steps (see `Seq2SeqBackbone.init_cache`)."""
        return self.stack.init_cache(encoder_outputs, max_length)

    def decode_step(self, token_ids, cache: dict, cache_index, encoder_padding_mask):
        """Target ids `(batch, t)` at positions `cache_index ..` -> `(logits (batch, t, vocab) float32, cache)`."""
        embeddings = self.target_embedding(token_ids) * self.scale
        states, cache = self.stack.decode_step(embeddings, cache, cache_index, encoder_padding_mask)
        return ops.cast(self.target_embedding(states, reverse=True), "float32"), cache


@keras.saving.register_keras_serializable(package="suite")
class SmoothedSequenceCrossEntropy(keras.losses.Loss):
    """Label-smoothed cross-entropy over `(batch, T)` labels and `(batch, T, vocab)` logits.

    The target puts `1 - label_smoothing` on the label and spreads `label_smoothing` uniformly
    over the vocabulary; `[PAD]` labels contribute nothing, and the mean is over real tokens.
    """

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "int32")
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        label_log_probs = ops.squeeze(ops.take_along_axis(log_probs, y_true[..., None], axis=-1), -1)
        losses = -(1.0 - self.label_smoothing) * label_log_probs - self.label_smoothing * ops.mean(log_probs, -1)
        real = ops.cast(y_true != PAD_ID, "float32")
        # The default mean over all (batch, T) positions then equals the mean over real tokens.
        share = ops.cast(ops.size(real), "float32") / ops.maximum(ops.sum(real), 1.0)
        return losses * real * share

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


@keras.saving.register_keras_serializable(package="suite")
class TokenAccuracy(keras.metrics.Metric):
    """Share of non-`[PAD]` labels `(batch, T)` whose logits `(batch, T, vocab)` rank them first."""

    def __init__(self, name: str = "token_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.correct = self.add_variable((), initializer="zeros", name="correct")
        self.total = self.add_variable((), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true, "int32")
        real = ops.cast(y_true != PAD_ID, "float32")
        hits = ops.cast(ops.argmax(y_pred, axis=-1) == y_true, "float32") * real
        self.correct.assign_add(ops.sum(hits))
        self.total.assign_add(ops.sum(real))

    def result(self):
        return self.correct / ops.maximum(self.total, 1.0)


@keras.saving.register_keras_serializable(package="suite")
class InverseSquareRootSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Vaswani et al. (2017): linear warm-up to `peak_learning_rate` over `warmup_steps`,
    then decay as 1/sqrt(step). `peak = d_model^-0.5 * warmup_steps^-0.5` is the paper's choice."""

    def __init__(self, peak_learning_rate: float, warmup_steps: int):
        if peak_learning_rate <= 0 or warmup_steps < 1:
            raise ValueError(
                f"InverseSquareRootSchedule needs peak_learning_rate > 0 and warmup_steps >= 1, "
                f"got {peak_learning_rate!r} and {warmup_steps!r}."
            )
        self.peak_learning_rate = float(peak_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        warmup = float(self.warmup_steps)
        return self.peak_learning_rate * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak_learning_rate": self.peak_learning_rate, "warmup_steps": self.warmup_steps}
