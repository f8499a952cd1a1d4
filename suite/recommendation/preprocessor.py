"""Item vocabulary, encoded histories and tf.data batches for training and evaluation, and the lookup the export uses."""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from suite.core.training import batch_seeds
from suite.recommendation.data import OOV_INDEX, OOV_TOKEN, PAD_INDEX, PAD_TOKEN, user_sequences

EXACT_SAMPLING_ITEMS = 100_000


@dataclasses.dataclass(frozen=True)
class EvaluationData:
    """Ranking examples, one per user.

    `users` (n,) str; `history` (n, max_length) int32 item indices, most recent last,
    left-padded with 0; `targets` (n,) int32 (1 when the item is out of vocabulary); `seen`
    n int32 arrays with the indices of each user's whole history (what full ranking excludes);
    `negatives` (n, num_negatives) int32 items the user never interacted with, or None.
    """

    users: np.ndarray
    history: np.ndarray
    targets: np.ndarray
    seen: list[np.ndarray]
    negatives: np.ndarray | None


class RecommendationPreprocessor:
    """The item vocabulary and the encoding of sequences for the model.

    Index 0 is padding (""), 1 the out-of-vocabulary bucket ("[OOV]"), then the items by
    decreasing training frequency (ties by ID). Sequences keep their `max_length` most recent
    items and are left-padded. `counts`, when known, are the items' training events (0 for padding
    and OOV): the sampled softmax's log-Q correction needs them.
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int = 50, counts: Sequence[int] | None = None):
        vocabulary = [str(item) for item in vocabulary]
        if vocabulary[:2] != [PAD_TOKEN, OOV_TOKEN] or len(vocabulary) < 3:
            raise ValueError(f"vocabulary must start with {[PAD_TOKEN, OOV_TOKEN]} and hold at least one item; "
                             f"got {vocabulary[:3]} ({len(vocabulary)} entries).")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary entries must be unique (and items cannot be '' or '[OOV]').")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if counts is not None and len(counts) != len(vocabulary):
            raise ValueError(f"counts must hold one count per vocabulary entry ({len(vocabulary)}), got {len(counts)}.")
        self.vocabulary = vocabulary
        self.max_length = int(max_length)
        self.counts = None if counts is None else [int(count) for count in counts]
        self._table: tf.lookup.StaticHashTable | None = None

    @classmethod
    def fit(cls, train: pd.DataFrame, *, max_length: int = 50, min_item_count: int = 1,
            max_items: int | None = None) -> RecommendationPreprocessor:
        """The vocabulary of `train` (training interactions only): items seen at least
        `min_item_count` times, the `max_items` most frequent when given; the rest map to OOV."""
        counts = train["item_id"].value_counts()
        if OOV_TOKEN in counts.index:
            raise ValueError(f"item ID {OOV_TOKEN!r} is reserved for the out-of-vocabulary bucket.")
        counts = counts[counts >= min_item_count]
        ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:max_items]
        if not ranked:
            raise ValueError(f"no item occurs at least min_item_count={min_item_count} times in train.")
        return cls([PAD_TOKEN, OOV_TOKEN, *(item for item, _ in ranked)], max_length,
                   [0, 0, *(int(count) for _, count in ranked)])

    @property
    def vocabulary_size(self) -> int:
        """Items plus the padding and OOV indices."""
        return len(self.vocabulary)

    def get_config(self) -> dict:
        return {"vocabulary": list(self.vocabulary), "max_length": self.max_length, "counts": self.counts}

    @classmethod
    def from_config(cls, config: dict) -> RecommendationPreprocessor:
        return cls(**config)

    @property
    def lookup_table(self) -> tf.lookup.StaticHashTable:
        """The item ID -> index table; export it with the serving functions that use it."""
        if self._table is None:
            with tf.init_scope():
                initializer = tf.lookup.KeyValueTensorInitializer(
                    tf.constant(self.vocabulary[2:]), tf.range(2, self.vocabulary_size, dtype=tf.int32))
                self._table = tf.lookup.StaticHashTable(initializer, default_value=OOV_INDEX)
        return self._table

    def tf_lookup(self, item_ids) -> tf.Tensor:
        """Item ID strings (any shape) -> int32 indices: "" -> 0, unknown -> 1."""
        item_ids = tf.convert_to_tensor(item_ids, tf.string)
        return tf.where(tf.equal(item_ids, PAD_TOKEN), PAD_INDEX, self.lookup_table.lookup(item_ids))

    def tf_encode_histories(self, item_ids, length: int | None = None) -> tf.Tensor:
        """`(batch, length)` int32 from item ID strings `(batch, any)`: "" entries (padding,
        wherever they are) are dropped, the `length` (default `max_length`) most recent items
        kept, unknown IDs mapped to 1, and rows left-padded with 0."""
        length = length or self.max_length
        item_ids = tf.convert_to_tensor(item_ids, tf.string)
        recent = tf.ragged.boolean_mask(item_ids, item_ids != PAD_TOKEN)[:, -length:]
        indices = recent.with_flat_values(self.lookup_table.lookup(recent.flat_values))
        right_padded = indices.to_tensor(PAD_INDEX, shape=[None, length])
        source = tf.range(length)[None, :] - (length - tf.cast(recent.row_lengths(), tf.int32))[:, None]
        return tf.where(source >= 0, tf.gather(right_padded, tf.maximum(source, 0), batch_dims=1), PAD_INDEX)

    def tf_item_ids(self, indices) -> tf.Tensor:
        """Indices (any shape) -> item ID strings; 0 gives "" and 1 "[OOV]"."""
        return tf.gather(tf.constant(self.vocabulary), indices)

    def tf_negatives(self, next_items: tf.Tensor, in_batch: int, uniform: int, seed: tf.Tensor) -> tf.Tensor:
        """`(in_batch + uniform,)` int32 negatives for a batch: `in_batch` of its `next_items`
        drawn without replacement (0 when it has fewer), then `uniform` items drawn uniformly with
        replacement (never padding or OOV). `seed` is a stateless seed, shape (2,)."""
        batch_seed, uniform_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        flat = tf.concat([tf.reshape(next_items, [-1]), tf.zeros([in_batch], tf.int32)], 0)
        keys = tf.random.stateless_uniform(tf.shape(flat), batch_seed)
        _, chosen = tf.math.top_k(tf.where(flat != PAD_INDEX, keys, -1.0), in_batch)
        drawn = tf.random.stateless_uniform([uniform], uniform_seed, minval=2, maxval=self.vocabulary_size,
                                            dtype=tf.int32)
        return tf.concat([tf.gather(flat, chosen), drawn], 0)

    def sampling_probability(self, items: tf.Tensor, in_batch: int, uniform: int) -> tf.Tensor:
        """The probability that one of `tf_negatives`' draws is each item (same shape as `items`):
        `in_batch` draws by training frequency (`counts`), `uniform` uniform ones."""
        expected = in_batch * tf.gather(self._frequency, items) + uniform / (self.vocabulary_size - 2)
        return expected / max(in_batch + uniform, 1)

    @functools.cached_property
    def _frequency(self) -> np.ndarray:
        """`counts` as fractions of all training events, float32 `(vocabulary_size,)`."""
        if self.counts is None:
            raise ValueError("the sampled softmax needs item counts: this preprocessor has none (fit it on "
                             "training events with RecommendationPreprocessor.fit).")
        counts = np.asarray(self.counts, np.float32)
        return counts / max(float(counts.sum()), 1.0)

    def encode(self, sequences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Each whole sequence of item IDs as an int32 index array."""
        lengths = [len(sequence) for sequence in sequences]
        flat = [str(item) for sequence in sequences for item in sequence]
        indices = self.tf_lookup(tf.constant(flat, tf.string)).numpy()
        return np.split(indices, np.cumsum(lengths)[:-1]) if sequences else []

    def encode_histories(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """`(n, max_length)` int32: each history's most recent items, left-padded with 0."""
        return self.tf_encode_histories(_left_pad(histories, self.max_length)).numpy()

    def dataset(self, interactions: pd.DataFrame, batch_size: int = 128, shuffle: bool = False,
                training: bool = False, seed: int = 0, negatives: int = 0, in_batch: int = 0,
                probabilities: bool = False) -> tf.data.Dataset:
        """Next-item pairs from each user's sequence in `interactions` (its `max_length + 1`
        most recent items; users with one event are skipped), as `(inputs, targets)`:

        - `inputs["item_ids"]`: `(batch, max_length)` int32, left-padded with 0;
        - `targets`: `(batch, max_length)` int32, the next item at every non-padded position, else 0;
          with `negatives` or `in_batch` a dict of those `"next_items"` and `"negatives"`
          `(in_batch + negatives,)` shared by the batch (`tf_negatives`; redrawn every epoch when
          `training`, fixed by `seed` otherwise), with `probabilities` also their
          `sampling_probability`: `"next_probability"` and `"negative_probability"`.
        With `training`, the last partial batch is dropped (one static shape for XLA) unless
        there is only one batch.
        """
        sequences = [s for s in user_sequences(interactions) if len(s) >= 2]
        if not sequences:
            raise ValueError("no user in interactions has the 2 events a training pair needs.")
        return self._pairs(sequences, batch_size, shuffle, training, seed, (in_batch, negatives, probabilities),
                           last_only=False)

    def heldout_dataset(self, examples: pd.DataFrame, batch_size: int = 128, seed: int = 0,
                        negatives: int = 0, in_batch: int = 0, probabilities: bool = False) -> tf.data.Dataset:
        """The loss data of held-out items: `examples` (`user_id`, `history`, `target`, as in
        `LeaveOneOutSplit`) as `dataset`'s `(inputs, targets)`, inputs the history (its
        `max_length` most recent items, left-padded) and next items 0 everywhere but the last
        position, which holds the held-out `target`; negatives fixed by `seed`."""
        sequences = [[*history, target] for history, target in zip(examples["history"], examples["target"])]
        if not sequences or min(len(s) for s in sequences) < 2:
            raise ValueError("every example needs a non-empty history.")
        return self._pairs(sequences, batch_size, False, False, seed, (in_batch, negatives, probabilities),
                           last_only=True)

    def _pairs(self, sequences: list, batch_size: int, shuffle: bool, training: bool, seed: int,
               sampling: tuple[int, int, bool], last_only: bool) -> tf.data.Dataset:
        """`dataset`'s pipeline over item ID sequences (each of at least 2 items); `sampling` is
        `(in_batch, negatives, probabilities)`; with `last_only`, targets only at the last position."""
        in_batch, negatives, probabilities = sampling
        if negatives < 0 or in_batch < 0:
            raise ValueError(f"negatives and in_batch must be >= 0, got {negatives} and {in_batch}.")
        windows = _left_pad(sequences, self.max_length + 1)
        data = tf.data.Dataset.from_tensor_slices(windows)
        if shuffle:
            data = data.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size, drop_remainder=training and len(windows) >= batch_size)
        seeds = batch_seeds(seed, training)
        is_last = tf.range(self.max_length) == self.max_length - 1

        def pairs(batch, batch_seed):
            indices = self.tf_encode_histories(batch, self.max_length + 1)
            inputs = {"item_ids": indices[:, :-1]}
            targets = tf.where(inputs["item_ids"] == PAD_INDEX, PAD_INDEX, indices[:, 1:])
            if last_only:
                targets = tf.where(is_last, targets, PAD_INDEX)
            if not (negatives or in_batch):
                return inputs, targets
            sampled = {"next_items": targets, "negatives": self.tf_negatives(targets, in_batch, negatives, batch_seed)}
            if probabilities:
                sampled["next_probability"] = self.sampling_probability(targets, in_batch, negatives)
                sampled["negative_probability"] = self.sampling_probability(sampled["negatives"], in_batch, negatives)
            return inputs, sampled

        return tf.data.Dataset.zip(data, seeds).map(pairs, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)

    def evaluation_data(self, examples: pd.DataFrame, num_negatives: int = 100, seed: int = 0,
                        interactions: pd.DataFrame | None = None) -> EvaluationData:
        """Encodes `examples` (`user_id`, `history`, `target`, as in `LeaveOneOutSplit`).

        With `num_negatives > 0`, draws that many distinct negatives per user (seeded), among
        the vocabulary items not in the user's history, target or rows of `interactions`.
        """
        seen = [np.unique(indices) for indices in self.encode(list(examples["history"]))]
        targets = self.tf_lookup(examples["target"].astype(str).to_numpy()).numpy()
        negatives = None
        if num_negatives > 0:
            users = list(examples["user_id"])
            others = {} if interactions is None else user_sequences(interactions).to_dict()
            other_indices = self.encode([others.get(user, []) for user in users])
            rng = np.random.default_rng(seed)
            negatives = np.zeros((len(users), num_negatives), np.int32)
            for row, user in enumerate(users):
                interacted = np.concatenate([seen[row], [targets[row]], other_indices[row]])
                negatives[row] = self._sample_unseen(rng, num_negatives, interacted, user)
        return EvaluationData(examples["user_id"].to_numpy(), self.encode_histories(list(examples["history"])),
                              targets, seen, negatives)

    def _sample_unseen(self, rng: np.random.Generator, count: int, interacted, user) -> np.ndarray:
        """`count` distinct items not in `interacted`: drawn from the explicit pool of allowed items
        up to `EXACT_SAMPLING_ITEMS` items (or when few are left), by rejection above, where
        building that pool for every user would cost O(users * items)."""
        interacted = np.unique(np.asarray(interacted, np.int64))
        interacted = interacted[interacted >= 2]
        available = self.vocabulary_size - 2 - len(interacted)
        if available < count:
            raise ValueError(f"user {user!r} has only {available} items never interacted with; "
                             f"num_negatives={count} needs that many.")
        if self.vocabulary_size <= EXACT_SAMPLING_ITEMS or available < 4 * count:
            pool = np.setdiff1d(np.arange(2, self.vocabulary_size), interacted)
            return rng.choice(pool, count, replace=False).astype(np.int32)
        chosen = np.zeros(0, np.int64)
        while len(chosen) < count:
            draws = rng.integers(2, self.vocabulary_size, 2 * count)
            chosen = pd.unique(np.concatenate([chosen, draws[~np.isin(draws, interacted)]]))[:count]
        return chosen.astype(np.int32)


def _left_pad(sequences: Sequence[Sequence[str]], length: int) -> np.ndarray:
    """`(n, length)` str array: each sequence's last `length` items, left-padded with ""."""
    padded = np.full((len(sequences), length), PAD_TOKEN, dtype=object)
    for row, sequence in enumerate(sequences):
        recent = list(sequence)[-length:]
        if recent:
            padded[row, length - len(recent):] = recent
    return padded.astype(str)
