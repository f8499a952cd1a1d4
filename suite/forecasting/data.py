"""Time series: reading, chronological splits, train-only scaling and sliding windows.

A series is a DataFrame with one timestamp column and one or more float value columns
(channels), in strictly increasing time order, as returned by `read_series`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

FILL_POLICIES = ("error", "ffill", "interpolate")
ETT_ROWS_PER_MONTH = 30 * 24
SPLITS = {"ett": ETT_ROWS_PER_MONTH, "ettm": 4 * ETT_ROWS_PER_MONTH}

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
    """Chronological parts; `validation` and `test` may start `lookback` rows before their own rows."""

    train: pd.DataFrame
    validation: pd.DataFrame
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


@dataclasses.dataclass
class SeriesDataConfig:
    """The series and how it is split.

    `train`: the series file (default: the bundled sample). `split` cuts it in time order:
    "ett" (12/4/4 months of hourly rows), "ettm" (the same for 15-minute rows) or
    train/validation/test fractions such as `[0.7, 0.1, 0.2]`; with `split: null`, `validation`
    and `test` name series files of their own (a split and such files exclude each other).
    `value_columns`: the channels (empty: every column but the timestamp). `seasonal_period`: in
    rows, for the seasonal-naive baseline and MASE.
    """

    train: str = "data/forecasting/sample.csv"
    validation: str | None = None
    test: str | None = None
    timestamp_column: str = "date"
    value_columns: tuple[str, ...] = ()
    fill: str = "error"
    split: str | tuple[float, ...] | None = (0.7, 0.1, 0.2)
    seasonal_period: int = 24

    def __post_init__(self):
        if isinstance(self.split, str) and self.split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, three fractions or null, got {self.split!r}.")
        if isinstance(self.split, tuple) and (len(self.split) != 3 or abs(sum(self.split) - 1) > 1e-6):
            raise ValueError(f"split fractions must be three numbers summing to 1, got {list(self.split)}.")
        if self.split is not None and (self.validation or self.test):
            raise ValueError("give either split (parts of train) or validation/test files, not both.")
        if self.fill not in FILL_POLICIES:
            raise ValueError(f"fill must be one of {FILL_POLICIES}, got {self.fill!r}.")
        if self.seasonal_period < 1:
            raise ValueError(f"seasonal_period must be >= 1, got {self.seasonal_period}.")


@dataclasses.dataclass(frozen=True, eq=False)
class SeriesPart:
    """One chronological part of a series, with the training part it is judged against.

    `frame` holds the part's own rows preceded by `lookback` rows of context (the training
    part is its own frame; a part read from its own file is judged against itself); `len()` is
    its number of windows.
    """

    name: str
    frame: pd.DataFrame
    train: pd.DataFrame
    windows: int

    def __len__(self) -> int:
        return self.windows


def split_series(series: pd.DataFrame, config: SeriesDataConfig, lookback: int, horizon: int,
                 name: str = "train") -> dict[str, SeriesPart]:
    """`{"train", "validation", "test"}` parts of a read series by `config.split`; without a split,
    the whole series as the one part `name`."""
    if config.split is None:
        parts = {name: series}
        train = series
    else:
        if isinstance(config.split, str):
            cut = ett_split(series, lookback, rows_per_month=SPLITS[config.split])
        else:
            cut = split_by_fractions(series, config.split, lookback)
        parts, train = {"train": cut.train, "validation": cut.validation, "test": cut.test}, cut.train
    result = {}
    for part, frame in parts.items():
        windows = len(frame) - lookback - horizon + 1
        if windows < 1:
            own = len(frame) - (0 if frame is train else lookback)
            raise ValueError(
                f"the {part} part of the series has {own} rows of its own, too few for one window of "
                f"lookback {lookback} + horizon {horizon}; use a longer series or another data.split."
            )
        result[part] = SeriesPart(part, frame, train, windows)
    return result
