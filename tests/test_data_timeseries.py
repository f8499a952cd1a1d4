"""Time-series data module, forecasting metrics and baselines."""

import importlib.util
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from suite.forecasting.data import ett_split, read_series, split_by_dates, split_by_fractions
from suite.forecasting.preprocessor import TimeSeriesPreprocessor, calendar_features
from suite.forecasting.metrics import (
    DLinearBaseline,
    evaluate_baselines,
    forecast_metrics,
    last_value_forecast,
    mae,
    mase,
    mse,
    naive_scale,
    seasonal_naive_forecast,
    smape,
)

ROOT = pathlib.Path(__file__).resolve().parents[1]
ETTH1 = ROOT.parent / "shared" / "datasets" / "ett" / "ETTh1.csv"
SAMPLE = ROOT / "data" / "forecasting" / "sample.csv"


def hourly(values: np.ndarray, columns=("a", "b")) -> pd.DataFrame:
    frame = pd.DataFrame(np.asarray(values, "float64"), columns=list(columns))
    frame.insert(0, "date", pd.date_range("2024-01-01", periods=len(frame), freq="h"))
    return frame


def identity_preprocessor(columns=("a", "b"), calendar=()) -> TimeSeriesPreprocessor:
    return TimeSeriesPreprocessor(list(columns), [0.0] * len(columns), [1.0] * len(columns), calendar=calendar)


# Windows -------------------------------------------------------------------------------


def test_target_of_each_window_starts_right_after_its_last_input():
    rows = np.arange(50, dtype="float64")
    frame = hourly(np.stack([rows, 100 + rows], axis=1))
    lookback, horizon, stride = 8, 5, 3
    batches = list(identity_preprocessor().dataset(frame, lookback, horizon, stride=stride, batch_size=4))
    windows = np.concatenate([w.numpy() for w, _ in batches])
    targets = np.concatenate([t.numpy() for _, t in batches])
    assert len(windows) == (50 - lookback - horizon) // stride + 1 == 13
    for i in range(len(windows)):
        start = i * stride
        np.testing.assert_array_equal(windows[i, :, 0], np.arange(start, start + lookback))
        np.testing.assert_array_equal(targets[i, :, 0], np.arange(start + lookback, start + lookback + horizon))
        np.testing.assert_array_equal(targets[i, :, 1], 100 + targets[i, :, 0])
        assert targets[i, 0, 0] == windows[i, -1, 0] + 1


def test_dataset_matches_windows_and_scales_with_training_stats():
    rng = np.random.default_rng(0)
    frame = hourly(rng.normal(5.0, 3.0, size=(40, 2)))
    preprocessor = TimeSeriesPreprocessor.fit(frame)
    windows, targets = preprocessor.windows(frame, 6, 2, stride=2)
    batches = list(preprocessor.dataset(frame, 6, 2, stride=2, batch_size=64))
    assert len(batches) == 1
    np.testing.assert_allclose(batches[0][0].numpy(), windows, rtol=1e-6)
    np.testing.assert_allclose(batches[0][1].numpy(), targets, rtol=1e-6)
    expected = (frame[["a", "b"]].to_numpy() - frame[["a", "b"]].mean().to_numpy()) / frame[["a", "b"]].std(ddof=0).to_numpy()
    np.testing.assert_allclose(windows[1], expected[2:8], rtol=1e-5, atol=1e-6)


def test_training_dataset_has_static_batches_and_shuffle_keeps_every_window():
    frame = hourly(np.stack([np.arange(30.0), np.zeros(30)], axis=1))
    preprocessor = identity_preprocessor()
    training = preprocessor.dataset(frame, 4, 2, batch_size=4, shuffle=True, training=True, seed=1)
    assert training.element_spec[0].shape.as_list() == [4, 4, 2]
    assert sum(1 for _ in training) == 25 // 4
    shuffled = preprocessor.dataset(frame, 4, 2, batch_size=100, shuffle=True, seed=1)
    firsts = np.concatenate([w.numpy()[:, 0, 0] for w, _ in shuffled])
    assert sorted(firsts.tolist()) == list(range(25)) and firsts.tolist() != list(range(25))


def test_calendar_covariates_cover_window_and_target_rows():
    frame = hourly(np.zeros((60, 2)))
    preprocessor = identity_preprocessor(calendar=["hour_of_day", "day_of_week"])
    inputs, target = next(iter(preprocessor.dataset(frame, 10, 4, stride=5, batch_size=2)))
    assert inputs["window"].shape == (2, 10, 2) and target.shape == (2, 4, 2)
    assert inputs["calendar"].shape == (2, 14, 2)
    hours = np.arange(5, 19) % 24
    np.testing.assert_allclose(inputs["calendar"].numpy()[1, :, 0], hours / 23.0 - 0.5, atol=1e-6)
    monday = pd.Timestamp("2024-01-01").dayofweek
    np.testing.assert_allclose(inputs["calendar"].numpy()[0, 0, 1], monday / 6.0 - 0.5)
    with pytest.raises(ValueError, match="unknown calendar features \\['week'\\]"):
        calendar_features(frame["date"], ["week"])


# Scaling: fitted on training rows only ------------------------------------------------


def test_scaling_statistics_come_from_the_training_part_only():
    rng = np.random.default_rng(1)
    frame = hourly(rng.normal(0.0, 1.0, size=(100, 2)))
    frame.loc[70:, ["a", "b"]] += 1000.0
    split = split_by_fractions(frame, (0.7, 0.1, 0.2), lookback=5)
    preprocessor = TimeSeriesPreprocessor.fit(split.train)
    np.testing.assert_allclose(preprocessor.mean, frame.loc[:69, ["a", "b"]].mean().to_numpy())
    np.testing.assert_allclose(preprocessor.std, frame.loc[:69, ["a", "b"]].std(ddof=0).to_numpy())
    assert np.all(np.abs(preprocessor.mean) < 1.0)
    tampered = frame.copy()
    tampered.loc[70:, ["a", "b"]] = -5e6
    again = TimeSeriesPreprocessor.fit(split_by_fractions(tampered, (0.7, 0.1, 0.2), lookback=5).train)
    np.testing.assert_array_equal(again.mean, preprocessor.mean)
    np.testing.assert_array_equal(again.std, preprocessor.std)


def test_config_round_trip_and_tf_scale_inverse():
    frame = hourly(np.stack([np.arange(48.0), np.full(48, 7.0)], axis=1))
    preprocessor = TimeSeriesPreprocessor.fit(frame, calendar=["hour_of_day"])
    assert preprocessor.std[1] == 1.0 and preprocessor.frequency == "h"
    config = json.loads(json.dumps(preprocessor.get_config()))
    restored = TimeSeriesPreprocessor.from_config(config)
    assert restored.get_config() == preprocessor.get_config()
    x = np.random.default_rng(2).normal(size=(3, 5, 2)).astype("float32")
    np.testing.assert_allclose(restored.tf_unscale(restored.tf_scale(x)).numpy(), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(restored.scale(x), (x - preprocessor.mean) / preprocessor.std, rtol=1e-5)
    future = preprocessor.future_timestamps(frame["date"].iloc[-1], 3)
    assert list(future) == list(pd.date_range("2024-01-03 00:00", periods=3, freq="h"))


# Reading and bad input --------------------------------------------------------------------


def test_reads_csv_and_parquet_to_the_same_frame(tmp_path):
    frame = hourly(np.arange(12.0).reshape(6, 2))
    frame.to_csv(tmp_path / "s.csv", index=False)
    frame.to_parquet(tmp_path / "s.parquet")
    from_csv, from_parquet = read_series(tmp_path / "s.csv"), read_series(str(tmp_path / "s.parquet"))
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_dtype=False)
    assert list(from_csv.columns) == ["date", "a", "b"] and from_csv["a"].dtype == "float64"
    assert list(read_series(frame, value_columns=["b"]).columns) == ["date", "b"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.assign(a=f["a"].where(f.index != 3)), r"\['a'\] have 1 missing value\(s\); the first is in row 3"),
        (lambda f: f.iloc[[0, 1, 3, 2, 4, 5]], r"row 3 \(2024-01-01 02:00:00\) is earlier than row 2"),
        (lambda f: f.assign(date=f["date"].where(f.index != 4, f["date"][3])), r"row 4 \(2024-01-01 03:00:00\) duplicates row 3"),
        (lambda f: f.assign(site=["x"] * 6), r"value column 'site' is not numeric .* row 0 holds 'x'"),
        (lambda f: f.assign(b=["1", "2", "n/a?", "4", "5", "6"]), r"value column 'b' is not numeric .* row 2 holds 'n/a\?'"),
        (lambda f: f.rename(columns={"date": "time"}), r"timestamp_column 'date' is not a column"),
        (lambda f: f.assign(date=["2024-01-01", "bad", "x", "y", "z", "w"]), r"unparseable value\(s\); the first is row 1: 'bad'"),
    ],
)
def test_bad_input_is_named(change, message):
    with pytest.raises(ValueError, match=message):
        read_series(change(hourly(np.arange(12.0).reshape(6, 2))))


def test_other_bad_arguments(tmp_path):
    frame = hourly(np.arange(12.0).reshape(6, 2))
    with pytest.raises(ValueError, match=r"value_columns \['c'\] are not columns"):
        read_series(frame, value_columns=["a", "c"])
    with pytest.raises(ValueError, match="fill must be one of"):
        read_series(frame, fill="zero")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_series(tmp_path / "missing.csv")
    (tmp_path / "s.json").write_text("{}")
    with pytest.raises(ValueError, match=r"expected a \.csv"):
        read_series(tmp_path / "s.json")
    with pytest.raises(ValueError, match=r"has 6 rows, shorter than lookback \(4\) \+ horizon \(3\) = 7"):
        identity_preprocessor().dataset(frame, 4, 3)
    with pytest.raises(ValueError, match="stride must be a positive integer, got 0"):
        identity_preprocessor().windows(frame, 2, 2, stride=0)
    with pytest.raises(ValueError, match=r"lacks the columns \['c'\]"):
        identity_preprocessor(("a", "c")).windows(frame, 2, 2)


def test_fill_policies():
    frame = pd.DataFrame(
        {"date": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 03:00", "2024-01-01 04:00"]),
         "a": [0.0, np.nan, 3.0, np.nan]}
    )
    np.testing.assert_array_equal(read_series(frame, fill="ffill")["a"], [0.0, 0.0, 3.0, 3.0])
    np.testing.assert_allclose(read_series(frame, fill="interpolate")["a"], [0.0, 1.0, 3.0, 3.0])
    leading = frame.assign(a=[np.nan, 1.0, 2.0, 3.0])
    for fill in ("ffill", "interpolate"):
        with pytest.raises(ValueError, match=r"\['a'\] start with missing values"):
            read_series(leading, fill=fill)


# Splits -----------------------------------------------------------------------------------


def test_fraction_and_date_splits_are_chronological_with_lookback_overlap():
    frame = hourly(np.arange(200.0).reshape(100, 2))
    split = split_by_fractions(frame, (0.7, 0.1, 0.2), lookback=4)
    assert [len(p) for p in split] == [70, 14, 24]
    assert split.validation["a"].iloc[4] == frame["a"].iloc[70] and split.test["a"].iloc[4] == frame["a"].iloc[80]
    by_date = split_by_dates(frame, "2024-01-03 22:00", "2024-01-04 08:00", lookback=4)
    for part, other in zip(by_date, split):
        pd.testing.assert_frame_equal(part, other)
    with pytest.raises(ValueError, match="must be before test_start"):
        split_by_dates(frame, "2024-01-04", "2024-01-03")
    with pytest.raises(ValueError, match="the test part is empty"):
        split_by_dates(frame, "2024-01-02", "2025-01-01")
    with pytest.raises(ValueError, match="summing to 1"):
        split_by_fractions(frame, (0.7, 0.2, 0.2))


def test_ett_split_on_a_synthetic_series():
    frame = hourly(np.arange(15000.0)[:, None], columns=["a"])
    split = ett_split(frame, lookback=10)
    assert [len(p) for p in split] == [8640, 2890, 2890]
    assert split.test["a"].iloc[-1] == 14399
    with pytest.raises(ValueError, match="needs 14400 rows"):
        ett_split(frame.iloc[:14000])


@pytest.mark.skipif(not ETTH1.exists(), reason="../shared/datasets/ett/ETTh1.csv is missing")
def test_ett_split_sizes_on_etth1():
    series = read_series(ETTH1)
    assert len(series) == 17420 and series.shape[1] == 8
    lookback, horizon = 336, 96
    plain = ett_split(series)
    assert [len(p) for p in plain] == [8640, 2880, 2880]
    split = ett_split(series, lookback=lookback)
    assert split.validation["date"].iloc[lookback] == pd.Timestamp("2017-06-26 00:00")
    assert split.test["date"].iloc[lookback] == plain.test["date"].iloc[0]
    preprocessor = TimeSeriesPreprocessor.fit(split.train)
    _, targets = preprocessor.windows(split.test, lookback, horizon)
    assert len(targets) == 2880 - horizon + 1


# Metrics ----------------------------------------------------------------------------------


def test_metrics_against_hand_computed_values():
    target = np.array([[1.0, 2.0], [3.0, 0.0]])
    prediction = np.array([[2.0, 2.0], [1.0, 0.0]])
    assert mse(target, prediction) == pytest.approx((1 + 0 + 4 + 0) / 4)
    assert mae(target, prediction) == pytest.approx((1 + 0 + 2 + 0) / 4)
    assert smape(target, prediction) == pytest.approx(100 * (2 / 3 + 0 + 2 * 2 / 4 + 0) / 4)
    train = np.array([[0.0, 10.0], [2.0, 10.0], [1.0, 13.0], [5.0, 13.0]])
    np.testing.assert_allclose(naive_scale(train, 1), [7 / 3, 1.0])
    np.testing.assert_allclose(naive_scale(train, 2), [2.0, 3.0])
    # channel MAEs: [(1 + 2) / 2, 0] -> MASE = mean(1.5 / (7/3), 0 / 1)
    assert mase(target, prediction, train, period=1) == pytest.approx((1.5 / (7 / 3) + 0.0) / 2)
    with pytest.raises(ValueError, match="differs from prediction shape"):
        mse(target, prediction[:1])
    with pytest.raises(ValueError, match="zero naive error"):
        mase(target, prediction, np.ones((4, 2)))


def test_forecast_metrics_use_the_original_scale_where_stated():
    preprocessor = TimeSeriesPreprocessor(["a"], [10.0], [2.0])
    target, prediction = np.zeros((1, 2, 1)), np.array([[[1.0], [-1.0]]])
    train = np.array([[10.0], [12.0], [10.0]])
    metrics = forecast_metrics(target, prediction, preprocessor.unscale, train, period=1)
    assert metrics["mse"] == pytest.approx(1.0) and metrics["mae"] == pytest.approx(1.0)
    assert metrics["mae_original"] == pytest.approx(2.0)
    assert metrics["mase"] == pytest.approx(1.0)
    assert metrics["smape"] == pytest.approx(100 * (4 / 22 + 4 / 18) / 2)


# Baselines --------------------------------------------------------------------------------


def seasonal_windows(period=24, lookback=48, horizon=30, rows=400):
    t = np.arange(rows)
    values = np.stack([np.sin(2 * np.pi * t / period), np.cos(4 * np.pi * t / period) + 0.5 * (t % period == 3)], axis=1)
    return identity_preprocessor().windows(hourly(values), lookback, horizon, stride=1)


def test_seasonal_naive_is_exact_on_a_pure_seasonal_series():
    windows, targets = seasonal_windows()
    np.testing.assert_allclose(seasonal_naive_forecast(windows, 30, 24), targets, atol=1e-6)
    assert mse(targets, last_value_forecast(windows, 30)) > 0.1
    constant = np.full((2, 5, 3), 4.0)
    np.testing.assert_array_equal(last_value_forecast(constant, 7), np.full((2, 7, 3), 4.0))
    with pytest.raises(ValueError, match=r"period must be in \[1, lookback=48\]"):
        seasonal_naive_forecast(windows, 30, 49)


def test_dlinear_baseline_learns_a_seasonal_series_and_decomposes_correctly():
    windows, targets = seasonal_windows()
    train_x, train_y, test_x, test_y = windows[:200], targets[:200], windows[200:], targets[200:]
    model = DLinearBaseline(48, 30, kernel_size=25).fit(train_x, train_y)
    assert model.predict(test_x).shape == test_y.shape
    assert mse(test_y, model.predict(test_x)) < 1e-4
    series = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    seasonal, trend = DLinearBaseline(5, 1, kernel_size=3).decompose(series)
    np.testing.assert_allclose(trend, [[4 / 3, 2.0, 3.0, 4.0, 14 / 3]])
    np.testing.assert_allclose(seasonal + trend, series)
    scores = evaluate_baselines(train_x, train_y, test_x, test_y, lambda x: x + 10.0, np.arange(400.0).reshape(200, 2), period=24)
    assert set(scores) == {"last_value", "seasonal_naive", "dlinear"}
    assert scores["seasonal_naive"]["mse"] < 1e-10 and scores["last_value"]["mse"] > 0.1


# Bundled sample ---------------------------------------------------------------------------


def test_bundled_sample_is_regenerated_by_its_script():
    series = read_series(SAMPLE)
    assert list(series.columns) == ["date", "load", "temperature", "traffic"] and len(series) == 2000
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE.with_name("make_sample.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pd.testing.assert_frame_equal(read_series(module.make_sample()), series, check_exact=False, atol=1e-9)
    assert TimeSeriesPreprocessor.fit(series).frequency == "h"
