"""Forecasting metrics and the baselines reported beside the model.

Arrays are `(windows, horizon, channels)` unless stated; `mse`/`mae` take any shape.
Papers report MSE/MAE on the standardised scale; MAE, MASE and sMAPE on the original
scale are what a user of the forecasts sees.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def mse(target: np.ndarray, prediction: np.ndarray) -> float:
    """Mean squared error over every element."""
    target, prediction = _pair(target, prediction)
    return float(np.mean((target - prediction) ** 2))


def mae(target: np.ndarray, prediction: np.ndarray) -> float:
    """Mean absolute error over every element."""
    target, prediction = _pair(target, prediction)
    return float(np.mean(np.abs(target - prediction)))


def smape(target: np.ndarray, prediction: np.ndarray) -> float:
    """Symmetric MAPE in percent: `100 * mean(2 |y - f| / (|y| + |f|))`; 0/0 terms count as 0."""
    target, prediction = _pair(target, prediction)
    denominator = np.abs(target) + np.abs(prediction)
    ratio = np.divide(2.0 * np.abs(target - prediction), denominator,
                      out=np.zeros_like(denominator), where=denominator > 0)
    return float(100.0 * np.mean(ratio))


def naive_scale(train: np.ndarray, period: int = 1) -> np.ndarray:
    """Per-channel in-sample seasonal-naive MAE `mean |y[t] - y[t - period]|` of `train (n, channels)`."""
    train = np.asarray(train, "float64")
    if train.ndim != 2:
        raise ValueError(f"train must be (rows, channels), got shape {train.shape}.")
    if not 1 <= period < len(train):
        raise ValueError(f"period must be in [1, {len(train) - 1}] for {len(train)} training rows, got {period}.")
    return np.mean(np.abs(train[period:] - train[:-period]), axis=0)


def mase(target: np.ndarray, prediction: np.ndarray, train: np.ndarray, period: int = 1) -> float:
    """Mean absolute scaled error, original scale, averaged over channels.

    Each channel's MAE over all windows and steps is divided by its in-sample seasonal-naive
    MAE on the training part `train (rows, channels)` (`naive_scale(train, period)`).
    """
    target, prediction = _pair(target, prediction)
    scale = naive_scale(train, period)
    if scale.shape[-1] != target.shape[-1]:
        raise ValueError(f"train has {scale.shape[-1]} channels, the forecasts {target.shape[-1]}.")
    if np.any(scale == 0):
        flat = np.flatnonzero(scale == 0).tolist()
        raise ValueError(f"channels {flat} have zero naive error on the training part; MASE is undefined.")
    per_channel = np.abs(target - prediction).reshape(-1, target.shape[-1]).mean(axis=0)
    return float(np.mean(per_channel / scale))


def forecast_metrics(
    target: np.ndarray,
    prediction: np.ndarray,
    unscale: Callable[[np.ndarray], np.ndarray],
    train: np.ndarray,
    period: int = 1,
) -> dict[str, float]:
    """All reported metrics for standardised `target`/`prediction (windows, horizon, channels)`.

    `unscale` maps standardised values back to the original scale (e.g.
    `TimeSeriesPreprocessor.unscale`); `train (rows, channels)` is the training part on the
    original scale (`preprocessor.values(train_df)`), for MASE.
    """
    original_target = np.asarray(unscale(target), "float64")
    original_prediction = np.asarray(unscale(prediction), "float64")
    return {
        "mse": mse(target, prediction),
        "mae": mae(target, prediction),
        "mae_original": mae(original_target, original_prediction),
        "mase": mase(original_target, original_prediction, train, period),
        "smape": smape(original_target, original_prediction),
    }


def _pair(target, prediction) -> tuple[np.ndarray, np.ndarray]:
    target, prediction = np.asarray(target, "float64"), np.asarray(prediction, "float64")
    if target.shape != prediction.shape:
        raise ValueError(f"target shape {target.shape} differs from prediction shape {prediction.shape}.")
    if target.size == 0:
        raise ValueError("there are no forecasts to score (empty arrays).")
    return target, prediction


def last_value_forecast(windows: np.ndarray, horizon: int) -> np.ndarray:
    """Repeats each window's last row: `(n, lookback, channels)` -> `(n, horizon, channels)`."""
    windows = np.asarray(windows)
    return np.repeat(windows[:, -1:, :], horizon, axis=1)


def seasonal_naive_forecast(windows: np.ndarray, horizon: int, period: int) -> np.ndarray:
    """Repeats each window's last `period` rows: step h forecasts `x[lookback - period + h % period]`."""
    windows = np.asarray(windows)
    lookback = windows.shape[1]
    if not 1 <= period <= lookback:
        raise ValueError(f"period must be in [1, lookback={lookback}], got {period}.")
    steps = lookback - period + np.arange(horizon) % period
    return windows[:, steps, :]


class DLinearBaseline:
    """DLinear (Zeng et al., 2023): moving-average trend + remainder, one linear map each.

    Channel-independent and shared across channels, as DLinear's default: every channel of
    every window is one sample `(lookback,) -> (horizon,)`. The two maps and their biases
    are fitted jointly by ridge-regularised least squares (`ridge` relative to the mean
    feature energy) on standardised windows instead of by gradient descent.
    """

    def __init__(self, lookback: int, horizon: int, kernel_size: int = 25, ridge: float = 1e-4):
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}.")
        self.lookback, self.horizon = lookback, horizon
        self.kernel_size, self.ridge = kernel_size, ridge
        self.weights: np.ndarray | None = None

    def decompose(self, series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(samples, lookback)` -> (seasonal, trend): the trend is a moving average over
        `kernel_size` steps with the ends padded by repeating the first/last value."""
        front = (self.kernel_size - 1) // 2
        back = self.kernel_size - 1 - front
        padded = np.concatenate(
            [np.repeat(series[:, :1], front, axis=1), series, np.repeat(series[:, -1:], back, axis=1)], axis=1
        )
        cumulative = np.concatenate([np.zeros((len(series), 1)), np.cumsum(padded, axis=1)], axis=1)
        trend = (cumulative[:, self.kernel_size :] - cumulative[:, : -self.kernel_size]) / self.kernel_size
        return series - trend, trend

    def fit(self, windows: np.ndarray, targets: np.ndarray, chunk: int = 4096) -> DLinearBaseline:
        """Fits on `windows (n, lookback, channels)` and `targets (n, horizon, channels)`."""
        inputs, outputs = self._samples(windows, self.lookback), self._samples(targets, self.horizon)
        size = 2 * self.lookback + 1
        gram, cross = np.zeros((size, size)), np.zeros((size, self.horizon))
        for begin in range(0, len(inputs), chunk):
            features = self._features(inputs[begin : begin + chunk])
            gram += features.T @ features
            cross += features.T @ outputs[begin : begin + chunk]
        penalty = self.ridge * np.trace(gram[:-1, :-1]) / (size - 1)
        regulariser = np.diag(np.r_[np.full(size - 1, penalty), 0.0])
        self.weights = np.linalg.solve(gram + regulariser, cross)
        return self

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """`(n, lookback, channels)` -> `(n, horizon, channels)`."""
        if self.weights is None:
            raise ValueError("DLinearBaseline.predict called before fit.")
        windows = np.asarray(windows, "float64")
        forecasts = self._features(self._samples(windows, self.lookback)) @ self.weights
        n, channels = windows.shape[0], windows.shape[2]
        return forecasts.reshape(n, channels, self.horizon).transpose(0, 2, 1)

    def _features(self, samples: np.ndarray) -> np.ndarray:
        seasonal, trend = self.decompose(samples)
        return np.concatenate([seasonal, trend, np.ones((len(samples), 1))], axis=1)

    @staticmethod
    def _samples(array: np.ndarray, length: int) -> np.ndarray:
        array = np.asarray(array, "float64")
        if array.ndim != 3 or array.shape[1] != length:
            raise ValueError(f"expected (windows, {length}, channels), got shape {array.shape}.")
        return array.transpose(0, 2, 1).reshape(-1, length)


def evaluate_baselines(
    train_windows: np.ndarray,
    train_targets: np.ndarray,
    windows: np.ndarray,
    targets: np.ndarray,
    unscale: Callable[[np.ndarray], np.ndarray],
    train: np.ndarray,
    period: int,
    kernel_size: int = 25,
) -> dict[str, dict[str, float]]:
    """`forecast_metrics` of the last-value, seasonal-naive and DLinear baselines.

    DLinear is fitted on `train_windows/train_targets`; all three are scored on
    `windows/targets` (standardised, `(n, lookback|horizon, channels)`). `period` is both the
    seasonal-naive period and the MASE period.
    """
    lookback, horizon = windows.shape[1], targets.shape[1]
    dlinear = DLinearBaseline(lookback, horizon, kernel_size).fit(train_windows, train_targets)
    forecasts = {
        "last_value": last_value_forecast(windows, horizon),
        "seasonal_naive": seasonal_naive_forecast(windows, horizon, period),
        "dlinear": dlinear.predict(windows),
    }
    return {name: forecast_metrics(targets, f, unscale, train, period) for name, f in forecasts.items()}
