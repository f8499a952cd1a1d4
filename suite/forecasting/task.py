"""Time-series forecasting: a patch Transformer (PatchTST-style) for one multivariate series.

`Forecaster.train(path_or_df)` (default: `data.train`) splits the series chronologically
(`data.split`), fits the scaling on the training part only, trains on its windows and keeps the
weights of the best validation epoch; `predict(history)` forecasts the `horizon` steps after a history;
`evaluate` scores a part of a series beside the last-value, seasonal-naive and DLinear
baselines; the exported `serving_default` maps original-scale windows to forecasts.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from suite.backbone import BackboneConfig
from suite.core.inference import inference_function, run_in_batches
from suite.core.optim import TrainingConfig
from suite.core.task import Task
from suite.export import check_array, checked_input, require
from suite.forecasting.data import SeriesDataConfig, SeriesPart, read_series, split_series
from suite.forecasting.preprocessor import TimeSeriesPreprocessor
from suite.forecasting.metrics import evaluate_baselines, forecast_metrics
from suite.forecasting.model import PatchForecaster, PinballLoss

LOSSES = ("mse", "mae")
OUT_OF_RANGE = "input `window` holds values so far from the training data that the forecast overflows float32"


def _default_backbone() -> BackboneConfig:
    return BackboneConfig(num_layers=3, d_model=16, num_heads=4, ff_dim=128, dropout=0.3, position="learned", max_length=128)


def _default_training() -> TrainingConfig:
    return TrainingConfig(epochs=10, batch_size=128, learning_rate=1e-3, weight_decay=0.0, warmup_fraction=0.1)


@dataclasses.dataclass
class ForecastingConfig:
    """Window sizes (in rows), patching, outputs and the PatchTST-like model.

    `quantiles`: levels in (0, 1) forecast beside the point forecast, trained with the
    pinball loss. `loss`: the point forecast's loss, "mse" or "mae" (on ETTh1 MAE training
    gives the lower test MSE too). `head_dropout`: dropout on the flattened patch states the
    head reads; its weights grow with the horizon and overfit without it.
    """

    data: SeriesDataConfig = dataclasses.field(default_factory=SeriesDataConfig)
    lookback: int = 336
    horizon: int = 96
    patch_length: int = 16
    patch_stride: int = 8
    quantiles: tuple[float, ...] = ()
    loss: str = "mae"
    head_dropout: float = 0.3
    backbone: BackboneConfig = dataclasses.field(default_factory=_default_backbone)
    training: TrainingConfig = dataclasses.field(default_factory=_default_training)

    def __post_init__(self):
        for name in ("lookback", "horizon", "patch_length", "patch_stride"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.patch_length > self.lookback:
            raise ValueError(f"patch_length ({self.patch_length}) must not exceed lookback ({self.lookback}).")
        if not all(0.0 < q < 1.0 for q in self.quantiles) or len(set(self.quantiles)) != len(self.quantiles):
            raise ValueError(f"quantiles must be distinct levels in (0, 1), got {list(self.quantiles)}.")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}.")
        patches = (self.lookback - self.patch_length) // self.patch_stride + 2
        if self.backbone.position == "learned" and self.backbone.max_length < patches:
            raise ValueError(f"backbone.max_length ({self.backbone.max_length}) must cover the {patches} patches.")


class Forecaster(Task):
    """Forecasts every channel of a multivariate series `horizon` steps ahead from `lookback` steps."""

    domain = "forecasting"
    config_class = ForecastingConfig
    preprocessor_class = TimeSeriesPreprocessor
    no_decay = (*Task.no_decay, "scale", "shift")

    # Data --------------------------------------------------------------------------------

    @classmethod
    def read(cls, data, config):
        """The series as a validated DataFrame (a `SeriesPart` passes through)."""
        if isinstance(data, SeriesPart):
            return data
        source = config.data
        return read_series(data, source.timestamp_column, list(source.value_columns) or None, source.fill)

    @classmethod
    def split(cls, series, config) -> dict[str, SeriesPart]:
        """`{"train", "validation", "test"}` parts of a read series, as `config.data.split` says."""
        return split_series(series, config.data, config.lookback, config.horizon)

    @classmethod
    def fit_preprocessor(cls, train_data, config):
        frame = train_data.frame if isinstance(train_data, SeriesPart) else train_data
        return TimeSeriesPreprocessor.fit(frame, timestamp_column=config.data.timestamp_column)

    def dataset(self, data, training: bool = False) -> tf.data.Dataset:
        """Batches of `(window (b, lookback, channels), {"forecast"[, "quantiles"]: (b, horizon, channels)})`."""
        frame = data.frame if isinstance(data, SeriesPart) else data
        config, training_config = self.config, self.config.training
        windows = self.preprocessor.dataset(
            frame, config.lookback, config.horizon, batch_size=training_config.batch_size,
            shuffle=training, training=training, seed=training_config.seed,
        )
        names = ["forecast", "quantiles"] if config.quantiles else ["forecast"]
        return windows.map(lambda window, target: (window, {name: target for name in names}))

    # Model -------------------------------------------------------------------------------

    @classmethod
    def build_model(cls, preprocessor, config) -> keras.Model:
        return PatchForecaster(
            config.lookback, config.horizon, preprocessor.num_channels, config.patch_length,
            config.patch_stride, config.backbone, config.quantiles, config.head_dropout, name="patch_forecaster",
        )

    def compile(self, total_steps: int) -> None:
        losses = {"forecast": self.config.loss}
        if self.config.quantiles:
            losses["quantiles"] = PinballLoss(self.config.quantiles)
        other = "mae" if self.config.loss == "mse" else "mse"
        self.model.compile(optimizer=self.optimizer(total_steps), loss=losses, metrics={"forecast": [other]}, jit_compile=True)

    # Inference ---------------------------------------------------------------------------

    @functools.cached_property
    def _model_fn(self):
        return inference_function(self.model, jit_compile=True)

    def _model_outputs(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Standardised windows `(n, lookback, channels)` -> standardised model outputs, in batches
        padded to one size so that XLA compiles one program."""
        return run_in_batches(self._model_fn, windows.astype("float32"), fixed=True)

    def _unscale_outputs(self, outputs: dict) -> dict:
        """Model outputs (standardised) -> the original scale; quantiles stay `(..., channels, Q)`."""
        result = {"forecast": self.preprocessor.tf_unscale(outputs["forecast"])}
        if "quantiles" in outputs:
            moved = tf.experimental.numpy.moveaxis(outputs["quantiles"], -1, -2)
            result["quantiles"] = tf.experimental.numpy.moveaxis(self.preprocessor.tf_unscale(moved), -1, -2)
        return result

    def forecast(self, windows) -> dict[str, np.ndarray]:
        """Original-scale windows `(n, lookback, channels)` -> `{"forecast": (n, horizon, channels)}`
        and, with quantiles, `"quantiles": (n, horizon, channels, Q)`, on the original scale."""
        windows = np.asarray(windows, "float64")
        shape = (None, self.config.lookback, self.preprocessor.num_channels)
        check_array(windows, "window", shape, "float32", finite=True)
        outputs = self._model_outputs(self.preprocessor.scale(windows))
        return {name: np.asarray(value) for name, value in self._unscale_outputs(outputs).items()}

    def predict(self, history) -> pd.DataFrame:
        """Forecasts the `horizon` steps after `history`: a path or DataFrame with the timestamp and
        value columns, or an array `(rows, channels)`; its last `lookback` rows are used.

        Returns one row per future step: the timestamps (from the training frequency; a `step`
        column 1..horizon for arrays) and a column per channel, then `<channel>_q<level>` columns.
        """
        values, last = self._history(history)
        outputs = self.forecast(values[None, -self.config.lookback :])
        columns = self.preprocessor.columns
        frame = pd.DataFrame(outputs["forecast"][0], columns=columns)
        for i, level in enumerate(self.config.quantiles):
            for j, column in enumerate(columns):
                frame[f"{column}_q{level:g}"] = outputs["quantiles"][0, :, j, i]
        if last is None or self.preprocessor.frequency is None:
            frame.insert(0, "step", np.arange(1, self.config.horizon + 1))
        else:
            frame.insert(0, self.preprocessor.timestamp_column, self.preprocessor.future_timestamps(last, self.config.horizon))
        return frame

    def _history(self, history) -> tuple[np.ndarray, pd.Timestamp | None]:
        lookback, channels = self.config.lookback, self.preprocessor.num_channels
        if isinstance(history, (str, Path, pd.DataFrame)):
            frame = read_series(history, self.preprocessor.timestamp_column, self.preprocessor.columns, self.config.data.fill)
            values, last = self.preprocessor.values(frame), frame[self.preprocessor.timestamp_column].iloc[-1]
        else:
            values, last = np.asarray(history, "float64"), None
            if values.ndim == 1 and channels == 1:
                values = values[:, None]
            if values.ndim != 2 or values.shape[1] != channels:
                raise ValueError(f"history must be shaped (rows, {channels}), got {values.shape}.")
        if len(values) < lookback:
            raise ValueError(f"history has {len(values)} rows; the model needs the last {lookback} (lookback).")
        return values, last

    def cli_predict(self, values: list[str]):
        """`{path: [{timestamp, channel: value, ...}, ...]}` for history files."""
        return {path: self.predict(path).to_dict(orient="records") for path in values}

    # Evaluation --------------------------------------------------------------------------

    def evaluation_part(self, series, part: str) -> SeriesPart:
        """The `part` of a series split as in training (`data.split`); a series without a split is
        scored whole, judged against itself."""
        if isinstance(series, SeriesPart):
            return series
        return split_series(series, self.config.data, self.config.lookback, self.config.horizon, name=part)[part]

    def metrics(self, data: SeriesPart) -> dict:
        """The model and the baselines on one part of a series. MSE/MAE are on the standardised scale;
        `mae_original`, `mase` and `smape` on the original scale. The DLinear baseline is fitted and
        MASE is scaled on the part's training part."""
        config, preprocessor = self.config, self.preprocessor
        windows, targets = preprocessor.windows(data.frame, config.lookback, config.horizon)
        outputs = self._model_outputs(windows)
        train_values = preprocessor.values(data.train)
        period = config.data.seasonal_period
        model = forecast_metrics(targets, outputs["forecast"], preprocessor.unscale, train_values, period)
        if config.quantiles:
            model.update(self._quantile_metrics(targets, outputs["quantiles"]))
        train_windows, train_targets = preprocessor.windows(data.train, config.lookback, config.horizon)
        baselines = evaluate_baselines(
            train_windows, train_targets, windows, targets, preprocessor.unscale, train_values, period
        )
        return {"part": data.name, "windows": int(len(windows)), "model": model, **baselines}

    def _quantile_metrics(self, targets: np.ndarray, quantiles: np.ndarray) -> dict:
        """Mean pinball loss (standardised) and the share of targets below each quantile."""
        levels = np.asarray(self.config.quantiles)
        error = targets[..., None] - quantiles
        pinball = np.maximum(levels * error, (levels - 1.0) * error).mean()
        below = (targets[..., None] <= quantiles).reshape(-1, len(levels)).mean(axis=0)
        return {"pinball": float(pinball), "coverage": {f"{q:g}": float(b) for q, b in zip(levels, below)}}

    # Export ------------------------------------------------------------------------------

    def example_inputs(self) -> dict:
        """One window holding every channel's training mean."""
        row = [round(float(v), 4) for v in self.preprocessor.mean]
        return {"window": [[row] * self.config.lookback]}

    def serving_endpoints(self, jit_compile: bool) -> dict:
        """`serving_default`: `window (batch, lookback, channels)` float32 on the original scale ->
        `forecast (batch, horizon, channels)` [and `quantiles (batch, horizon, channels, Q)`]."""
        model_fn = inference_function(self.model, jit_compile)

        shape = (None, self.config.lookback, self.preprocessor.num_channels)

        def serve(window):
            window = checked_input(window, "window", shape, finite=True)
            outputs = self._unscale_outputs(model_fn(self.preprocessor.tf_scale(window)))
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(value)) for value in outputs.values()])
            with tf.control_dependencies([require(finite, OUT_OF_RANGE)]):
                return {name: tf.identity(value) for name, value in outputs.items()}

        signature = [tf.TensorSpec(shape, tf.float32, name="window")]
        return {"serving_default": (serve, signature)}
