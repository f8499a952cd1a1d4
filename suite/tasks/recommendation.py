"""Sequential recommendation: a SASRec-style causal Transformer trained on leave-one-out splits."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Mapping, Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from suite.backbone import BackboneConfig
from suite.data.recommendation import (
    PAD_INDEX,
    LeaveOneOutSplit,
    RecommendationPreprocessor,
    leave_one_out,
    read_interactions,
    user_sequences,
)
from suite.io import write_json_atomic
from suite.tasks.base import Task, TrainingConfig, warmup_schedule
from suite.tasks.recommendation_metrics import ItemCooccurrence, MostPopular, evaluate_scores
from suite.tasks.sasrec import SASRec, top_items

LOSSES = ("softmax", "sampled")
INFERENCE_BATCH = 256


@dataclasses.dataclass
class InteractionsDataConfig:
    """The interactions table and the `read_interactions` options that read it."""

    path: str = "data/recommendation/interactions.csv"
    format: str | None = None
    user_column: str = "user_id"
    item_column: str = "item_id"
    timestamp_column: str | None = "timestamp"
    duplicates: str = "exact"
    missing: str = "error"
    min_events: int = 3


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=2, d_model=64, num_heads=2, ff_dim=64, dropout=0.2, activation="gelu",
                          causal=True, position="learned", max_length=50)


@dataclasses.dataclass
class RecommendationConfig:
    """`max_length`: most recent items the model reads. `window_stride` (at most
    `max_length`): longer training sequences also yield windows ending every `window_stride`
    items earlier (0: only the most recent). `loss`: `softmax` over all items or `sampled`
    (binary cross-entropy against `num_negatives` uniform negatives per position).
    `exclude_seen`: the export and evaluation's full ranking drop the history's items.
    `eval_negatives`: negatives per user of the sampled evaluation protocol. Training monitors
    the loss on each user's second-to-last item (`HeldOutValidation`), which picks the best
    epoch and drives `training.early_stopping_patience`; the ranking validation metrics are
    computed once, after training."""

    data: InteractionsDataConfig = dataclasses.field(default_factory=InteractionsDataConfig)
    max_length: int = 50
    window_stride: int = 50
    min_item_count: int = 1
    loss: str = "softmax"
    num_negatives: int = 1
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
        if self.max_length < 1 or self.num_negatives < 1 or self.eval_negatives < 0:
            raise ValueError(f"need max_length >= 1, num_negatives >= 1, eval_negatives >= 0; got "
                             f"{self.max_length}, {self.num_negatives}, {self.eval_negatives}.")
        if not 0 <= self.window_stride <= self.max_length:
            raise ValueError(f"window_stride must be in [0, max_length={self.max_length}] (0: no windows), "
                             f"got {self.window_stride}.")
        if self.backbone.max_length < self.max_length:
            raise ValueError(f"backbone.max_length ({self.backbone.max_length}) must cover max_length "
                             f"({self.max_length}).")
        if not self.backbone.causal or self.backbone.position != "learned":
            raise ValueError("backbone.causal must be true and backbone.position 'learned' (SASRec).")


@dataclasses.dataclass(frozen=True)
class TrainingSequences:
    """Training interactions cut into sequences; `len` is their number (steps per epoch)."""

    interactions: pd.DataFrame
    count: int

    def __len__(self) -> int:
        return self.count


@dataclasses.dataclass(frozen=True)
class HeldOutValidation:
    """`Task.fit`'s validation data: each user's second-to-last item of `interactions`
    (`split.validation`). `Recommender.dataset` gives its loss, `Recommender.evaluate` its
    ranking metrics."""

    interactions: pd.DataFrame
    split: LeaveOneOutSplit


def training_windows(interactions: pd.DataFrame, length: int, stride: int) -> TrainingSequences:
    """Each user's sequence; with `stride > 0` a sequence longer than `length` becomes windows
    of `length` items ending at its end, every `stride` items earlier, and at `length` (so
    every event is in one), as pseudo-users `"<user>\\t<end>"`."""
    if stride == 0:
        return TrainingSequences(interactions, int(interactions["user_id"].nunique()))
    rows = []
    for user, items in user_sequences(interactions).items():
        ends = [*range(len(items), length, -stride), length] if len(items) > length else [len(items)]
        for end in ends:
            rows.extend((f"{user}\t{end}", item, step) for step, item in enumerate(items[max(end - length, 0):end]))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return TrainingSequences(frame, int(frame["user_id"].nunique()))


class Recommender(Task):
    """Recommends the next items from a user's history of item IDs (SASRec).

    `Recommender.train(interactions)` splits the table leave-one-out (last event test,
    second-to-last validation), trains on the rest and reports validation metrics;
    `evaluate(interactions)` ranks each user's last item against the baselines.
    """

    domain = "recommendation"
    config_class = RecommendationConfig
    preprocessor_class = RecommendationPreprocessor

    @classmethod
    def read(cls, data, config):
        data = config.data.path if data is None else data
        if isinstance(data, pd.DataFrame) and {"user_id", "item_id", "timestamp"} <= set(data.columns):
            return read_interactions(data, duplicates=config.data.duplicates, missing=config.data.missing,
                                     min_events=config.data.min_events)
        options = dataclasses.asdict(config.data)
        del options["path"]
        return read_interactions(data, **options)

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        return RecommendationPreprocessor.fit(train_data, max_length=config.max_length,
                                              min_item_count=config.min_item_count)

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        return SASRec(preprocessor.vocabulary_size, config.backbone, name="sasrec")

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """`({"item_ids": (batch, max_length)}, next_items)`, with sampled loss
        `(next_items, negatives (batch, max_length, num_negatives))`. For `HeldOutValidation`
        the next items are 0 but at the last position: the held-out item."""
        config = self.config
        sampled = config.loss == "sampled"
        options = {"batch_size": config.training.batch_size, "seed": config.training.seed,
                   "num_negatives": config.num_negatives if sampled else 0}
        if isinstance(data, HeldOutValidation):
            dataset = self.preprocessor.heldout_dataset(data.split.validation, **options)
        else:
            interactions = data.interactions if isinstance(data, TrainingSequences) else data
            dataset = self.preprocessor.dataset(interactions, shuffle=training, training=training, **options)
        if sampled:
            return dataset.map(lambda inputs, targets: ({"item_ids": inputs["item_ids"]},
                                                       (targets, inputs["negative_ids"])))
        return dataset

    def compile(self, total_steps: int) -> None:
        training = self.config.training
        optimizer = keras.optimizers.AdamW(
            learning_rate=warmup_schedule(training, total_steps), weight_decay=training.weight_decay, beta_2=0.98
        )
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        self.model.compile(optimizer=optimizer, jit_compile=True)

    # Training ----------------------------------------------------------------------------

    @classmethod
    def train(cls, data=None, config=None, *, output_dir: str | Path | None = None, verbose="auto",
              resume: bool = False, **overrides) -> Recommender:
        """Trains on an interactions table (path or DataFrame; default `config.data.path`),
        split leave-one-out; the loss on each user's second-to-last item picks the best epoch
        and `training_metrics["validation"]` ranks it. `config` and `overrides` as in `Task.train`."""
        config = cls.resolve_config(config, overrides)
        keras.utils.set_random_seed(config.training.seed)
        interactions = cls.read(data, config)
        split = leave_one_out(interactions)
        task = cls.create(split.train, config)
        sequences = training_windows(split.train, config.max_length + 1, config.window_stride)
        validation = HeldOutValidation(interactions, split)
        task.training_metrics = task.fit(sequences, validation, output_dir, verbose, resume)
        return task

    @classmethod
    def run(cls, config, output_dir: str | Path, resume: bool = False) -> tuple[Recommender, dict]:
        """Trains on `config.data.path`, evaluates on its leave-one-out test, saves to `output_dir/task`."""
        output_dir = Path(output_dir)
        interactions = cls.read(None, config)
        task = cls.train(interactions, config, output_dir=output_dir, resume=resume)
        metrics = {**task.training_metrics, "test": task.evaluate(interactions)}
        write_json_atomic(output_dir / "metrics.json", metrics)
        task.save(output_dir / "task")
        return task, metrics

    # Evaluation --------------------------------------------------------------------------

    def evaluate(self, data=None, part: str = "test") -> dict:
        """Ranking metrics of each user's last (`part="test"`) or second-to-last
        (`"validation"`) item of `data` (default `config.data.path`), given the events before;
        for a `HeldOutValidation`, those of its second-to-last items.

        Returns `{"users": n, "model" | "most_popular" | "cooccurrence": {"full": {"HR@10",
        "NDCG@10", "MRR"}, "sampled": {...}}}`; baselines are fitted on the events before both.
        """
        if part not in ("test", "validation"):
            raise ValueError(f"part must be 'test' or 'validation', got {part!r}.")
        if isinstance(data, HeldOutValidation):
            return self._evaluate(data.interactions, data.split, "validation")
        interactions = self.read(data, self.config)
        return self._evaluate(interactions, leave_one_out(interactions), part)

    def _evaluate(self, interactions: pd.DataFrame, split: LeaveOneOutSplit, part: str) -> dict:
        examples = split.test if part == "test" else split.validation
        preprocessor, config = self.preprocessor, self.config
        data = preprocessor.evaluation_data(examples, config.eval_negatives, config.training.seed, interactions)
        seen = data.seen if config.exclude_seen else None
        negatives = data.negatives if config.eval_negatives else None
        sequences = preprocessor.encode(list(user_sequences(split.train)))
        results: dict = {"users": len(examples)}
        results["model"] = evaluate_scores(self.item_scores(data.history), data.targets, seen, negatives)
        for name, baseline in (("most_popular", MostPopular), ("cooccurrence", ItemCooccurrence)):
            fitted = baseline(preprocessor.vocabulary_size).fit(sequences)
            results[name] = evaluate_scores(fitted.score(data.history), data.targets, seen, negatives)
        return results

    # Inference ---------------------------------------------------------------------------

    @functools.cached_property
    def _score_fn(self):
        return tf.function(self.model.item_scores, jit_compile=True)

    @functools.cached_property
    def _top_fn(self):
        model = self.model
        return tf.function(lambda ids, seen, k, exclude: top_items(model.item_scores(ids), seen, k, exclude),
                           jit_compile=True)

    def item_scores(self, history: np.ndarray) -> np.ndarray:
        """Scores `(n, vocabulary_size)` for encoded histories `(n, max_length)`, in XLA
        batches of at most 256 padded to a power of two."""
        return np.concatenate([self._score_fn(batch).numpy()[:size] for batch, size in _batches(history)]
                              or [np.zeros((0, self.preprocessor.vocabulary_size), np.float32)])

    def recommend(self, user_histories, k: int = 10, exclude_seen: bool = True) -> dict:
        """Top-k next items for each history (original item IDs, oldest first; unknown IDs
        count as OOV). `user_histories`: a list of histories, a mapping user -> history, or an
        interactions DataFrame (`user_id`, `item_id`, `timestamp`).

        Returns `{"item_ids": (n, k) str, "scores": (n, k) float32}` best first, and `"users"`
        for a mapping or DataFrame. `k` is capped at the number of items.
        """
        users, histories = _histories(user_histories)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}.")
        k = int(min(k, self.preprocessor.vocabulary_size - 2))
        model_inputs = self.preprocessor.encode_histories(histories)
        seen = _pad_right(self.preprocessor.encode(histories))
        scores, indices = [], []
        for (batch, size), (seen_batch, _) in zip(_batches(model_inputs), _batches(seen)):
            values, top = self._top_fn(batch, seen_batch, k, bool(exclude_seen))
            scores.append(values.numpy()[:size])
            indices.append(top.numpy()[:size])
        indices = np.concatenate(indices) if indices else np.zeros((0, k), np.int32)
        result = {"item_ids": np.asarray(self.preprocessor.vocabulary, dtype=object)[indices].astype(str),
                  "scores": np.concatenate(scores) if scores else np.zeros((0, k), np.float32)}
        if users is not None:
            result["users"] = np.asarray(users, dtype=str)
        return result

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
        return {"history": [self.preprocessor.vocabulary[2:5]], "k": 10}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        preprocessor, model, exclude = self.preprocessor, self.model, self.config.exclude_seen
        vocabulary = tf.constant(preprocessor.vocabulary)
        scores_fn = tf.function(model.item_scores, jit_compile=jit_compile)

        def serve(history, k):
            scores = scores_fn(preprocessor.tf_encode_histories(history))
            values, indices = top_items(scores, preprocessor.tf_lookup(history), k, exclude)
            return {"item_ids": tf.gather(vocabulary, indices), "scores": values}

        signature = [tf.TensorSpec([None, None], tf.string, name="history"), tf.TensorSpec([], tf.int32, name="k")]
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


def _batches(array: np.ndarray):
    """`(batch, real_rows)` chunks of at most `INFERENCE_BATCH` rows, zero-padded to a power of two."""
    for start in range(0, len(array), INFERENCE_BATCH):
        chunk = array[start:start + INFERENCE_BATCH]
        size = 1 << max(len(chunk) - 1, 0).bit_length()
        padding = np.zeros((size - len(chunk), *array.shape[1:]), array.dtype)
        yield np.concatenate([chunk, padding]), len(chunk)
