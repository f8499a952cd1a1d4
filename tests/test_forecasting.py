"""Forecaster: RevIN, patching, learning a sine wave, quantiles, save/load, export and the CLI."""

import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from suite.cli import main
from suite.config import ConfigError
from suite.tasks import Forecaster, Task
from suite.forecasting.model import Patching, PinballLoss, RevIN

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "forecasting" / "sample.csv"
TINY = {
    "lookback": 48,
    "horizon": 12,
    "patch_length": 8,
    "patch_stride": 8,
    "data.split": [0.7, 0.1, 0.2],
    "backbone.num_layers": 1,
    "backbone.d_model": 16,
    "backbone.num_heads": 2,
    "backbone.ff_dim": 32,
    "backbone.dropout": 0.0,
    "backbone.max_length": 16,
    "training.batch_size": 32,
    "training.learning_rate": 3e-3,
    "training.early_stopping_patience": 0,
}
QUANTILES = [0.1, 0.5, 0.9]


# Layers --------------------------------------------------------------------------------


def test_revin_normalises_each_window_and_inverts_exactly():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(4, 20, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]).astype("float32")
    revin = RevIN(3)
    window = keras.Input((20, 3))
    normalised, mean, std = revin(window)
    stacked = keras.ops.stack([normalised, normalised], axis=-1)
    model = keras.Model(window, [normalised, revin(normalised, mean, std, inverse=True),
                                 revin(stacked, mean, std, inverse=True)])
    revin.scale.assign([2.0, 0.5, -1.5])
    revin.shift.assign([0.3, -1.0, 2.0])
    normalised, restored, restored_stacked = (np.asarray(t) for t in model(x))
    unaffine = (normalised - [0.3, -1.0, 2.0]) / [2.0, 0.5, -1.5]
    np.testing.assert_allclose(unaffine.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(unaffine.std(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(restored, x, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(restored_stacked, np.stack([x, x], axis=-1), rtol=1e-5, atol=1e-4)


def test_patching_pads_the_end_and_cuts_overlapping_patches():
    series = np.arange(10, dtype="float32").reshape(1, 10, 1)
    patches = np.asarray(Patching(patch_length=4, stride=2)(series))
    assert patches.shape == (1, 1, 5, 4)
    np.testing.assert_array_equal(patches[0, 0], [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9], [8, 9, 9, 9]])


def test_pinball_loss_matches_its_definition():
    target = np.array([[1.0, -2.0]], "float32")
    predicted = np.array([[[0.0, 1.0, 2.0], [-1.0, -2.0, -4.0]]], "float32")
    levels = np.array(QUANTILES)
    error = target[..., None] - predicted
    expected = np.maximum(levels * error, (levels - 1) * error).mean()
    assert float(PinballLoss(QUANTILES)(target, predicted)) == pytest.approx(expected, rel=1e-6)


# Configuration and bad input -----------------------------------------------------------


def test_overriding_one_training_key_keeps_the_forecasting_defaults():
    config = Forecaster.resolve_config(None, {"epochs": 1})
    assert config.training.epochs == 1
    assert config.training.batch_size == Forecaster.resolve_config().training.batch_size == 128


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.split": "monthly"}, "split must be one of"),
        ({"data.split": [0.5, 0.5]}, "three numbers summing to 1"),
        ({"quantiles": [0.5, 1.5]}, "quantiles must be distinct levels in \\(0, 1\\)"),
        ({"patch_length": 400}, "must not exceed lookback"),
        ({"loss": "huber"}, "loss must be one of"),
    ],
)
def test_bad_config_values_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Forecaster.resolve_config(None, overrides)


def test_a_part_too_short_for_one_window_is_named():
    config = Forecaster.resolve_config(None, {**TINY, "data.split": [0.9, 0.005, 0.095]})
    with pytest.raises(ValueError, match="the validation part of the series has 10 rows of its own"):
        Forecaster.split(Forecaster.read(SAMPLE, config), config)


# Learning ------------------------------------------------------------------------------


def sine_series(rows: int = 1000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    phase = 2 * np.pi * np.arange(rows) / 24
    return pd.DataFrame(
        {
            "date": pd.date_range("2024-01-01", periods=rows, freq="h"),
            "a": np.sin(phase) + rng.normal(0, 0.05, rows),
            "b": 5 + 2 * np.cos(phase) + rng.normal(0, 0.05, rows),
        }
    )


def test_a_tiny_model_learns_a_sine_wave_far_better_than_the_last_value():
    task = Forecaster.train(sine_series(), verbose=0, epochs=6, **TINY)
    history = task.training_metrics["history"]["loss"]
    metrics = task.evaluate(sine_series(), part="test")
    assert history[-1] < 0.5 * history[0]
    assert metrics["model"]["mse"] < 0.1 * metrics["last_value"]["mse"]
    assert metrics["model"]["mse"] < 0.05


# One CLI run shared by the persistence, quantile and export tests ----------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`suite train forecasting` on the bundled sample with quantiles and an export; its summary."""
    folder = tmp_path_factory.mktemp("forecasting")
    flags = [f"--{key}={json.dumps(value)}" for key, value in TINY.items()]
    argv = ["train", "forecasting", f"--data.train={SAMPLE}", "--training.epochs=2", f"--quantiles={QUANTILES}",
            "--output-dir", str(folder / "run"), "--export-dir", str(folder / "export"), *flags]
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(argv) == 0
    return json.loads(stdout.getvalue())


def test_cli_train_writes_metrics_with_baselines_a_task_and_an_export(trained):
    metrics = json.loads((pathlib.Path(trained["output_dir"]) / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 2
    test = metrics["test"]
    assert test["part"] == "test" and test["windows"] == 400 - 12 + 1
    for name in ("model", "last_value", "seasonal_naive", "dlinear"):
        assert set(test[name]) >= {"mse", "mae", "mae_original", "mase", "smape"}
    assert set(test["model"]["coverage"]) == {"0.1", "0.5", "0.9"}
    assert (pathlib.Path(trained["saved_task"]) / "model.keras").is_file()
    signature = json.loads((pathlib.Path(trained["export"]) / "signature.json").read_text())
    assert signature["signatures"]["serving_default"]["inputs"]["window"]["shape"] == [None, 48, 3]
    assert np.shape(signature["example_request"]["body"]["inputs"]["window"]) == (1, 48, 3)


def test_a_loaded_task_scores_exactly_as_the_trained_one(trained):
    task = Task.load(trained["saved_task"])
    assert isinstance(task, Forecaster) and task.config.quantiles == tuple(QUANTILES)
    again = task.evaluate(SAMPLE, part="test")
    for key in ("mse", "mae", "mase", "pinball"):
        assert again["model"][key] == pytest.approx(trained["metrics"]["test"]["model"][key], rel=1e-5)


def test_predict_returns_future_timestamps_channels_and_ordered_quantiles(trained):
    task = Task.load(trained["saved_task"])
    history = pd.read_csv(SAMPLE)
    forecast = task.predict(history)
    channels = ["load", "temperature", "traffic"]
    assert list(forecast.columns) == ["date", *channels, *[f"{c}_q{q:g}" for q in QUANTILES for c in channels]]
    expected = pd.date_range(pd.Timestamp(history["date"].iloc[-1]), periods=13, freq="h")[1:]
    assert list(forecast["date"]) == list(expected)
    for c in channels:
        assert (forecast[f"{c}_q0.1"] <= forecast[f"{c}_q0.5"]).all()
        assert (forecast[f"{c}_q0.5"] <= forecast[f"{c}_q0.9"]).all()
    from_array = task.predict(history[channels].to_numpy())
    assert list(from_array["step"]) == list(range(1, 13))
    np.testing.assert_allclose(from_array[channels].to_numpy(), forecast[channels].to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="history has 10 rows; the model needs the last 48"):
        task.predict(history[channels].to_numpy()[:10])
    with pytest.raises(ValueError, match=r"history must be shaped \(rows, 3\)"):
        task.predict(np.zeros((60, 2)))


def test_export_serves_the_same_forecast_in_a_process_with_only_tensorflow(trained, tmp_path):
    task = Task.load(trained["saved_task"])
    values = pd.read_csv(SAMPLE)[task.preprocessor.columns].to_numpy()
    windows = np.stack([values[-48:], values[100:148]]).astype("float32")
    np.save(tmp_path / "windows.npy", windows)
    script = (
        "import sys, numpy as np, tensorflow as tf\n"
        f"serve = tf.saved_model.load({trained['export']!r}).signatures['serving_default']\n"
        f"out = serve(window=tf.constant(np.load({str(tmp_path / 'windows.npy')!r})))\n"
        "assert not any(m.startswith('suite') for m in sys.modules)\n"
        f"np.savez({str(tmp_path / 'out.npz')!r}, **{{k: v.numpy() for k, v in out.items()}})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    served = np.load(tmp_path / "out.npz")
    expected = task.forecast(windows)
    assert served["forecast"].shape == (2, 12, 3) and served["quantiles"].shape == (2, 12, 3, 3)
    np.testing.assert_allclose(served["forecast"], expected["forecast"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(served["quantiles"], expected["quantiles"], rtol=1e-4, atol=1e-3)
    predicted = task.predict(values[-48:])
    np.testing.assert_allclose(served["forecast"][0], predicted[task.preprocessor.columns].to_numpy(), rtol=1e-4)
