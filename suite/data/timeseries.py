"""Time series: reading, chronological splits, train-only scaling and sliding windows.

A series is a DataFrame with one timestamp column and one or more float value columns
(channels), in strictly increasing time order, as returned by `read_series`.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

FILL_POLICIES = ("error", "ffill", "interpolate")
ETT_ROWS_PER_MONTH = 30 * 24

CALENDAR_FEATURES = {
    "minute_of_hour": (lambda t: t.minute, 59.0),
    "hour_of_day": (lambda t: t.hour, 23.0),
    "day_of_week": (lambda t: t.dayofweek, 6.0),
    "day_of_month": (lambda t: t.day - 1, 30.0),
    "day_of_year": (lambda t: t.dayofyear - 1, 365.0),
    "month_of_year": (lambda t: t.month - 1, 11.0),
}


def read_series(
    source: str | pathlib.Path | pd.DataFrame,
    timestamp_column: str = "date",
    value_columns: Sequence[str] | None = None,
    fill: str = "error",
) -> pd.DataFrame:
    """Reads and validates a series from a CSV/Parquet path or a DataFrame.

    Returns a new DataFrame with columns `[timestamp_column, *value_columns]` (datetime64,
    then float64) and a fresh RangeIndex. `value_columns=None` takes every other column.
    Rows are never reordered: unsorted or duplicated timestamps are an error naming the first
    offending row (0-based data row, header not counted).

    Missing values are handled by `fill`:
    - "error" (default): raise, naming the columns and the first row with a missing value;
    - "ffill": carry the last observed value forward;
    - "interpolate": linear in time between the neighbouring observed values (values after
      the last observation are carried forward).
    With either fill policy, missing values before a column's first observation are an error.
    """
    if fill not in FILL_POLICIES:
        raise ValueError(f"fill must be one of {FILL_POLICIES}, got {fill!r}.")
    frame = _load(source)
    if timestamp_column not in frame.columns:
        raise ValueError(
            f"timestamp_column {timestamp_column!r} is not a column; the columns are {list(frame.columns)}."
        )
    if value_columns is None:
        value_columns = [c for c in frame.columns if c != timestamp_column]
    value_columns = list(value_columns)
    missing = [c for c in value_columns if c not in frame.columns]
    if missing:
        raise ValueError(f"value_columns {missing} are not columns; the columns are {list(frame.columns)}.")
    if not value_columns:
        raise ValueError(f"the series has no value columns besides {timestamp_column!r}.")
    if timestamp_column in value_columns:
        raise ValueError(f"timestamp_column {timestamp_column!r} cannot also be a value column.")
    if len(frame) == 0:
        raise ValueError("the series is empty (0 rows).")
    timestamps = _parse_timestamps(frame[timestamp_column], timestamp_column)
    _check_order(timestamps, timestamp_column)
    values = pd.DataFrame({c: _numeric(frame[c], c, value_columns) for c in value_columns})
    values = _fill_missing(values, timestamps, fill)
    result = pd.concat([pd.Series(timestamps, name=timestamp_column), values], axis=1)
    return result.reset_index(drop=True)


def _load(source) -> pd.DataFrame:
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    if not isinstance(source, (str, pathlib.Path)):
        raise TypeError(f"source must be a path or a pandas.DataFrame, got {type(source).__name__}.")
    path = pathlib.Path(source)
    if not path.exists():
        raise FileNotFoundError(f"series file {str(path)!r} does not exist.")
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if ".csv" in suffixes:
        return pd.read_csv(path)
    raise ValueError(f"series file {str(path)!r}: expected a .csv (optionally compressed) or .parquet file.")


def _parse_timestamps(column: pd.Series, name: str) -> pd.Series:
    parsed = pd.to_datetime(column, errors="coerce").reset_index(drop=True)
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"timestamp column {name!r} has {len(bad)} missing or unparseable value(s); "
            f"the first is row {row}: {column.iloc[row]!r}."
        )
    return parsed


def _check_order(timestamps: pd.Series, name: str) -> None:
    steps = np.diff(timestamps.to_numpy())
    bad = np.flatnonzero(steps <= np.timedelta64(0))
    if not len(bad):
        return
    row = int(bad[0]) + 1
    here, before = timestamps.iloc[row], timestamps.iloc[row - 1]
    problem = "duplicates" if here == before else "is earlier than"
    raise ValueError(
        f"timestamp column {name!r} must be strictly increasing; row {row} ({here}) {problem} "
        f"row {row - 1} ({before}). Rows are never reordered: sort or de-duplicate the data first."
    )


def _numeric(column: pd.Series, name: str, value_columns: list[str]) -> pd.Series:
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.astype("float64").reset_index(drop=True)
    converted = pd.to_numeric(column, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & column.notna().to_numpy())
    if len(bad) or pd.api.types.is_bool_dtype(column):
        row = int(bad[0]) if len(bad) else 0
        raise ValueError(
            f"value column {name!r} is not numeric (dtype {column.dtype}); row {row} holds "
            f"{column.iloc[row]!r}. Value columns must be numbers; pass value_columns to choose "
            f"them (now {value_columns})."
        )
    return converted.astype("float64").reset_index(drop=True)


def _fill_missing(values: pd.DataFrame, timestamps: pd.Series, fill: str) -> pd.DataFrame:
    isna = values.isna().to_numpy()
    if not isna.any():
        return values
    columns = [c for c, has in zip(values.columns, isna.any(axis=0)) if has]
    if fill == "error":
        row = int(np.flatnonzero(isna.any(axis=1))[0])
        raise ValueError(
            f"value columns {columns} have {int(isna.sum())} missing value(s); the first is in row "
            f"{row} ({timestamps.iloc[row]}). Clean the data or pass fill='ffill' or fill='interpolate'."
        )
    leading = [c for c in columns if pd.isna(values[c].iloc[0])]
    if leading:
        raise ValueError(
            f"value columns {leading} start with missing values, which fill={fill!r} cannot fill; "
            f"drop the rows before their first observation."
        )
    if fill == "ffill":
        return values.ffill()
    indexed = values.set_axis(pd.DatetimeIndex(timestamps), axis=0)
    return indexed.interpolate(method="time").ffill().reset_index(drop=True)


class SeriesSplit(NamedTuple):
    """Chronological parts; `val` and `test` may start `lookback` rows before their own rows."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame


def _split_at(frame: pd.DataFrame, train_end: int, val_end: int, test_end: int, lookback: int) -> SeriesSplit:
    if lookback < 0:
        raise ValueError(f"lookback must be >= 0, got {lookback}.")
    if lookback > train_end:
        raise ValueError(f"lookback ({lookback}) is longer than the training part ({train_end} rows).")
    return SeriesSplit(
        frame.iloc[:train_end],
        frame.iloc[train_end - lookback : val_end],
        frame.iloc[val_end - lookback : test_end],
    )


def split_by_fractions(
    frame: pd.DataFrame, fractions: Sequence[float] = (0.7, 0.1, 0.2), lookback: int = 0
) -> SeriesSplit:
    """Train/val/test in time order: `int(n * f_train)` and `int(n * f_test)` rows, val the rest.

    `val` and `test` begin `lookback` rows early so that their first window's target is their
    first own row (as in the PatchTST/Autoformer data loaders).
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}.")
    n = len(frame)
    train_end = int(n * fractions[0])
    val_end = n - int(n * fractions[2])
    if train_end == 0:
        raise ValueError(f"fractions {tuple(fractions)} leave no training rows out of {n}.")
    return _split_at(frame, train_end, val_end, n, lookback)


def split_by_dates(
    frame: pd.DataFrame,
    val_start,
    test_start,
    lookback: int = 0,
    timestamp_column: str = "date",
) -> SeriesSplit:
    """Train: timestamps before `val_start`; val: up to `test_start` (excluded); test: the rest.

    `val` and `test` begin `lookback` rows early, as in `split_by_fractions`.
    """
    val_start, test_start = pd.Timestamp(val_start), pd.Timestamp(test_start)
    if not val_start < test_start:
        raise ValueError(f"val_start ({val_start}) must be before test_start ({test_start}).")
    timestamps = frame[timestamp_column].to_numpy()
    train_end = int(np.searchsorted(timestamps, val_start.to_datetime64(), side="left"))
    val_end = int(np.searchsorted(timestamps, test_start.to_datetime64(), side="left"))
    for name, size in (("train", train_end), ("val", val_end - train_end), ("test", len(frame) - val_end)):
        if size == 0:
            raise ValueError(
                f"the {name} part is empty with val_start={val_start} and test_start={test_start}; "
                f"the series spans {timestamps[0]} .. {timestamps[-1]}."
            )
    return _split_at(frame, train_end, val_end, len(frame), lookback)


def ett_split(frame: pd.DataFrame, lookback: int = 0, rows_per_month: int = ETT_ROWS_PER_MONTH) -> SeriesSplit:
    """The standard ETT split: 12/4/4 months of 30 days (8640/2880/2880 hourly rows).

    Rows after month 20 are not used, as in the Informer/PatchTST code. `val` and `test`
    begin `lookback` rows early. For ETTm (15-minute data) pass `rows_per_month=4 * 720`.
    """
    train_end, val_end, test_end = (months * rows_per_month for months in (12, 16, 20))
    if len(frame) < test_end:
        raise ValueError(f"the ETT split needs {test_end} rows (20 months); the series has {len(frame)}.")
    return _split_at(frame, train_end, val_end, test_end, lookback)


def calendar_features(timestamps, names: Sequence[str]) -> np.ndarray:
    """Calendar covariates `(n, len(names))` in [-0.5, 0.5] (Informer's time features)."""
    unknown = [n for n in names if n not in CALENDAR_FEATURES]
    if unknown:
        raise ValueError(f"unknown calendar features {unknown}; choose from {list(CALENDAR_FEATURES)}.")
    index = pd.DatetimeIndex(timestamps)
    columns = [np.asarray(CALENDAR_FEATURES[n][0](index), "float32") / CALENDAR_FEATURES[n][1] - 0.5 for n in names]
    return np.stack(columns, axis=-1) if columns else np.zeros((len(index), 0), "float32")


class TimeSeriesPreprocessor:
    """Per-channel standardisation fitted on the training part, plus sliding windows.

    Holds the channel names, their training mean/std (a constant channel gets std 1), the
    calendar covariates to derive from the timestamp and the inferred frequency.
    """

    def __init__(
        self,
        columns: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        timestamp_column: str = "date",
        calendar: Sequence[str] = (),
        frequency: str | None = None,
    ):
        if not (len(columns) == len(mean) == len(std)):
            raise ValueError(f"columns, mean and std differ in length: {len(columns)}, {len(mean)}, {len(std)}.")
        calendar_features(pd.DatetimeIndex([]), calendar)
        self.columns = list(columns)
        self.mean = np.asarray(mean, "float64")
        self.std = np.asarray(std, "float64")
        self.timestamp_column = timestamp_column
        self.calendar = list(calendar)
        self.frequency = frequency

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        *,
        timestamp_column: str = "date",
        value_columns: Sequence[str] | None = None,
        calendar: Sequence[str] = (),
    ) -> TimeSeriesPreprocessor:
        """Computes the scaling statistics from `train` (the training part only)."""
        if value_columns is None:
            value_columns = [c for c in train.columns if c != timestamp_column]
        preprocessor = cls(value_columns, np.zeros(len(value_columns)), np.ones(len(value_columns)),
                           timestamp_column, calendar)
        values = preprocessor.values(train)
        std = values.std(axis=0)
        preprocessor.mean = values.mean(axis=0)
        preprocessor.std = np.where(std > 0, std, 1.0)
        if timestamp_column in train.columns and len(train) >= 3:
            preprocessor.frequency = pd.infer_freq(pd.DatetimeIndex(train[timestamp_column]))
        return preprocessor

    @property
    def num_channels(self) -> int:
        return len(self.columns)

    @property
    def num_calendar_features(self) -> int:
        return len(self.calendar)

    def get_config(self) -> dict:
        return {
            "columns": self.columns,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "timestamp_column": self.timestamp_column,
            "calendar": self.calendar,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config: dict) -> TimeSeriesPreprocessor:
        return cls(**config)

    def values(self, frame: pd.DataFrame) -> np.ndarray:
        """The channel values `(n, channels)` of `frame`, unscaled, as float64."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"the series lacks the columns {missing}; expected {self.columns}.")
        values = frame[self.columns].to_numpy("float64")
        if np.isnan(values).any():
            row = int(np.flatnonzero(np.isnan(values).any(axis=1))[0])
            raise ValueError(f"the series has missing values (first in row {row}); read it with read_series(fill=...).")
        return values

    def tf_scale(self, x: tf.Tensor) -> tf.Tensor:
        """`(..., channels)` original values -> standardised float32."""
        return (tf.cast(x, tf.float32) - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def tf_unscale(self, x: tf.Tensor) -> tf.Tensor:
        """`(..., channels)` standardised values -> original scale, float32."""
        return tf.cast(x, tf.float32) * tf.constant(self.std, tf.float32) + tf.constant(self.mean, tf.float32)

    def scale(self, values: np.ndarray) -> np.ndarray:
        return self.tf_scale(values).numpy()

    def unscale(self, values: np.ndarray) -> np.ndarray:
        return self.tf_unscale(values).numpy()

    def future_timestamps(self, last: pd.Timestamp, horizon: int) -> pd.DatetimeIndex:
        """The `horizon` timestamps after `last`, stepping by the training frequency."""
        if self.frequency is None:
            raise ValueError("the training series has no regular frequency, so future timestamps are unknown.")
        return pd.date_range(pd.Timestamp(last), periods=horizon + 1, freq=self.frequency)[1:]

    def windows(
        self, frame: pd.DataFrame, lookback: int, horizon: int, stride: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """All windows as arrays: inputs `(n, lookback, channels)`, targets `(n, horizon, channels)`.

        Window i reads rows `[i * stride, i * stride + lookback)`; its target is the next
        `horizon` rows. Values are standardised. These are the windows `dataset` yields.
        """
        series = self.scale(self.values(frame))
        starts = self._starts(len(series), lookback, horizon, stride)
        rows = starts[:, None] + np.arange(lookback + horizon)[None, :]
        chunks = series[rows]
        return chunks[:, :lookback], chunks[:, lookback:]

    def dataset(
        self,
        frame: pd.DataFrame,
        lookback: int,
        horizon: int,
        stride: int = 1,
        batch_size: int = 32,
        shuffle: bool = False,
        training: bool = False,
        seed: int | None = None,
    ) -> tf.data.Dataset:
        """Batches of `(window (b, lookback, channels), target (b, horizon, channels))`, standardised.

        With calendar features the inputs are a dict: `{"window": (b, lookback, channels),
        "calendar": (b, lookback + horizon, features)}` covering the window and target rows.
        `training=True` drops the last partial batch so every batch has the same shape.
        """
        series = self.tf_scale(self.values(frame))
        starts = self._starts(len(frame), lookback, horizon, stride)
        channels = self.num_channels
        calendar = None
        if self.calendar:
            calendar = tf.constant(calendar_features(frame[self.timestamp_column], self.calendar))

        def window(start):
            chunk = tf.slice(series, tf.stack([start, 0]), [lookback + horizon, channels])
            inputs, target = chunk[:lookback], chunk[lookback:]
            if calendar is None:
                return inputs, target
            covariates = tf.slice(calendar, tf.stack([start, 0]), [lookback + horizon, len(self.calendar)])
            return {"window": inputs, "calendar": covariates}, target

        data = tf.data.Dataset.from_tensor_slices(starts.astype("int32"))
        if shuffle:
            data = data.shuffle(len(starts), seed=seed, reshuffle_each_iteration=True)
        data = data.map(window, num_parallel_calls=tf.data.AUTOTUNE)
        return data.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)

    @staticmethod
    def _starts(length: int, lookback: int, horizon: int, stride: int) -> np.ndarray:
        for name, value in (("lookback", lookback), ("horizon", horizon), ("stride", stride)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if length < lookback + horizon:
            raise ValueError(
                f"the series has {length} rows, shorter than lookback ({lookback}) + horizon "
                f"({horizon}) = {lookback + horizon} rows needed for one window."
            )
        return np.arange(0, length - lookback - horizon + 1, stride)
