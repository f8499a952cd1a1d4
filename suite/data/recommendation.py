"""Sequential recommendation: interactions, leave-one-out split, item vocabulary, sequences.

An interactions table is a DataFrame with columns `user_id`, `item_id` (original IDs as
strings), `timestamp` (numeric) and, when the source has one, `rating`, as returned by
`read_interactions`. A user's sequence is their items in chronological order: a stable sort
by timestamp, so events with equal timestamps keep their file order.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

logger = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "timestamp")
FORMATS = ("csv", "tsv", "parquet", "ml-100k", "ml-1m")
DUPLICATE_RULES = ("exact", "first", "keep")
MISSING_RULES = ("error", "drop")
MOVIELENS_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
PAD_TOKEN = ""
OOV_TOKEN = "[OOV]"
PAD_INDEX = 0
OOV_INDEX = 1


def read_interactions(
    source: str | pathlib.Path | pd.DataFrame,
    format: str | None = None,
    user_column: str = "user_id",
    item_column: str = "item_id",
    timestamp_column: str | None = "timestamp",
    rating_column: str | None = None,
    duplicates: str = "exact",
    missing: str = "error",
    min_events: int = 3,
) -> pd.DataFrame:
    """Reads and validates an interactions table from a file or a DataFrame.

    `format` is one of `FORMATS`; by default it comes from the file name: `u.data` is
    MovieLens-100K (tab-separated, no header: user item rating timestamp), `ratings.dat`
    MovieLens-1M (`::`-separated, same fields), else the suffix (.csv, .tsv/.tab, .parquet/.pq,
    optionally compressed). MovieLens formats fix the column names; the `*_column` arguments
    apply to the other formats. `timestamp_column=None` orders events by their file row.
    The rating is kept from `rating_column`, or from a column named "rating" when that is None.

    Returns columns `user_id`, `item_id` (str, surrounding spaces stripped), `timestamp`
    (numeric; datetimes become int64 nanoseconds since the epoch) and maybe `rating`, in file
    order with a fresh index; other columns are dropped. Rules, applied in this order:
    - missing (NaN or empty) user, item or timestamp: `missing="error"` raises naming the rows,
      `"drop"` drops those rows;
    - duplicates: `"exact"` drops repeats of the same (user, item, timestamp), keeping the
      first; `"first"` keeps only each (user, item) pair's earliest event; `"keep"` keeps all;
    - users with fewer than `min_events` events are dropped (3 are needed for leave-one-out).
    The counts are logged and stored in `frame.attrs["report"]`.
    """
    _check_choice("duplicates", duplicates, DUPLICATE_RULES)
    _check_choice("missing", missing, MISSING_RULES)
    if min_events < 1:
        raise ValueError(f"min_events must be >= 1, got {min_events}.")
    frame, fixed_columns = _load(source, format)
    if fixed_columns:
        user_column, item_column, timestamp_column, rating_column = "user_id", "item_id", "timestamp", "rating"
    wanted = {"user_column": user_column, "item_column": item_column, "timestamp_column": timestamp_column,
              "rating_column": rating_column}
    for argument, column in wanted.items():
        if column is not None and column not in frame.columns:
            raise ValueError(f"{argument} {column!r} is not a column; the columns are {list(frame.columns)}.")
    rating = rating_column or ("rating" if "rating" in frame.columns else None)
    result = pd.DataFrame({
        "user_id": _id_strings(frame[user_column]),
        "item_id": _id_strings(frame[item_column]),
        "timestamp": (pd.Series(np.arange(len(frame)), dtype="int64") if timestamp_column is None
                      else _timestamps(frame[timestamp_column].reset_index(drop=True), timestamp_column)),
    })
    if rating is not None:
        result["rating"] = pd.to_numeric(frame[rating].reset_index(drop=True), errors="coerce")
    report = {"rows_read": len(result)}
    result, report["missing_dropped"] = _apply_missing_rule(result, missing)
    result, report["duplicates_dropped"] = _apply_duplicate_rule(result, duplicates)
    counts = result.groupby("user_id", sort=False)["item_id"].transform("size")
    few = counts < min_events
    report["users_dropped"] = int(result.loc[few, "user_id"].nunique())
    report["events_dropped"] = int(few.sum())
    result = result.loc[~few].reset_index(drop=True)
    if len(result) == 0:
        raise ValueError(f"no interactions left after the rules (report: {report}); check min_events={min_events}.")
    logger.info("read_interactions: %s", report)
    result.attrs["report"] = report
    return result


def _check_choice(argument: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{argument} must be one of {tuple(choices)}, got {value!r}.")


def _load(source, format: str | None) -> tuple[pd.DataFrame, bool]:
    """The raw table and whether its columns are MovieLens' fixed names."""
    if format is not None:
        _check_choice("format", format, FORMATS)
    if isinstance(source, pd.DataFrame):
        if format is not None:
            raise ValueError(f"format applies to files; got format={format!r} with a DataFrame.")
        return source.reset_index(drop=True), False
    if not isinstance(source, (str, pathlib.Path)):
        raise TypeError(f"source must be a path or a pandas.DataFrame, got {type(source).__name__}.")
    path = pathlib.Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"interactions file {str(path)!r} does not exist.")
    format = format or _detect_format(path)
    text_options = {"keep_default_na": False, "na_values": [""]}
    if format == "ml-100k":
        frame = pd.read_csv(path, sep="\t", header=None, names=MOVIELENS_COLUMNS, dtype=str, **text_options)
    elif format == "ml-1m":
        frame = pd.read_csv(path, sep="::", engine="python", header=None, names=MOVIELENS_COLUMNS, dtype=str,
                            encoding="latin-1", **text_options)
    elif format == "parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_csv(path, sep="\t" if format == "tsv" else ",", dtype=str, **text_options)
    return frame, format in ("ml-100k", "ml-1m")


def _detect_format(path: pathlib.Path) -> str:
    by_name = {"u.data": "ml-100k", "ratings.dat": "ml-1m"}
    by_suffix = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
    suffixes = "".join(path.suffixes).lower()
    found = by_name.get(path.name) or next((f for s, f in by_suffix.items() if s in suffixes), None)
    if found is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: pass format= one of {FORMATS} "
                         "(u.data and ratings.dat are recognised by name; otherwise .csv, .tsv, .parquet).")
    return found


def _id_strings(column: pd.Series) -> pd.Series:
    column = column.reset_index(drop=True)
    if pd.api.types.is_float_dtype(column) and (column.dropna() % 1 == 0).all():
        column = column.astype("Int64")
    strings = column.astype("string").str.strip().replace("", pd.NA)
    return strings.astype(object).where(strings.notna(), None)


def _timestamps(column: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column):
        return _datetime_nanoseconds(column)
    numeric = pd.to_numeric(column, errors="coerce")
    if (numeric.isna() & column.notna()).any():
        dates = pd.to_datetime(column, errors="coerce", utc=True, format="ISO8601")
        if (dates.isna() & column.notna()).any():
            dates = pd.to_datetime(column, errors="coerce", utc=True, format="mixed")
        bad = np.flatnonzero((dates.isna() & column.notna()).to_numpy())
        if len(bad):
            raise ValueError(f"timestamp_column {name!r} has {len(bad)} value(s) that are neither numbers nor "
                             f"dates; the first is row {bad[0]}: {column.iloc[bad[0]]!r}.")
        return _datetime_nanoseconds(dates)
    if numeric.notna().all() and (numeric == numeric.round()).all():
        return numeric.astype("int64")
    return numeric.astype("float64")


def _datetime_nanoseconds(dates: pd.Series) -> pd.Series:
    nanoseconds = (pd.to_datetime(dates, utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ns")
    return nanoseconds.astype("int64") if nanoseconds.notna().all() else nanoseconds.astype("float64")


def _apply_missing_rule(frame: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, int]:
    missing = frame[list(COLUMNS)].isna()
    rows = np.flatnonzero(missing.any(axis=1).to_numpy())
    if len(rows) and rule == "error":
        per_column = {c: int(n) for c, n in missing.sum().items() if n}
        raise ValueError(f"{len(rows)} row(s) have a missing ID or timestamp {per_column}; the first rows are "
                         f"{rows[:5].tolist()} (0-based data rows). Pass missing='drop' to drop them.")
    return frame.drop(index=rows).reset_index(drop=True), len(rows)


def _apply_duplicate_rule(frame: pd.DataFrame, rule: str) -> tuple[pd.DataFrame, int]:
    if rule == "keep":
        return frame, 0
    if rule == "exact":
        keep = ~frame.duplicated(list(COLUMNS), keep="first")
    else:
        earliest = frame.sort_values("timestamp", kind="stable")
        keep = pd.Series(False, index=frame.index)
        keep[earliest.index[~earliest.duplicated(["user_id", "item_id"], keep="first")]] = True
    return frame.loc[keep].reset_index(drop=True), int((~keep).sum())


def chronological_order(interactions: pd.DataFrame) -> np.ndarray:
    """Row positions sorted by timestamp; equal timestamps keep their row order."""
    return np.lexsort((np.arange(len(interactions)), interactions["timestamp"].to_numpy()))


def user_sequences(interactions: pd.DataFrame) -> pd.Series:
    """Each user's item IDs in chronological order (a list), indexed by sorted user_id."""
    ordered = interactions.iloc[chronological_order(interactions)]
    return ordered.groupby("user_id", sort=True)["item_id"].agg(list)


@dataclasses.dataclass(frozen=True)
class LeaveOneOutSplit:
    """`train`: interactions without each user's last two events. `validation` / `test`: one
    row per user with `user_id`, `history` (list of item IDs, oldest first) and `target`; the
    validation history is the training sequence, the test history adds the validation item."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    users_dropped: int


def leave_one_out(interactions: pd.DataFrame) -> LeaveOneOutSplit:
    """Holds out each user's last event (test) and second-to-last (validation).

    Users with fewer than 3 events are dropped (counted in `users_dropped`).
    """
    order = chronological_order(interactions)
    users = interactions["user_id"].iloc[order].reset_index(drop=True)
    from_end = users.groupby(users, sort=False).cumcount(ascending=False).to_numpy()
    enough = users.map(users.value_counts()).to_numpy() >= 3
    in_train = np.zeros(len(interactions), bool)
    in_train[order[enough & (from_end >= 2)]] = True
    train = interactions[in_train].reset_index(drop=True)
    sequences = user_sequences(interactions.iloc[order[enough]])
    if len(sequences) == 0:
        raise ValueError("no user has the 3 events leave-one-out needs.")
    validation = pd.DataFrame({"user_id": sequences.index, "history": [s[:-2] for s in sequences],
                               "target": [s[-2] for s in sequences]})
    test = pd.DataFrame({"user_id": sequences.index, "history": [s[:-1] for s in sequences],
                         "target": [s[-1] for s in sequences]})
    return LeaveOneOutSplit(train, validation, test, int(users[~enough].nunique()))


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
    items and are left-padded.
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int = 50):
        vocabulary = [str(item) for item in vocabulary]
        if vocabulary[:2] != [PAD_TOKEN, OOV_TOKEN] or len(vocabulary) < 3:
            raise ValueError(f"vocabulary must start with {[PAD_TOKEN, OOV_TOKEN]} and hold at least one item; "
                             f"got {vocabulary[:3]} ({len(vocabulary)} entries).")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary entries must be unique (and items cannot be '' or '[OOV]').")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        self.vocabulary = vocabulary
        self.max_length = int(max_length)
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
        return cls([PAD_TOKEN, OOV_TOKEN, *(item for item, _ in ranked)], max_length)

    @property
    def vocabulary_size(self) -> int:
        """Items plus the padding and OOV indices."""
        return len(self.vocabulary)

    def get_config(self) -> dict:
        return {"vocabulary": list(self.vocabulary), "max_length": self.max_length}

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

    def tf_negatives(self, targets: tf.Tensor, num_negatives: int, seed: tf.Tensor) -> tf.Tensor:
        """`(..., num_negatives)` int32 items drawn uniformly among those unequal to each target
        (never 0 or 1); 0 where the target is padding. `seed` is a stateless seed, shape (2,)."""
        if self.vocabulary_size < 4:
            raise ValueError(f"negative sampling needs at least 2 items; the vocabulary has "
                             f"{self.vocabulary_size - 2}.")
        targets = tf.cast(targets, tf.int32)[..., None]
        shape = tf.concat([tf.shape(targets)[:-1], [num_negatives]], axis=0)
        draws = tf.random.stateless_uniform(shape, seed, minval=2, maxval=self.vocabulary_size - 1, dtype=tf.int32)
        draws += tf.cast((draws >= targets) & (targets >= 2), tf.int32)
        return tf.where(targets == PAD_INDEX, PAD_INDEX, draws)

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
                training: bool = False, seed: int = 0, num_negatives: int = 0) -> tf.data.Dataset:
        """Next-item pairs from each user's sequence in `interactions` (its `max_length + 1`
        most recent items; users with one event are skipped), as `(inputs, targets)`:

        - `inputs["item_ids"]`: `(batch, max_length)` int32, left-padded with 0;
        - `inputs["negative_ids"]` when `num_negatives > 0`: `(batch, max_length, num_negatives)`
          int32, uniform over the items other than the target, 0 at padded positions; redrawn
          every epoch when `training`, fixed by `seed` otherwise;
        - `targets`: `(batch, max_length)` int32, the next item at every non-padded position, else 0.
        With `training`, the last partial batch is dropped (one static shape for XLA) unless
        there is only one batch.
        """
        sequences = [s for s in user_sequences(interactions) if len(s) >= 2]
        if not sequences:
            raise ValueError("no user in interactions has the 2 events a training pair needs.")
        return self._pairs(sequences, batch_size, shuffle, training, seed, num_negatives, last_only=False)

    def heldout_dataset(self, examples: pd.DataFrame, batch_size: int = 128, seed: int = 0,
                        num_negatives: int = 0) -> tf.data.Dataset:
        """The loss data of held-out items: `examples` (`user_id`, `history`, `target`, as in
        `LeaveOneOutSplit`) as `dataset`'s `(inputs, targets)`, inputs the history (its
        `max_length` most recent items, left-padded) and targets 0 everywhere but the last
        position, which holds the held-out `target`; negatives fixed by `seed`."""
        sequences = [[*history, target] for history, target in zip(examples["history"], examples["target"])]
        if not sequences or min(len(s) for s in sequences) < 2:
            raise ValueError("every example needs a non-empty history.")
        return self._pairs(sequences, batch_size, False, False, seed, num_negatives, last_only=True)

    def _pairs(self, sequences: list, batch_size: int, shuffle: bool, training: bool, seed: int,
               num_negatives: int, last_only: bool) -> tf.data.Dataset:
        """`dataset`'s pipeline over item ID sequences (each of at least 2 items); with
        `last_only`, targets only at the last position."""
        if num_negatives < 0:
            raise ValueError(f"num_negatives must be >= 0, got {num_negatives}.")
        windows = _left_pad(sequences, self.max_length + 1)
        data = tf.data.Dataset.from_tensor_slices(windows)
        if shuffle:
            data = data.shuffle(len(windows), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size, drop_remainder=training and len(windows) >= batch_size)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=training).batch(2)
        is_last = tf.range(self.max_length) == self.max_length - 1

        def pairs(batch, batch_seed):
            indices = self.tf_encode_histories(batch, self.max_length + 1)
            inputs = {"item_ids": indices[:, :-1]}
            targets = tf.where(inputs["item_ids"] == PAD_INDEX, PAD_INDEX, indices[:, 1:])
            if last_only:
                targets = tf.where(is_last, targets, PAD_INDEX)
            if num_negatives:
                inputs["negative_ids"] = self.tf_negatives(targets, num_negatives, batch_seed)
            return inputs, targets

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
        allowed = np.ones(self.vocabulary_size, bool)
        allowed[[PAD_INDEX, OOV_INDEX]] = False
        allowed[interacted] = False
        pool = np.flatnonzero(allowed)
        if len(pool) < count:
            raise ValueError(f"user {user!r} has only {len(pool)} items never interacted with; "
                             f"num_negatives={count} needs that many.")
        return rng.choice(pool, count, replace=False).astype(np.int32)


def _left_pad(sequences: Sequence[Sequence[str]], length: int) -> np.ndarray:
    """`(n, length)` str array: each sequence's last `length` items, left-padded with ""."""
    padded = np.full((len(sequences), length), PAD_TOKEN, dtype=object)
    for row, sequence in enumerate(sequences):
        recent = list(sequence)[-length:]
        if recent:
            padded[row, length - len(recent):] = recent
    return padded.astype(str)
