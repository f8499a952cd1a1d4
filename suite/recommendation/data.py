"""Sequential recommendation: interactions, leave-one-out split, item vocabulary, sequences.

An interactions table is a DataFrame with columns `user_id`, `item_id` (original IDs as
strings), `timestamp` (numeric) and, when the source has one, `rating`, as returned by
`read_interactions`. A user's sequence is their items in chronological order: a stable sort
by timestamp, so events with equal timestamps keep their file order.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import logging
import pathlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

COLUMNS = ("user_id", "item_id", "timestamp")
FORMATS = ("csv", "tsv", "parquet", "ml-100k", "ml-1m", "sequences", "pairs")
DUPLICATE_RULES = ("exact", "first", "keep")
MISSING_RULES = ("error", "drop")
SPLITS = ("leave_one_out", None)
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
    optionally compressed; .txt/.txt.gz below). Whitespace-separated text, gzipped when the name
    ends .gz: `"sequences"` is one user a line, `user_id item_id item_id ...` oldest first
    (S3-Rec), timestamped by position in the line; `"pairs"` is one `user_id item_id` a line in
    time order (SASRec), timestamped by row; so `duplicates="exact"` drops nothing in either. A
    .txt file is "pairs" when its first 1000 non-blank lines have 2 fields, else "sequences"
    (read as sequences, such lines give the same user sequences). MovieLens and text formats fix
    the column names; the `*_column` arguments apply to the other formats.
    `timestamp_column=None` orders events by their file row.
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
        user_column, item_column, timestamp_column, rating_column = "user_id", "item_id", "timestamp", None
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
    elif format in ("sequences", "pairs"):
        frame = _read_text(path, format)
    else:
        frame = pd.read_csv(path, sep="\t" if format == "tsv" else ",", dtype=str, **text_options)
    return frame, format in ("ml-100k", "ml-1m", "sequences", "pairs")


def _open_text(path: pathlib.Path):
    return (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rt", encoding="utf-8")


def _read_text(path: pathlib.Path, format: str) -> pd.DataFrame:
    """The events of a "sequences" or "pairs" file (see `read_interactions`), split by Arrow."""
    with _open_text(path) as file:
        text = pa.array([file.read()], pa.large_string())
    lines = pc.utf8_trim_whitespace(pc.split_pattern(text, "\n").flatten())
    numbers = np.flatnonzero(pc.utf8_length(lines).to_numpy() > 0)
    lines = lines.take(numbers)
    fields = pc.utf8_split_whitespace(lines)
    counts = pc.list_value_length(fields).to_numpy().astype(np.int64)
    tokens = fields.flatten()
    if format == "pairs":
        bad = np.flatnonzero(counts != 2)
        if len(bad):
            raise ValueError(f"line {numbers[bad[0]] + 1} of {str(path)!r} has {counts[bad[0]]} fields; a pairs "
                             "file has 2 a line (user_id item_id).")
        users, items = tokens.take(np.arange(0, len(tokens), 2)), tokens.take(np.arange(1, len(tokens), 2))
        return _text_frame(users, items, np.arange(len(counts)))
    empty = np.flatnonzero(counts == 1)
    if len(empty):
        raise ValueError(f"line {numbers[empty[0]] + 1} of {str(path)!r} has a user but no items: "
                         f"{lines[empty[0]].as_py()[:80]!r}.")
    starts = np.cumsum(counts) - counts
    users = pd.Series(pd.arrays.ArrowStringArray(tokens.take(starts)))
    repeated = np.flatnonzero(users.duplicated().to_numpy())
    if len(repeated):
        user = users.iloc[repeated[0]]
        first = numbers[np.flatnonzero((users == user).to_numpy())[0]]
        raise ValueError(f"user {user!r} is on lines {first + 1} and {numbers[repeated[0]] + 1} of {str(path)!r}; "
                         "a sequences file has one line per user.")
    is_item = np.ones(len(tokens), bool)
    is_item[starts] = False
    lengths = counts - 1
    positions = np.arange(len(tokens) - len(counts)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return _text_frame(tokens.take(np.repeat(starts, lengths)), tokens.filter(is_item), positions)


def _text_frame(users: pa.Array, items: pa.Array, timestamps: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_id": pd.arrays.ArrowStringArray(users), "item_id": pd.arrays.ArrowStringArray(items),
                         "timestamp": timestamps})


def _detect_format(path: pathlib.Path) -> str:
    by_name = {"u.data": "ml-100k", "ratings.dat": "ml-1m"}
    by_suffix = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv"}
    if path.name.lower().endswith((".txt", ".txt.gz")):
        with _open_text(path) as file:
            first = itertools.islice((line.split() for line in file if line.strip()), 1000)
            return "pairs" if all(len(fields) == 2 for fields in first) else "sequences"
    suffixes = "".join(path.suffixes).lower()
    found = by_name.get(path.name) or next((f for s, f in by_suffix.items() if s in suffixes), None)
    if found is None:
        raise ValueError(f"cannot tell the format of {str(path)!r}: pass format= one of {FORMATS} "
                         "(u.data and ratings.dat are recognised by name; otherwise .csv, .tsv, .parquet, .txt).")
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


@dataclasses.dataclass
class InteractionsDataConfig:
    """The interactions table, how it is split, and the `read_interactions` options that read it.

    `split: leave_one_out` holds out each user's last event (test) and second-to-last (validation)
    of `train`; with `split: null`, `validation` and `test` name tables of their own, each scored
    on its users' last events (a split and such files exclude each other). `format` is one of
    `FORMATS` (csv, tsv, parquet, ml-100k, ml-1m, sequences, pairs), by default from the file name.
    """

    train: str = "data/recommendation/interactions.csv"
    validation: str | None = None
    test: str | None = None
    split: str | None = "leave_one_out"
    format: str | None = None
    user_column: str = "user_id"
    item_column: str = "item_id"
    timestamp_column: str | None = "timestamp"
    duplicates: str = "exact"
    missing: str = "error"
    min_events: int = 3

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {self.split!r}.")
        if self.split is not None and (self.validation or self.test):
            raise ValueError("give either split (parts of train) or validation/test files, not both.")

    @property
    def read_options(self) -> dict:
        """The `read_interactions` keyword arguments."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key not in ("train", "validation", "test", "split")}


@dataclasses.dataclass(frozen=True)
class TrainingSequences:
    """Training events cut into sequences (`training_windows`); `len` is their number (steps per
    epoch). `events` are the events themselves, on which the item vocabulary is fitted."""

    events: pd.DataFrame
    windows: pd.DataFrame
    count: int

    def __len__(self) -> int:
        return self.count


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """Each user's held-out event of `interactions` (`part`: "validation", the second-to-last, or
    "test", the last), with the split it comes from; `len` is the number of users."""

    interactions: pd.DataFrame
    split: LeaveOneOutSplit
    part: str

    @property
    def examples(self) -> pd.DataFrame:
        return self.split.test if self.part == "test" else self.split.validation

    def __len__(self) -> int:
        return len(self.examples)


def training_windows(interactions: pd.DataFrame, length: int, stride: int) -> TrainingSequences:
    """Each user's sequence; with `stride > 0` a sequence longer than `length` becomes windows
    of `length` items ending at its end, every `stride` items earlier, and at `length` (so
    every event is in one), as pseudo-users `"<user>\\t<end>"`."""
    if stride == 0:
        return TrainingSequences(interactions, interactions, int(interactions["user_id"].nunique()))
    rows = []
    for user, items in user_sequences(interactions).items():
        ends = [*range(len(items), length, -stride), length] if len(items) > length else [len(items)]
        for end in ends:
            rows.extend((f"{user}\t{end}", item, step) for step, item in enumerate(items[max(end - length, 0):end]))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return TrainingSequences(interactions, frame, int(frame["user_id"].nunique()))


def split_interactions(interactions: pd.DataFrame, config: InteractionsDataConfig, length: int,
                       stride: int) -> dict:
    """`{"train": TrainingSequences, "validation": HeldOut, "test": HeldOut}` by leave-one-out, or
    the whole table as training sequences without a split."""
    if config.split is None:
        return {"train": training_windows(interactions, length, stride)}
    split = leave_one_out(interactions)
    return {"train": training_windows(split.train, length, stride),
            "validation": HeldOut(interactions, split, "validation"), "test": HeldOut(interactions, split, "test")}
