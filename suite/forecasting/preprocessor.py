"""Train-only scaling, calendar features and sliding windows of a series, for tf.data and the export graph."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from suite.forecasting.data import CALENDAR_FEATURES


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
