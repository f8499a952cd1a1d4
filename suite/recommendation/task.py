"""Sequential recommendation: a SASRec-style causal Transformer trained on leave-one-out splits."""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from suite.backbone import BackboneConfig
from suite.core.inference import padded_batches, run_in_batches
from suite.core.optim import TrainingConfig, adamw
from suite.core.task import Task
from suite.export import checked_input, require
from suite.recommendation.data import (
    PAD_INDEX,
    HeldOut,
    InteractionsDataConfig,
    TrainingSequences,
    leave_one_out,
    read_interactions,
    split_interactions,
    user_sequences,
)
from suite.recommendation.preprocessor import RecommendationPreprocessor
from suite.recommendation.metrics import ItemCooccurrence, MostPopular, evaluate_scores, scoring_rows
from suite.recommendation.index import ApproximateIndex
from suite.recommendation.losses import LOSSES, resolve_loss
from suite.recommendation.model import SASRec, top_items

NEGATIVE_K = "input `k` must be >= 0 (larger values are clipped to the catalogue), got"
K_ROWS = "input `k` must hold one value per row of `history` (k: (batch,), history: (batch, n)); got shapes"


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=2, d_model=64, num_heads=2, ff_dim=64, dropout=0.2, activation="gelu",
                          causal=True, position="learned", max_length=50)


@dataclasses.dataclass
class RecommendationConfig:
    """`max_length`: most recent items the model reads. `window_stride` (at most
    `max_length`): longer training sequences also yield windows ending every `window_stride`
    items earlier (0: only the most recent). `loss` (see `suite.recommendation.losses`):
    `softmax` over all items, whose cost per step grows with the catalogue; `sampled_softmax`
    against `in_batch_negatives` of the batch's next items and `num_negatives` uniform items, with
    log-Q correction;
    `gbce`, gSASRec's calibrated binary cross-entropy against `num_negatives` uniform items
    (`gbce_calibration` is its t; 0 gives SASRec's plain binary cross-entropy); `auto` (the
    default): `softmax` up to 10,000 items, `sampled_softmax` above.
    `exclude_seen`: the export and evaluation's full ranking drop the history's items.
    `eval_negatives`: negatives per user of the sampled evaluation protocol. Training monitors
    the loss on each user's second-to-last item (`HeldOut`), which picks the best
    epoch and drives `training.early_stopping_patience`; the ranking validation metrics are
    computed once, after training."""

    data: InteractionsDataConfig = dataclasses.field(default_factory=InteractionsDataConfig)
    max_length: int = 50
    window_stride: int = 50
    min_item_count: int = 1
    loss: str = "auto"
    num_negatives: int = 256
    in_batch_negatives: int = 256
    gbce_calibration: float = 0.75
    exclude_seen: bool = True
    eval_negatives: int = 100
    backbone: BackboneConfig = dataclasses.field(default_factory=_default_backbone)
    training: TrainingConfig = dataclasses.field(
        default_factory=lambda: TrainingConfig(epochs=30, batch_size=64, learning_rate=3e-3, weight_decay=0.0,
                                       warmup_fraction=0.0)
    )

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}.")
        if min(self.max_length - 1, self.num_negatives, self.in_batch_negatives, self.eval_negatives) < 0:
            raise ValueError(f"need max_length >= 1 and num_negatives, in_batch_negatives, eval_negatives >= 0; "
                             f"got {self.max_length}, {self.num_negatives}, {self.in_batch_negatives}, "
                             f"{self.eval_negatives}.")
        if self.loss == "gbce" and self.num_negatives < 1:
            raise ValueError("loss 'gbce' needs num_negatives >= 1, got 0.")
        if self.loss == "sampled_softmax" and self.num_negatives + self.in_batch_negatives < 1:
            raise ValueError("loss 'sampled_softmax' needs num_negatives + in_batch_negatives >= 1, got 0.")
        if not 0.0 <= self.gbce_calibration <= 1.0:
            raise ValueError(f"gbce_calibration must be in [0, 1], got {self.gbce_calibration}.")
        if not 0 <= self.window_stride <= self.max_length:
            raise ValueError(f"window_stride must be in [0, max_length={self.max_length}] (0: no windows), "
                             f"got {self.window_stride}.")
        if self.backbone.max_length < self.max_length:
            raise ValueError(f"backbone.max_length ({self.backbone.max_length}) must cover max_length "
                             f"({self.max_length}).")
        if not self.backbone.causal or self.backbone.position != "learned":
            raise ValueError("backbone.causal must be true and backbone.position 'learned' (SASRec).")


class Recommender(Task):
    """Recommends the next items from a user's history of item IDs (SASRec).

    `Recommender.train(interactions)` splits the table leave-one-out (last event test,
    second-to-last validation), trains on the rest and reports validation metrics;
    `evaluate(interactions)` ranks each user's last item against the baselines.
    """

    domain = "recommendation"
    config_class = RecommendationConfig
    preprocessor_class = RecommendationPreprocessor
    optimizer_options = {"beta_2": 0.98}
    index: ApproximateIndex | None = None

    @classmethod
    def read(cls, data, config):
        """An interactions table (a path or DataFrame; a split part passes through)."""
        if isinstance(data, (TrainingSequences, HeldOut)):
            return data
        if isinstance(data, pd.DataFrame) and {"user_id", "item_id", "timestamp"} <= set(data.columns):
            options = config.data
            return read_interactions(data, duplicates=options.duplicates, missing=options.missing,
                                     min_events=options.min_events)
        return read_interactions(data, **config.data.read_options)

    @classmethod
    def split(cls, interactions, config) -> dict:
        """Leave-one-out parts of an interactions table (`data.split`), training sequences windowed."""
        return split_interactions(interactions, config.data, config.max_length + 1, config.window_stride)

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        events = train_data.events if isinstance(train_data, TrainingSequences) else train_data
        return RecommendationPreprocessor.fit(events, max_length=config.max_length, min_item_count=config.min_item_count)

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        loss = resolve_loss(config.loss, preprocessor.vocabulary_size - 2)
        return SASRec(preprocessor.vocabulary_size, config.backbone, item_loss=loss,
                      gbce_calibration=config.gbce_calibration, name="sasrec")

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """`({"item_ids": (batch, max_length)}, targets)` as `RecommendationPreprocessor.dataset`
        makes them for the model's `item_loss`. For `HeldOut` data the next items are 0 but at the
        last position: the held-out item."""
        config, loss = self.config, self.model.item_loss
        options = {"batch_size": config.training.batch_size, "seed": config.training.seed,
                   "negatives": 0 if loss == "softmax" else config.num_negatives,
                   "in_batch": config.in_batch_negatives if loss == "sampled_softmax" else 0,
                   "probabilities": loss == "sampled_softmax"}
        if isinstance(data, HeldOut):
            return self.preprocessor.heldout_dataset(data.examples, **options)
        interactions = data.windows if isinstance(data, TrainingSequences) else data
        return self.preprocessor.dataset(interactions, shuffle=training, training=training, **options)

    def optimizer(self, total_steps: int) -> keras.optimizers.Optimizer:
        """AdamW; with a sampled loss `LazyAdamW`, which updates only the item rows a step gathered,
        so the step's cost does not grow with the catalogue."""
        return adamw(self.config.training, self.learning_rate(total_steps), self.no_decay,
                     lazy=self.model.item_loss != "softmax", **self.optimizer_options)

    def compile(self, total_steps: int) -> None:
        self.model.compile(optimizer=self.optimizer(total_steps), jit_compile=True)

    # Evaluation --------------------------------------------------------------------------

    def evaluation_part(self, interactions, part: str) -> HeldOut:
        """Each user's last (`part="test"`) or second-to-last (`"validation"`) event of a table,
        given the events before."""
        return interactions if isinstance(interactions, HeldOut) else HeldOut(
            interactions, leave_one_out(interactions), part)

    def metrics(self, data: HeldOut) -> dict:
        """Ranking metrics of the held-out events: `{"users": n, "model" | "most_popular" |
        "cooccurrence": {"full": {"HR@10", "NDCG@10", "MRR"}, "sampled": {...}}}`; the baselines are
        fitted on the events before. Users are scored in batches (`scoring_rows`): memory stays
        bounded whatever the catalogue size."""
        preprocessor, config = self.preprocessor, self.config
        examples = data.examples
        evaluation = preprocessor.evaluation_data(examples, config.eval_negatives, config.training.seed,
                                                  data.interactions)
        seen = evaluation.seen if config.exclude_seen else None
        negatives = evaluation.negatives if config.eval_negatives else None
        sequences = preprocessor.encode(list(user_sequences(data.split.train)))
        options = {"seen": seen, "negatives": negatives, "rows": scoring_rows(preprocessor.vocabulary_size)}
        results: dict = {"users": len(examples)}
        results["model"] = evaluate_scores(self.item_scores, evaluation.history, evaluation.targets, **options)
        for name, baseline in (("most_popular", MostPopular), ("cooccurrence", ItemCooccurrence)):
            fitted = baseline(preprocessor.vocabulary_size).fit(sequences)
            results[name] = evaluate_scores(fitted.score, evaluation.history, evaluation.targets, **options)
        return results

    # Inference ---------------------------------------------------------------------------

    @functools.cached_property
    def _score_fn(self):
        return tf.function(self.model.item_scores, jit_compile=True)

    @functools.cached_property
    def _state_fn(self):
        return tf.function(self.model.user_states, jit_compile=True)

    @functools.cached_property
    def _top_fn(self):
        model = self.model
        return tf.function(lambda ids, seen, k, exclude: top_items(model.item_scores(ids), seen, k, exclude),
                           jit_compile=True)

    def item_scores(self, history: np.ndarray) -> np.ndarray:
        """Scores `(n, vocabulary_size)` for encoded histories `(n, max_length)`, in XLA
        batches of at most 256 padded to a power of two."""
        if not len(history):
            return np.zeros((0, self.preprocessor.vocabulary_size), np.float32)
        return run_in_batches(self._score_fn, history)["output"]

    def build_index(self, **options) -> ApproximateIndex:
        """An approximate index (`ApproximateIndex`, faiss HNSW; `options` are its arguments) over
        the current item embeddings, which `recommend(approximate=True)` searches. Build it again
        after further training."""
        self.index = ApproximateIndex(keras.ops.convert_to_numpy(self.model.item_embedding.embeddings), **options)
        return self.index

    def recommend(self, user_histories, k: int = 10, exclude_seen: bool = True, approximate: bool = False) -> dict:
        """Top-k next items for each history (original item IDs, oldest first; unknown IDs
        count as OOV). `user_histories`: a list of histories, a mapping user -> history, or an
        interactions DataFrame (`user_id`, `item_id`, `timestamp`).

        Returns `{"item_ids": (n, k) str, "scores": (n, k) float32}` best first, and `"users"`
        for a mapping or DataFrame. `k` (>= 0) is capped at the number of items; where a history
        leaves fewer than `k` items to recommend (`exclude_seen`), the slots past them hold item
        ID "" and score 0. `approximate` searches the index of `build_index` instead of scoring
        every item: faster on large catalogues, and it may miss some of the exact top k.
        """
        users, histories = _histories(user_histories)
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
            raise ValueError(f"k must be an int, got {k!r}.")
        if k < 0:
            raise ValueError(f"{NEGATIVE_K} {k}.")
        k = int(min(k, self.preprocessor.vocabulary_size - 2))
        model_inputs = self.preprocessor.encode_histories(histories)
        seen = _pad_right(self.preprocessor.encode(histories))
        top = self._approximate_top if approximate else self._exact_top
        scores, indices = top(model_inputs, seen, k, bool(exclude_seen))
        result = {"item_ids": np.asarray(self.preprocessor.vocabulary, dtype=object)[indices].astype(str),
                  "scores": scores}
        if users is not None:
            result["users"] = np.asarray(users, dtype=str)
        return result

    def _exact_top(self, model_inputs, seen, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        scores, indices = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int32)]
        for (batch, size), (seen_batch, _) in zip(padded_batches(model_inputs), padded_batches(seen)):
            values, top = self._top_fn(batch, seen_batch, k, exclude_seen)
            scores.append(values.numpy()[:size])
            indices.append(top.numpy()[:size])
        return np.concatenate(scores), np.concatenate(indices)

    def _approximate_top(self, model_inputs, seen, k: int, exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        if self.index is None:
            raise ValueError("recommend(approximate=True) needs an index: call build_index() first.")
        if not len(model_inputs):
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int32)
        states = run_in_batches(self._state_fn, model_inputs)["output"]
        scores, found = self.index.search(states, k + (seen.shape[1] if exclude_seen else 0))
        if exclude_seen:
            for row in range(len(found)):
                found[row, np.isin(found[row], seen[row])] = -1
        order = np.argsort(found < 0, axis=1, kind="stable")[:, :k]
        found, scores = np.take_along_axis(found, order, axis=1), np.take_along_axis(scores, order, axis=1)
        return np.where(found >= 0, scores, 0.0).astype(np.float32), np.maximum(found, 0)

    def predict(self, inputs):
        return self.recommend(inputs)

    def cli_predict(self, values: list[str]):
        """Each value is one history: item IDs separated by commas or spaces."""
        histories = [value.replace(",", " ").split() for value in values]
        result = self.recommend(histories)
        return [{"history": history,
                 "recommendations": [{"item_id": i, "score": float(s)} for i, s in zip(ids, scores)]}
                for history, ids, scores in zip(histories, result["item_ids"], result["scores"])]

    # Export ------------------------------------------------------------------------------

    def export_resources(self) -> list:
        return [self.preprocessor.lookup_table]

    def example_inputs(self) -> dict:
        """One history of (up to) the three most frequent training items, and `k`."""
        return {"history": [self.preprocessor.vocabulary[2:5]], "k": [10]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        preprocessor, model, exclude = self.preprocessor, self.model, self.config.exclude_seen
        vocabulary = tf.constant(preprocessor.vocabulary)
        scores_fn = tf.function(model.item_scores, jit_compile=jit_compile)

        def serve(history, k):
            """`history` `(batch, n)` item IDs padded with "", `k` `(batch,)`: how many items each row gets.
            Rows are `max(k)` wide; slots past a row's `k`, or past the items it can still get, hold
            item ID "" and score 0."""
            history, k = checked_input(history, "history", (None, None)), checked_input(k, "k", (None,))
            checks = [require(tf.equal(tf.shape(k)[0], tf.shape(history)[0]), K_ROWS, tf.shape(k), tf.shape(history)),
                      require(tf.reduce_all(k >= 0), NEGATIVE_K, k)]
            with tf.control_dependencies(checks):
                scores = scores_fn(preprocessor.tf_encode_histories(history))
            values, indices = top_items(scores, preprocessor.tf_lookup(history), tf.reduce_max(tf.concat([k, [0]], 0)),
                                        exclude)
            wanted = tf.range(tf.shape(values)[1])[None, :] < k[:, None]
            return {"item_ids": tf.gather(vocabulary, tf.where(wanted, indices, 0)),
                    "scores": tf.where(wanted, values, 0.0)}

        signature = [tf.TensorSpec([None, None], tf.string, name="history"), tf.TensorSpec([None], tf.int32, name="k")]
        return {"serving_default": (serve, signature)}


def _histories(user_histories) -> tuple[list | None, list[list[str]]]:
    if isinstance(user_histories, pd.DataFrame):
        sequences = user_sequences(read_interactions(user_histories, min_events=1))
        return list(sequences.index), [list(s) for s in sequences]
    if isinstance(user_histories, Mapping):
        users, histories = list(user_histories), list(user_histories.values())
    elif isinstance(user_histories, Sequence) and not isinstance(user_histories, str):
        users, histories = None, list(user_histories)
    else:
        raise TypeError(f"user_histories must be a list of histories, a mapping or a DataFrame; "
                        f"got {type(user_histories).__name__}.")
    for row, history in enumerate(histories):
        if isinstance(history, (str, bytes)) or not isinstance(history, (Sequence, np.ndarray)):
            raise TypeError(f"user_histories[{row}] must be a list of item IDs, got {history!r}.")
    return users, [[str(item) for item in history] for history in histories]


def _pad_right(rows: list[np.ndarray]) -> np.ndarray:
    """`(n, width)` int32 with rows right-padded by 0; width a power of two (XLA buckets)."""
    longest = max((len(row) for row in rows), default=1)
    padded = np.full((len(rows), 1 << max(longest - 1, 0).bit_length()), PAD_INDEX, np.int32)
    for i, row in enumerate(rows):
        padded[i, :len(row)] = row
    return padded
